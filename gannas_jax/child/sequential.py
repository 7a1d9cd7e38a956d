"""Children of :class:`~gannas_jax.spaces.SequentialSpace`: arch-as-data and exact-size static.

The arch-as-data child keeps every weight at the maximum size of the space and runs one program
for every architecture:

* The feature map always has ``Cm = max(channels + (Cin,))`` channels; channels beyond the live
  count are exactly zero (every op maps 0 to 0 except sigmoid, which is masked).
* The slots of a stage run in a ``lax.scan`` with stacked weights ``[L, K, K, Cm, Cm]`` (one
  compiled slot body per stage), and each slot picks its op with ``lax.switch``.
* ``conv_impl='exact'``: the switch has one conv branch per ``(kernel, in-channels,
  out-channels)``, each a convolution on the exact slice of the max-size weight, so under
  ``lax.map`` (CPU) no FLOP is spent on padding, but 36 conv branches are slow to compile.
  ``conv_impl='kernel'``: two input buckets (the image's channels, or the maximum) with channels
  masked within a bucket; one branch per kernel size for the maximum, and one ``K x K`` branch
  with the taps beyond the slot's kernel masked for the image's (few) channels.
  ``conv_impl='blocked'``: the branches of
  ``'kernel'``, but a conv fed by a conv loops over its live channel blocks
  (:func:`~gannas_jax.child.ops.conv_blocks`; the block is the gcd of the channel counts), so it
  spends about the FLOPs of its live channels; the CPU default with ``lax.map``, which measured
  about as fast as ``'exact'`` over many architectures at about half its compile time. ``'kernel'``
  compiles ~0.7 s faster and wins on a single batch of light architectures.
  ``conv_impl='masked'``: one conv branch at
  ``K x K x Cm x Cm`` with kernel and channel masks, for ``vmap`` (accelerators).
* A stage's slot scan has a custom VJP (:func:`_stage_scan`): the forward pass saves only each
  slot's input, and the backward pass recomputes the one taken branch with its VJP. Slots with no
  conv before them skip their backward pass (nothing upstream has weights), so the child has no
  gradient with respect to its input images (it stops it).
* The head's dense layers are masked by width. Canonical codes put the non-empty head slots first,
  so the classifier reads the flattened features (no hidden layer) or the last live hidden layer;
  it has one weight for each case.

Masked entries of the weights are zero at init and get zero gradients, so training the max-size
child is training the exact-size network (Adam's update of a zero gradient with zero moments is 0).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gannas_jax.child import ops
from gannas_jax.spaces.sequential import ACTIVATIONS, CONV, HEAD_OPS, STAGE_OPS, SequentialSpace

CONV_IMPLS = ("exact", "kernel", "blocked", "masked")
_ACT = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}


# --- static geometry of a space -------------------------------------------------------------------


def geometry(space: SequentialSpace) -> dict[str, Any]:
    """Static sizes of the max-size child of ``space``."""
    h, w, cin = space.input_shape
    hr, wr = space.reduced_shape
    cm = max(max(space.channels), cin)
    cin_values = tuple(sorted(set(space.channels) | {cin}))
    return {
        "cin": cin,
        "cm": cm,
        # channel block of conv_impl='blocked': divides every channel count and cm
        "block": math.gcd(*space.channels, cm),
        "kmax": max(space.kernel_sizes),
        "wm": max(space.fc_widths),
        "flat": hr * wr * cm,
        "hr": hr,
        "wr": wr,
        "cin_values": cin_values,
        # index into cin_values of each output-channel choice
        "cout_to_cin": tuple(cin_values.index(c) for c in space.channels),
    }


def _slot_cin(space: SequentialSpace, stage_codes: jax.Array) -> jax.Array:
    """Index (into ``cin_values``) of the input channel count of every slot. ``[S, L]``."""
    g = geometry(space)
    table = jnp.asarray(g["cout_to_cin"], jnp.int32)
    ci = jnp.asarray(g["cin_values"].index(g["cin"]), jnp.int32)
    rows = []
    for s in range(space.num_stages):
        row = []
        for l in range(space.slots_per_stage):
            op, _, co = stage_codes[s, l, 0], stage_codes[s, l, 1], stage_codes[s, l, 2]
            row.append(ci)
            ci = jnp.where(op == CONV, table[co], ci)
        rows.append(jnp.stack(row))
    return jnp.stack(rows)


# --- the arch-as-data child -----------------------------------------------------------------------


class SequentialChild(nn.Module):
    """One compiled network for every architecture of a :class:`SequentialSpace`.

    Attributes:
      space: the search space.
      conv_impl: ``'exact'`` (switch over exact-size convs), ``'kernel'`` (exact kernel sizes,
        two channel buckets), ``'blocked'`` (``'kernel'`` looping over live channel blocks; the
        CPU default with ``lax.map``) or ``'masked'`` (one max-size masked conv; for ``vmap``).
      narrow: the variant for architectures without a conv (:func:`is_convless`): the feature
        map keeps the image's channels, there are no stage weights, and the dense layers that read
        the flattened features have only those rows (:func:`narrow_params` maps max-size params
        to it). On such an architecture it computes what the max-size child computes, at a
        fraction of the cost; on one with a conv it is wrong.
      assume_canonical: the codes given are canonical already (``space.canonicalize``), so the
        forward pass skips canonicalizing them (the evaluator canonicalizes once, on the host).
    """

    space: SequentialSpace
    conv_impl: str = "exact"
    narrow: bool = False
    assume_canonical: bool = False

    @nn.compact
    def __call__(self, arch: jax.Array, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of architecture ``arch`` on images ``x``.

        Args:
          arch: ``int32[V]`` codes (canonicalized here unless ``assume_canonical``, so any valid
            code works).
          x: ``float32[B, H, W, Cin]``.
          train: unused (no dropout or BatchNorm in this space); kept for a uniform signature.

        Returns:
          ``float32[B, num_classes]``.
        """
        del train
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(
                f"SequentialChild: conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}"
            )
        sp, g = self.space, geometry(self.space)
        cm, kmax, wm, L = g["cm"], g["kmax"], g["wm"], sp.slots_per_stage
        flat = g["hr"] * g["wr"] * g["cin"] if self.narrow else g["flat"]
        init = nn.initializers.lecun_normal()
        stage_w = (
            [(None, None)] * sp.num_stages
            if self.narrow
            else [
                (
                    self.param(f"stage{s}_kernel", init, (L, kmax, kmax, cm, cm)),
                    self.param(f"stage{s}_bias", nn.initializers.zeros, (L, cm)),
                )
                for s in range(sp.num_stages)
            ]
        )
        fc_w = [
            (
                self.param(f"fc{f}_kernel", init, (flat if f == 0 else wm, wm)),
                self.param(f"fc{f}_bias", nn.initializers.zeros, (wm,)),
            )
            for f in range(sp.num_fc)
        ]
        out_flat = self.param("out_flat_kernel", init, (flat, sp.num_classes))
        out_hidden = (
            self.param("out_hidden_kernel", init, (wm, sp.num_classes)) if sp.num_fc else None
        )
        out_bias = self.param("out_bias", nn.initializers.zeros, (sp.num_classes,))
        return sequential_forward(
            sp,
            self.conv_impl,
            arch,
            x,
            stage_w,
            fc_w,
            out_flat,
            out_hidden,
            out_bias,
            narrow=self.narrow,
            canonical=self.assume_canonical,
        )


