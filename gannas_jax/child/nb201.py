"""Children of :class:`~gannas_jax.spaces.NB201Space`: the NAS-Bench-201 macro skeleton.

Skeleton (Dong & Yang 2020, ``TinyNetwork``):

    stem: conv3x3(Cin -> C) + BN
    stage 0: N cells at C channels
    reduction: ResNet basic block, stride 2 (C -> 2C)
    stage 1: N cells at 2C
    reduction (2C -> 4C)
    stage 2: N cells at 4C
    BN + ReLU, global average pool, dense classifier

A cell has nodes 0..3; node ``i`` is the sum over edges ``j -> i`` of ``op(node j)``, and node 3 is
the output. Ops: ``none`` (zero), ``skip_connect``, ``nor_conv_1x1`` / ``nor_conv_3x3``
(ReLU-Conv-BN), ``avg_pool_3x3`` (stride 1, ``count_include_pad=False``). Convolutions have no
bias. BatchNorm momentum is PyTorch's 0.1 (flax 0.9), epsilon 1e-5.

The arch-as-data child holds the weights of *both* conv ops on every edge; each edge picks its op
with ``lax.switch``, and only the taken op's BatchNorm statistics are updated. The cells of a
stage run in a ``lax.scan`` over stacked weights, so the cell body compiles once per stage.
NB201 has no width choices, so every BatchNorm mask here is all-true; :func:`ops.batch_norm`
supports channel masks for spaces that have them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gannas_jax.child import ops
from gannas_jax.spaces.nb201 import EDGES, OPS, NB201Space

BN_MOMENTUM = 0.9
BN_EPS = 1e-5
NUM_EDGES = len(EDGES)


def _relu_conv_bn(x, kernel, scale, bias, mean, var, train, axis_name=None):
    y = ops.conv_strided(jax.nn.relu(x), kernel, 1)
    return ops.batch_norm(
        y, scale, bias, mean, var, train, momentum=BN_MOMENTUM, eps=BN_EPS, axis_name=axis_name
    )


def _cell(h: jax.Array, codes: jax.Array, p: dict, s: dict, train: bool, axis_name=None):
    """One arch-as-data cell. ``p``/``s`` leaves have a leading edge axis [6, ...]."""

    def branch_none(x, pe, se):
        return jnp.zeros_like(x), se

    def branch_skip(x, pe, se):
        return x, se

    def branch_conv(kname, prefix):
        def f(x, pe, se):
            y, m, v = _relu_conv_bn(
                x,
                pe[kname],
                pe[prefix + "_scale"],
                pe[prefix + "_bias"],
                se[prefix + "_mean"],
                se[prefix + "_var"],
                train,
                axis_name,
            )
            return y, {**se, prefix + "_mean": m, prefix + "_var": v}

        return f

    def branch_pool(x, pe, se):
        return ops.avg_pool_same(x, 3, count_include_pad=False), se

    branches = [
        branch_none,
        branch_skip,
        branch_conv("k1", "bn1"),
        branch_conv("k3", "bn3"),
        branch_pool,
    ]
    assert len(branches) == len(OPS)
    nodes = [h]
    new_stats = []
    for dst in range(1, 4):
        acc = jnp.zeros_like(h)
        for e, (d, src) in enumerate(EDGES):
            if d != dst:
                continue
            pe = jax.tree.map(lambda a, e=e: a[e], p)
            se = jax.tree.map(lambda a, e=e: a[e], s)
            y, se2 = lax.switch(codes[e], branches, nodes[src], pe, se)
            new_stats.append((e, se2))
            acc = acc + y
        nodes.append(acc)
    order = sorted(new_stats, key=lambda t: t[0])
    stats = jax.tree.map(lambda *a: jnp.stack(a), *[t[1] for t in order])
    return nodes[3], stats


class NB201Child(nn.Module):
    """Arch-as-data NAS-Bench-201 network: one compiled program for all 15,625 cells.

    Attributes:
      space: the NB201 space.
      channels: C, the width of the first stage (16 in the benchmark).
      cells: N, cells per stage (5 in the benchmark).
      num_classes: classifier outputs.
      axis_name: the data-parallel device axis that BatchNorm's batch statistics are averaged
        over in training (None: this device's batch alone).
    """

    space: NB201Space
    channels: int = 16
    cells: int = 5
    num_classes: int = 10
    axis_name: str | None = None

    @nn.compact
    def __call__(self, arch: jax.Array, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, num_classes]`` of cell ``arch`` (``int32[6]``) on ``x`` ``[B, H, W, Cin]``.

        In training mode BatchNorm uses batch statistics, and the running statistics are updated
        when the ``batch_stats`` collection is mutable.
        """
        arch = jnp.asarray(arch, jnp.int32)
        c, n = self.channels, self.cells
        init, zeros, ones = (
            nn.initializers.lecun_normal(),
            nn.initializers.zeros,
            nn.initializers.ones,
        )
        mutable = self.is_mutable_collection("batch_stats")

        def bn_vars(name, shape):
            sc = self.param(name + "_scale", ones, shape)
            bi = self.param(name + "_bias", zeros, shape)
            mu = self.variable("batch_stats", name + "_mean", lambda: jnp.zeros(shape, jnp.float32))
            va = self.variable("batch_stats", name + "_var", lambda: jnp.ones(shape, jnp.float32))
            return sc, bi, mu, va

        def bn(x, name):
            sc, bi, mu, va = bn_vars(name, (x.shape[-1],))
            y, m, v = ops.batch_norm(
                x,
                sc,
                bi,
                mu.value,
                va.value,
                train,
                momentum=BN_MOMENTUM,
                eps=BN_EPS,
                axis_name=self.axis_name,
            )
            if train and mutable:
                mu.value, va.value = m, v
            return y

        cin = x.shape[-1]
        h = ops.conv_same(x.astype(jnp.float32), self.param("stem_kernel", init, (3, 3, cin, c)))
        h = bn(h, "stem_bn")
        c_prev = c
        for s in range(3):
            cs = c * 2**s
            if s:
                a = ops.conv_strided(
                    jax.nn.relu(h), self.param(f"red{s}_a_kernel", init, (3, 3, c_prev, cs)), 2
                )
                a = bn(a, f"red{s}_a_bn")
                b = ops.conv_same(
                    jax.nn.relu(a), self.param(f"red{s}_b_kernel", init, (3, 3, cs, cs))
                )
                b = bn(b, f"red{s}_b_bn")
                d = ops.conv_same(
                    ops.avg_pool_2x2(h), self.param(f"red{s}_down_kernel", init, (1, 1, c_prev, cs))
                )
                h = d + b
            pre = f"cells{s}"
            p = {
                "k1": self.param(pre + "_k1", init, (n, NUM_EDGES, 1, 1, cs, cs)),
                "k3": self.param(pre + "_k3", init, (n, NUM_EDGES, 3, 3, cs, cs)),
            }
            stats_vars = {}
            for bnn in ("bn1", "bn3"):
                sc, bi, mu, va = bn_vars(f"{pre}_{bnn}", (n, NUM_EDGES, cs))
                p[bnn + "_scale"], p[bnn + "_bias"] = sc, bi
                stats_vars[bnn + "_mean"], stats_vars[bnn + "_var"] = mu, va
            stats = {k: v.value for k, v in stats_vars.items()}

            def body(h, inp):
                pc, sc_ = inp
                return _cell(h, arch, pc, sc_, train, self.axis_name)

            h, new_stats = lax.scan(body, h, (p, stats))
            if train and mutable:
                for k, v in stats_vars.items():
                    v.value = new_stats[k]
            c_prev = cs
        h = jax.nn.relu(bn(h, "last_bn"))
        h = jnp.mean(h, axis=(1, 2))
        kernel = self.param("classifier_kernel", init, (c_prev, self.num_classes))
        return h @ kernel + self.param("classifier_bias", zeros, (self.num_classes,)).reshape(1, -1)


# --- the static child ---------------------------------------------------------------------------


class _ReLUConvBN(nn.Module):
    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train):
        p = self.kernel // 2
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=self.stride,
            padding=((p, p), (p, p)),
            use_bias=False,
            name="conv",
        )(jax.nn.relu(x))
        return nn.BatchNorm(
            use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name="bn"
        )(x)


