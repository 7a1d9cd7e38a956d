"""Evaluators: score architectures by training children or by table lookup."""

from gannas_jax.evaluate.base import EvalResult, Evaluator
from gannas_jax.evaluate.tabular import BenchmarkError, NB201Table, TabularEvaluator
from gannas_jax.evaluate.training import TrainingEvaluator

__all__ = [
    "BenchmarkError",
    "EvalResult",
    "Evaluator",
    "NB201Table",
    "TabularEvaluator",
    "TrainingEvaluator",
]
