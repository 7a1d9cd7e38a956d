"""Discriminator-only updates on the evaluated architectures, for ranking candidates.

``fit_ranker``: the real set against the evaluated architectures outside it, with the GAN's loss.
``fit_pairwise``: a pairwise (relativistic) ranking loss over every evaluated architecture.

A GAN's discriminator learns to tell the real set (the best architectures evaluated) from the
generator's samples. When it ranks candidates for a search, it is also worth telling the real
set from the architectures that were evaluated and found worse: those updates use the same loss,
optimizer and parameters, with the negatives in place of the generator's batch. The generator is
untouched.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gannas_jax.gan.fit import pad_real
from gannas_jax.gan.state import GanState
from gannas_jax.gan.step import (
    TRACE_COUNTS,
    _critic_update,
    _d_apply,
    _real_onehot,
    _tree_finite,
)


def _check_steps(name: str, num_steps) -> None:
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"{name}: num_steps must be a positive int, got {num_steps!r}")


def _finite_or_raise(name: str, new_state, losses, finite):
    if not bool(finite) or not np.all(np.isfinite(np.asarray(losses))):
        raise FloatingPointError(
            f"{name}: the discriminator became non-finite; the state was not updated"
        )
    return new_state, losses


def _scan_updates(state: GanState, update, key: jax.Array, num_steps: int):
    """``num_steps`` of ``update(d_params, d_opt_state, key) -> (d_params, d_opt_state, loss)``
    under ``lax.scan``: ``(new_state, losses, all_finite)``."""

    def body(carry, k):
        d_params, d_opt_state, loss = update(*carry, k)
        return (d_params, d_opt_state), loss

    carry = (state.d_params, state.d_opt_state)
    (d_params, d_opt_state), losses = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
    return state.replace(d_params=d_params, d_opt_state=d_opt_state), losses, _tree_finite(d_params)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _fit_ranker(state, real_padded, num_real, neg_padded, num_neg, key, num_steps):
    TRACE_COUNTS["fit_ranker"] += 1
    real_onehot = _real_onehot(state.space, real_padded)
    neg_onehot = _real_onehot(state.space, neg_padded)
    b = state.config.batch_size

    def update(d_params, d_opt_state, k):
        k_real, k_neg, k_drop, k_eps = jax.random.split(k, 4)
        real = real_onehot[jax.random.randint(k_real, (b,), 0, num_real)]
        fake = neg_onehot[jax.random.randint(k_neg, (b,), 0, num_neg)]
        eps = jax.random.uniform(k_eps, (b, 1))
        d_params, d_opt_state, metrics = _critic_update(
            state, d_params, d_opt_state, real, fake, eps, k_drop
        )
        return d_params, d_opt_state, metrics["d_loss"]

    return _scan_updates(state, update, key, num_steps)


def fit_ranker(
    state: GanState, real_archs, negative_archs, key: jax.Array, num_steps: int
) -> tuple[GanState, jax.Array]:
    """``num_steps`` discriminator updates: ``real_archs`` against ``negative_archs``.

    Args:
      state: a GAN state; only the discriminator and its optimizer change.
      real_archs: ``int[n, V]``, ``1 <= n <= config.real_capacity``.
      negative_archs: ``int[m, V]`` evaluated architectures outside the real set,
        ``1 <= m <= config.real_capacity``.
      key: a ``jax.random.key``.
      num_steps: a positive int.

    Returns:
      ``(new_state, d_losses)`` with ``d_losses: float32[num_steps]``.

    Raises:
      ValueError: bad shapes, codes or sizes.
      FloatingPointError: the discriminator became non-finite; no state is returned then.
    """
    _check_steps("fit_ranker", num_steps)
    real, n = pad_real(state.space, state.config, real_archs)
    neg, m = pad_real(state.space, state.config, negative_archs)
    new_state, losses, finite = _fit_ranker(state, real, n, neg, m, key, num_steps=int(num_steps))
    return _finite_or_raise("fit_ranker", new_state, losses, finite)


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _fit_pairwise(state, archs_padded, scores_padded, num, key, num_steps):
    TRACE_COUNTS["fit_pairwise"] += 1
    space, config = state.space, state.config
    x = _real_onehot(space, archs_padded)
    b = config.batch_size
    _, d_tx = config.optimizers()

    def update(d_params, d_opt_state, k):
        k_i, k_j, k_drop = jax.random.split(k, 3)
        i = jax.random.randint(k_i, (b,), 0, num)
        j = jax.random.randint(k_j, (b,), 0, num)
        sign = jnp.sign(scores_padded[i] - scores_padded[j])  # 0 for ties and i == j
        weight = jnp.abs(sign)

        def loss_fn(p):
            logits = _d_apply(space, config, p, jnp.concatenate([x[i], x[j]], axis=0), k_drop)
            margin = logits[:b] - logits[b:]
            return jnp.sum(weight * jax.nn.softplus(-sign * margin)) / jnp.maximum(
                jnp.sum(weight), 1.0
            )

        loss, grads = jax.value_and_grad(loss_fn)(d_params)
        updates, d_opt_state = d_tx.update(grads, d_opt_state, d_params)
        return optax.apply_updates(d_params, updates), d_opt_state, loss

    return _scan_updates(state, update, key, num_steps)


def fit_pairwise(
    state: GanState, archs, scores, key: jax.Array, num_steps: int
) -> tuple[GanState, jax.Array]:
    """``num_steps`` pairwise ranking updates of the discriminator over evaluated architectures.

    Each update draws ``config.batch_size`` random pairs and takes the logistic loss of the
    discriminator's logit margin in the order of their scores (a relativistic discriminator:
    the better one of a pair should score higher), so that every evaluated architecture informs
    the ranking, not only the real set against the rest. Tied pairs carry no weight.

    Args:
      state: a GAN state; only the discriminator and its optimizer change.
      archs: ``int[m, V]`` evaluated architectures, ``2 <= m <= config.real_capacity``.
      scores: ``float[m]``, their scores (higher is better).
      key: a ``jax.random.key``.
      num_steps: a positive int.

    Returns:
      ``(new_state, losses)`` with ``losses: float32[num_steps]``.

    Raises:
      ValueError: bad shapes, codes, sizes or non-finite scores.
      FloatingPointError: the discriminator became non-finite; no state is returned then.
    """
    _check_steps("fit_pairwise", num_steps)
    padded, m = pad_real(state.space, state.config, archs)
    scores = np.asarray(scores, np.float32)
    if scores.shape != (int(m),):
        raise ValueError(f"fit_pairwise: scores must have shape ({int(m)},), got {scores.shape}")
    if int(m) < 2:
        raise ValueError("fit_pairwise: at least 2 evaluated architectures are needed")
    if not np.all(np.isfinite(scores)):
        raise ValueError("fit_pairwise: scores must be finite")
    scores_padded = np.zeros(len(padded), np.float32)
    scores_padded[: int(m)] = scores
    new_state, losses, finite = _fit_pairwise(
        state, padded, scores_padded, m, key, num_steps=int(num_steps)
    )
    return _finite_or_raise("fit_pairwise", new_state, losses, finite)