class StaticNB201(nn.Module):
    """Plain Flax NAS-Bench-201 network of one cell (``ops``: 6 op names in edge order).

    ``none`` edges have no module and contribute nothing.
    """

    ops: tuple[str, ...]
    channels: int = 16
    cells: int = 5
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.channels

        def bn(name):
            return nn.BatchNorm(
                use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name
            )

        h = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem_conv")(x)
        h = bn("stem_bn")(h)
        for s in range(3):
            cs = c * 2**s
            if s:
                a = _ReLUConvBN(cs, 3, 2, name=f"red{s}_a")(h, train)
                b = _ReLUConvBN(cs, 3, 1, name=f"red{s}_b")(a, train)
                d = nn.avg_pool(h, (2, 2), strides=(2, 2), padding="VALID")
                d = nn.Conv(cs, (1, 1), use_bias=False, name=f"red{s}_down")(d)
                h = d + b
            for i in range(self.cells):
                nodes = [h]
                for dst in range(1, 4):
                    acc = jnp.zeros_like(h)
                    for e, (d_, src) in enumerate(EDGES):
                        if d_ != dst:
                            continue
                        op = self.ops[e]
                        x_in = nodes[src]
                        if op == "none":
                            continue
                        if op == "skip_connect":
                            y = x_in
                        elif op == "nor_conv_1x1":
                            y = _ReLUConvBN(cs, 1, name=f"cell{s}_{i}_e{e}")(x_in, train)
                        elif op == "nor_conv_3x3":
                            y = _ReLUConvBN(cs, 3, name=f"cell{s}_{i}_e{e}")(x_in, train)
                        else:
                            y = nn.avg_pool(
                                x_in,
                                (3, 3),
                                strides=(1, 1),
                                padding=((1, 1), (1, 1)),
                                count_include_pad=False,
                            )
                        acc = acc + y
                    nodes.append(acc)
                h = nodes[3]
        h = jax.nn.relu(bn("last_bn")(h))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(h)


