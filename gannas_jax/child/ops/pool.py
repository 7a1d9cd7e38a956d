"""Pools as shifted slices with custom VJPs (cheap to differentiate inside control flow).

``reduce_window`` and the autodiff of a chain of slices both emit per-tap work in the backward
pass; these VJPs route the gradient directly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_same(x: jax.Array, window: int = 3) -> jax.Array:
    """``window x window`` stride-1 max pool with -inf 'same' padding. ``[B,H,W,C] -> [B,H,W,C]``.

    The gradient goes to the first maximum of each window in row-major order (like
    ``reduce_window``'s select-and-scatter). Autodiff of the chain of ``jnp.maximum`` would emit
    a tie-splitting select per window tap instead.
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
    the shifted slices would emit one pad per window tap instead.
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
    ``reduce_window``); autodiff of the reduction would count and split ties instead.
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
