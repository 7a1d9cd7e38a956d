"""Data and population parallelism for child training.

The per-device training step is written once (:func:`train_step`): with ``axis_name='data'`` it
averages the loss, the gradients and any BatchNorm statistics with ``lax.pmean`` over the devices
that share the global batch. Two runners execute it over ``n`` devices:

* :func:`fit_data_parallel` with ``runner='shard_map'`` (default): ``jax.shard_map`` over a
  ``jax.make_mesh((n,), ('data',))`` mesh; the batch axis is sharded, the state replicated.
* ``runner='pmap'``: ``jax.pmap`` with ``axis_name='data'`` (maintenance mode since JAX 0.8).

Population parallelism (:func:`population_parallel`) spreads the population axis over devices
instead: each device trains different children, so there is no communication at all.

On CPU, test with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set before JAX starts.
XLA:CPU runs one device's program on about one core, so a CPU host trains a population on all of
its cores only when it exposes one device per core: :func:`use_cpu_cores` does that, and the
scripts call it at start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


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
    a later process that builds the same program loads it instead (measured on the 2-core CPU:
    the digits training program's 3.5 s compile became 0.3 s). Call it before JAX compiles
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


DATA_AXIS = "data"
POP_AXIS = "pop"
RUNNERS = ("shard_map", "pmap")


@flax.struct.dataclass
class ChildState:
    """Training state of one child.

    Attributes:
      params: max-size parameters (pytree).
      batch_stats: BatchNorm running statistics (pytree, possibly empty).
      opt_state: optax state of ``params``.
    """

    params: Any
    batch_stats: Any
    opt_state: Any


def _after(a: jax.Array) -> jax.Array:
    """An exact 0.0 that XLA computes from ``a``, so that whatever adds it runs after ``a`` is
    written (XLA:CPU drops optimization barriers before fusion; this dependency stays). Exactly 0
    whatever ``a`` holds, NaN and infinities included."""
    z = a.reshape(-1)[0] * 0.0
    return jnp.where(jnp.isnan(z), 0.0, z)


class SlotSparse(NamedTuple):
    """An optax rule for max-size params that updates slot-stacked weights at their live slots only.

    ``leaves`` name top-level params stacked on a leading slot axis (the sequential child's
    ``stage{s}_kernel``, ``[L, K, K, Cm, Cm]``), most of whose slots are dead in any one
    architecture: no conv there, so their gradients and optimizer moments stay exactly zero and
    the rule leaves them unchanged. The other params are updated by ``optax.flatten(tx)`` as one
    vector; each of ``leaves`` by ``tx`` applied to its live slots one by one (a loop over them,
    updating params and moments in place), with the same counts, so the result is ``tx`` on every
    param (up to float rounding) without reading or writing the dead slots.

    On the default digits child the stage kernels are 301k of the 390k max-size params, and Adam
    over all of them (with the flattening that ``optax.flatten`` does) was ~0.5 ms of the ~2 ms
    step of a child with convs (profiled on the 2-core CPU); the running time this saves is in
    :func:`gannas_jax.evaluate.training.make_optimizer`.

    Use it like a ``GradientTransformation`` through :func:`init_state` and :func:`train_step`,
    which pass it the live slots from the child's plan (:meth:`gannas_jax.child.Child.live_slots`).
    """

    tx: optax.GradientTransformation
    leaves: tuple[str, ...]

    def split(self, tree: dict) -> tuple[dict, dict]:
        """``(the other params, the slot-stacked ones)`` of a params-shaped dict."""
        return (
            {k: v for k, v in tree.items() if k not in self.leaves},
            {k: v for k, v in tree.items() if k in self.leaves},
        )

    def init(self, params: dict) -> tuple:
        rest, slotted = self.split(params)
        return optax.flatten(self.tx).init(rest), {k: self.tx.init(v) for k, v in slotted.items()}

    def apply(self, grads: dict, state: tuple, params: dict, live: dict) -> tuple[dict, tuple]:
        """``(new params, new state)``; ``live[k] = (slots int32[L], n)``: the first ``n`` entries
        of ``slots`` are leaf ``k``'s live slots."""
        rest_g, slot_g = self.split(grads)
        rest_p, slot_p = self.split(params)
        rest_tx = optax.flatten(self.tx)
        u, rest_state = rest_tx.update(rest_g, state[0], rest_p)
        new = dict(optax.apply_updates(rest_p, u))
        slot_state = {}
        for k, p in slot_p.items():
            g, old = slot_g[k], state[1][k]
            stacked = jax.tree.map(lambda a: a.ndim == p.ndim and a.shape == p.shape, old)
            # The loop closes over the state's small leaves (the counts) only, not the stacked
            # moments, whose buffers it updates in place.
            small = jax.tree.map(
                lambda is_s, a: jnp.zeros((), a.dtype) if is_s else a, stacked, old
            )

            def body(j, carry, g=g, counts=small, stacked=stacked):
                p, st = carry
                s = live[k][0][j]

                def at(a):
                    return lax.dynamic_index_in_dim(a, s, keepdims=False)

                # this slot's moments; the counts as they were before this step
                st_in = jax.tree.map(lambda is_s, o, c: at(c) if is_s else o, stacked, counts, st)
                u, st_out = self.tx.update(at(g), st_in, at(p))
                p = lax.dynamic_update_index_in_dim(p, optax.apply_updates(at(p), u), s, 0)
                # The new moments wait for the new params (an exact +0 read from them): XLA then
                # writes all three in place. Otherwise the params' update, fused with the moments'
                # arithmetic, reads the old moments after their in-place write, and XLA copied
                # both stacked moment arrays twice per live slot (measured on two stacked [3, 7,
                # 7, 32, 32] leaves with 3 live slots: 14 copies of that shape per step and 325 us
                # per step, against none and 96 us).
                z = _after(p)
                st_out = jax.tree.map(
                    lambda is_s, n: n + z.astype(n.dtype) if is_s else n, stacked, st_out
                )
                st = jax.tree.map(
                    lambda is_s, c, n: lax.dynamic_update_index_in_dim(c, n, s, 0) if is_s else n,
                    stacked,
                    st,
                    st_out,
                )
                return p, st

            new[k], slot_state[k] = lax.fori_loop(0, live[k][1], body, (p, old))
        return new, (rest_state, slot_state)


