"""Search algorithms (ask/tell) and the resumable driver."""

from gannas_jax.search.base import (
    Algorithm,
    RandomSearch,
    RegularizedEvolution,
    SearchError,
    mutate_host,
    sample_host,
)
from gannas_jax.search.driver import SearchResult, plot_progress, run_search
from gannas_jax.search.ganas import GanNas, GanNasState
from gannas_jax.search.local import LocalSearch, LocalSearchState

__all__ = [
    "Algorithm",
    "GanNas",
    "GanNasState",
    "LocalSearch",
    "LocalSearchState",
    "RandomSearch",
    "RegularizedEvolution",
    "SearchError",
    "SearchResult",
    "mutate_host",
    "plot_progress",
    "run_search",
    "sample_host",
]
