"""The arch-as-data sequential child: one compiled network for every architecture of a space.

Every weight is kept at the maximum size of the space. The feature map always has ``cm``
channels; channels beyond the live count are exactly zero (every op maps 0 to 0 except sigmoid,
which is masked). The slots of a stage run in a loop over stacked weights ``[L, K, K, cm, cm]``
(:mod:`~gannas_jax.child.sequential.stage`). The head's dense layers are masked by width, and
canonical codes put the live head slots first, so the classifier reads the flattened features
(no hidden layer) or the last live hidden layer; it has one weight for each case. Masked weight
entries are zero at init and get zero gradients, so training the max-size child trains the
architecture's own network.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gannas_jax.child import ops
from gannas_jax.child.sequential.geometry import geometry, slot_cin
from gannas_jax.child.sequential.plan import SequentialPlan, sequential_plan
from gannas_jax.child.sequential.stage import CONV_IMPLS, stage_branches, stage_scan
from gannas_jax.spaces.sequential import CONV, SequentialSpace


class SequentialChild(nn.Module):
    """One compiled network for every architecture of a :class:`SequentialSpace`.

    Attributes:
      space: the search space.
      conv_impl: ``'blocked'`` (for ``lax.map``, CPU) or ``'masked'`` (for ``vmap``,
        accelerators); see :mod:`~gannas_jax.child.sequential.stage`.
      narrow: the variant for architectures without a conv (:func:`is_convless`): the feature
        map keeps the image's channels, there are no stage weights, and the dense layers that
        read the flattened features have only those rows (:func:`narrow_params`). On such an
        architecture it computes what the max-size child computes, at a fraction of the cost.
      assume_canonical: the codes are canonical already, so they are not canonicalized again.
    """

    space: SequentialSpace
    conv_impl: str = "blocked"
    narrow: bool = False
    assume_canonical: bool = False

    @nn.compact
    def __call__(self, arch: jax.Array, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``float32[B, classes]`` of ``arch`` (``int32[V]`` codes or their
        :func:`~gannas_jax.child.sequential.plan.sequential_plan`) on ``x [B, H, W, Cin]``.
        ``train`` is unused (no dropout or BatchNorm in this space)."""
        del train
        sp, g = self.space, geometry(self.space)
        flat = g.hr * g.wr * g.cin if self.narrow else g.flat
        init, zeros = nn.initializers.lecun_normal(), nn.initializers.zeros
        shape = (sp.slots_per_stage, g.kmax, g.kmax, g.cm, g.cm)
        params = {}
        for s in range(0 if self.narrow else sp.num_stages):
            params[f"stage{s}_kernel"] = self.param(f"stage{s}_kernel", init, shape)
            params[f"stage{s}_bias"] = self.param(f"stage{s}_bias", zeros, (shape[0], g.cm))
        for f in range(sp.num_fc):
            rows = flat if f == 0 else g.wm
            params[f"fc{f}_kernel"] = self.param(f"fc{f}_kernel", init, (rows, g.wm))
            params[f"fc{f}_bias"] = self.param(f"fc{f}_bias", zeros, (g.wm,))
        params["out_flat_kernel"] = self.param("out_flat_kernel", init, (flat, sp.num_classes))
        if sp.num_fc:
            shape = (g.wm, sp.num_classes)
            params["out_hidden_kernel"] = self.param("out_hidden_kernel", init, shape)
        params["out_bias"] = self.param("out_bias", zeros, (sp.num_classes,))
        return sequential_forward(self, params, arch, x)


def sequential_forward(
    child: SequentialChild, params: dict, arch: jax.Array | SequentialPlan, x: jax.Array
) -> jax.Array:
    """``child.apply({'params': params}, arch, x)`` as a plain function of the params dict.

    The evaluator calls this directly: Flax would check every param against its initializer at
    each call, tracing the initializers again.
    """
    space, conv_impl, narrow = child.space, child.conv_impl, child.narrow
    if conv_impl not in CONV_IMPLS:
        raise ValueError(
            f"SequentialChild: conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}"
        )
    g = geometry(space)
    cm, wm = (g.cin if narrow else g.cm), g.wm
    plan = arch
    if not isinstance(plan, SequentialPlan):
        plan = sequential_plan(space, conv_impl, arch, narrow, child.assume_canonical)
    stage_fn = stage_scan(stage_branches(space, conv_impl, narrow))

    b = x.shape[0]
    pad = ((0, 0), (0, 0), (0, 0), (0, cm - x.shape[-1]))
    h = jnp.pad(lax.stop_gradient(x).astype(jnp.float32), pad)
    for s in range(space.num_stages):
        if s:
            h = ops.max_pool_2x2(h)
        kern, bias = (
            (None, None) if narrow else (params[f"stage{s}_kernel"], params[f"stage{s}_bias"])
        )
        h = stage_fn(h, kern, bias, plan.stages[s])
    flat = h.reshape(b, -1)
    hid = jnp.zeros((b, wm), jnp.float32)
    for f in range(space.num_fc):
        op = plan.head_op[f]
        pre = (flat if f == 0 else hid) @ params[f"fc{f}_kernel"] + params[f"fc{f}_bias"].reshape(
            1, wm
        )
        act = jnp.where(
            op == 1, jax.nn.relu(pre), jnp.where(op == 2, jax.nn.sigmoid(pre), jnp.tanh(pre))
        )
        act = jnp.where(plan.head_live[f].reshape(1, wm), act, 0.0)
        hid = jnp.where(op != 0, act, hid)
    logits = flat @ params["out_flat_kernel"]
    if space.num_fc:
        logits = jnp.where(plan.n_fc == 0, logits, hid @ params["out_hidden_kernel"])
    return logits + params["out_bias"].reshape(1, -1)


