"""One stage of the sequential child: its slots' op branches and the slot loop's custom VJP.

Each slot picks its op with ``lax.switch`` over :func:`stage_branches`. The conv branches come in
two implementations, one per backend:

* ``'blocked'`` (``lax.map``, CPU, where a switch runs only its taken branch): a conv fed by a
  conv loops over its live channel blocks (:func:`~gannas_jax.child.ops.conv_block_pairs`), so it
  spends about its live channels' FLOPs; a conv that reads the image is one small convolution.
  Every kernel size shares the branch: a ``kmax x kmax`` conv with the taps beyond the slot's
  kernel masked.
* ``'masked'`` (``vmap``, accelerators, where a switch computes every branch): one conv at the
  maximum size with kernel and channel masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gannas_jax.child import ops
from gannas_jax.child.sequential.geometry import geometry
from gannas_jax.spaces.sequential import CONV, STAGE_OPS, SequentialSpace

CONV_IMPLS = ("blocked", "masked")


class BlockPairs(NamedTuple):
    """The live channel-block pairs of blocked convs (:func:`~gannas_jax.child.ops.block_pairs`)."""

    offsets: jax.Array  # int32[..., 2, pairs]: input and output channel offset of each pair
    count: jax.Array  # int32[...]: live pairs


class SlotCodes(NamedTuple):
    """What a slot's branch reads of the architecture (``[L]`` per stage, scalars per slot)."""

    op: jax.Array  # op code (STAGE_OPS)
    ci: jax.Array  # index into Geometry.cin_values of the slot's input channels
    k: jax.Array  # kernel-size code
    co: jax.Array  # channel code
    pairs: BlockPairs | None  # blocked convs only


class StagePlan(NamedTuple):
    """One stage's slots, decoded from the codes (see :func:`stage_scan`)."""

    branch: jax.Array  # int32[L]: the switch branch of each slot
    slots: SlotCodes  # [L] each
    lo: jax.Array  # int32[]: slots before lo have no weights upstream (no backward pass)
    hi: jax.Array  # int32[]: slots from hi on are empty (canonical codes put them last)


class Branch(NamedTuple):
    """One op of the slot switch."""

    fn: Callable  # fn(h, w, b, slot: SlotCodes) -> h
    # The part of the slot's stacked kernel and bias it reads: None (no weights), 'full', or
    # (o, kk, cin, cout) for kernel[o:o+kk, o:o+kk, :cin, :cout] and bias[:cout].
    window: None | str | tuple[int, int, int, int]
    input_grad: bool  # False: nothing upstream has weights, so skip the input gradient


# The branch of each non-conv op: ops that cost the same share one (each branch compiles three
# times: forward, backward and the backward's recomputed forward).
_SIMPLE = {"none": 0, "relu": 0, "sigmoid": 1, "tanh": 1, "max_pool": 2, "avg_pool": 3}
N_SIMPLE = 4


def _kernel_masks(space: SequentialSpace) -> np.ndarray:
    """``float32[kernel sizes, kmax, kmax]``: the centred taps of each kernel size."""
    kmax = geometry(space).kmax
    kmask = np.zeros((len(space.kernel_sizes), kmax, kmax), np.float32)
    for i, kk in enumerate(space.kernel_sizes):
        o = (kmax - kk) // 2
        kmask[i, o : o + kk, o : o + kk] = 1.0
    return kmask


def _simple_branches(cm: int, cin_values: tuple[int, ...]) -> list[Branch]:
    # Tables the branches index are numpy constants: the branches run under the stage's custom
    # VJP, which must not close over traced values.
    cin_np = np.asarray(cin_values, np.int32)
    relu, sigmoid = STAGE_OPS.index("relu"), STAGE_OPS.index("sigmoid")

    def none_or_relu(h, w, b, slot):
        # jax.nn.relu's gradient (0 at h == 0), which jnp.maximum(h, 0) would split at ties
        return jnp.where((slot.op == relu) & (h <= 0.0), 0.0, h)

    def sigmoid_or_tanh(h, w, b, slot):
        # sigmoid(h) = (1 + tanh(h / 2)) / 2: one transcendental for both ops
        is_sig = slot.op == sigmoid
        half = jnp.where(is_sig, 0.5, 1.0)
        y = jnp.tanh(h * half) * half + jnp.where(is_sig, 0.5, 0.0)
        # sigmoid(0) = 0.5: re-zero the padding channels
        live = jnp.arange(cm) < jnp.asarray(cin_np)[slot.ci]
        return jnp.where(live.reshape(1, 1, 1, cm), y, 0.0)

    return [
        Branch(none_or_relu, None, True),
        Branch(sigmoid_or_tanh, None, True),
        Branch(lambda h, w, b, slot: ops.max_pool_same(h), None, True),
        Branch(lambda h, w, b, slot: ops.avg_pool_same(h), None, True),
    ]


