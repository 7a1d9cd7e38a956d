"""Children of :class:`~gannas_jax.spaces.SequentialSpace`: arch-as-data and static."""

from gannas_jax.child.sequential.geometry import Geometry, geometry
from gannas_jax.child.sequential.model import (
    SequentialChild,
    init_sequential,
    is_convless,
    narrow_params,
    sequential_forward,
)
from gannas_jax.child.sequential.plan import (
    LiveSlots,
    SequentialPlan,
    scoring_plan,
    sequential_plan,
)
from gannas_jax.child.sequential.stage import CONV_IMPLS, StagePlan
from gannas_jax.child.sequential.static import (
    StaticSequential,
    extract_static_sequential,
    load_static_sequential,
    sequential_cost,
    static_sequential,
)

__all__ = [
    "CONV_IMPLS",
    "Geometry",
    "LiveSlots",
    "SequentialChild",
    "SequentialPlan",
    "StagePlan",
    "StaticSequential",
    "extract_static_sequential",
    "geometry",
    "init_sequential",
    "is_convless",
    "load_static_sequential",
    "narrow_params",
    "scoring_plan",
    "sequential_cost",
    "sequential_forward",
    "sequential_plan",
    "static_sequential",
]
