"""The per-device training step of one child, written once for one device or many.

With ``axis_name`` the step averages the loss, the gradients and any BatchNorm statistics with
``lax.pmean`` over the devices that share the global batch; :mod:`gannas_jax.parallel` runs it
under ``shard_map`` or ``pmap``.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax

from gannas_jax.child import Child
from gannas_jax.train.optim import SlotSparse


@flax.struct.dataclass
class ChildState:
    """Training state of one child."""

    params: Any  # max-size parameter pytree
    batch_stats: Any  # BatchNorm running statistics (possibly empty)
    opt_state: Any  # optimizer state of params


def init_state(
    child: Child, tx: optax.GradientTransformation | SlotSparse, key: jax.Array, arch: jax.Array
) -> ChildState:
    """Fresh :class:`ChildState` of one child (traceable in ``key`` and ``arch``)."""
    v = child.init(key, arch)
    return ChildState(v["params"], v["batch_stats"], tx.init(v["params"]))


def train_step(
    child: Child,
    tx: optax.GradientTransformation | SlotSparse,
    state: ChildState,
    arch: Any,
    x: jax.Array,
    y: jax.Array,
    axis_name: str | None = None,
    return_logits: bool = False,
) -> tuple[ChildState, jax.Array] | tuple[ChildState, jax.Array, jax.Array]:
    """One optimizer step of one child on its (per-device) batch.

    Args:
      child: a :class:`gannas_jax.child.Child`.
      tx: the optimizer.
      state: the child's state.
      arch: ``int32[V]`` or the child's :meth:`~gannas_jax.child.Child.plan` of it.
      x: ``float32[b, H, W, C]``, this device's share of the global batch.
      y: ``int32[b]``.
      axis_name: the device axis to average over, or None on a single device.
      return_logits: also return this batch's (training-mode) logits.

    Returns:
      ``(new_state, loss)``, the loss averaged over the global batch; ``(new_state, loss,
      logits)`` with ``return_logits``.
    """

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, stats = child.apply(variables, arch, x, train=True, axis_name=axis_name)
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
    new = ChildState(params, stats, opt_state)
    return (new, loss, logits) if return_logits else (new, loss)


def fit(
    child: Child,
    tx: optax.GradientTransformation | SlotSparse,
    state: ChildState,
    arch: Any,
    x: jax.Array,
    y: jax.Array,
    axis_name: str | None = None,
) -> tuple[ChildState, jax.Array]:
    """``lax.scan`` of :func:`train_step` over pre-batched ``x [steps, b, ...]``, ``y [steps, b]``.

    Returns:
      ``(final_state, losses [steps])``.
    """

    def body(st, batch):
        return train_step(child, tx, st, arch, batch[0], batch[1], axis_name)

    return lax.scan(body, state, (x, y))