def _cin_buckets(space: SequentialSpace) -> tuple[tuple[int, ...], np.ndarray]:
    """Blocked convs' input buckets (the image's channels, and the maximum) and the bucket of
    each entry of ``cin_values``."""
    g = geometry(space)
    buckets = tuple(sorted({g.cin, g.cm}))
    of = [min(i for i, b in enumerate(buckets) if b >= c) for c in g.cin_values]
    return buckets, np.asarray(of, np.int32)


def _blocked_branches(space: SequentialSpace) -> list[Branch]:
    g = geometry(space)
    cm, kmax, blk = g.cm, g.kmax, g.block
    cs_np, kmask = np.asarray(space.channels, np.int32), _kernel_masks(space)

    def conv(cin):
        image = cin == g.cin and cin != cm  # reads the image: few channels, one convolution

        def fn(h, wk, bk, slot):
            # The input channels beyond the live count are exactly zero, so their weights add 0
            # and get a 0 gradient: only the output channels need a mask.
            if cm > min(space.channels):
                m_out = (jnp.arange(cm) < jnp.asarray(cs_np)[slot.co]).astype(wk.dtype)
                wk, bk = wk * m_out.reshape(1, 1, 1, cm), bk * m_out
            wk = wk * jnp.asarray(kmask)[slot.k].reshape(kmax, kmax, 1, 1)
            if image:
                return ops.conv_same(h[..., :cin], wk, bk)
            pairs = slot.pairs
            y = ops.conv_block_pairs(h[..., :cin], wk, pairs.offsets, pairs.count, blk, blk)
            return y + bk.reshape(1, 1, 1, -1)

        # A conv on the image's channels has no weights upstream unless a conv can output as many.
        return Branch(fn, (0, kmax, cin, cm), not (cin == g.cin and cin not in space.channels))

    return [conv(cin) for cin in _cin_buckets(space)[0]]


def _masked_branch(space: SequentialSpace) -> Branch:
    g = geometry(space)
    cm, kmax = g.cm, g.kmax
    cin_np, cs_np = np.asarray(g.cin_values, np.int32), np.asarray(space.channels, np.int32)
    kmask = _kernel_masks(space)

    def masked(h, w, b, slot):
        m_in = (jnp.arange(cm) < jnp.asarray(cin_np)[slot.ci]).astype(w.dtype)
        m_out = (jnp.arange(cm) < jnp.asarray(cs_np)[slot.co]).astype(w.dtype)
        wk = (
            w
            * jnp.asarray(kmask)[slot.k].reshape(kmax, kmax, 1, 1)
            * m_in.reshape(1, 1, cm, 1)
            * m_out.reshape(1, 1, 1, cm)
        )
        return ops.conv_same(h, wk, b * m_out)

    return Branch(masked, "full", True)


def stage_branches(space: SequentialSpace, conv_impl: str, narrow: bool = False) -> list[Branch]:
    """The slot switch's branches (the narrow child, which has no convs, has no conv branch)."""
    g = geometry(space)
    branches = _simple_branches(g.cin if narrow else g.cm, g.cin_values)
    if narrow:
        return branches
    if conv_impl == "blocked":
        return branches + _blocked_branches(space)
    return branches + [_masked_branch(space)]


def branch_index(
    space: SequentialSpace, conv_impl: str, narrow: bool, op: jax.Array, ci: jax.Array
) -> jax.Array:
    """The :func:`stage_branches` index of slots with op codes ``op`` and input channels ``ci``."""
    table = np.zeros(len(STAGE_OPS), np.int32)  # the conv code maps to 0 (never taken if narrow)
    for name, i in _SIMPLE.items():
        table[STAGE_OPS.index(name)] = i
    simple = jnp.asarray(table)[op]
    if narrow:
        return simple
    conv = N_SIMPLE
    if conv_impl == "blocked":
        conv = N_SIMPLE + jnp.asarray(_cin_buckets(space)[1])[ci]
    return jnp.where(op == CONV, conv, simple)


def block_pairs(space: SequentialSpace, ci: jax.Array, co: jax.Array) -> BlockPairs:
    """The live block pairs of the blocked conv of slots with input channels ``ci`` and channel
    code ``co``, computed once per stage, outside the switch and the block loops."""
    g = geometry(space)
    blk, nb = g.block, g.cm // g.block
    n_in = (jnp.asarray(g.cin_values, jnp.int32)[ci] + blk - 1) // blk
    n_out = (jnp.asarray(space.channels, jnp.int32)[co] + blk - 1) // blk
    return BlockPairs(*ops.block_pairs(n_in, n_out, nb, nb, blk, blk))


