"""BatchNorm with channel masks, and Flax's lecun-normal init with traced fan-ins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Flax's default kernel init is lecun_normal: a normal truncated at +-2 std, rescaled so that the
# variance is 1/fan_in. This constant is the std of a standard normal truncated at +-2.
TRUNC_STD = 0.87962566103423978


def batch_norm(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    train: bool,
    mask: jax.Array | None = None,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Channel-masked BatchNorm over ``[B, H, W, C]``, matching ``flax.linen.BatchNorm``.

    Masked-out channels (``mask`` False) output exactly zero and keep their running statistics,
    so a max-width BN behaves like the BN of the live-width network on its live channels.

    Args:
      x: ``[B, H, W, C]``.
      scale, bias, mean, var: ``[C]``.
      train: use batch statistics (and return updated running ones) or running statistics.
      mask: ``bool[C]`` live channels, or None for all.
      momentum: running-average momentum (flax convention: ``new = m * old + (1 - m) * batch``).
      eps: variance epsilon.
      axis_name: in training mode under data parallelism, the device axis whose shards make up
        the batch: the statistics are then those of the global batch (equal shares assumed).

    Returns:
      ``(y [B, H, W, C], new_mean [C], new_var [C])``.
    """
    c = x.shape[-1]
    if train:
        mu = jnp.mean(x, axis=(0, 1, 2))
        m2 = jnp.mean(jnp.square(x), axis=(0, 1, 2))
        if axis_name is not None:
            mu, m2 = lax.pmean((mu, m2), axis_name)
        # flax computes the variance as E[x^2] - E[x]^2, clipped at 0; do the same for parity.
        v = jnp.maximum(m2 - jnp.square(mu), 0.0)
        new_mean = momentum * mean + (1.0 - momentum) * mu
        new_var = momentum * var + (1.0 - momentum) * v
    else:
        mu, v = mean, var
        new_mean, new_var = mean, var
    y = (x - mu.reshape(1, 1, 1, c)) * lax.rsqrt(v + eps).reshape(1, 1, 1, c)
    y = y * scale.reshape(1, 1, 1, c) + bias.reshape(1, 1, 1, c)
    if mask is not None:
        y = jnp.where(mask.reshape(1, 1, 1, c), y, 0.0)
        new_mean = jnp.where(mask, new_mean, mean)
        new_var = jnp.where(mask, new_var, var)
    return y, new_mean, new_var


def lecun_normal_many(
    key: jax.Array, shapes: list[tuple[int, ...]], fan_ins: list
) -> list[jax.Array]:
    """Flax's default kernel init (lecun-normal) of several kernels, each with a *traced* fan-in
    (the live layer's, not the max-size one), from one draw of truncated normals: one
    random-number kernel for XLA to compile instead of one per shape.
    """
    sizes = [int(np.prod(s)) for s in shapes]
    z = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32)
    out, off = [], 0
    for shape, n, fan in zip(shapes, sizes, fan_ins, strict=True):
        scale = lax.rsqrt(jnp.maximum(jnp.asarray(fan), 1).astype(jnp.float32)) / TRUNC_STD
        out.append(z[off : off + n].reshape(shape) * scale)
        off += n
    return out
