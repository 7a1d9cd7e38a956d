"""Per-step noise streams of the adversarial step (generator ``z``, Gumbel noise, batch indices).

``GanConfig.noise == "hash"`` draws every stream from a counter-based integer hash seeded by one
``jax.random.bits`` call per step, which is cheap on CPU inside a scan; ``"threefry"`` uses
``jax.random`` directly. Both are deterministic given the key.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gannas_jax.gan.config import GanConfig
from gannas_jax.gan.encoding import encoding
from gannas_jax.spaces.base import Space


def _avalanche(x: jax.Array) -> jax.Array:
    """A 32-bit integer finalizer with full avalanche (``lowbias32``, C. Wellons)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


class _Noise:
    """The noise of one training step: ``num_streams`` independent streams from one key.

    With ``config.noise == "hash"`` stream ``i`` is ``h(counter; s_i0, s_i1)`` with the seeds
    drawn by a single ``jax.random.bits`` call; with ``"threefry"`` each stream is a
    ``jax.random.split`` subkey used with ``jax.random`` directly.
    """

    def __init__(self, key: jax.Array, kind: str, num_streams: int):
        self.kind = kind
        if kind == "hash":
            self.seeds = jax.random.bits(key, (num_streams, 2), jnp.uint32)
        else:
            self.keys = jax.random.split(key, num_streams)

    def _bits(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        size = math.prod(shape)
        x = (
            jax.lax.iota(jnp.uint32, size).reshape(shape) * jnp.uint32(0x9E3779B9)
            + self.seeds[i, 0]
        )
        return _avalanche(_avalanche(x) ^ self.seeds[i, 1])

    def _open_uniform(self, i, shape):
        # 23 random bits, centred in their bin: k + 0.5 needs 24 significant bits, so it is exact
        # in float32 and the result lies strictly inside (0, 1) (24 bits would round to 1.0).
        return ((self._bits(i, shape) >> 9).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-23)

    def uniform(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        if self.kind == "hash":
            return self._open_uniform(i, shape)
        return jax.random.uniform(self.keys[i], shape, jnp.float32)

    def normal(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        if self.kind == "hash":
            u = self._open_uniform(i, shape)
            return jnp.float32(math.sqrt(2.0)) * jax.lax.erf_inv(2.0 * u - 1.0)
        return jax.random.normal(self.keys[i], shape, jnp.float32)

    def gumbel(self, i: int, shape: tuple[int, ...]) -> jax.Array:
        if self.kind == "hash":
            return -jnp.log(-jnp.log(self._open_uniform(i, shape)))
        return jax.random.gumbel(self.keys[i], shape, jnp.float32)

    def randint(self, i: int, shape: tuple[int, ...], maxval: jax.Array) -> jax.Array:
        """Uniform ints in ``[0, maxval)``, ``maxval`` a traced positive int."""
        if self.kind == "hash":
            # 23-bit uniforms: relative bias below maxval * 2**-23.
            u = self._open_uniform(i, shape)
            return jnp.minimum((u * maxval.astype(jnp.float32)).astype(jnp.int32), maxval - 1)
        return jax.random.randint(self.keys[i], shape, 0, maxval)


def _streams(config: GanConfig, key: jax.Array) -> tuple[_Noise, jax.Array]:
    """The noise streams and the dropout key of the step with key ``key``."""
    noise_key, drop_key = jax.random.split(key)
    # Streams: 0 z, 1 Gumbel, then per critic update: real rows, GP weights, extra z, extra Gumbel.
    return _Noise(noise_key, config.noise, 2 + 4 * config.n_critic), drop_key


def _draws(space: Space, config: GanConfig, noise: _Noise) -> tuple[jax.Array, jax.Array]:
    """The generator batch's noise ``z [B, z_dim]`` and Gumbel noise ``[B, N]`` of a step."""
    b = config.batch_size
    return noise.normal(0, (b, config.z_dim)), noise.gumbel(1, (b, encoding(space).size))