def stage_scan(branches: list[Branch]) -> Callable:
    """``stage(h, kern, bias, plan: StagePlan) -> h``: the slots of one stage.

    ``kern [L, K, K, Cm, Cm]`` and ``bias [L, Cm]`` are the stage's stacked weights (None in the
    narrow child). The forward pass loops over the live slots ``[0, hi)`` and saves each one's
    input; each branch slices its own weight window out of the stacked arrays. The custom
    backward pass loops back over ``[lo, hi)`` and runs, in the one taken branch, that branch's
    forward and VJP together. Autodiff of a switch would instead recompute the forward in a
    second switch that outputs every branch's residuals, zero-filled for the untaken ones. Slots
    before ``lo`` have no weights upstream, so the cotangent passes them untouched: the stage's
    input cotangent is only the true gradient where something upstream has weights.
    """

    def take(window, kern, bias, j):
        if window is None:
            return None, None
        if window == "full":
            return (
                lax.dynamic_index_in_dim(kern, j, keepdims=False),
                lax.dynamic_index_in_dim(bias, j, keepdims=False),
            )
        o, kk, cin, cout = window
        return (
            lax.dynamic_slice(kern, (j, o, o, 0, 0), (1, kk, kk, cin, cout))[0],
            lax.dynamic_slice(bias, (j, 0), (1, cout))[0],
        )

    def forward(br):
        def run(h, kern, bias, j, slot):
            w, b = take(br.window, kern, bias, j)
            return br.fn(h, w, b, slot)

        return run

    forwards = [forward(br) for br in branches]

    def at(xs, j):  # slot j's entries of per-slot arrays
        return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, j, keepdims=False), xs)

    def run(h, kern, bias, plan, save):
        def body(j, carry):
            h, hs = carry
            if save:
                hs = lax.dynamic_update_index_in_dim(hs, h, j, 0)
            return lax.switch(at(plan.branch, j), forwards, h, kern, bias, j, at(plan.slots, j)), hs

        hs = jnp.zeros((plan.branch.shape[0],) + h.shape, h.dtype) if save else None
        return lax.fori_loop(0, plan.hi, body, (h, hs))

    @jax.custom_vjp
    def stage(h, kern, bias, plan):
        return run(h, kern, bias, plan, save=False)[0]

    def fwd(h, kern, bias, plan):
        out, hs = run(h, kern, bias, plan, save=True)
        return out, (hs, kern, bias, plan)

    def pullback(br):
        def pull(h, kern, bias, j, slot, g):
            if kern is None:  # the narrow child: no stage weights
                zw = zb = None
            else:
                zw, zb = (
                    jnp.zeros(kern.shape[1:], kern.dtype),
                    jnp.zeros(bias.shape[1:], bias.dtype),
                )
            if br.window is None:
                (dh,) = jax.vjp(lambda h: br.fn(h, None, None, slot), h)[1](g)
                return dh, zw, zb
            w, b = take(br.window, kern, bias, j)
            if br.input_grad:
                dh, dw, db = jax.vjp(lambda h, w, b: br.fn(h, w, b, slot), h, w, b)[1](g)
            else:  # nothing upstream has weights: the input cotangent is never used
                dh, (dw, db) = g, jax.vjp(lambda w, b: br.fn(h, w, b, slot), w, b)[1](g)
            off = 0 if br.window == "full" else br.window[0]
            return (
                dh,
                lax.dynamic_update_slice(zw, dw, (off, off, 0, 0)),
                lax.dynamic_update_slice(zb, db, (0,)),
            )

        return pull

    pullbacks = [pullback(br) for br in branches]

    def bwd(res, g):
        hs, kern, bias, plan = res

        def body(i, carry):
            g, dkern, dbias = carry
            j = plan.hi - 1 - i
            dh, dw, db = lax.switch(
                at(plan.branch, j), pullbacks, at(hs, j), kern, bias, j, at(plan.slots, j), g
            )
            if dkern is not None:
                dkern = lax.dynamic_update_index_in_dim(dkern, dw, j, 0)
                dbias = lax.dynamic_update_index_in_dim(dbias, db, j, 0)
            return dh, dkern, dbias

        zeros = (None, None) if kern is None else (jnp.zeros_like(kern), jnp.zeros_like(bias))
        n = jnp.maximum(plan.hi - plan.lo, 0)
        dh, dkern, dbias = lax.fori_loop(0, n, body, (g,) + zeros)
        return dh, dkern, dbias, None

    stage.defvjp(fwd, bwd)
    return stage
