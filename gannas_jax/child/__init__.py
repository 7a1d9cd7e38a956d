"""Child networks that take the architecture as data (one compile for a whole space), and the
static per-architecture Flax builders they are tested against and exported to."""

from gannas_jax.child.base import Child, arch_seed, make_child
from gannas_jax.child.nb201 import (
    NB201Child,
    StaticNB201,
    load_static_nb201,
    nb201_cost,
    static_nb201,
)
from gannas_jax.child.sequential import (
    CONV_IMPLS,
    SequentialChild,
    StaticSequential,
    extract_static_sequential,
    init_sequential,
    is_convless,
    load_static_sequential,
    narrow_params,
    sequential_cost,
    static_sequential,
)

__all__ = [
    "CONV_IMPLS",
    "Child",
    "NB201Child",
    "SequentialChild",
    "StaticNB201",
    "StaticSequential",
    "arch_seed",
    "extract_static_sequential",
    "init_sequential",
    "is_convless",
    "load_static_nb201",
    "load_static_sequential",
    "make_child",
    "narrow_params",
    "nb201_cost",
    "sequential_cost",
    "static_nb201",
    "static_sequential",
]