def is_convless(space: SequentialSpace, arch: jax.Array) -> jax.Array:
    """``bool[...]``: whether each ``arch [..., V]`` has no conv slot, so that the narrow child can
    train it. NumPy in, NumPy out (no XLA dispatch); otherwise traceable."""
    xp = np if isinstance(arch, np.ndarray) else jnp
    stage, _ = space.split(xp.asarray(arch, xp.int32))
    return xp.all(stage[..., 0] != CONV, axis=(-2, -1))


def narrow_params(space: SequentialSpace, params: dict) -> dict:
    """The narrow child's params (see :class:`SequentialChild`) out of max-size params.

    Drops the stage weights and keeps the rows of the flattened-feature dense layers that read
    the image's channels. For a conv-less architecture the rows dropped are exactly the ones that
    only ever see zero features.
    """
    g = geometry(space)
    hw, cm, cin = g["hr"] * g["wr"], g["cm"], g["cin"]

    def rows(w):
        return w.reshape(hw, cm, w.shape[-1])[:, :cin].reshape(hw * cin, w.shape[-1])

    out = {k: v for k, v in params.items() if not k.startswith("stage")}
    for k in ("fc0_kernel", "out_flat_kernel"):
        if k in out:
            out[k] = rows(out[k])
    return out


def _stage_branches(space: SequentialSpace, conv_impl: str, narrow: bool = False):
    """The op branches of one slot and the branch index function.

    Each branch is ``(f, window, input_grad)``: ``f(h, w, b, op, ci, k, co, pairs) -> h`` where ``w``,
    ``b`` are the part of the slot's max-size kernel and bias that the branch reads, given by
    ``window``: ``None`` (no weights; ``w``, ``b`` are None), ``'full'``, or ``(o, kk, cin, cout)``
    for ``kernel[o:o+kk, o:o+kk, :cin, :cout]`` and ``bias[:cout]``. :func:`_stage_scan` slices
    exactly that window out of the stacked weights, so ops without weights copy none.
    ``input_grad`` is False for a conv that can only ever read the image's channels with no conv
    before it (the image's channel count is not a conv width): nothing upstream of it has weights,
    so the backward pass skips its input gradient. ``pairs`` is the slot's :func:`_block_pairs`
    (``'blocked'`` convs only; otherwise None).
    """
    g = geometry(space)
    cm, kmax = (g["cin"] if narrow else g["cm"]), g["kmax"]
    cin_values, ks, cs = g["cin_values"], space.kernel_sizes, space.channels

    # Tables the branches index are built inside them (numpy here): the branches run under the
    # slot switch's custom VJP, which must not close over traced values.
    cin_np = np.asarray(cin_values, np.int32)

    relu, sigmoid = STAGE_OPS.index("relu"), STAGE_OPS.index("sigmoid")

    def none_or_relu(h, w, b, op, ci, k, co, pairs):
        # jax.nn.relu's gradient (0 at h == 0), which jnp.maximum(h, 0) would split at ties
        return jnp.where((op == relu) & (h <= 0.0), 0.0, h)

    def sigmoid_or_tanh(h, w, b, op, ci, k, co, pairs):
        # sigmoid(h) = (1 + tanh(h / 2)) / 2: one transcendental for both ops, and one branch
        is_sig = op == sigmoid
        half = jnp.where(is_sig, 0.5, 1.0)
        y = jnp.tanh(h * half) * half + jnp.where(is_sig, 0.5, 0.0)
        # sigmoid(0) = 0.5: re-zero the padding channels
        return jnp.where((jnp.arange(cm) < jnp.asarray(cin_np)[ci]).reshape(1, 1, 1, cm), y, 0.0)

    # Measured: running these ops on exact channel buckets (a branch per op and channel count)
    # did not speed up steps on CPU but doubled compile time, so they run at Cm channels. Ops that
    # cost the same share a branch: every branch is compiled three times (forward, backward, and
    # the backward's recomputed forward), and branches are most of the program's compile time.
    branches = [
        (none_or_relu, None, True),
        (sigmoid_or_tanh, None, True),
        (lambda h, w, b, op, ci, k, co, pairs: ops.max_pool_same(h), None, True),
        (lambda h, w, b, op, ci, k, co, pairs: ops.avg_pool_same(h), None, True),
    ]
    base = np.zeros(len(STAGE_OPS), np.int32)  # branch of each non-conv op
    for name, i in (
        ("none", 0),
        ("relu", 0),
        ("sigmoid", 1),
        ("tanh", 1),
        ("max_pool", 2),
        ("avg_pool", 3),
    ):
        base[STAGE_OPS.index(name)] = i
    n_simple = len(branches)
    base_j = jnp.asarray(base)

    def simple_index(op, ci):
        return base_j[op]

    if narrow:  # no conv slot: the conv code maps to branch 0, never taken
        return branches, lambda op, k, ci, co: simple_index(op, ci)

    if conv_impl in ("exact", "kernel", "blocked"):
        # Conv branches by (kernel, input-channel bucket, output-channel bucket). 'exact' has a
        # bucket per channel count (no wasted FLOPs, many branches: slow to compile); 'kernel'
        # has exact kernels but only two channel buckets, the image's channels and the maximum,
        # with masks inside a bucket (few branches; FLOPs wasted on convs fed by convs only).
        if conv_impl == "exact":
            cin_b, cout_b = cin_values, tuple(cs)
        else:
            cin_b = tuple(sorted({g["cin"], cm}))
            cout_b = (cm,)
        cin_to_b = np.asarray(
            [min(i for i, b in enumerate(cin_b) if b >= c) for c in cin_values], np.int32
        )
        cout_to_b = np.asarray(
            [min(i for i, b in enumerate(cout_b) if b >= c) for c in cs], np.int32
        )
        cs_np = np.asarray(cs, np.int32)
        blk = g["block"]
        # With channel buckets, the convs that read the image's (fewer) channels share one branch
        # for every kernel size: a K x K conv whose taps beyond the slot's kernel are masked.
        # On one or few input channels the extra taps cost little (measured on the default
        # digits program: each kernel size's conv branch was ~0.1 s of compile per stage).
        merge = conv_impl != "exact" and g["cin"] < cm
        # 'blocked' convs fed by convs share one branch for every kernel size too, the same masked
        # K x K conv over the live block pairs. Measured on the default digits program (in-process
        # A/B, two compiles of each, then each run twice on four batches): compile 3.85-3.91 s
        # against 4.13-4.27 s, tracing and lowering ~0.1 s shorter, and the four batches ran in
        # 16.2-17.0 s against 17.4-18.1 s (slower on two, faster on two). A masked 7x7 costs more
        # FLOPs than a 3x3, but XLA:CPU ran the 5x5 on the 4x4 maps of the second stage slower
        # than the 7x7: 0.48 against 0.24 ms per 8-channel block pair, forward and backward.
        merge_all = conv_impl == "blocked"
        kmask = np.zeros((len(ks), kmax, kmax), np.float32)
        for i, kk in enumerate(ks):
            o = (kmax - kk) // 2
            kmask[i, o : o + kk, o : o + kk] = 1.0

        def conv_branch(kk, cin, cout, any_k=False):
            o = (kmax - kk) // 2
            image = cin == g["cin"] and cin != cm  # reads the image: cheap, one convolution

            def branch(h, wk, bk, op, ci, k, co, pairs):
                live_out = jnp.asarray(cs_np)[co]
                # A bucket can be wider than the live channels. The input channels beyond the live
                # count are exactly zero, so their weights add 0 and get a 0 gradient: only the
                # output channels need a mask (measured: the input mask was ~3% of a child step).
                if cout > min(cs):
                    m_out = (jnp.arange(cout) < live_out).astype(wk.dtype)
                    wk, bk = wk * m_out.reshape(1, 1, 1, cout), bk * m_out
                if any_k:
                    wk = wk * jnp.asarray(kmask)[k].reshape(kmax, kmax, 1, 1)
                if conv_impl == "blocked" and not image:
                    y = ops.conv_block_pairs(h[..., :cin], wk, *pairs, blk, blk) + bk.reshape(
                        1, 1, 1, -1
                    )
                else:
                    y = ops.conv_same(h[..., :cin], wk, bk)
                return jnp.pad(y, ((0, 0), (0, 0), (0, 0), (0, cm - cout))) if cout < cm else y

            return branch, (o, kk, cin, cout), not (cin == g["cin"] and cin not in cs)

        # branch index of each (kernel, input bucket, output bucket)
        table = np.zeros((len(ks), len(cin_b), len(cout_b)), np.int32)
        for i, kk in enumerate(ks):
            for bi, cin in enumerate(cin_b):
                for bo, cout in enumerate(cout_b):
                    any_k = (merge and cin == g["cin"]) or merge_all
                    if any_k and i:
                        table[i, bi, bo] = table[0, bi, bo]
                        continue
                    table[i, bi, bo] = len(branches)
                    branches.append(conv_branch(kmax if any_k else kk, cin, cout, any_k))

        cin_to_b_j, cout_to_b_j = jnp.asarray(cin_to_b), jnp.asarray(cout_to_b)

        def index(op, k, ci, co):
            conv_idx = jnp.asarray(table)[k, cin_to_b_j[ci], cout_to_b_j[co]]
            return jnp.where(op == CONV, conv_idx, simple_index(op, ci))
    else:
        kmask = np.zeros((len(ks), kmax, kmax), np.float32)
        for i, kk in enumerate(ks):
            o = (kmax - kk) // 2
            kmask[i, o : o + kk, o : o + kk] = 1.0
        cs_np = np.asarray(cs, np.int32)

        def masked(h, w, b, op, ci, k, co, pairs):
            m_in = (jnp.arange(cm) < jnp.asarray(cin_np)[ci]).astype(w.dtype)
            m_out = (jnp.arange(cm) < jnp.asarray(cs_np)[co]).astype(w.dtype)
            wk = (
                w
                * jnp.asarray(kmask)[k].reshape(kmax, kmax, 1, 1)
                * m_in.reshape(1, 1, cm, 1)
                * m_out.reshape(1, 1, 1, cm)
            )
            return ops.conv_same(h, wk, b * m_out)

        branches.append((masked, "full", True))

        def index(op, k, ci, co):
            return jnp.where(op == CONV, n_simple, simple_index(op, ci))

    return branches, index


