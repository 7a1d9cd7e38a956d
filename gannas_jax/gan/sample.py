"""Sampling architectures from the generator and scoring them with the discriminator."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gannas_jax.decode import decode
from gannas_jax.gan.state import GanState
from gannas_jax.gan.step import TRACE_COUNTS, _real_onehot


def _bucket(n: int) -> int:
    """Pads batch sizes to powers of two (at least 64) so varying sizes compile few programs."""
    return max(64, 1 << (int(n) - 1).bit_length())


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _generate(g_params, key, space, config, n):
    TRACE_COUNTS["generate"] += 1
    z_key, decode_key = jax.random.split(key)
    z = jax.random.normal(z_key, (n, config.z_dim), jnp.float32)
    logits = config.generator(space).apply(g_params, z)
    return decode(decode_key, logits, space, config.sample_mode).archs


def generate(state: GanState, key: jax.Array, n: int) -> jax.Array:
    """Samples ``n`` canonical architectures from the generator.

    Args:
      state: a GAN state.
      key: a ``jax.random.key``.
      n: number of architectures (compiled per power-of-two bucket of ``n``).

    Returns:
      ``int32[n, V]`` canonical codes, decoded with ``config.sample_mode``.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"generate: n must be a non-negative int, got {n!r}")
    out = _generate(state.g_params, key, state.space, state.config, _bucket(max(int(n), 1)))
    return out[: int(n)]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _discriminate(d_params, archs, space, config):
    TRACE_COUNTS["discriminate"] += 1
    return config.discriminator(space).apply(
        d_params, _real_onehot(space, archs), deterministic=True
    )


def discriminate(state: GanState, archs: Any) -> jax.Array:
    """Discriminator scores (logits) of architectures; higher means closer to the real set.

    Args:
      state: a GAN state.
      archs: ``int[n, V]`` codes (canonicalized before scoring).

    Returns:
      ``float32[n]``.
    """
    space = state.space
    if isinstance(archs, jax.core.Tracer):
        raise TypeError("discriminate: call it on concrete architectures (it jits internally)")
    arr = space.validate(archs)
    if arr.ndim != 2:
        raise ValueError(
            f"discriminate: archs must have shape [n, {space.num_variables}], got {arr.shape}"
        )
    n = arr.shape[0]
    padded = np.zeros((_bucket(max(n, 1)), space.num_variables), np.int32)
    padded[:n] = arr
    return _discriminate(state.d_params, padded, space, state.config)[:n]
