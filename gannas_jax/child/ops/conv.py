"""Convolutions whose gradients stay fast inside XLA:CPU control flow.

On XLA:CPU the autodiff weight gradient of ``lax.conv`` inside ``lax.scan`` / ``lax.map`` /
``lax.switch`` takes a slow path (JAX issue 12868), so every convolution here has a custom VJP
made of forward convolutions, or is a matmul where that spends fewer FLOPs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_same_nobias(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'same' convolution (odd kernel) whose gradients stay fast in control flow.

    Autodiff of ``lax.conv`` emits a weight gradient that XLA:CPU runs far slower inside
    ``lax.scan`` / ``lax.map`` / ``lax.switch`` than at top level (JAX issue 12868), so both
    gradients are written as *forward* convolutions in canonical NHWC/HWIO form. On maps smaller
    than the kernel it is :func:`dense_conv`, a matmul, instead.

    Args:
      x: ``[B, H, W, Ci]``.
      kernel: ``[k, k, Ci, Co]`` (HWIO).

    Returns:
      ``[B, H, W, Co]``.
    """
    return _conv_auto(x, kernel)


def _conv_fwd(x, kernel):
    return _conv_auto(x, kernel), (x, kernel)


def _conv_auto_bwd(res, g):
    if _dense_is_cheaper(*res):
        return jax.vjp(dense_conv, *res)[1](g)
    return _conv_bwd(res, g)