def _block_pairs(space: SequentialSpace, ci: jax.Array, co: jax.Array):
    """The block-pair offsets (:func:`~gannas_jax.child.ops.block_pairs`) of the ``'blocked'``
    conv of every slot of a stage, from the slots' input-channel index ``ci`` and output-channel
    code ``co`` (``[L]`` each): computed once per stage, outside the switch and the block loops."""
    g = geometry(space)
    blk, cm = g["block"], g["cm"]
    n_in = (jnp.asarray(g["cin_values"], jnp.int32)[ci] + blk - 1) // blk
    n_out = jnp.asarray(space.channels, jnp.int32)[co] // blk
    return ops.block_pairs(n_in, n_out, cm // blk, cm // blk, blk, blk)


def _stage_scan(branches):
    """``stage(h, kern, bias, idx, op, ci, k, co, pairs, lo, hi) -> h``: a stage's slots, each a
    switch.

    ``branches`` are :func:`_stage_branches`'s ``(f, window, input_grad)`` triples.
    ``kern [L, K, K, Cm, Cm]``, ``bias [L, Cm]`` are the stage's stacked weights and the int
    ``[L]`` arrays the per-slot branch index and codes. ``pairs`` is each slot's
    :func:`_block_pairs` (or None), passed on to its branch. ``lo``, ``hi`` (int scalars): the
    stage's slots ``[hi, L)`` are empty, and the slots before ``lo`` have no weights upstream
    (see :func:`sequential_plan`), so their input gradient is not needed: the cotangent passes
    them untouched, and the stage's input cotangent is only the true gradient where something
    upstream has weights (the child stops the gradient at its input).

    The forward pass loops over the live slots ``[0, hi)`` (canonical codes put the empty ones
    last) and saves each one's input activation; each branch slices its exact weight window out
    of the stacked arrays (ops without weights read none). The custom backward pass loops back
    over ``[lo, hi)``, the live slots with weights upstream; its switch runs, in the one taken
    branch, that branch's forward and its VJP together, and places the window's gradient into
    the slot's max-size gradient. Looping over those slots only, instead of scanning all ``L``,
    skips the empty and gradient-free slots' iterations (their zero-filled gradients, stacking
    and switch): measured on the default digits program, 7% of the running time (8 interleaved
    runs: median 2.78 s against 3.00 s).

    Autodiff of a switch (even rematerialized with ``jax.checkpoint``) instead recomputes the
    forward in a second switch that must output the union of every branch's residuals,
    zero-filled for the untaken ones, and the scan stacks every slot's weights as residuals:
    measured on the default digits program, the zero fills alone were ~15% of a child step, and
    the extra switch per stage ~25% of the switch code XLA compiles.
    """

    def take(window, kern, bias, l):
        if window is None:
            return None, None
        if window == "full":
            return lax.dynamic_index_in_dim(kern, l, keepdims=False), lax.dynamic_index_in_dim(
                bias, l, keepdims=False
            )
        o, kk, cin, cout = window
        return (
            lax.dynamic_slice(kern, (l, o, o, 0, 0), (1, kk, kk, cin, cout))[0],
            lax.dynamic_slice(bias, (l, 0), (1, cout))[0],
        )

    def forward(f, window):
        def run(h, kern, bias, l, p, c, kk, o, pr):
            w, b = take(window, kern, bias, l)
            return f(h, w, b, p, c, kk, o, pr)

        return run

    forwards = [forward(f, win) for f, win, _ in branches]

    def at(xs, l):  # slot l's entries of per-slot arrays
        return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, l, keepdims=False), xs)

    def run(h, kern, bias, idx, op, ci, k, co, pairs, hi, save):
        def body(l, carry):
            h, hs = carry
            if save:
                hs = lax.dynamic_update_index_in_dim(hs, h, l, 0)
            return lax.switch(
                at(idx, l), forwards, h, kern, bias, l, *at((op, ci, k, co, pairs), l)
            ), hs

        hs = jnp.zeros((idx.shape[0],) + h.shape, h.dtype) if save else None
        return lax.fori_loop(0, hi, body, (h, hs))

    @jax.custom_vjp
    def stage(h, kern, bias, idx, op, ci, k, co, pairs, lo, hi):
        return run(h, kern, bias, idx, op, ci, k, co, pairs, hi, save=False)[0]

    def fwd(h, kern, bias, idx, op, ci, k, co, pairs, lo, hi):
        out, hs = run(h, kern, bias, idx, op, ci, k, co, pairs, hi, save=True)
        return out, (hs, kern, bias, idx, op, ci, k, co, pairs, lo, hi)

    def zeros_like_slot(kern, bias):
        if kern is None:  # the narrow child: no stage weights
            return None, None
        return jnp.zeros(kern.shape[1:], kern.dtype), jnp.zeros(bias.shape[1:], bias.dtype)

    def pullback(f, window, input_grad):
        def pull(h, kern, bias, l, p, c, kk, o, pr, g):
            zw, zb = zeros_like_slot(kern, bias)
            if window is None:
                (dh,) = jax.vjp(lambda h: f(h, None, None, p, c, kk, o, pr), h)[1](g)
                return dh, zw, zb
            w, b = take(window, kern, bias, l)
            if input_grad:
                dh, dw, db = jax.vjp(lambda h, w, b: f(h, w, b, p, c, kk, o, pr), h, w, b)[1](g)
            else:  # nothing upstream has weights: the input cotangent is never used
                dh, (dw, db) = g, jax.vjp(lambda w, b: f(h, w, b, p, c, kk, o, pr), w, b)[1](g)
            off = 0 if window == "full" else window[0]
            return (
                dh,
                lax.dynamic_update_slice(zw, dw, (off, off, 0, 0)),
                lax.dynamic_update_slice(zb, db, (0,)),
            )

        return pull

    pullbacks = [pullback(f, win, ig) for f, win, ig in branches]

    def bwd(res, g):
        hs, kern, bias, idx, op, ci, k, co, pairs, lo, hi = res

        def body(j, carry):
            g, dkern, dbias = carry
            l = hi - 1 - j
            dh, dw, db = lax.switch(
                at(idx, l), pullbacks, at(hs, l), kern, bias, l, *at((op, ci, k, co, pairs), l), g
            )
            if dkern is not None:
                dkern = lax.dynamic_update_index_in_dim(dkern, dw, l, 0)
                dbias = lax.dynamic_update_index_in_dim(dbias, db, l, 0)
            return dh, dkern, dbias

        zeros = (None, None) if kern is None else (jnp.zeros_like(kern), jnp.zeros_like(bias))
        dh, dkern, dbias = lax.fori_loop(0, jnp.maximum(hi - lo, 0), body, (g,) + zeros)
        return dh, dkern, dbias, None, None, None, None, None, None, None, None

    stage.defvjp(fwd, bwd)
    return stage