def is_convless(space: SequentialSpace, arch: jax.Array) -> jax.Array:
    """``bool[...]``: whether each ``arch [..., V]`` has no conv slot, so that the narrow child
    can train it. NumPy in, NumPy out (no XLA dispatch); otherwise traceable."""
    xp = np if isinstance(arch, np.ndarray) else jnp
    stage, _ = space.split(xp.asarray(arch, xp.int32))
    return xp.all(stage[..., 0] != CONV, axis=(-2, -1))


def narrow_params(space: SequentialSpace, params: dict) -> dict:
    """The narrow child's params (see :class:`SequentialChild`) out of max-size params: no stage
    weights, and only the rows of the flattened-feature dense layers that read the image's
    channels (for a conv-less architecture the others only ever see zero features)."""
    g = geometry(space)
    hw = g.hr * g.wr

    def rows(w):
        return w.reshape(hw, g.cm, w.shape[-1])[:, : g.cin].reshape(hw * g.cin, w.shape[-1])

    out = {k: v for k, v in params.items() if not k.startswith("stage")}
    for k in ("fc0_kernel", "out_flat_kernel"):
        if k in out:
            out[k] = rows(out[k])
    return out


def init_sequential(
    space: SequentialSpace, key: jax.Array, arch: jax.Array, canonical: bool = False
) -> dict:
    """Max-size params whose live part is distributed like the static child's init.

    Kernels are Flax's lecun-normal with the *live* layer's fan-in, biases zero, and every entry
    outside the architecture's network is zero. Traceable in ``arch``, so a population is
    initialized by ``vmap`` in one program.

    Args:
      space: the search space.
      key: a ``jax.random.key``.
      arch: ``int32[V]``.
      canonical: ``arch`` is canonical already.

    Returns:
      A params dict with the structure of ``SequentialChild.init(...)['params']``.
    """
    g = geometry(space)
    cm, kmax, wm, n_slots = g.cm, g.kmax, g.wm, space.slots_per_stage
    arch = jnp.asarray(arch, jnp.int32)
    if not canonical:
        arch = space.canonicalize(arch)
    stage, head = space.split(arch)
    cin_of = slot_cin(space, stage)
    cin_arr = jnp.asarray(g.cin_values, jnp.int32)
    ks = jnp.asarray(space.kernel_sizes, jnp.int32)
    cs = jnp.asarray(space.channels, jnp.int32)
    widths = jnp.asarray(space.fc_widths, jnp.int32)
    params: dict[str, jax.Array] = {}
    kernels = []  # (name, shape, fan-in, mask)
    pos = jnp.arange(kmax) - kmax // 2
    for s in range(space.num_stages):
        ksz, cin, cout = ks[stage[s, :, 1]], cin_arr[cin_of[s]], cs[stage[s, :, 2]]  # [L] each
        is_conv = stage[s, :, 0] == CONV
        kin = jnp.abs(pos).reshape(1, kmax) <= (ksz // 2).reshape(n_slots, 1)  # [L, K]
        m = (
            kin.reshape(n_slots, kmax, 1, 1, 1)
            & kin.reshape(n_slots, 1, kmax, 1, 1)
            & (jnp.arange(cm).reshape(1, 1, 1, cm, 1) < cin.reshape(n_slots, 1, 1, 1, 1))
            & (jnp.arange(cm).reshape(1, 1, 1, 1, cm) < cout.reshape(n_slots, 1, 1, 1, 1))
            & is_conv.reshape(n_slots, 1, 1, 1, 1)
        )
        fan_in = (ksz * ksz * cin).reshape(n_slots, 1, 1, 1, 1)
        kernels.append((f"stage{s}_kernel", (n_slots, kmax, kmax, cm, cm), fan_in, m))
        params[f"stage{s}_bias"] = jnp.zeros((n_slots, cm), jnp.float32)
    # channels after the last stage
    last_ci = jnp.asarray(g.cin_values.index(g.cin), jnp.int32)
    table = jnp.asarray(g.cout_to_cin, jnp.int32)
    for s in range(space.num_stages):
        for j in range(n_slots):
            last_ci = jnp.where(stage[s, j, 0] == CONV, table[stage[s, j, 2]], last_ci)
    c_last = cin_arr[last_ci]
    flat_rows = (jnp.arange(g.flat) % cm) < c_last  # live rows of the flattened features
    flat_fan = g.hr * g.wr * c_last
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
    out_mask = flat_rows.reshape(-1, 1) & (n_fc == 0)
    kernels.append(("out_flat_kernel", (g.flat, space.num_classes), flat_fan, out_mask))
    if space.num_fc:
        out_mask = hid_rows.reshape(-1, 1) & (n_fc > 0)
        kernels.append(("out_hidden_kernel", (wm, space.num_classes), hid_fan, out_mask))
    params["out_bias"] = jnp.zeros((space.num_classes,), jnp.float32)
    draws = ops.lecun_normal_many(key, [k[1] for k in kernels], [k[2] for k in kernels])
    for (name, _, _, m), z in zip(kernels, draws, strict=True):
        params[name] = jnp.where(m, z, 0.0)
    return params
