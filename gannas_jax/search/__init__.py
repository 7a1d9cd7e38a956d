"""Search algorithms (ask/tell) and the resumable driver."""

from gannas_jax.search.bananas import Bananas
from gannas_jax.search.base import (
    Algorithm,
    RandomSearch,
    RegularizedEvolution,
    SearchError,
    mutate_host,
    sample_host,
)
from gannas_jax.search.driver import SearchResult, run_search
from gannas_jax.search.ganas import GanNas, GanNasState
from gannas_jax.search.local import LocalSearch, LocalSearchState
from gannas_jax.search.multiseed import run_seeds
from gannas_jax.search.plot import plot_progress
from gannas_jax.search.predictor import PredictorConfig, fit_predictor, predict
from gannas_jax.search.reinforce import Reinforce, ReinforceState, policy_probs

__all__ = [
    "Algorithm",
    "Bananas",
    "GanNas",
    "GanNasState",
    "LocalSearch",
    "LocalSearchState",
    "PredictorConfig",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "ReinforceState",
    "SearchError",
    "SearchResult",
    "fit_predictor",
    "mutate_host",
    "plot_progress",
    "policy_probs",
    "predict",
    "run_search",
    "run_seeds",
    "sample_host",
]