def _conv_bwd(res, g):
    x, kernel = res
    k = kernel.shape[0]
    p = k // 2
    # d/dx: correlate g with the spatially flipped kernel, in/out channels swapped.
    dx = _conv(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
    # d/dkernel[dy, dx, ci, co] = sum_{b,h,w} xpad[b, h+dy, w+dx, ci] g[b, h, w, co]: a 'valid'
    # convolution with ci as the batch, the image batch as the contracted feature, g as kernel.
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    lhs = jnp.transpose(xp, (3, 1, 2, 0))  # [Ci, Hp, Wp, B]
    rhs = jnp.transpose(g, (1, 2, 0, 3))  # [H, W, B, Co]
    dk = lax.conv_general_dilated(
        lhs, rhs, (1, 1), "VALID", dimension_numbers=_DN
    )  # [Ci, k, k, Co]
    return dx, jnp.transpose(dk, (1, 2, 0, 3))


conv_same_nobias.defvjp(_conv_fwd, _conv_auto_bwd)


def conv_blocks(
    x: jax.Array, kernel: jax.Array, n_in: jax.Array, n_out: jax.Array, bi: int, bo: int
) -> jax.Array:
    """:func:`conv_same_nobias` over the live channel blocks only, however many are live.

    The input channels are ``x.shape[-1] / bi`` blocks of ``bi`` and the output channels
    ``kernel.shape[-1] / bo`` blocks of ``bo``; only the first ``n_in`` input blocks and the first
    ``n_out`` output blocks (traced ints) are computed, one small convolution per block pair in a
    loop, and the other output channels are zero. Inside a ``lax.switch`` branch this spends the
    FLOPs of the live channels (rounded up to blocks) with one branch for every channel count.

    Args:
      x: ``[B, H, W, Ci]``, zero beyond the live input channels.
      kernel: ``[k, k, Ci, Co]``.
      n_in, n_out: live input and output blocks (int32 scalars).
      bi, bo: block sizes (static), dividing ``Ci`` and ``Co``.
    """
    offsets, count = block_pairs(n_in, n_out, x.shape[-1] // bi, kernel.shape[-1] // bo, bi, bo)
    return conv_block_pairs(x, kernel, offsets, count, bi, bo)


def block_pairs(n_in: jax.Array, n_out: jax.Array, max_in: int, max_out: int, bi: int, bo: int):
    """The channel offsets of the live block pairs of :func:`conv_block_pairs`.

    Args:
      n_in, n_out: live input and output blocks (int arrays of any equal shape ``S``).
      max_in, max_out: the most blocks there can be (static).
      bi, bo: block sizes (static).

    Returns:
      ``(offsets int32[*S, 2, max_in * max_out], count int32[*S])``: pair ``p < count`` reads input
      channels ``offsets[0, p]:+bi`` and writes output channels ``offsets[1, p]:+bo``.
    """
    n_in = jnp.maximum(jnp.asarray(n_in, jnp.int32), 1)
    p = jnp.arange(max_in * max_out, dtype=jnp.int32).reshape((1,) * n_in.ndim + (-1,))
    n = n_in[..., None]
    offsets = jnp.stack([(p % n) * bi, (p // n) * bo], axis=-2)
    return offsets, n_in * jnp.asarray(n_out, jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def conv_block_pairs(
    x: jax.Array, kernel: jax.Array, offsets: jax.Array, count: jax.Array, bi: int, bo: int
) -> jax.Array:
    """:func:`conv_blocks` with its block pairs given as :func:`block_pairs` offsets.

    Computed once per slot outside the loops, the offsets leave the loop bodies no integer
    arithmetic, which XLA:CPU would compile as one kernel per scalar op.
    """
    return _pairs(x, kernel, offsets, count, bi, bo)


def _tap_index(h: int, w: int, k: int) -> np.ndarray:
    """``int32[H*W, H*W]``: the kernel tap ``dy * k + dx`` linking each input position to each
    output position of a stride-1 'same' ``k x k`` convolution, or ``k * k`` where none does."""
    p = k // 2
    hi, wi, ho, wo = np.meshgrid(
        np.arange(h), np.arange(w), np.arange(h), np.arange(w), indexing="ij"
    )
    dy, dx = hi - ho + p, wi - wo + p
    ok = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
    return np.where(ok, dy * k + dx, k * k).reshape(h * w, h * w).astype(np.int32)


def dense_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """:func:`conv_same_nobias` as one matmul by the convolution's dense matrix.

    The ``[H*W*Ci, H*W*Co]`` matrix is gathered from the kernel's taps (zero where no tap links
    two positions). It spends ``(H*W)^2 * Ci * Co`` multiply-adds per image against the
    convolution's ``H*W * k^2 * Ci * Co``, so it is the cheaper one on maps smaller than the
    kernel, where the convolution mostly reads padding. Differentiable (the kernel's gradient is
    the gather's scatter-add).
    """
    b, h, w, ci = x.shape
    k, co = kernel.shape[0], kernel.shape[3]
    taps = jnp.concatenate([kernel.reshape(k * k, ci * co), jnp.zeros((1, ci * co), kernel.dtype)])
    dense = taps[_tap_index(h, w, k)].reshape(h * w, h * w, ci, co)
    dense = dense.transpose(0, 2, 1, 3).reshape(h * w * ci, h * w * co)
    return (x.reshape(b, h * w * ci) @ dense).reshape(b, h, w, co)


def _dense_is_cheaper(x: jax.Array, kernel: jax.Array) -> bool:
    """Whether :func:`dense_conv` spends fewer multiply-adds than the convolution (static)."""
    return x.shape[1] * x.shape[2] < kernel.shape[0] * kernel.shape[1]


def _conv_auto(x, kernel):
    """The convolution of :func:`conv_same_nobias`: :func:`dense_conv` on maps smaller than the
    kernel, ``lax.conv`` otherwise."""
    return dense_conv(x, kernel) if _dense_is_cheaper(x, kernel) else _conv(x, kernel)


def _pairs(x, kernel, offsets, count, bi, bo):
    k = kernel.shape[0]

    def body(p, out):
        ci, co = offsets[0, p], offsets[1, p]
        xi = lax.dynamic_slice_in_dim(x, ci, bi, axis=3)
        wij = lax.dynamic_slice(kernel, (0, 0, ci, co), (k, k, bi, bo))
        yj = lax.dynamic_slice_in_dim(out, co, bo, axis=3) + _conv_auto(xi, wij)
        return lax.dynamic_update_slice_in_dim(out, yj, co, axis=3)

    out = jnp.zeros(x.shape[:3] + kernel.shape[3:], x.dtype)
    return lax.fori_loop(0, count, body, out)


def _pairs_fwd(x, kernel, offsets, count, bi, bo):
    return _pairs(x, kernel, offsets, count, bi, bo), (x, kernel, offsets, count)


def _pairs_bwd(bi, bo, res, g):
    x, kernel, offsets, count = res
    k = kernel.shape[0]

    def body(p, carry):
        dx, dk = carry
        ci, co = offsets[0, p], offsets[1, p]
        xi = lax.dynamic_slice_in_dim(x, ci, bi, axis=3)
        wij = lax.dynamic_slice(kernel, (0, 0, ci, co), (k, k, bi, bo))
        gj = lax.dynamic_slice_in_dim(g, co, bo, axis=3)
        dxi, dwij = _conv_auto_bwd((xi, wij), gj)
        dx = lax.dynamic_update_slice_in_dim(
            dx, lax.dynamic_slice_in_dim(dx, ci, bi, axis=3) + dxi, ci, axis=3
        )
        return dx, lax.dynamic_update_slice(dk, dwij, (0, 0, ci, co))

    dx, dk = lax.fori_loop(0, count, body, (jnp.zeros_like(x), jnp.zeros_like(kernel)))
    return dx, dk, None, None


conv_block_pairs.defvjp(_pairs_fwd, _pairs_bwd)


def conv_same(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Stride-1 'same' convolution plus an optional bias: ``[B,H,W,Ci] x [k,k,Ci,Co]`` to
    ``[B,H,W,Co]``."""
    y = conv_same_nobias(x, kernel)
    if bias is not None:
        y = y + bias.reshape(1, 1, 1, -1)
    return y


def conv_strided(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Convolution with padding ``k // 2`` and a stride: the 'same' convolution, subsampled.

    Matches ``nn.Conv(padding=k // 2, strides=stride)`` for odd ``k``.
    """
    y = conv_same(x, kernel)
    return y[:, ::stride, ::stride, :] if stride > 1 else y
