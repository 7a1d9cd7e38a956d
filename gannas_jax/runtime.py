"""Process-level JAX setup for the scripts and for users: CPU devices and the compile cache.

XLA:CPU runs one device's program on about one core, so a CPU host trains a population on all of
its cores only when it exposes one device per core (:func:`use_cpu_cores`).
"""

from __future__ import annotations

import os

import jax


def use_cpu_cores(num_devices: int | None = None) -> int:
    """Makes XLA:CPU expose one device per core, so population parallelism uses every core.

    Call it before JAX runs anything (the scripts do so at start). It changes nothing when a
    backend is already initialized, when ``XLA_FLAGS`` sets
    ``--xla_force_host_platform_device_count``, or when ``jax_num_cpu_devices`` is already set.
    Programs placed on one device are unaffected; :class:`~gannas_jax.TrainingEvaluator` spreads
    its population over the devices (``TrainConfig.devices``).

    Args:
      num_devices: the device count; ``None`` reads ``$GANNAS_CPU_DEVICES`` and otherwise uses the
        cores this process may run on (at most 8). ``1`` leaves JAX's single CPU device.

    Returns:
      The number of CPU devices JAX has or will have (``-1`` when that is left to JAX's default).
    """
    if num_devices is None:
        want = os.environ.get("GANNAS_CPU_DEVICES", "").strip()
        if want:
            try:
                num_devices = int(want)
            except ValueError:
                raise ValueError(f"GANNAS_CPU_DEVICES must be an integer, got {want!r}") from None
        else:
            try:
                num_devices = min(len(os.sched_getaffinity(0)), 8)
            except AttributeError:  # not on Linux
                num_devices = min(os.cpu_count() or 1, 8)
    if num_devices < 1:
        raise ValueError(f"use_cpu_cores: num_devices must be >= 1, got {num_devices}")
    if num_devices == 1 or "xla_force_host_platform_device_count" in os.environ.get(
        "XLA_FLAGS", ""
    ):
        return jax.config.jax_num_cpu_devices
    if jax.config.jax_num_cpu_devices != -1:
        return jax.config.jax_num_cpu_devices
    try:
        jax.config.update("jax_num_cpu_devices", num_devices)
    except RuntimeError:  # a backend is already initialized: keep what the user has
        return jax.config.jax_num_cpu_devices
    return num_devices


def use_compilation_cache(path: str | None = None) -> str | None:
    """Keeps compiled XLA programs on disk, so a rerun of the same job skips compilation.

    JAX's persistent compilation cache: programs that took over a second to compile are stored
    under ``path``, keyed by the program, the compile options, the JAX version and the device, and
    a later process that builds the same program loads it instead. Call it before JAX compiles
    anything; the scripts do.

    Args:
      path: the cache folder; ``None`` reads ``$GANNAS_XLA_CACHE`` and otherwise uses
        ``$XDG_CACHE_HOME/gannas_jax/xla`` (``~/.cache/gannas_jax/xla``); ``''`` disables.

    Returns:
      The folder in use, or None when disabled.
    """
    if path is None:
        path = os.environ.get("GANNAS_XLA_CACHE")
        if path is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache"
            )
            path = os.path.join(base, "gannas_jax", "xla")
    if not path:
        return None
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    return os.path.abspath(path)
