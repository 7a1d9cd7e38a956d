"""Data and population parallelism of child training over a device mesh.

The per-device step (:func:`gannas_jax.train.train_step` with ``axis_name='data'``) averages
gradients and BatchNorm's batch statistics with ``lax.pmean``. :func:`fit_data_parallel` runs
it two ways over ``n`` devices:

* ``runner='shard_map'`` (default): ``jax.shard_map`` over a ``jax.make_mesh((n,), ('data',))``
  mesh; the batch axis is sharded, the state replicated.
* ``runner='pmap'``: ``jax.pmap`` with ``axis_name='data'`` (maintenance mode since JAX 0.8).

:func:`population_parallel` spreads the population axis over devices instead: each device trains
different children, so there is no communication at all. On CPU, test with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set before JAX starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gannas_jax.child import Child
from gannas_jax.train import ChildState, SlotSparse, fit

DATA_AXIS = "data"
POP_AXIS = "pop"
RUNNERS = ("shard_map", "pmap")


def fit_data_parallel(
    child: Child,
    tx: optax.GradientTransformation | SlotSparse,
    state: ChildState,
    arch: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    runner: str = "shard_map",
    devices: list | None = None,
) -> tuple[ChildState, jax.Array]:
    """Trains one child with its global batch split over devices.

    Args:
      child, tx, state, arch: as in :func:`gannas_jax.train.train_step`.
      x: ``float32[steps, B, H, W, C]`` global batches; ``B`` divisible by the device count.
      y: ``int32[steps, B]``.
      runner: ``'shard_map'`` (default) or ``'pmap'``.
      devices: devices to use (default: all local devices).

    Returns:
      ``(final_state, losses [steps])``, replicated, equal to single-device
      :func:`gannas_jax.train.fit` on the
      same global batches up to float reassociation.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    devices = list(devices or jax.local_devices())
    n = len(devices)
    if x.shape[1] % n:
        raise ValueError(f"global batch {x.shape[1]} is not divisible by {n} devices")

    def per_device(state, arch, x, y):
        return fit(child, tx, state, arch, x, y, axis_name=DATA_AXIS)

    if runner == "shard_map":
        mesh = jax.make_mesh((n,), (DATA_AXIS,), devices=devices)
        specs = (P(), P(), P(None, DATA_AXIS), P(None, DATA_AXIS))
        # check_vma=False: gradients are averaged explicitly by the pmean in train_step.
        f = jax.shard_map(
            per_device, mesh=mesh, in_specs=specs, out_specs=(P(), P()), check_vma=False
        )
        args = [
            jax.device_put(a, NamedSharding(mesh, spec))
            for a, spec in zip((state, arch, x, y), specs, strict=True)
        ]
        return jax.jit(f)(*args)
    steps, b = x.shape[:2]

    def split(a):  # [steps, B, ...] -> [n, steps, B/n, ...]
        return jnp.moveaxis(a.reshape((steps, n, b // n) + a.shape[2:]), 1, 0)

    f = jax.pmap(per_device, axis_name=DATA_AXIS, in_axes=(None, None, 0, 0), devices=devices)
    out_state, losses = f(state, arch, split(x), split(y))
    return jax.tree.map(lambda a: a[0], out_state), losses[0]


def population_parallel(
    fn: Callable,
    n_devices: int | None = None,
    devices: list | None = None,
    mesh: jax.sharding.Mesh | None = None,
    replicated: int = 0,
) -> Callable:
    """Spreads a population function over devices along the leading axis of every argument.

    ``fn(*args)`` maps arrays with a leading population axis ``P`` to outputs with the same leading
    axis. The result runs ``fn`` on ``P / n`` members per device through ``jax.shard_map``, with
    no communication (each device trains its own children). Arguments without a population axis
    are either closed over by ``fn`` or are its last ``replicated`` arguments, which every device
    gets whole.

    Args:
      fn: the population function.
      n_devices: number of devices (default: all of ``devices``).
      devices: devices (default: local devices).
      mesh: instead of ``devices``, a 1-D mesh with the axis ``'pop'`` whose arguments already
        are global arrays sharded over it (a multi-process run's global mesh).
      replicated: how many trailing arguments have no population axis.

    Returns:
      The sharded function (not jitted; jit it at the boundary).
    """

    def specs(n_args):
        return (P(POP_AXIS),) * (n_args - replicated) + (P(),) * replicated

    if mesh is not None:

        def on_mesh(*args):
            return jax.shard_map(
                fn, mesh=mesh, in_specs=specs(len(args)), out_specs=P(POP_AXIS), check_vma=False
            )(*args)

        return on_mesh
    devices = list(devices or jax.local_devices())
    if n_devices is not None:
        devices = devices[:n_devices]
    mesh = jax.make_mesh((len(devices),), (POP_AXIS,), devices=devices)

    def run(*args):
        in_specs = specs(len(args))
        sharded = jax.shard_map(
            fn, mesh=mesh, in_specs=in_specs, out_specs=P(POP_AXIS), check_vma=False
        )
        put = [
            jax.tree.map(lambda a, sp=sp: jax.reshard(a, NamedSharding(mesh, sp)), a)
            for a, sp in zip(args, in_specs, strict=True)
        ]
        return sharded(*put)

    return run


__all__ = ["DATA_AXIS", "POP_AXIS", "RUNNERS", "fit_data_parallel", "population_parallel"]
