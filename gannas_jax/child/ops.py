"""Layer primitives shared by the arch-as-data children.

Everything here is a pure ``jnp`` function of NHWC arrays, safe to differentiate inside
``lax.scan`` / ``lax.map`` / ``lax.switch`` on XLA CPU: on that backend the autodiff *weight
gradient* of ``lax.conv`` inside control flow is 20-40x slower than at top level (upstream JAX
issue 12868). :func:`conv_same` therefore has a custom VJP made of forward convolutions, and the
pools are shifted slices (their gradients are pads), not ``reduce_window``.

Measured alternatives (7x7, 32->32 channels, 32x8x8 batch, XLA CPU): im2col as 49 slices +
concatenate + one matmul is correct and fast to differentiate but takes ~3 s to compile per conv
and runs 10x slower than ``lax.conv``; ``conv_general_dilated_patches`` + matmul runs ~30 ms.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Flax's default kernel init is lecun_normal: a normal truncated at +-2 std, rescaled so that the
# variance is 1/fan_in. This constant is the std of a standard normal truncated at +-2.
TRUNC_STD = 0.87962566103423978


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_same_nobias(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'same' convolution (odd kernel) whose gradients stay fast in control flow.

    The forward pass is ``lax.conv``. Autodiff of ``lax.conv`` emits the weight gradient as a
    convolution with unusual dimension numbers, which XLA CPU runs about 40x slower inside
    ``lax.scan`` / ``lax.map`` / ``lax.switch`` than at top level (measured: 140 ms vs 3.5 ms for
    a 7x7, 32->32 channel, 32x8x8 batch). Both gradients are written here as *forward*
    convolutions in canonical NHWC/HWIO form, with explicit transposes, which stay fast anywhere.
    On maps smaller than the kernel it is :func:`dense_conv`, a matmul, instead.

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
    FLOPs of the live channels (rounded up to blocks) instead of the maximum channels, with one
    branch for every channel count (measured, 7x7 on a 32x8x8 batch, forward and backward:
    8->8 0.78 ms, 32->32 6.4 ms as one convolution).

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
    arithmetic: XLA:CPU compiles each scalar op of a loop body as a kernel of its own, at ~5 ms of
    compile time each (measured: a division and a remainder per pair were ~20 kernels per conv
    branch of the default digits child).
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
    kernel: on the 4x4 maps of the default digits child's second stage a 7x7 kernel mostly reads
    padding, and XLA:CPU ran an 8->8 channel block's forward and backward passes there ~3.7x
    faster as this matmul (81 us against 302 us, 32 images, in a loop) than as a convolution.
    Differentiable (the kernel's gradient is the gather's scatter-add).
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
    """The convolution of :func:`conv_same_nobias`, as :func:`dense_conv` on maps smaller than
    the kernel (measured on the default digits program, in-process A/B with the block loops of
    the second stage's 4x4 maps only: compile 3.4-3.7 s against 3.9-4.0 s, and running time on
    two batches 2.2 s against 2.5 s and 3.2 s against 4.3 s, the second batch having 16-channel
    convs fed by convs there; with the image's convs too, no change beyond noise)."""
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
    """Stride-1 'same' convolution plus optional bias. ``[B,H,W,Ci] x [k,k,Ci,Co] -> [B,H,W,Co]``."""
    y = conv_same_nobias(x, kernel)
    if bias is not None:
        y = y + bias.reshape(1, 1, 1, -1)
    return y


def conv_strided(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Convolution with 'same'-style padding ``k // 2`` and a stride, as im2col + matmul.

    Matches ``nn.Conv(padding=k // 2, strides=stride)`` for odd ``k``.
    """
    y = conv_same(x, kernel)
    return y[:, ::stride, ::stride, :] if stride > 1 else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_same(x: jax.Array, window: int = 3) -> jax.Array:
    """``window x window`` stride-1 max pool with -inf 'same' padding. ``[B,H,W,C] -> [B,H,W,C]``.

    The gradient goes to the first maximum of each window in row-major order (like
    ``reduce_window``'s select-and-scatter). Autodiff of the chain of ``jnp.maximum`` would emit
    a tie-splitting select per window tap instead (measured: 9% of a digits child step).
    """
    return _max_pool(x, window)


def _max_pool(x, window):
    _, h, w, _ = x.shape
    p = window // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf)
    out = xp[:, 0:h, 0:w, :]
    for i in range(window):
        for j in range(window):
            if i or j:
                out = jnp.maximum(out, xp[:, i : i + h, j : j + w, :])
    return out


def _max_pool_fwd(x, window):
    out = _max_pool(x, window)
    return out, (x, out)


def _max_pool_bwd(window, res, g):
    x, out = res
    _, h, w, _ = x.shape
    p = window // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf)
    # tap k = i * window + j of the first maximum of each output window
    arg = jnp.full(out.shape, -1, jnp.int32)
    for k in reversed(range(window * window)):
        i, j = divmod(k, window)
        arg = jnp.where(xp[:, i : i + h, j : j + w, :] == out, k, arg)
    # input pixel (y, x) sits at tap (i, j) of output window (y - i + p, x - j + p)
    pad = ((0, 0), (p, p), (p, p), (0, 0))
    argp, gp = jnp.pad(arg, pad, constant_values=-1), jnp.pad(g, pad)
    dx = jnp.zeros_like(x)
    for k in range(window * window):
        i, j = divmod(k, window)
        sl = (
            slice(None),
            slice(2 * p - i, 2 * p - i + h),
            slice(2 * p - j, 2 * p - j + w),
            slice(None),
        )
        dx = dx + jnp.where(argp[sl] == k, gp[sl], 0.0)
    return (dx,)


max_pool_same.defvjp(_max_pool_fwd, _max_pool_bwd)


def _box_sum(x: jax.Array, window: int) -> jax.Array:
    """Sum over a ``window x window`` neighbourhood with zero 'same' padding, done separably."""
    _, h, w, _ = x.shape
    p = window // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    rows = sum(xp[:, i : i + h, :, :] for i in range(window))
    return sum(rows[:, :, j : j + w, :] for j in range(window))


def _pool_count(x: jax.Array, window: int) -> jax.Array:
    """In-image pixels under each window, ``[1, H, W, 1]`` (a constant of the shape)."""
    _, h, w, _ = x.shape
    return _box_sum(jnp.ones((1, h, w, 1), x.dtype), window)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def avg_pool_same(x: jax.Array, window: int = 3, count_include_pad: bool = True) -> jax.Array:
    """``window x window`` stride-1 average pool with zero 'same' padding.

    With ``count_include_pad`` the divisor is always ``window**2`` (PyTorch's default); without,
    it is the number of in-image pixels under the window (NAS-Bench-201's pool).

    The window sum is separable (a row sum, then a column sum) and self-adjoint (a symmetric
    window with zero padding), so the gradient is the same box sum of the cotangent; autodiff of
    the shifted slices would emit one pad per window tap instead (measured: the pool's backward
    pass was 10% of a digits child step).
    """
    if count_include_pad:
        return _box_sum(x, window) / (window * window)
    return _box_sum(x, window) / _pool_count(x, window)


def _avg_pool_fwd(x, window, count_include_pad):
    return avg_pool_same(x, window, count_include_pad), None


def _avg_pool_bwd(window, count_include_pad, _, g):
    if count_include_pad:
        return (_box_sum(g, window) / (window * window),)
    return (_box_sum(g / _pool_count(g, window), window),)


avg_pool_same.defvjp(_avg_pool_fwd, _avg_pool_bwd)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max pool, 'valid' (odd trailing rows/columns dropped). ``[B,H,W,C]``.

    The gradient goes to the first maximum of each block in row-major order (like
    ``reduce_window``); autodiff of the reduction would count and split ties instead (measured:
    ~2% of a digits child step).
    """
    return _blocks_2x2(x).max(axis=(2, 4))


def _blocks_2x2(x):
    b, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(b, h // 2, 2, w // 2, 2, c)


def _max_pool_2x2_fwd(x):
    out = max_pool_2x2(x)
    return out, (x, out)


def _max_pool_2x2_bwd(res, g):
    x, out = res
    b, h, w, c = x.shape
    x6 = _blocks_2x2(x)
    free = jnp.ones(out.shape, bool)
    rows = []
    for di in range(2):
        cols = []
        for dj in range(2):
            hit = free & (x6[:, :, di, :, dj, :] == out)
            free = free & ~hit
            cols.append(jnp.where(hit, g, 0.0))
        rows.append(jnp.stack(cols, axis=3))  # [B, h2, w2, 2, C]
    dx = jnp.stack(rows, axis=2).reshape(b, h // 2 * 2, w // 2 * 2, c)  # [B, h2, 2, w2, 2, C]
    return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 average pool, 'valid'. ``[B,H,W,C]``."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


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
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Channel-masked BatchNorm over ``[B, H, W, C]``, matching ``flax.linen.BatchNorm``.

    Masked-out channels (``mask`` False) output exactly zero and keep their running statistics,
    so a max-width BN behaves like the BN of the exact-width network on its live channels.

    Args:
      x: ``[B, H, W, C]``.
      scale, bias, mean, var: ``[C]``.
      train: use batch statistics (and return updated running ones) or running statistics.
      mask: ``bool[C]`` live channels, or None for all.
      momentum: running-average momentum (flax convention: ``new = m * old + (1 - m) * batch``).
      eps: variance epsilon.

    Returns:
      ``(y [B, H, W, C], new_mean [C], new_var [C])``.
    """
    c = x.shape[-1]
    if train:
        mu = jnp.mean(x, axis=(0, 1, 2))
        # flax computes the variance as E[x^2] - E[x]^2, clipped at 0; do the same for parity.
        v = jnp.maximum(jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(mu), 0.0)
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
    (the exact-size layer's, not the max), from one draw of truncated normals.

    One draw is one random-number kernel for XLA to compile, instead of one per shape (measured on
    the default digits training program: six separate draws cost ~2 s of its ~5 s compile).
    """
    sizes = [int(np.prod(s)) for s in shapes]
    z = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32)
    out, off = [], 0
    for shape, n, fan in zip(shapes, sizes, fan_ins):
        scale = lax.rsqrt(jnp.maximum(jnp.asarray(fan), 1).astype(jnp.float32)) / TRUNC_STD
        out.append(z[off : off + n].reshape(shape) * scale)
        off += n
    return out
