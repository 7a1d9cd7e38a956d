"""Train and score a population of children in one traced program: init, a ``lax.scan`` over
optimizer steps, and accuracy, run over the population by ``vmap`` or ``lax.map``."""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from gannas_jax.child import Child
from gannas_jax.train.config import TrainConfig
from gannas_jax.train.optim import make_optimizer
from gannas_jax.train.step import ChildState, init_state, train_step


@flax.struct.dataclass
class TrainData:
    """A dataset laid out for the training program (one device array per split kind)."""

    x: jax.Array  # float32[n, H, W, C]: the train, then validation, then test images
    y: jax.Array  # int32[n]
    idx: jax.Array  # int32[steps, B]: the training batches' indices into x
    eval_idx: jax.Array  # int32[chunks, B]: validation-then-test indices, the last batch padded
    n_train: int = flax.struct.field(pytree_node=False)
    n_val: int = flax.struct.field(pytree_node=False)


class MemberResult(NamedTuple):
    """What training one child gives (scalars per member, ``[P]`` over a population)."""

    val: jax.Array  # validation accuracy, %
    test: jax.Array  # test accuracy, %
    loss: jax.Array  # final training loss
    loss0: jax.Array  # first training loss


def correct(
    child: Child, variables: dict, arch: jax.Array, x: jax.Array, y: jax.Array, chunk: int
) -> jax.Array:
    """``bool[n]``: whether each example of ``x [n, ...]`` is classified as ``y [n]``, by
    inference in equal chunks of at most ``chunk`` examples (in ``lax.map`` when several)."""
    n = x.shape[0]
    n_chunks = -(-n // min(chunk, n))
    chunk = -(-n // n_chunks)
    pad = n_chunks * chunk - n
    xp = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    xp = xp.reshape((n_chunks, chunk) + x.shape[1:])
    yp = jnp.pad(y, (0, pad), constant_values=-1).reshape(n_chunks, chunk)

    def one(batch):
        logits, _ = child.apply(variables, arch, batch[0], train=False)
        return jnp.argmax(logits, axis=-1) == batch[1]

    hits = one((xp[0], yp[0]))[None] if n_chunks == 1 else lax.map(one, (xp, yp))
    return hits.reshape(-1)[:n]


def train_member(
    child: Child,
    cfg: TrainConfig,
    key: jax.Array,
    arch: jax.Array,
    data: TrainData,
    variables: dict | None = None,
) -> MemberResult:
    """Initializes, trains and scores one child (traceable; the population maps this).

    When the child's training-mode forward pass is its inference pass
    (:attr:`~gannas_jax.child.Child.train_mode_is_inference`), the validation and test batches
    run as extra steps of the training scan with the learning rate exactly 0, so XLA compiles
    one forward pass instead of two. Otherwise a separate inference pass scores them.

    Args:
      child: the child network.
      cfg: the recipe.
      key: this child's init key.
      arch: ``int32[V]``.
      data: the dataset.
      variables: initial variables, instead of ``child.init(key, arch)``.
    """
    x, y = data.x, data.y
    n_eval = x.shape[0] - data.n_train
    plan = child.plan(arch)  # decoded once, not at every step

    def start(tx):
        if variables is None:
            return init_state(child, tx, key, arch)
        params = variables["params"]
        return ChildState(params, variables["batch_stats"], tx.init(params))

    if child.train_mode_is_inference:
        tx = make_optimizer(cfg, freeze_after=cfg.steps, slot_leaves=child.slot_leaves)

        def body(st, step):
            idx, scoring = step
            step_plan = child.scoring_plan(plan, scoring)
            st, loss, logits = train_step(
                child, tx, st, step_plan, x[idx], y[idx], return_logits=True
            )
            return st, (loss, jnp.argmax(logits, axis=-1) == y[idx])

        idx = jnp.concatenate([data.idx, data.eval_idx])
        scoring = jnp.arange(idx.shape[0]) >= cfg.steps
        _, (losses, hits) = lax.scan(body, start(tx), (idx, scoring))
        losses, hits = losses[: cfg.steps], hits[cfg.steps :].reshape(-1)[:n_eval]
    else:
        tx = make_optimizer(cfg, slot_leaves=child.slot_leaves)

        def body(st, idx):
            return train_step(child, tx, st, plan, x[idx], y[idx])

        state, losses = lax.scan(body, start(tx), data.idx)
        trained = {"params": state.params, "batch_stats": state.batch_stats}
        n = data.n_train
        hits = correct(child, trained, plan, x[n:], y[n:], cfg.eval_batch_size)
    return MemberResult(
        val=100.0 * jnp.mean(hits[: data.n_val]),
        test=100.0 * jnp.mean(hits[data.n_val :]),
        loss=losses[-1],
        loss0=losses[0],
    )


def narrow_child(child: Child, cfg: TrainConfig) -> Child | None:
    """The narrow variant the population trains the architectures it accepts with, or None
    (only with ``map``: under ``vmap`` a ``lax.cond`` would run both variants)."""
    use = cfg.narrow and cfg.resolved_strategy() == "map"
    return child.narrow_variant() if use else None


def train_population(
    child: Child, cfg: TrainConfig, keys: jax.Array, archs: jax.Array, data: TrainData
) -> MemberResult:
    """:func:`train_member` over ``keys [P]``, ``archs [P, V]`` by ``vmap`` or ``lax.map``
    (``cfg.resolved_strategy()``); members the narrow variant accepts are trained by it."""
    narrow = narrow_child(child, cfg)

    def member(key, arch):
        if narrow is None:
            return train_member(child, cfg, key, arch, data)
        # One init for both (the narrow variant's weights are cut out of it), compiled once.
        v = child.init(key, arch)
        return lax.cond(
            child.is_narrow(arch),
            lambda: train_member(narrow, cfg, key, arch, data, narrow.narrow_from(v)),
            lambda: train_member(child, cfg, key, arch, data, v),
        )

    if cfg.resolved_strategy() == "vmap":
        return jax.vmap(member)(keys, archs)
    return lax.map(lambda ka: member(*ka), (keys, archs))