def apply_sequential(
    child: SequentialChild, params: dict, arch: jax.Array, x: jax.Array
) -> jax.Array:
    """``child.apply({'params': params}, arch, x)`` without Flax: the same forward pass on the
    params dict. Flax checks every existing param against its initializer's abstract output at
    each call (tracing the initializer), which is ~10% of the tracing time of the evaluator's
    training program; this skips the check (shapes are checked by the matmuls and slices)."""
    sp = child.space
    stage_w = (
        [(None, None)] * sp.num_stages
        if child.narrow
        else [(params[f"stage{s}_kernel"], params[f"stage{s}_bias"]) for s in range(sp.num_stages)]
    )
    fc_w = [(params[f"fc{f}_kernel"], params[f"fc{f}_bias"]) for f in range(sp.num_fc)]
    return sequential_forward(
        sp,
        child.conv_impl,
        arch,
        x,
        stage_w,
        fc_w,
        params["out_flat_kernel"],
        params.get("out_hidden_kernel"),
        params["out_bias"],
        narrow=child.narrow,
        canonical=child.assume_canonical,
    )


def sequential_plan(
    space: SequentialSpace,
    conv_impl: str,
    arch: jax.Array,
    narrow: bool = False,
    canonical: bool = False,
) -> dict:
    """Everything the forward pass reads from an architecture's codes, decoded once.

    The evaluator decodes each child's plan once, before its training loop, and passes it to
    every step instead of the codes: XLA:CPU does not hoist this integer arithmetic out of the
    loop, and compiled each of its scalar ops as a kernel of its own (~40 kernels run at every
    step, and compiled for each variant).

    Returns:
      ``{'stages': [per stage (idx, op, ci, k, co, pairs, lo, hi)], 'head_op': int[F],
      'head_live': bool[F, Wm], 'n_fc': int, 'live_slots': {'stage{s}_kernel': (slots, n)}}``
      (see :func:`_stage_scan` for the stage fields; ``live_slots``: the slots that have a conv,
      first, and how many, for :class:`~gannas_jax.parallel.SlotSparse`).
    """
    g = geometry(space)
    arch = jnp.asarray(arch, jnp.int32)
    if not canonical:
        arch = space.canonicalize(arch)
    stage, head = space.split(arch)
    slot_cin = _slot_cin(space, stage)
    _, index = _stage_branches(space, conv_impl, narrow)
    # A slot's input gradient is needed only if a conv (the only stage op with weights) comes
    # before it; the others' backward passes are skipped (measured: ~10% of a step of a child
    # with a conv). The child is not differentiable in its input images (NAS never needs it).
    is_conv = (stage[..., 0] == CONV).reshape(-1).astype(jnp.int32)
    upstream = (jnp.cumsum(is_conv) - is_conv > 0).reshape(stage.shape[:2])
    stages = []
    for s in range(space.num_stages):
        op, k, co, ci = stage[s, :, 0], stage[s, :, 1], stage[s, :, 2], slot_cin[s]
        idx = index(op, k, ci, co)
        pairs = _block_pairs(space, ci, co) if conv_impl == "blocked" and not narrow else None
        # Canonical stages hold their live slots first, and the slots with no weights upstream
        # are a prefix of the network: the forward pass runs slots [0, hi) and the backward pass
        # [lo, hi) of each stage, the others being exact identities for it.
        hi = jnp.sum(op != 0).astype(jnp.int32)
        lo = jnp.sum(~(upstream[s] | (op == CONV))).astype(jnp.int32)
        stages.append((idx, op, ci, k, co, pairs, lo, hi))
    widths = jnp.asarray(space.fc_widths, jnp.int32)
    # The slots whose stacked kernel can get a gradient (convs), first, and their count: the
    # optimizer updates only those (see gannas_jax.parallel.SlotSparse).
    conv = stage[..., 0] == CONV
    live = (
        {}
        if narrow
        else {
            f"stage{s}_kernel": (
                jnp.argsort(~conv[s], stable=True).astype(jnp.int32),
                jnp.sum(conv[s]).astype(jnp.int32),
            )
            for s in range(space.num_stages)
        }
    )
    return {
        "stages": stages,
        "head_op": head[:, 0],
        "head_live": jnp.arange(g["wm"]).reshape(1, -1) < widths[head[:, 1]].reshape(-1, 1),
        "n_fc": jnp.sum(head[:, 0] != 0),
        "live_slots": live,
    }


