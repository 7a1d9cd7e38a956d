"""A sequential CNN space with the original layer vocabulary, laid out for static shapes.

Network layout (every architecture of one space has the same tensor shapes):

    input [H, W, Cin]
    stage 0: L slots, each one of none | conv kxk (c channels, 'same') | max_pool | avg_pool
                                   | relu | sigmoid | tanh   (pools are 3x3, stride 1, 'same')
    fixed 2x2 max-pool reduction (stride 2)
    stage 1: L slots ...
    ...                                  (num_stages - 1 reductions in all)
    flatten
    head: F slots, each none | dense(width) followed by relu | sigmoid | tanh
    classifier: dense(num_classes)

Variables, in order: for each stage and slot ``(op, kernel, channels)``, then for each head slot
``(fc_op, width)``. Hyperparameters that do not apply (a kernel on a pool slot, a width on an
empty head slot) are canonicalized to 0, and within a stage (and within the head) the non-empty
slots are moved to the front in their original order, so equal networks get equal codes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gannas_jax.spaces.base import Space, _check_choice

STAGE_OPS: tuple[str, ...] = ("none", "conv", "max_pool", "avg_pool", "relu", "sigmoid", "tanh")
HEAD_OPS: tuple[str, ...] = ("none", "relu", "sigmoid", "tanh")
ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "tanh")
CONV, MAX_POOL, AVG_POOL = 1, 2, 3
POOL_WINDOW = 3
REDUCTION = {"kind": "max", "window": 2, "stride": 2}

_CONV_RE = re.compile(r"^conv(\d+)x(\d+)-(\d+)$")
_FC_RE = re.compile(r"^fc(\d+)-([a-z]+)$")
_GROUP_RE = re.compile(r"\[([^\[\]]*)\]")


def _as_int_tuple(value: Any, what: str, unique: bool = True) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sequential: {what} must be a sequence of ints, got {value!r}") from err
    if not out:
        raise ValueError(f"sequential: {what} must not be empty")
    if any(v <= 0 for v in out) or any(v != w for v, w in zip(out, value, strict=True)):
        raise ValueError(f"sequential: {what} must hold positive ints, got {value!r}")
    if unique and len(set(out)) != len(out):
        raise ValueError(f"sequential: {what} has repeated values: {value!r}")
    return out


@dataclasses.dataclass(frozen=True)
class SequentialSpace(Space):
    """Staged sequential CNN space (see module docstring for the layout).

    Attributes:
      input_shape: ``(H, W, C)`` of one input image.
      num_classes: classifier outputs.
      num_stages: stages of conv/pool/activation slots; a 2x2 reduction sits between stages.
      slots_per_stage: L, the maximum depth of a stage.
      kernel_sizes: odd conv kernel sizes to choose from.
      channels: conv output channels to choose from.
      num_fc: F, the maximum number of hidden dense layers in the head.
      fc_widths: hidden dense widths to choose from.
    """

    input_shape: tuple[int, ...] = (8, 8, 1)
    num_classes: int = 10
    num_stages: int = 2
    slots_per_stage: int = 3
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    channels: tuple[int, ...] = (8, 16, 32)
    num_fc: int = 2
    fc_widths: tuple[int, ...] = (32, 64, 128)

    def __post_init__(self):
        shape = _as_int_tuple(self.input_shape, "input_shape", unique=False)
        if len(shape) != 3:
            raise ValueError(f"sequential: input_shape must be (H, W, C), got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        for field in ("kernel_sizes", "channels", "fc_widths"):
            object.__setattr__(self, field, _as_int_tuple(getattr(self, field), field))
        for field, low in (
            ("num_classes", 2),
            ("num_stages", 1),
            ("slots_per_stage", 1),
            ("num_fc", 0),
        ):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise ValueError(f"sequential: {field} must be an int >= {low}, got {v!r}")
            object.__setattr__(self, field, int(v))
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(
                f"sequential: kernel sizes must be odd for 'same' padding, got {self.kernel_sizes}"
            )
        h, w, _ = shape
        reductions = self.num_stages - 1
        if min(h, w) < 2**reductions:
            raise ValueError(
                f"sequential: {self.num_stages} stages need {reductions} 2x2 reductions, but an "
                f"input of {h}x{w} allows at most {int(np.log2(min(h, w)))}"
            )

    # --- static description -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "sequential"

    @property
    def _slot_cards(self) -> tuple[int, int, int]:
        return (len(STAGE_OPS), len(self.kernel_sizes), len(self.channels))

    @property
    def cardinalities(self) -> tuple[int, ...]:
        stage = self._slot_cards * (self.num_stages * self.slots_per_stage)
        head = (len(HEAD_OPS), len(self.fc_widths)) * self.num_fc
        return stage + head

    @property
    def variable_names(self) -> tuple[str, ...]:
        names = []
        for s in range(self.num_stages):
            for j in range(self.slots_per_stage):
                names += [f"s{s}.{j}.op", f"s{s}.{j}.kernel", f"s{s}.{j}.channels"]
        for f in range(self.num_fc):
            names += [f"fc{f}.op", f"fc{f}.width"]
        return tuple(names)

    @property
    def size(self) -> int:
        # A canonical stage is a sequence of 0..L non-empty slots; a conv slot has K*C variants.
        m = len(self.kernel_sizes) * len(self.channels) + (len(STAGE_OPS) - 2)
        stage = sum(m**k for k in range(self.slots_per_stage + 1))
        h = (len(HEAD_OPS) - 1) * len(self.fc_widths)
        head = sum(h**k for k in range(self.num_fc + 1))
        return stage**self.num_stages * head

    @property
    def reduced_shape(self) -> tuple[int, int]:
        """Spatial size after the last stage."""
        r = 2 ** (self.num_stages - 1)
        return self.input_shape[0] // r, self.input_shape[1] // r

    # --- canonicalization ------------------------------------------------------------------------

    def split(self, archs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Splits ``[..., V]`` into stage ``[..., S, L, 3]`` and head ``[..., F, 2]`` codes."""
        n_stage = self.num_stages * self.slots_per_stage * 3
        lead = archs.shape[:-1]
        stage = archs[..., :n_stage].reshape(lead + (self.num_stages, self.slots_per_stage, 3))
        head = archs[..., n_stage:].reshape(lead + (self.num_fc, 2))
        return stage, head

    def canonicalize(self, archs: jax.Array) -> jax.Array:
        # NumPy input stays on the host (string and spec conversions call this per architecture,
        # where dispatching a dozen tiny XLA ops would dominate); anything else is traced as jnp.
        xp = np if isinstance(archs, np.ndarray) else jnp
        archs = xp.asarray(self._check_shape(archs))
        stage, head = self.split(archs)
        op = stage[..., 0]
        is_conv = op == CONV
        stage = xp.stack(
            [op, xp.where(is_conv, stage[..., 1], 0), xp.where(is_conv, stage[..., 2], 0)], axis=-1
        ).astype(archs.dtype)
        head = xp.stack([head[..., 0], xp.where(head[..., 0] == 0, 0, head[..., 1])], axis=-1)
        stage = _compact(xp, stage, axis=-2)
        head = _compact(xp, head.astype(archs.dtype), axis=-2)
        lead = archs.shape[:-1]
        return xp.concatenate([stage.reshape(lead + (-1,)), head.reshape(lead + (-1,))], axis=-1)

    # --- strings ---------------------------------------------------------------------------------

    def _canonical_parts(self, arch: Any) -> tuple[np.ndarray, np.ndarray]:
        codes = self.canonicalize(self._one(arch))
        return self.split(codes)

    def to_string(self, arch: Any) -> str:
        stage, head = self._canonical_parts(arch)
        groups = []
        for s in range(self.num_stages):
            toks = []
            for op, k, c in stage[s]:
                if op == CONV:
                    kk = self.kernel_sizes[k]
                    toks.append(f"conv{kk}x{kk}-{self.channels[c]}")
                elif op:
                    toks.append(STAGE_OPS[op])
            groups.append(" ".join(toks))
        groups.append(" ".join(f"fc{self.fc_widths[w]}-{HEAD_OPS[op]}" for op, w in head if op))
        return " ".join(f"[{g}]" for g in groups)

    def from_string(self, s: str) -> np.ndarray:
        if not isinstance(s, str):
            raise ValueError(f"sequential: expected an architecture string, got {type(s).__name__}")
        groups = _GROUP_RE.findall(s)
        if _GROUP_RE.sub("", s).strip() or len(groups) != self.num_stages + 1:
            raise ValueError(
                f"sequential: malformed architecture string {s!r}; expected "
                f"{self.num_stages} stage "
                "groups and one head group, like '[conv3x3-16 relu] [max_pool] [fc64-relu]'"
            )
        layers = []
        for tok_group in groups[:-1]:
            stage = []
            for tok in tok_group.split():
                m = _CONV_RE.match(tok)
                if m:
                    if m.group(1) != m.group(2):
                        raise ValueError(f"sequential: only square kernels exist, got {tok!r}")
                    stage.append(
                        {"type": "conv", "kernel": int(m.group(1)), "channels": int(m.group(3))}
                    )
                elif tok in ("max_pool", "avg_pool"):
                    stage.append({"type": "pool", "kind": tok[:3]})
                elif tok in ACTIVATIONS:
                    stage.append({"type": "activation", "fn": tok})
                else:
                    raise ValueError(
                        f"sequential: unknown op {tok!r} in {s!r}; expected convKxK-C, max_pool, "
                        f"avg_pool or one of {list(ACTIVATIONS)}"
                    )
            layers.append(stage)
        head = []
        for tok in groups[-1].split():
            m = _FC_RE.match(tok)
            if not m:
                raise ValueError(
                    f"sequential: unknown head op {tok!r} in {s!r}; expected fcW-activation"
                )
            head.append({"type": "dense", "units": int(m.group(1)), "activation": m.group(2)})
        return self._encode(layers, head)

    # --- specs -----------------------------------------------------------------------------------

    def to_spec(self, arch: Any) -> dict:
        stage, head = self._canonical_parts(arch)
        stages = []
        for s in range(self.num_stages):
            layers = []
            for op, k, c in stage[s]:
                if op == CONV:
                    layers.append(
                        {
                            "type": "conv",
                            "kernel": self.kernel_sizes[k],
                            "channels": self.channels[c],
                            "padding": "same",
                        }
                    )
                elif op in (MAX_POOL, AVG_POOL):
                    layers.append(
                        {
                            "type": "pool",
                            "kind": STAGE_OPS[op][:3],
                            "window": POOL_WINDOW,
                            "stride": 1,
                            "padding": "same",
                            "count_include_pad": True,
                        }
                    )
                elif op:
                    layers.append({"type": "activation", "fn": STAGE_OPS[op]})
            stages.append(layers)
        return {
            "space": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stages": stages,
            "reduction": dict(REDUCTION),
            "head": [
                {"type": "dense", "units": self.fc_widths[w], "activation": HEAD_OPS[op]}
                for op, w in head
                if op
            ],
            "classifier": {"type": "dense", "units": self.num_classes},
        }

    def from_spec(self, spec: dict) -> np.ndarray:
        if not isinstance(spec, dict) or spec.get("space") != self.name:
            raise ValueError(f"sequential: not a sequential spec: {spec!r}")
        if (
            tuple(spec.get("input_shape", ())) != self.input_shape
            or spec.get("num_classes") != self.num_classes
        ):
            raise ValueError(
                f"sequential: spec is for input {spec.get('input_shape')} / "
                f"{spec.get('num_classes')} "
                f"classes, this space is {list(self.input_shape)} / {self.num_classes}"
            )
        stages, head = spec.get("stages"), spec.get("head")
        if not isinstance(stages, list) or not isinstance(head, list):
            raise ValueError("sequential: spec needs 'stages' and 'head' lists")
        return self._encode(stages, head)

    def _encode(self, stages: list, head: list) -> np.ndarray:
        """Layer dicts -> canonical codes, with every choice checked."""
        if len(stages) != self.num_stages:
            raise ValueError(f"sequential: expected {self.num_stages} stages, got {len(stages)}")
        codes = np.zeros((self.num_stages, self.slots_per_stage, 3), np.int32)
        for s, layers in enumerate(stages):
            if len(layers) > self.slots_per_stage:
                raise ValueError(
                    f"sequential: stage {s} has {len(layers)} layers, at most "
                    f"{self.slots_per_stage} fit"
                )
            for j, layer in enumerate(layers):
                kind = layer.get("type") if isinstance(layer, dict) else None
                if kind == "conv":
                    _check_choice(layer.get("kernel"), self.kernel_sizes, "kernel size", self.name)
                    _check_choice(layer.get("channels"), self.channels, "channel count", self.name)
                    codes[s, j] = (
                        CONV,
                        self.kernel_sizes.index(layer["kernel"]),
                        self.channels.index(layer["channels"]),
                    )
                elif kind == "pool":
                    _check_choice(layer.get("kind"), ("max", "avg"), "pool kind", self.name)
                    codes[s, j, 0] = STAGE_OPS.index(f"{layer['kind']}_pool")
                elif kind == "activation":
                    _check_choice(layer.get("fn"), ACTIVATIONS, "activation", self.name)
                    codes[s, j, 0] = STAGE_OPS.index(layer["fn"])
                else:
                    raise ValueError(f"sequential: unknown layer {layer!r} in stage {s}")
        if len(head) > self.num_fc:
            raise ValueError(
                f"sequential: head has {len(head)} dense layers, at most {self.num_fc} fit"
            )
        hcodes = np.zeros((self.num_fc, 2), np.int32)
        for f, layer in enumerate(head):
            if not isinstance(layer, dict) or layer.get("type") != "dense":
                raise ValueError(f"sequential: unknown head layer {layer!r}")
            _check_choice(layer.get("units"), self.fc_widths, "dense width", self.name)
            _check_choice(layer.get("activation"), ACTIVATIONS, "activation", self.name)
            hcodes[f] = (HEAD_OPS.index(layer["activation"]), self.fc_widths.index(layer["units"]))
        return np.concatenate([codes.reshape(-1), hcodes.reshape(-1)])


def _compact(xp, slots, axis: int):
    """Moves slots whose op (field 0) is non-zero to the front, keeping their order."""
    empty = slots[..., 0] == 0
    if xp is np:
        order = np.argsort(empty, axis=axis + 1, kind="stable")
    else:
        order = jnp.argsort(empty, axis=axis + 1, stable=True)
    return xp.take_along_axis(slots, order[..., None], axis=axis)
