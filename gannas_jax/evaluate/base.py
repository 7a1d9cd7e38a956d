"""The evaluator protocol: architectures in, scores out."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from gannas_jax.spaces import Space


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Scores of a batch of ``n`` architectures.

    Attributes:
      scores: ``float64[n]``, the search objective (validation accuracy in percent; higher is
        better).
      test: ``float64[n]``, the reported test metric (test accuracy in percent), never used by the
        search.
      metrics: one JSON-able dict per architecture (parameter count, FLOPs, wall time, ...).
    """

    scores: np.ndarray
    test: np.ndarray
    metrics: list[dict[str, Any]]

    def __post_init__(self):
        n = len(self.scores)
        if len(self.test) != n or len(self.metrics) != n:
            raise ValueError(
                f"EvalResult: scores, test and metrics must have one entry per architecture, got "
                f"{n}, {len(self.test)}, {len(self.metrics)}"
            )


@runtime_checkable
class Evaluator(Protocol):
    """Scores architectures of one space.

    ``evaluate`` takes canonical ``int32[n, V]`` architectures and a key, and returns an
    :class:`EvalResult` in the same order. Implementations cache by canonical architecture, so a
    repeated architecture costs nothing and gets the same score.
    """

    space: Space

    def evaluate(self, archs: np.ndarray, key: jax.Array) -> EvalResult: ...