def sequential_forward(
    space,
    conv_impl,
    arch,
    x,
    stage_w,
    fc_w,
    out_flat,
    out_hidden,
    out_bias,
    narrow=False,
    canonical=False,
):
    """The arch-as-data forward pass on explicit max-size weights (see :class:`SequentialChild`;
    with ``narrow``, on the narrow child's weights, for conv-less architectures; with
    ``canonical``, ``arch`` is taken as canonical). ``arch`` is the codes or their
    :func:`sequential_plan` (made with the same ``conv_impl`` and ``narrow``)."""
    g = geometry(space)
    cm, wm = (g["cin"] if narrow else g["cm"]), g["wm"]
    plan = (
        arch
        if isinstance(arch, dict)
        else sequential_plan(space, conv_impl, arch, narrow, canonical)
    )
    branches, _ = _stage_branches(space, conv_impl, narrow)
    stage_fn = _stage_scan(branches)

    b = x.shape[0]
    h = jnp.pad(
        lax.stop_gradient(x).astype(jnp.float32), ((0, 0), (0, 0), (0, 0), (0, cm - x.shape[-1]))
    )
    for s in range(space.num_stages):
        if s:
            h = ops.max_pool_2x2(h)
        kern, bias = stage_w[s]
        h = stage_fn(h, kern, bias, *plan["stages"][s])
    flat = h.reshape(b, -1)
    hid = jnp.zeros((b, wm), jnp.float32)
    for f in range(space.num_fc):
        op = plan["head_op"][f]
        kernel, bias = fc_w[f]
        pre = (flat if f == 0 else hid) @ kernel + bias.reshape(1, wm)
        act = jnp.where(
            op == 1, jax.nn.relu(pre), jnp.where(op == 2, jax.nn.sigmoid(pre), jnp.tanh(pre))
        )
        act = jnp.where(plan["head_live"][f].reshape(1, wm), act, 0.0)
        hid = jnp.where(op != 0, act, hid)
    logits = flat @ out_flat
    if space.num_fc:
        logits = jnp.where(plan["n_fc"] == 0, logits, hid @ out_hidden)
    return logits + out_bias.reshape(1, -1)


