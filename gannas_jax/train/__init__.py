"""Training children: the recipe, the optimizer, the per-device step and the population."""

from gannas_jax.train.config import OPTIMIZERS, SCHEDULES, STRATEGIES, TrainConfig
from gannas_jax.train.optim import SlotSparse, SlotSparseState, make_optimizer
from gannas_jax.train.population import (
    MemberResult,
    TrainData,
    correct,
    narrow_child,
    train_member,
    train_population,
)
from gannas_jax.train.step import ChildState, fit, init_state, train_step

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "ChildState",
    "MemberResult",
    "SlotSparse",
    "SlotSparseState",
    "TrainConfig",
    "TrainData",
    "correct",
    "fit",
    "init_state",
    "make_optimizer",
    "narrow_child",
    "train_member",
    "train_population",
    "train_step",
]