def init_state(
    child, tx: optax.GradientTransformation, key: jax.Array, arch: jax.Array
) -> ChildState:
    """Fresh :class:`ChildState` of one child (traceable in ``key`` and ``arch``)."""
    v = child.init(key, arch)
    return ChildState(v["params"], v["batch_stats"], tx.init(v["params"]))


def train_step(
    child,
    tx: optax.GradientTransformation,
    state: ChildState,
    arch: jax.Array,
    x: jax.Array,
    y: jax.Array,
    axis_name: str | None = None,
    return_logits: bool = False,
) -> tuple[ChildState, jax.Array]:
    """One optimizer step of one child on its (per-device) batch.

    Args:
      child: a :class:`gannas_jax.child.Child`.
      tx: the optimizer.
      state: the child's state.
      arch: ``int32[V]``.
      x: ``float32[b, H, W, C]`` this device's share of the global batch.
      y: ``int32[b]``.
      axis_name: the device axis to average over, or None on a single device.
      return_logits: also return this batch's (training-mode) logits.

    Returns:
      ``(new_state, loss)``, the loss averaged over the global batch; ``(new_state, loss, logits)``
      with ``return_logits``.
    """

    def loss_fn(params):
        logits, stats = child.apply(
            {"params": params, "batch_stats": state.batch_stats}, arch, x, train=True
        )
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        return loss, (stats, logits)

    (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        # Equal shares, so the mean of per-device means is the global-batch mean.
        loss, grads, stats = lax.pmean((loss, grads, stats), axis_name)
    if isinstance(tx, SlotSparse):
        params, opt_state = tx.apply(grads, state.opt_state, state.params, child.live_slots(arch))
    else:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
    if return_logits:
        return ChildState(params, stats, opt_state), loss, logits
    return ChildState(params, stats, opt_state), loss


def fit(
    child,
    tx,
    state: ChildState,
    arch: jax.Array,
    x: jax.Array,
    y: jax.Array,
    axis_name: str | None = None,
) -> tuple[ChildState, jax.Array]:
    """``lax.scan`` of :func:`train_step` over pre-batched data ``x [steps, b, ...]``, ``y [steps, b]``.

    Returns:
      ``(final_state, losses [steps])``.
    """

    def body(st, batch):
        return train_step(child, tx, st, arch, batch[0], batch[1], axis_name)

    return lax.scan(body, state, (x, y))


def fit_data_parallel(
    child,
    tx,
    state: ChildState,
    arch: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    runner: str = "shard_map",
    devices: list | None = None,
) -> tuple[ChildState, jax.Array]:
    """Trains one child with its global batch split over devices.

    Args:
      child, tx, state, arch: as in :func:`train_step`.
      x: ``float32[steps, B, H, W, C]`` global batches; ``B`` divisible by the device count.
      y: ``int32[steps, B]``.
      runner: ``'shard_map'`` (default) or ``'pmap'``.
      devices: devices to use (default: all local devices).

    Returns:
      ``(final_state, losses [steps])``, replicated, equal to single-device :func:`fit` on the
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
            for a, spec in zip((state, arch, x, y), specs)
        ]
        return jax.jit(f)(*args)
    steps, b = x.shape[:2]

    def split(a):  # [steps, B, ...] -> [n, steps, B/n, ...]
        return jnp.moveaxis(a.reshape((steps, n, b // n) + a.shape[2:]), 1, 0)

    f = jax.pmap(per_device, axis_name=DATA_AXIS, in_axes=(None, None, 0, 0), devices=devices)
    out_state, losses = f(state, arch, split(x), split(y))
    return jax.tree.map(lambda a: a[0], out_state), losses[0]


def population_parallel(
    fn: Callable, n_devices: int | None = None, devices: list | None = None
) -> Callable:
    """Spreads a population function over devices along the leading axis of every argument.

    ``fn(*args)`` maps arrays with a leading population axis ``P`` to outputs with the same leading
    axis. The result runs ``fn`` on ``P / n`` members per device through ``jax.shard_map``, with
    no communication (each device trains its own children). Arguments without a population axis
    must be closed over by ``fn``.

    Args:
      fn: the population function.
      n_devices: number of devices (default: all of ``devices``).
      devices: devices (default: local devices).

    Returns:
      The sharded function (not jitted; jit it at the boundary).
    """
    devices = list(devices or jax.local_devices())
    if n_devices is not None:
        devices = devices[:n_devices]
    mesh = jax.make_mesh((len(devices),), (POP_AXIS,), devices=devices)
    sharded = jax.shard_map(
        fn, mesh=mesh, in_specs=P(POP_AXIS), out_specs=P(POP_AXIS), check_vma=False
    )
    sharding = NamedSharding(mesh, P(POP_AXIS))

    def run(*args):
        return sharded(*jax.tree.map(lambda a: jax.reshard(a, sharding), args))

    return run


def num_devices() -> int:
    """Local device count."""
    return jax.local_device_count()


__all__ = [
    "use_cpu_cores",
    "use_compilation_cache",
    "ChildState",
    "SlotSparse",
    "init_state",
    "train_step",
    "fit",
    "fit_data_parallel",
    "population_parallel",
    "DATA_AXIS",
    "POP_AXIS",
    "RUNNERS",
    "num_devices",
]