# --- arch-aware init (exact-size fan-in) -----------------------------------------------------------


def init_sequential(
    space: SequentialSpace, key: jax.Array, arch: jax.Array, canonical: bool = False
) -> dict:
    """Max-size params whose live part is distributed like the exact-size static child's init.

    Kernels are Flax's lecun-normal with the *exact* layer's fan-in, biases zero, and every entry
    outside the exact network is zero. Traceable (``arch`` may be a tracer), so a population is
    initialized by ``vmap`` in one program.

    Args:
      space: the search space.
      key: a ``jax.random.key``.
      arch: ``int32[V]``.
      canonical: ``arch`` is canonical already (skips canonicalizing it).

    Returns:
      A params dict with the same structure as ``SequentialChild.init(...)['params']``.
    """
    g = geometry(space)
    cm, kmax, wm, L = g["cm"], g["kmax"], g["wm"], space.slots_per_stage
    arch = jnp.asarray(arch, jnp.int32)
    if not canonical:
        arch = space.canonicalize(arch)
    stage, head = space.split(arch)
    slot_cin = _slot_cin(space, stage)
    cin_arr = jnp.asarray(g["cin_values"], jnp.int32)
    ks = jnp.asarray(space.kernel_sizes, jnp.int32)
    cs = jnp.asarray(space.channels, jnp.int32)
    widths = jnp.asarray(space.fc_widths, jnp.int32)
    params: dict[str, jax.Array] = {}
    kernels: list[
        tuple[str, tuple[int, ...], jax.Array, jax.Array]
    ] = []  # name, shape, fan-in, mask
    pos = jnp.arange(kmax) - kmax // 2
    for s in range(space.num_stages):
        ksz = ks[stage[s, :, 1]]  # [L]
        cin = cin_arr[slot_cin[s]]  # [L]
        cout = cs[stage[s, :, 2]]  # [L]
        is_conv = stage[s, :, 0] == CONV
        kin = jnp.abs(pos).reshape(1, kmax) <= (ksz // 2).reshape(L, 1)  # [L, K]
        m = (
            kin.reshape(L, kmax, 1, 1, 1)
            & kin.reshape(L, 1, kmax, 1, 1)
            & (jnp.arange(cm).reshape(1, 1, 1, cm, 1) < cin.reshape(L, 1, 1, 1, 1))
            & (jnp.arange(cm).reshape(1, 1, 1, 1, cm) < cout.reshape(L, 1, 1, 1, 1))
            & is_conv.reshape(L, 1, 1, 1, 1)
        )
        fan_in = (ksz * ksz * cin).reshape(L, 1, 1, 1, 1)
        kernels.append((f"stage{s}_kernel", (L, kmax, kmax, cm, cm), fan_in, m))
        params[f"stage{s}_bias"] = jnp.zeros((L, cm), jnp.float32)
    # channels after the last stage
    last_ci = jnp.asarray(g["cin_values"].index(g["cin"]), jnp.int32)
    table = jnp.asarray(g["cout_to_cin"], jnp.int32)
    for s in range(space.num_stages):
        for l in range(L):
            last_ci = jnp.where(stage[s, l, 0] == CONV, table[stage[s, l, 2]], last_ci)
    c_last = cin_arr[last_ci]
    flat_rows = (jnp.arange(g["flat"]) % cm) < c_last  # live rows of the flattened features
    flat_fan = g["hr"] * g["wr"] * c_last
    hid_rows, hid_fan = jnp.zeros((wm,), bool), jnp.asarray(1, jnp.int32)
    for f in range(space.num_fc):
        # Canonical heads are compacted: a live slot f >= 1 always reads slot f - 1.
        op, wi = head[f, 0], head[f, 1]
        live = op != 0
        cols = jnp.arange(wm) < widths[wi]
        in_rows, in_fan = (flat_rows, flat_fan) if f == 0 else (hid_rows, hid_fan)
        m = in_rows.reshape(-1, 1) & cols.reshape(1, wm) & live
        kernels.append((f"fc{f}_kernel", (in_rows.shape[0], wm), in_fan, m))
        params[f"fc{f}_bias"] = jnp.zeros((wm,), jnp.float32)
        hid_rows = jnp.where(live, cols, hid_rows)
        hid_fan = jnp.where(live, widths[wi], hid_fan)
    n_fc = jnp.sum(head[:, 0] != 0) if space.num_fc else 0
    kernels.append(
        (
            "out_flat_kernel",
            (g["flat"], space.num_classes),
            flat_fan,
            flat_rows.reshape(-1, 1) & (n_fc == 0),
        )
    )
    if space.num_fc:
        kernels.append(
            (
                "out_hidden_kernel",
                (wm, space.num_classes),
                hid_fan,
                hid_rows.reshape(-1, 1) & (n_fc > 0),
            )
        )
    params["out_bias"] = jnp.zeros((space.num_classes,), jnp.float32)
    draws = ops.lecun_normal_many(key, [k[1] for k in kernels], [k[2] for k in kernels])
    for (name, _, _, m), z in zip(kernels, draws):
        params[name] = jnp.where(m, z, 0.0)
    return params


# --- the exact-size static child --------------------------------------------------------------------


class StaticSequential(nn.Module):
    """Plain Flax network of one architecture, at its exact widths (from ``space.to_spec``).

    Attributes:
      layers: per stage, a tuple of layer tuples ``('conv', k, c) | ('pool', 'max'|'avg') |
        ('act', fn)``.
      head: tuple of ``(units, activation)``.
      num_classes: classifier outputs.
    """

    layers: tuple
    head: tuple
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        for s, stage in enumerate(self.layers):
            if s:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            for l, layer in enumerate(stage):
                if layer[0] == "conv":
                    x = nn.Conv(
                        layer[2], (layer[1], layer[1]), padding="SAME", name=f"conv{s}_{l}"
                    )(x)
                elif layer[0] == "pool":
                    pad = ((1, 1), (1, 1))
                    if layer[1] == "max":
                        x = nn.max_pool(x, (3, 3), strides=(1, 1), padding=pad)
                    else:
                        x = nn.avg_pool(
                            x, (3, 3), strides=(1, 1), padding=pad, count_include_pad=True
                        )
                else:
                    x = _ACT[layer[1]](x)
        x = x.reshape(x.shape[0], -1)
        for f, (units, act) in enumerate(self.head):
            x = _ACT[act](nn.Dense(units, name=f"fc{f}")(x))
        return nn.Dense(self.num_classes, name="out")(x)


def static_sequential(space: SequentialSpace, arch: Any) -> StaticSequential:
    """The exact-size Flax module of one architecture, built from ``space.to_spec(arch)``."""
    spec = space.to_spec(arch)
    layers = []
    for stage in spec["stages"]:
        row = []
        for layer in stage:
            if layer["type"] == "conv":
                row.append(("conv", int(layer["kernel"]), int(layer["channels"])))
            elif layer["type"] == "pool":
                row.append(("pool", layer["kind"]))
            else:
                row.append(("act", layer["fn"]))
        layers.append(tuple(row))
    head = tuple((int(d["units"]), d["activation"]) for d in spec["head"])
    return StaticSequential(tuple(layers), head, space.num_classes)


def _trace(space: SequentialSpace, arch: Any):
    """Host-side walk of a canonical arch: conv slots ``(s, l, k, cin, cout)``, last channels, head."""
    codes = space.canonicalize(np.asarray(space._one(arch)))
    stage, head = space.split(codes)
    c = space.input_shape[2]
    convs = []
    for s in range(space.num_stages):
        for l in range(space.slots_per_stage):
            op, k, co = (int(v) for v in stage[s, l])
            if op == CONV:
                cout = space.channels[co]
                convs.append((s, l, space.kernel_sizes[k], c, cout))
                c = cout
    fcs = [space.fc_widths[int(w)] for op, w in head if op]
    return convs, c, fcs


def load_static_sequential(space: SequentialSpace, arch: Any, static_params: dict) -> dict:
    """Max-size child params holding a static child's weights (zeros elsewhere).

    Args:
      space: the search space.
      arch: one architecture.
      static_params: ``static_sequential(space, arch).init(...)['params']``.

    Returns:
      params for :class:`SequentialChild` (numpy arrays).
    """
    g = geometry(space)
    cm, kmax, wm, L = g["cm"], g["kmax"], g["wm"], space.slots_per_stage
    convs, c_last, fcs = _trace(space, arch)
    p: dict[str, np.ndarray] = {}
    for s in range(space.num_stages):
        p[f"stage{s}_kernel"] = np.zeros((L, kmax, kmax, cm, cm), np.float32)
        p[f"stage{s}_bias"] = np.zeros((L, cm), np.float32)
    for s, l, k, cin, cout in convs:
        o = (kmax - k) // 2
        sp_ = static_params[f"conv{s}_{l}"]
        p[f"stage{s}_kernel"][l, o : o + k, o : o + k, :cin, :cout] = np.asarray(sp_["kernel"])
        p[f"stage{s}_bias"][l, :cout] = np.asarray(sp_["bias"])

    def flat_rows(w):  # [hr*wr*c_last, n] -> [hr*wr*cm, n]
        n = w.shape[-1]
        w = np.asarray(w).reshape(g["hr"], g["wr"], c_last, n)
        return np.pad(w, ((0, 0), (0, 0), (0, cm - c_last), (0, 0))).reshape(g["flat"], n)

    for f in range(space.num_fc):
        n_in = g["flat"] if f == 0 else wm
        k_ = np.zeros((n_in, wm), np.float32)
        b_ = np.zeros((wm,), np.float32)
        if f < len(fcs):
            sw = static_params[f"fc{f}"]
            kk = flat_rows(sw["kernel"]) if f == 0 else np.asarray(sw["kernel"])
            k_[: kk.shape[0], : fcs[f]] = kk
            b_[: fcs[f]] = np.asarray(sw["bias"])
        p[f"fc{f}_kernel"], p[f"fc{f}_bias"] = k_, b_
    out = static_params["out"]
    p["out_flat_kernel"] = np.zeros((g["flat"], space.num_classes), np.float32)
    if space.num_fc:
        p["out_hidden_kernel"] = np.zeros((wm, space.num_classes), np.float32)
    if fcs:
        p["out_hidden_kernel"][: fcs[-1]] = np.asarray(out["kernel"])
    else:
        p["out_flat_kernel"] = flat_rows(out["kernel"]).astype(np.float32)
    p["out_bias"] = np.asarray(out["bias"], np.float32)
    return p


def extract_static_sequential(space: SequentialSpace, arch: Any, child_params: dict) -> dict:
    """Inverse of :func:`load_static_sequential`: the exact-size static params of one child."""
    g = geometry(space)
    cm, kmax = g["cm"], g["kmax"]
    convs, c_last, fcs = _trace(space, arch)
    cp = {k: np.asarray(v) for k, v in child_params.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, l, k, cin, cout in convs:
        o = (kmax - k) // 2
        out[f"conv{s}_{l}"] = {
            "kernel": cp[f"stage{s}_kernel"][l, o : o + k, o : o + k, :cin, :cout].copy(),
            "bias": cp[f"stage{s}_bias"][l, :cout].copy(),
        }

    def unflat(w):
        n = w.shape[-1]
        return w.reshape(g["hr"], g["wr"], cm, n)[:, :, :c_last].reshape(-1, n).copy()

    prev = None
    for f, width in enumerate(fcs):
        kk = cp[f"fc{f}_kernel"]
        kk = unflat(kk)[:, :width] if f == 0 else kk[:prev, :width].copy()
        out[f"fc{f}"] = {"kernel": kk, "bias": cp[f"fc{f}_bias"][:width].copy()}
        prev = width
    if fcs:
        ok = cp["out_hidden_kernel"][: fcs[-1]].copy()
    else:
        ok = unflat(cp["out_flat_kernel"])
    out["out"] = {"kernel": ok, "bias": cp["out_bias"].copy()}
    return out


def sequential_cost(space: SequentialSpace, arch: Any) -> dict[str, int]:
    """Exact parameter count and forward FLOPs (2 per multiply-add) of one image."""
    h, w, _ = space.input_shape
    convs, c_last, fcs = _trace(space, arch)
    params = flops = 0
    for s, l, k, cin, cout in convs:
        hs, ws = h // 2**s, w // 2**s
        params += k * k * cin * cout + cout
        flops += 2 * hs * ws * k * k * cin * cout
    hr, wr = space.reduced_shape
    d = hr * wr * c_last
    for width in fcs + [space.num_classes]:
        params += d * width + width
        flops += 2 * d * width
        d = width
    return {"params": int(params), "flops": int(flops)}


def arch_seed(arch: Any) -> int:
    """A stable 31-bit integer of an architecture's codes (for position-independent init keys)."""
    return zlib.crc32(np.asarray(arch, np.int32).tobytes()) & 0x7FFFFFFF


__all__ = [
    "SequentialChild",
    "StaticSequential",
    "static_sequential",
    "init_sequential",
    "load_static_sequential",
    "extract_static_sequential",
    "sequential_cost",
    "geometry",
    "arch_seed",
    "is_convless",
    "narrow_params",
    "sequential_plan",
    "apply_sequential",
    "ACTIVATIONS",
    "HEAD_OPS",
]
