"""The :class:`Child` interface: a space's arch-as-data network as pure functions.

Training code sees only ``init(key, arch) -> variables``, ``plan(arch)`` and
``apply(variables, plan_or_arch, x, train) -> (logits, batch_stats)``, whatever the space.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import jax
import numpy as np

from gannas_jax.child.nb201 import NB201Child, nb201_cost
from gannas_jax.child.sequential import (
    CONV_IMPLS,
    LiveSlots,
    SequentialChild,
    SequentialPlan,
    init_sequential,
    is_convless,
    narrow_params,
    scoring_plan,
    sequential_cost,
    sequential_forward,
    sequential_plan,
)
from gannas_jax.spaces import NB201Space, SequentialSpace, Space


@dataclasses.dataclass(frozen=True)
class Child:
    """A space's arch-as-data network as pure functions (hashable: usable as a static argument).

    Attributes:
      space: the search space.
      input_shape: ``(H, W, C)`` of the images.
      num_classes: classifier outputs.
      conv_impl: sequential space only: ``'blocked'`` or ``'masked'`` (see
        :class:`~gannas_jax.child.SequentialChild`).
      nb201_channels, nb201_cells: NB201 only: C and N of the skeleton.
      narrow: sequential space only: the narrow variant for conv-less architectures; its
        ``init`` gives the max-size child's weights, cut down.
      assume_canonical: sequential space only: ``arch`` arguments are canonical already.
    """

    space: Space
    input_shape: tuple[int, int, int]
    num_classes: int
    conv_impl: str = "blocked"
    nb201_channels: int = 16
    nb201_cells: int = 5
    narrow: bool = False
    assume_canonical: bool = False

    @property
    def _sequential(self) -> bool:
        return isinstance(self.space, SequentialSpace)

    @property
    def module(self):
        """The Flax module (``SequentialChild`` or ``NB201Child``)."""
        if self._sequential:
            return SequentialChild(self.space, self.conv_impl, self.narrow, self.assume_canonical)
        return NB201Child(self.space, self.nb201_channels, self.nb201_cells, self.num_classes)

    @property
    def train_mode_is_inference(self) -> bool:
        """Whether the training-mode forward pass equals inference (no BatchNorm, no dropout), so
        that a training loop can score examples in its own forward pass."""
        return self._sequential

    def narrow_variant(self) -> Child | None:
        """The cheaper child for the architectures :meth:`is_narrow` accepts, or None.

        Sequential space only: a conv-less architecture computes on the image's channels alone,
        so its narrow child skips the zero channels of the max-size child and every stage weight.
        """
        if self._sequential and not self.narrow:
            return dataclasses.replace(self, narrow=True)
        return None

    def narrow_from(self, variables: dict) -> dict:
        """This narrow child's variables cut out of the max-size child's (see :meth:`init`)."""
        params = narrow_params(self.space, variables["params"])
        return {"params": params, "batch_stats": variables["batch_stats"]}

    def is_narrow(self, arch: jax.Array) -> jax.Array:
        """``bool[]``: whether :meth:`narrow_variant` can train ``arch`` (traceable)."""
        return is_convless(self.space, arch)

    def plan(self, arch: jax.Array) -> Any:
        """What :meth:`apply` reads from ``arch``, decoded once (traceable). Pass it to
        :meth:`apply` in place of the codes when applying one architecture many times, as a
        training loop does (sequential space: a :class:`SequentialPlan`; NB201: the codes)."""
        if self._sequential:
            return sequential_plan(
                self.space, self.conv_impl, arch, self.narrow, self.assume_canonical
            )
        return arch

    def scoring_plan(self, plan: Any, scoring: jax.Array) -> Any:
        """``plan`` for a step whose update is thrown away when ``scoring`` (a traced bool): the
        sequential child then skips its stage backward passes (see
        :func:`~gannas_jax.child.sequential.scoring_plan`). Other plans are returned as they are."""
        return scoring_plan(plan, scoring) if isinstance(plan, SequentialPlan) else plan

    @property
    def slot_leaves(self) -> tuple[str, ...]:
        """Params stacked on a leading slot axis whose dead slots never get a gradient (the
        sequential max-size child's stage kernels), for :class:`gannas_jax.train.SlotSparse`."""
        if self._sequential and not self.narrow:
            return tuple(f"stage{s}_kernel" for s in range(self.space.num_stages))
        return ()

    def live_slots(self, plan: Any) -> dict[str, LiveSlots]:
        """The :class:`LiveSlots` of each of :attr:`slot_leaves`, from a :meth:`plan` or the
        codes (traceable)."""
        if not self.slot_leaves:
            return {}
        if not isinstance(plan, SequentialPlan):
            plan = self.plan(plan)
        return plan.live_slots

    def init(self, key: jax.Array, arch: jax.Array) -> dict[str, Any]:
        """Variables ``{'params', 'batch_stats'}`` of one child (traceable in ``arch``)."""
        if self._sequential:
            params = init_sequential(self.space, key, arch, self.assume_canonical)
            v = {"params": params, "batch_stats": {}}
            return self.narrow_from(v) if self.narrow else v
        x = jax.numpy.zeros((1,) + tuple(self.input_shape), jax.numpy.float32)
        v = self.module.init(key, arch, x)
        return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}

    def apply(
        self, variables: dict, arch: Any, x: jax.Array, train: bool, axis_name: str | None = None
    ) -> tuple[jax.Array, Any]:
        """``(logits [B, classes], new batch_stats)`` on images ``x [B, H, W, C]``.

        ``axis_name``: under data parallelism, the device axis over which BatchNorm's training
        statistics are averaged, so that they are the global batch's.
        """
        stats = variables.get("batch_stats", {})
        if self._sequential:  # no BatchNorm; a plain function, no Flax overhead
            return sequential_forward(self.module, variables["params"], arch, x), stats
        if not stats:
            return self.module.apply({"params": variables["params"]}, arch, x, train), stats
        if train:
            module = self.module if axis_name is None else self.module.clone(axis_name=axis_name)
            logits, upd = module.apply(variables, arch, x, train=True, mutable=["batch_stats"])
            return logits, upd["batch_stats"]
        return self.module.apply(variables, arch, x, train=False), stats

    def cost(self, arch: Any) -> dict[str, int]:
        """Parameter count and per-image forward FLOPs of one architecture's own network."""
        if self._sequential:
            return sequential_cost(self.space, arch)
        shape = tuple(self.input_shape)
        c, n = self.nb201_channels, self.nb201_cells
        return nb201_cost(self.space, arch, c, n, self.num_classes, shape)


def make_child(
    space: Space,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    conv_impl: str = "blocked",
    nb201_channels: int = 16,
    nb201_cells: int = 5,
) -> Child:
    """The :class:`Child` of ``space`` for images of ``input_shape`` and ``num_classes`` classes.

    Raises:
      ValueError: an unsupported space, a sequential space built for other inputs, or an
        unknown ``conv_impl``.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if isinstance(space, SequentialSpace):
        if tuple(space.input_shape) != input_shape or space.num_classes != num_classes:
            raise ValueError(
                f"sequential space is for input {space.input_shape} / {space.num_classes} "
                f"classes, but the data is {input_shape} / {num_classes} classes; build the space "
                f"with SequentialSpace(input_shape={input_shape}, num_classes={num_classes})"
            )
        if conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    elif not isinstance(space, NB201Space):
        raise ValueError(f"no child network for space {type(space).__name__}")
    return Child(
        space, input_shape, int(num_classes), conv_impl, int(nb201_channels), int(nb201_cells)
    )


def arch_seed(arch: Any) -> int:
    """A stable 31-bit integer of an architecture's codes (for position-independent init keys)."""
    return zlib.crc32(np.asarray(arch, np.int32).tobytes()) & 0x7FFFFFFF
