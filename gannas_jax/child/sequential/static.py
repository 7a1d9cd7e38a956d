"""The static child of a sequential architecture: a plain Flax network at its own widths.

It is the reference the arch-as-data child is tested against, the export format of trained
children (:func:`extract_static_sequential`), and the source of its costs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from gannas_jax.child.sequential.geometry import geometry
from gannas_jax.spaces.sequential import CONV, SequentialSpace

_ACT = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jax.numpy.tanh}


class StaticSequential(nn.Module):
    """Plain Flax network of one architecture, at its own widths (from ``space.to_spec``).

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
            for j, layer in enumerate(stage):
                if layer[0] == "conv":
                    x = nn.Conv(
                        layer[2], (layer[1], layer[1]), padding="SAME", name=f"conv{s}_{j}"
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
    """The fixed-size Flax module of one architecture, built from ``space.to_spec(arch)``."""
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
    """Host-side walk of a canonical arch: its conv slots ``(s, j, k, cin, cout)``, the channels
    after the last stage, and the head's widths."""
    codes = space.canonicalize(np.asarray(space._one(arch)))
    stage, head = space.split(codes)
    c = space.input_shape[2]
    convs = []
    for s in range(space.num_stages):
        for j in range(space.slots_per_stage):
            op, k, co = (int(v) for v in stage[s, j])
            if op == CONV:
                cout = space.channels[co]
                convs.append((s, j, space.kernel_sizes[k], c, cout))
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
    cm, kmax, wm, n_slots = g.cm, g.kmax, g.wm, space.slots_per_stage
    convs, c_last, fcs = _trace(space, arch)
    p: dict[str, np.ndarray] = {}
    for s in range(space.num_stages):
        p[f"stage{s}_kernel"] = np.zeros((n_slots, kmax, kmax, cm, cm), np.float32)
        p[f"stage{s}_bias"] = np.zeros((n_slots, cm), np.float32)
    for s, j, k, cin, cout in convs:
        o = (kmax - k) // 2
        sp_ = static_params[f"conv{s}_{j}"]
        p[f"stage{s}_kernel"][j, o : o + k, o : o + k, :cin, :cout] = np.asarray(sp_["kernel"])
        p[f"stage{s}_bias"][j, :cout] = np.asarray(sp_["bias"])

    def flat_rows(w):  # [hr*wr*c_last, n] -> [hr*wr*cm, n]
        n = w.shape[-1]
        w = np.asarray(w).reshape(g.hr, g.wr, c_last, n)
        return np.pad(w, ((0, 0), (0, 0), (0, cm - c_last), (0, 0))).reshape(g.flat, n)

    for f in range(space.num_fc):
        n_in = g.flat if f == 0 else wm
        k_ = np.zeros((n_in, wm), np.float32)
        b_ = np.zeros((wm,), np.float32)
        if f < len(fcs):
            sw = static_params[f"fc{f}"]
            kk = flat_rows(sw["kernel"]) if f == 0 else np.asarray(sw["kernel"])
            k_[: kk.shape[0], : fcs[f]] = kk
            b_[: fcs[f]] = np.asarray(sw["bias"])
        p[f"fc{f}_kernel"], p[f"fc{f}_bias"] = k_, b_
    out = static_params["out"]
    p["out_flat_kernel"] = np.zeros((g.flat, space.num_classes), np.float32)
    if space.num_fc:
        p["out_hidden_kernel"] = np.zeros((wm, space.num_classes), np.float32)
    if fcs:
        p["out_hidden_kernel"][: fcs[-1]] = np.asarray(out["kernel"])
    else:
        p["out_flat_kernel"] = flat_rows(out["kernel"]).astype(np.float32)
    p["out_bias"] = np.asarray(out["bias"], np.float32)
    return p


def extract_static_sequential(space: SequentialSpace, arch: Any, child_params: dict) -> dict:
    """Inverse of :func:`load_static_sequential`: the static params of one child."""
    g = geometry(space)
    cm, kmax = g.cm, g.kmax
    convs, c_last, fcs = _trace(space, arch)
    cp = {k: np.asarray(v) for k, v in child_params.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, j, k, cin, cout in convs:
        o = (kmax - k) // 2
        out[f"conv{s}_{j}"] = {
            "kernel": cp[f"stage{s}_kernel"][j, o : o + k, o : o + k, :cin, :cout].copy(),
            "bias": cp[f"stage{s}_bias"][j, :cout].copy(),
        }

    def unflat(w):
        n = w.shape[-1]
        return w.reshape(g.hr, g.wr, cm, n)[:, :, :c_last].reshape(-1, n).copy()

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
    for s, _, k, cin, cout in convs:
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