def static_nb201(
    space: NB201Space, arch: Any, channels: int = 16, cells: int = 5, num_classes: int = 10
) -> StaticNB201:
    """The static Flax module of one NB201 cell."""
    codes = space._one(arch)
    return StaticNB201(tuple(OPS[int(c)] for c in codes), channels, cells, num_classes)


def load_static_nb201(space: NB201Space, arch: Any, static_vars: dict, child_vars: dict) -> dict:
    """Child variables (``params`` and ``batch_stats``) holding a static child's weights.

    Weights of ops the cell does not use keep the values in ``child_vars``.

    Args:
      space: the NB201 space.
      arch: one cell.
      static_vars: ``static_nb201(...).init(...)`` variables.
      child_vars: ``NB201Child(...).init(...)`` variables (the template).

    Returns:
      numpy variables for :class:`NB201Child`.
    """
    codes = space._one(arch)
    out = jax.tree.map(lambda a: np.array(a, copy=True), child_vars)
    P, S = out["params"], out["batch_stats"]
    sp, ss = static_vars["params"], static_vars.get("batch_stats", {})

    def put_bn(dst_name, src_bn, idx=()):
        sst = ss[src_bn[0]] if len(src_bn) == 1 else ss[src_bn[0]][src_bn[1]]
        spp = sp[src_bn[0]] if len(src_bn) == 1 else sp[src_bn[0]][src_bn[1]]
        P[dst_name + "_scale"][idx] = np.asarray(spp["scale"])
        P[dst_name + "_bias"][idx] = np.asarray(spp["bias"])
        S[dst_name + "_mean"][idx] = np.asarray(sst["mean"])
        S[dst_name + "_var"][idx] = np.asarray(sst["var"])

    P["stem_kernel"][...] = np.asarray(sp["stem_conv"]["kernel"])
    put_bn("stem_bn", ("stem_bn",))
    for s in (1, 2):
        P[f"red{s}_a_kernel"][...] = np.asarray(sp[f"red{s}_a"]["conv"]["kernel"])
        put_bn(f"red{s}_a_bn", (f"red{s}_a", "bn"))
        P[f"red{s}_b_kernel"][...] = np.asarray(sp[f"red{s}_b"]["conv"]["kernel"])
        put_bn(f"red{s}_b_bn", (f"red{s}_b", "bn"))
        P[f"red{s}_down_kernel"][...] = np.asarray(sp[f"red{s}_down"]["kernel"])
    n = P["cells0_k1"].shape[0]
    for s in range(3):
        for i in range(n):
            for e, c in enumerate(codes):
                op = OPS[int(c)]
                if op not in ("nor_conv_1x1", "nor_conv_3x3"):
                    continue
                tag = "1" if op == "nor_conv_1x1" else "3"
                name = f"cell{s}_{i}_e{e}"
                P[f"cells{s}_k{tag}"][i, e] = np.asarray(sp[name]["conv"]["kernel"])
                put_bn(f"cells{s}_bn{tag}", (name, "bn"), (i, e))
    put_bn("last_bn", ("last_bn",))
    P["classifier_kernel"][...] = np.asarray(sp["classifier"]["kernel"])
    P["classifier_bias"][...] = np.asarray(sp["classifier"]["bias"])
    return out


def nb201_cost(
    space: NB201Space,
    arch: Any,
    channels: int = 16,
    cells: int = 5,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (32, 32, 3),
) -> dict[str, int]:
    """Exact parameter count (weights and BN affine) and forward FLOPs of one image."""
    codes = space._one(arch)
    h, w, cin = input_shape
    c = channels
    params = 9 * cin * c + 2 * c
    flops = 2 * h * w * 9 * cin * c
    c_prev = c
    for s in range(3):
        cs = c * 2**s
        if s:
            h, w = h // 2, w // 2
            params += 9 * c_prev * cs + 2 * cs + 9 * cs * cs + 2 * cs + c_prev * cs
            flops += 2 * h * w * (9 * c_prev * cs + 9 * cs * cs + c_prev * cs)
        for code in codes:
            op = OPS[int(code)]
            if op == "nor_conv_1x1":
                params += cells * (cs * cs + 2 * cs)
                flops += cells * 2 * h * w * cs * cs
            elif op == "nor_conv_3x3":
                params += cells * (9 * cs * cs + 2 * cs)
                flops += cells * 2 * h * w * 9 * cs * cs
        c_prev = cs
    params += 2 * c_prev + c_prev * num_classes + num_classes
    flops += 2 * c_prev * num_classes
    return {"params": int(params), "flops": int(flops)}
