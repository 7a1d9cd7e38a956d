"""Optimizers of child training: the recipe's optax rule, and :class:`SlotSparse`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from gannas_jax.train.config import TrainConfig


class SlotSparseState(NamedTuple):
    """State of :class:`SlotSparse`."""

    rest: Any  # optax.flatten(tx) state of the params that are not slot-stacked
    slots: dict[str, Any]  # tx state of each slot-stacked param, at its full stacked shape


def _after(a: jax.Array) -> jax.Array:
    """An exact 0.0 that XLA computes from ``a``, so that whatever adds it runs after ``a`` is
    written (XLA:CPU drops optimization barriers before fusion; this dependency stays)."""
    z = a.reshape(-1)[0] * 0.0
    return jnp.where(jnp.isnan(z), 0.0, z)


class SlotSparse(NamedTuple):
    """An optax rule for max-size params that updates slot-stacked weights at their live slots.

    ``leaves`` name top-level params stacked on a leading slot axis (the sequential child's
    ``stage{s}_kernel``, ``[L, K, K, Cm, Cm]``), most of whose slots are dead in any one
    architecture: their gradients and moments stay exactly zero, so the rule leaves them
    unchanged. The other params are updated by ``optax.flatten(tx)`` as one vector; each of
    ``leaves`` by ``tx`` on its live slots one by one, in place, with the same counts. The result
    is ``tx`` on every param (up to float rounding) without touching the dead slots.

    Use it like a ``GradientTransformation`` through :func:`~gannas_jax.train.init_state` and
    :func:`~gannas_jax.train.train_step`, which pass it the live slots from the child's plan
    (:meth:`gannas_jax.child.Child.live_slots`).
    """

    tx: optax.GradientTransformation
    leaves: tuple[str, ...]

    def split(self, tree: dict) -> tuple[dict, dict]:
        """``(the other params, the slot-stacked ones)`` of a params-shaped dict."""
        rest = {k: v for k, v in tree.items() if k not in self.leaves}
        return rest, {k: v for k, v in tree.items() if k in self.leaves}

    def init(self, params: dict) -> SlotSparseState:
        rest, slotted = self.split(params)
        slots = {k: self.tx.init(v) for k, v in slotted.items()}
        return SlotSparseState(optax.flatten(self.tx).init(rest), slots)

    def apply(
        self, grads: dict, state: SlotSparseState, params: dict, live: dict
    ) -> tuple[dict, SlotSparseState]:
        """``(new params, new state)``; ``live[k]`` is leaf ``k``'s
        :class:`~gannas_jax.child.sequential.LiveSlots`."""
        rest_g, slot_g = self.split(grads)
        rest_p, slot_p = self.split(params)
        u, rest_state = optax.flatten(self.tx).update(rest_g, state.rest, rest_p)
        new = dict(optax.apply_updates(rest_p, u))
        slot_state = {}
        for k, p in slot_p.items():
            g, old, slots = slot_g[k], state.slots[k], live[k].slots
            stacked = jax.tree.map(lambda a, p=p: a.ndim == p.ndim and a.shape == p.shape, old)
            # The loop closes over the state's small leaves (the counts) only, not the stacked
            # moments, whose buffers it updates in place.
            small = jax.tree.map(
                lambda is_s, a: jnp.zeros((), a.dtype) if is_s else a, stacked, old
            )

            def body(j, carry, g=g, counts=small, stacked=stacked, slots=slots):
                p, st = carry
                s = slots[j]

                def at(a):
                    return lax.dynamic_index_in_dim(a, s, keepdims=False)

                # this slot's moments; the counts as they were before this step
                st_in = jax.tree.map(lambda is_s, o, c: at(c) if is_s else o, stacked, counts, st)
                u, st_out = self.tx.update(at(g), st_in, at(p))
                p = lax.dynamic_update_index_in_dim(p, optax.apply_updates(at(p), u), s, 0)
                # The new moments wait for the new params (an exact +0 read from them), so XLA
                # writes all three in place instead of copying the stacked moments.
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

            new[k], slot_state[k] = lax.fori_loop(0, live[k].n, body, (p, old))
        return new, SlotSparseState(rest_state, slot_state)


def make_optimizer(
    cfg: TrainConfig, freeze_after: int | None = None, slot_leaves: tuple[str, ...] = ()
) -> optax.GradientTransformation | SlotSparse:
    """The optimizer of a recipe.

    Args:
      cfg: the recipe.
      freeze_after: if given, the learning rate is exactly 0 from that update on, so later steps
        leave the params unchanged (the evaluator's scoring steps).
      slot_leaves: the child's :attr:`~gannas_jax.child.Child.slot_leaves`: with any, the rule
        is wrapped in :class:`SlotSparse`.

    Returns:
      The rule on one flat vector (``optax.flatten``: optax's elementwise update would otherwise
      be compiled once per parameter shape), or its :class:`SlotSparse`.
    """
    lr = cfg.learning_rate
    if cfg.schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
    if freeze_after is not None:
        base = lr

        def lr(count):
            return jnp.where(count < freeze_after, base(count) if callable(base) else base, 0.0)

    if cfg.optimizer == "adam":
        rule = optax.adam(lr)
    else:
        rule = optax.sgd(lr, momentum=cfg.momentum)
    if slot_leaves:
        return SlotSparse(rule, tuple(slot_leaves))
    return optax.flatten(rule)
