"""The static training recipe of child networks, and how it resolves per backend."""

from __future__ import annotations

import dataclasses

import jax

from gannas_jax.child import CONV_IMPLS

STRATEGIES = ("auto", "vmap", "map")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training recipe of :class:`~gannas_jax.TrainingEvaluator` (defaults: digits).

    Attributes:
      steps: optimizer steps per child.
      batch_size: training batch size.
      optimizer: ``'adam'`` or ``'sgd'`` (with momentum).
      learning_rate: peak learning rate.
      schedule: ``'constant'`` or ``'cosine'`` decay to 0 over ``steps``.
      momentum: SGD momentum.
      strategy: how the population runs: ``'vmap'``, ``'map'`` (``lax.map``) or ``'auto'``
        (``map`` on CPU, where a switch then runs only its taken branch; ``vmap`` elsewhere).
      conv_impl: the sequential child's conv (see :mod:`gannas_jax.child.sequential.stage`):
        ``'blocked'``, ``'masked'`` or ``'auto'`` (``blocked`` with ``map``, ``masked`` with
        ``vmap``).
      population: capacity P; batches are padded to it so their size never recompiles.
      devices: devices to spread the population over; 0 means all local devices that divide P,
        1 disables. On CPU, call ``gannas_jax.use_cpu_cores()`` before JAX starts (the scripts
        do) for one XLA device per core.
      data_seed: seed of the training data order (shared by all children).
      eval_batch_size: chunk size of validation/test inference for children with BatchNorm (the
        others are scored inside the training scan, see
        :func:`~gannas_jax.train.population.train_member`).
      nb201_channels: NB201 skeleton width C.
      nb201_cells: NB201 cells per stage N.
      narrow: with ``map``, train each architecture that the child's narrow variant accepts
        (sequential space: no conv) with that variant, chosen per member by ``lax.cond`` inside
        the one program. Same results up to float summation order; ignored with ``vmap``,
        where ``cond`` would run both.
    """

    steps: int = 300
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    schedule: str = "constant"
    momentum: float = 0.9
    strategy: str = "auto"
    conv_impl: str = "auto"
    population: int = 16
    devices: int = 0
    data_seed: int = 0
    eval_batch_size: int = 512
    nb201_channels: int = 16
    nb201_cells: int = 5
    narrow: bool = True

    def __post_init__(self):
        choices = {
            "strategy": STRATEGIES,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "conv_impl": ("auto",) + CONV_IMPLS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for f in ("steps", "batch_size", "population", "eval_batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"TrainConfig.{f} must be >= 1, got {getattr(self, f)}")

    def resolved_strategy(self) -> str:
        """``'vmap'`` or ``'map'``, resolving ``'auto'`` by the default backend."""
        if self.strategy != "auto":
            return self.strategy
        return "map" if jax.default_backend() == "cpu" else "vmap"

    def resolved_conv_impl(self) -> str:
        """``'blocked'`` or ``'masked'``, resolving ``'auto'`` by the strategy."""
        if self.conv_impl != "auto":
            return self.conv_impl
        return "blocked" if self.resolved_strategy() == "map" else "masked"
