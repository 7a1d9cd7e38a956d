"""Evaluators: score architectures by training children or by table lookup."""

from gannas_jax.evaluate.base import EvalResult, Evaluator

__all__ = ["EvalResult", "Evaluator"]

# --- training-based evaluation (child training): exports go below this line ---
from gannas_jax.evaluate.training import TrainConfig, TrainingEvaluator

__all__ += ["TrainConfig", "TrainingEvaluator"]

# --- tabular evaluation (NAS-Bench-201): exports go below this line ---
