"""Child networks: arch-as-data modules (one compile for a whole space) and exact-size builders.

:func:`make_child` wraps either space's arch-as-data module in a :class:`Child`, the small pure
interface that training uses: ``init(key, arch) -> variables`` and
``apply(variables, arch, x, train) -> (logits, batch_stats)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from gannas_jax.child.nb201 import (
    NB201Child,
    StaticNB201,
    load_static_nb201,
    nb201_cost,
    static_nb201,
)
from gannas_jax.child.sequential import (
    SequentialChild,
    StaticSequential,
    apply_sequential,
    arch_seed,
    extract_static_sequential,
    init_sequential,
    is_convless,
    load_static_sequential,
    narrow_params,
    sequential_cost,
    sequential_plan,
    static_sequential,
)
from gannas_jax.spaces import NB201Space, SequentialSpace, Space


@dataclasses.dataclass(frozen=True)
class Child:
    """A space's arch-as-data network as pure functions (hashable: usable as a static argument).

    Attributes:
      space: the search space.
      input_shape: ``(H, W, C)`` of the images.
      num_classes: classifier outputs.
      conv_impl: sequential space only: ``'exact'``, ``'kernel'``, ``'blocked'`` or ``'masked'``
        (see :class:`SequentialChild`).
      nb201_channels, nb201_cells: NB201 only: C and N of the skeleton.
      narrow: sequential space only: the narrow variant for conv-less architectures (see
        :class:`SequentialChild`); its ``init`` gives the max-size child's weights, cut down.
      assume_canonical: sequential space only: ``arch`` arguments are canonical already, so the
        network does not canonicalize them again (see :class:`SequentialChild`).
    """

    space: Space
    input_shape: tuple[int, int, int]
    num_classes: int
    conv_impl: str = "exact"
    nb201_channels: int = 16
    nb201_cells: int = 5
    narrow: bool = False
    assume_canonical: bool = False

    @property
    def module(self):
        """The Flax module (``SequentialChild`` or ``NB201Child``)."""
        if isinstance(self.space, SequentialSpace):
            return SequentialChild(self.space, self.conv_impl, self.narrow, self.assume_canonical)
        return NB201Child(self.space, self.nb201_channels, self.nb201_cells, self.num_classes)

    @property
    def train_mode_is_inference(self) -> bool:
        """Whether the training-mode forward pass equals inference (no BatchNorm, no dropout).

        Then the evaluator scores a child in its training loop's own forward pass (see
        :func:`gannas_jax.evaluate.training.train_member`) instead of compiling a second one.
        """
        return isinstance(self.space, SequentialSpace)

    def narrow_variant(self) -> Child | None:
        """The cheaper child for the architectures :meth:`is_narrow` accepts, or None.

        Sequential space only: a conv-less architecture computes on the image's channels alone,
        so its narrow child skips the zero channels of the max-size child and every stage weight.
        """
        if isinstance(self.space, SequentialSpace) and not self.narrow:
            return dataclasses.replace(self, narrow=True)
        return None

    def narrow_from(self, variables: dict) -> dict:
        """This narrow child's variables cut out of the max-size child's (see :meth:`init`)."""
        return {
            "params": narrow_params(self.space, variables["params"]),
            "batch_stats": variables["batch_stats"],
        }

    def is_narrow(self, arch: jax.Array) -> jax.Array:
        """``bool[]``: whether :meth:`narrow_variant` can train ``arch`` (traceable)."""
        return is_convless(self.space, arch)

    def plan(self, arch: jax.Array) -> Any:
        """What :meth:`apply` reads from ``arch``, decoded once (traceable): pass it to
        :meth:`apply` in place of the codes when applying one architecture many times, as a
        training loop does (sequential space: :func:`sequential_plan`; NB201: the codes)."""
        if isinstance(self.space, SequentialSpace):
            return sequential_plan(
                self.space, self.conv_impl, arch, self.narrow, self.assume_canonical
            )
        return arch

    def scoring_plan(self, plan: Any, scoring: jax.Array) -> Any:
        """``plan`` for a step whose update is thrown away when ``scoring`` (a traced bool), as
        in the evaluator's scoring steps, which score batches with the learning rate at 0: the
        sequential child's stage loops then skip their backward passes and
        :class:`~gannas_jax.parallel.SlotSparse` updates no slot. The logits are unchanged, and
        so are the params (a zero learning rate moves none); the other params' gradients are not
        exact. Other plans are returned as they are. Measured on the default digits program
        (in-process A/B, two compiles of each, each run twice on two batches): running time -2%,
        process CPU time -4%, the same accuracies."""
        if not isinstance(self.space, SequentialSpace) or not isinstance(plan, dict):
            return plan
        where = jax.numpy.where
        stages = [st[:-2] + (where(scoring, st[-1], st[-2]), st[-1]) for st in plan["stages"]]
        live = {k: (slots, where(scoring, 0, n)) for k, (slots, n) in plan["live_slots"].items()}
        return {**plan, "stages": stages, "live_slots": live}

    @property
    def slot_leaves(self) -> tuple[str, ...]:
        """Params stacked on a leading slot axis whose dead slots never get a gradient (sequential
        max-size child: the stage kernels), for :class:`~gannas_jax.parallel.SlotSparse`."""
        if isinstance(self.space, SequentialSpace) and not self.narrow:
            return tuple(f"stage{s}_kernel" for s in range(self.space.num_stages))
        return ()

    def live_slots(self, plan: Any) -> dict[str, tuple[jax.Array, jax.Array]]:
        """``{leaf: (slots int32[L], n)}`` of :attr:`slot_leaves` from a :meth:`plan`: the first
        ``n`` of ``slots`` are the live ones (traceable)."""
        if not self.slot_leaves:
            return {}
        if not isinstance(plan, dict):
            plan = self.plan(plan)
        return plan["live_slots"]

    def init(self, key: jax.Array, arch: jax.Array) -> dict[str, Any]:
        """Variables ``{'params', 'batch_stats'}`` of one child (traceable in ``arch``)."""
        if isinstance(self.space, SequentialSpace):
            v = {
                "params": init_sequential(self.space, key, arch, self.assume_canonical),
                "batch_stats": {},
            }
            return self.narrow_from(v) if self.narrow else v
        x = jax.numpy.zeros((1,) + tuple(self.input_shape), jax.numpy.float32)
        v = self.module.init(key, arch, x)
        return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}

    def apply(
        self, variables: dict, arch: jax.Array, x: jax.Array, train: bool
    ) -> tuple[jax.Array, Any]:
        """``(logits [B, classes], new batch_stats)`` on images ``x`` ``[B, H, W, C]``."""
        if isinstance(self.space, SequentialSpace):  # no BatchNorm; functional, no Flax overhead
            return apply_sequential(self.module, variables["params"], arch, x), variables.get(
                "batch_stats", {}
            )
        if not variables.get("batch_stats"):
            return self.module.apply(
                {"params": variables["params"]}, arch, x, train
            ), variables.get("batch_stats", {})
        if train:
            logits, upd = self.module.apply(variables, arch, x, train=True, mutable=["batch_stats"])
            return logits, upd["batch_stats"]
        return self.module.apply(variables, arch, x, train=False), variables["batch_stats"]

    def cost(self, arch: Any) -> dict[str, int]:
        """Exact parameter count and per-image forward FLOPs of one architecture."""
        if isinstance(self.space, SequentialSpace):
            return sequential_cost(self.space, arch)
        return nb201_cost(
            self.space,
            arch,
            self.nb201_channels,
            self.nb201_cells,
            self.num_classes,
            tuple(self.input_shape),
        )


def make_child(
    space: Space,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    conv_impl: str = "exact",
    nb201_channels: int = 16,
    nb201_cells: int = 5,
) -> Child:
    """The :class:`Child` of ``space`` for images of ``input_shape`` and ``num_classes`` classes.

    Raises:
      ValueError: an unsupported space, or a sequential space built for other inputs.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if isinstance(space, SequentialSpace):
        if tuple(space.input_shape) != input_shape or space.num_classes != num_classes:
            raise ValueError(
                f"sequential space is for input {space.input_shape} / {space.num_classes} classes, but "
                f"the data is {input_shape} / {num_classes} classes; build the space with "
                f"SequentialSpace(input_shape={input_shape}, num_classes={num_classes})"
            )
        if conv_impl not in ("exact", "kernel", "blocked", "masked"):
            raise ValueError(
                f"conv_impl must be 'exact', 'kernel', 'blocked' or 'masked', got {conv_impl!r}"
            )
    elif not isinstance(space, NB201Space):
        raise ValueError(f"no child network for space {type(space).__name__}")
    return Child(
        space, input_shape, int(num_classes), conv_impl, int(nb201_channels), int(nb201_cells)
    )


__all__ = [
    "Child",
    "make_child",
    "arch_seed",
    "SequentialChild",
    "StaticSequential",
    "extract_static_sequential",
    "init_sequential",
    "load_static_sequential",
    "sequential_cost",
    "static_sequential",
    "is_convless",
    "narrow_params",
    "NB201Child",
    "StaticNB201",
    "load_static_nb201",
    "nb201_cost",
    "static_nb201",
]
