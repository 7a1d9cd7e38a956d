"""The sequential child's architecture plan: everything the forward pass reads from the codes.

The evaluator decodes each child's plan once, before its training loop, and passes it to every
step instead of the codes: XLA:CPU does not hoist this integer arithmetic out of the loop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gannas_jax.child.sequential.geometry import geometry, slot_cin
from gannas_jax.child.sequential.stage import SlotCodes, StagePlan, block_pairs, branch_index
from gannas_jax.spaces.sequential import CONV, SequentialSpace


class LiveSlots(NamedTuple):
    """The slots of a slot-stacked param that can get a gradient (see ``train.SlotSparse``)."""

    slots: jax.Array  # int32[L]: the live slots first
    n: jax.Array  # int32[]: how many are live


class SequentialPlan(NamedTuple):
    """A decoded architecture of the sequential child."""

    stages: tuple[StagePlan, ...]  # one per stage
    head_op: jax.Array  # int32[F]: head op codes (0: empty)
    head_live: jax.Array  # bool[F, Wm]: live units of each dense layer
    n_fc: jax.Array  # int32[]: live dense layers
    live_slots: dict[str, LiveSlots]  # per stage kernel param ('stage{s}_kernel'): its conv slots


def sequential_plan(
    space: SequentialSpace,
    conv_impl: str,
    arch: jax.Array,
    narrow: bool = False,
    canonical: bool = False,
) -> SequentialPlan:
    """The :class:`SequentialPlan` of ``arch`` (``int32[V]``; traceable).

    Args:
      space: the search space.
      conv_impl: ``'blocked'`` or ``'masked'``, as the child that applies the plan.
      arch: the codes.
      narrow: the plan of the narrow child (no conv branches).
      canonical: ``arch`` is canonical already.
    """
    g = geometry(space)
    arch = jnp.asarray(arch, jnp.int32)
    if not canonical:
        arch = space.canonicalize(arch)
    stage, head = space.split(arch)
    cin = slot_cin(space, stage)
    # A slot needs its input gradient only if a conv (the only stage op with weights) comes
    # before it: the child is not differentiable in its input images (NAS never needs it).
    is_conv = (stage[..., 0] == CONV).reshape(-1).astype(jnp.int32)
    upstream = (jnp.cumsum(is_conv) - is_conv > 0).reshape(stage.shape[:2])
    stages = []
    for s in range(space.num_stages):
        op, k, co, ci = stage[s, :, 0], stage[s, :, 1], stage[s, :, 2], cin[s]
        pairs = block_pairs(space, ci, co) if conv_impl == "blocked" and not narrow else None
        # Canonical stages hold their live slots first, and the slots with no weights upstream
        # are a prefix of the network: the forward pass runs slots [0, hi) and the backward pass
        # [lo, hi), the others being identities for it.
        stages.append(
            StagePlan(
                branch=branch_index(space, conv_impl, narrow, op, ci),
                slots=SlotCodes(op, ci, k, co, pairs),
                lo=jnp.sum(~(upstream[s] | (op == CONV))).astype(jnp.int32),
                hi=jnp.sum(op != 0).astype(jnp.int32),
            )
        )
    widths = jnp.asarray(space.fc_widths, jnp.int32)
    conv = stage[..., 0] == CONV
    live = {}
    if not narrow:
        for s in range(space.num_stages):
            order = jnp.argsort(~conv[s], stable=True).astype(jnp.int32)
            live[f"stage{s}_kernel"] = LiveSlots(order, jnp.sum(conv[s]).astype(jnp.int32))
    return SequentialPlan(
        stages=tuple(stages),
        head_op=head[:, 0],
        head_live=jnp.arange(g.wm).reshape(1, -1) < widths[head[:, 1]].reshape(-1, 1),
        n_fc=jnp.sum(head[:, 0] != 0),
        live_slots=live,
    )


def scoring_plan(plan: SequentialPlan, scoring: jax.Array) -> SequentialPlan:
    """``plan`` for a step whose update is thrown away when ``scoring`` (a traced bool).

    The evaluator scores validation and test batches as extra training steps at learning rate 0;
    those steps skip the stage backward passes and update no slot. The logits are unchanged,
    and so are the params (a zero learning rate moves none); the gradients are not exact.
    """
    stages = tuple(st._replace(lo=jnp.where(scoring, st.hi, st.lo)) for st in plan.stages)
    live = {k: v._replace(n=jnp.where(scoring, 0, v.n)) for k, v in plan.live_slots.items()}
    return plan._replace(stages=stages, live_slots=live)
