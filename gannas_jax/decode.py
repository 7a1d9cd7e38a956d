"""Logits -> architectures: Gumbel-max sampling, straight-through Gumbel-softmax, and argmax.

A generator emits logits ``float32[n, V, Cmax]``. Choices that do not exist for a variable (where
``space.mask`` is False) are masked to a large negative value, so no mode ever picks them and
their softmax weight is exactly zero. Every mode returns canonical codes (it ends in
``space.canonicalize``) together with the one-hot encoding of the *raw* choices; in
``"gumbel_softmax"`` mode that encoding carries the straight-through gradient
``hard + soft - stop_gradient(soft)`` to the logits.

The batched :func:`decode` is ``jax.vmap`` of :func:`decode_one` over the batch and a split of
the key, so each row is decoded exactly as the single-row function would decode it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gannas_jax.spaces.base import Space

DECODE_MODES: tuple[str, ...] = ("gumbel_max", "gumbel_softmax", "argmax")

# Large but finite: exp underflows to exactly 0 and 0 * (-1e9) stays finite, unlike -inf.
MASKED_LOGIT = -1e9


class Decoded(NamedTuple):
    """Output of :func:`decode`.

    Attributes:
      archs: ``int32[..., V]`` canonical codes.
      raw: ``int32[..., V]`` the choices as drawn, before canonicalization.
      onehot: ``float32[..., V, Cmax]`` one-hot of ``raw``; in ``"gumbel_softmax"`` mode its
        gradient is the straight-through estimator's.
    """

    archs: jax.Array
    raw: jax.Array
    onehot: jax.Array


def _check_mode(mode: str) -> None:
    if mode not in DECODE_MODES:
        raise ValueError(f"decode: unknown mode {mode!r}; expected one of {list(DECODE_MODES)}")


def _mask_like(space: Space, x: jax.Array) -> np.ndarray:
    """``space.mask`` with leading unit dims, so it broadcasts against ``x`` at equal rank."""
    m = space.mask
    return m.reshape((1,) * (x.ndim - m.ndim) + m.shape)


def mask_logits(space: Space, logits: jax.Array) -> jax.Array:
    """Sets the logits of choices that do not exist to :data:`MASKED_LOGIT`.

    Args:
      space: the search space.
      logits: ``float32[..., V, Cmax]``.

    Returns:
      ``float32[..., V, Cmax]``.
    """
    return jnp.where(_mask_like(space, logits), logits, jnp.asarray(MASKED_LOGIT, logits.dtype))


def masked_entropy(space: Space, logits: jax.Array) -> jax.Array:
    """Mean over variables of the categorical entropy of each variable's masked softmax.

    Args:
      space: the search space.
      logits: ``float32[..., V, Cmax]``.

    Returns:
      ``float32[...]``.
    """
    logp = jax.nn.log_softmax(mask_logits(space, logits), axis=-1)
    return -jnp.mean(jnp.sum(jnp.exp(logp) * logp, axis=-1), axis=-1)


def _decode_masked(key, logits, space: Space, mode: str, temperature):
    """Decodes already-masked logits of any leading shape with noise drawn for that shape."""
    cmax = space.max_cardinality
    if mode == "argmax":
        raw = jnp.argmax(logits, axis=-1)
        onehot = jax.nn.one_hot(raw, cmax, dtype=logits.dtype)
    else:
        perturbed = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
        raw = jnp.argmax(perturbed, axis=-1)
        onehot = jax.nn.one_hot(raw, cmax, dtype=logits.dtype)
        if mode == "gumbel_softmax":
            soft = jax.nn.softmax(perturbed / temperature, axis=-1)
            onehot = onehot + soft - jax.lax.stop_gradient(soft)
    raw = raw.astype(jnp.int32)
    return Decoded(space.canonicalize(raw), raw, onehot)


def decode_one(
    key: jax.Array,
    logits: jax.Array,
    space: Space,
    mode: str = "gumbel_max",
    temperature: float | jax.Array = 1.0,
) -> Decoded:
    """Decodes one architecture.

    Args:
      key: a ``jax.random.key`` (unused in ``"argmax"`` mode).
      logits: ``float32[V, Cmax]``; invalid choices are masked here.
      space: the search space (static).
      mode: one of :data:`DECODE_MODES`.
      temperature: Gumbel-softmax temperature (``"gumbel_softmax"`` mode only).

    Returns:
      A :class:`Decoded` with ``archs``/``raw`` ``int32[V]`` and ``onehot`` ``float32[V, Cmax]``.
    """
    _check_mode(mode)
    return _decode_masked(key, mask_logits(space, logits), space, mode, temperature)


def decode(
    key: jax.Array,
    logits: jax.Array,
    space: Space,
    mode: str = "gumbel_max",
    temperature: float | jax.Array = 1.0,
) -> Decoded:
    """Decodes a batch of architectures: :func:`decode_one` vmapped over the batch.

    Row ``i`` uses ``jax.random.split(key, n)[i]``, so it equals ``decode_one`` on that key.

    Args:
      key: a ``jax.random.key`` (unused in ``"argmax"`` mode).
      logits: ``float32[n, V, Cmax]``.
      space: the search space (static).
      mode: one of :data:`DECODE_MODES`.
      temperature: Gumbel-softmax temperature, a scalar.

    Returns:
      A :class:`Decoded` with ``archs``/``raw`` ``int32[n, V]`` and ``onehot``
      ``float32[n, V, Cmax]``.
    """
    _check_mode(mode)
    if logits.ndim != 3 or logits.shape[1:] != (space.num_variables, space.max_cardinality):
        raise ValueError(
            f"decode: logits must have shape [n, {space.num_variables}, {space.max_cardinality}], "
            f"got {tuple(logits.shape)}"
        )
    keys = jax.random.split(key, logits.shape[0])
    return jax.vmap(decode_one, in_axes=(0, 0, None, None, None))(
        keys, logits, space, mode, temperature
    )
