"""Local search (White et al., "Local search is state of the art for NAS benchmarks", 2020).

``num_init`` random architectures, then a hill climb from the best of them: the unseen
one-variable neighbours of the current architecture are queried in random order, ``batch_size``
at a time, and the climb moves to the best of a batch that beats the current score (first
improvement). When the current architecture has no unseen neighbour left it is a local optimum,
and the climb restarts from a new random architecture.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import numpy as np

from gannas_jax.search.base import Algorithm, History, SearchError, host_rng
from gannas_jax.spaces import Space


@flax.struct.dataclass
class LocalSearchState(History):
    """The history plus the climb: where it stands and whether a restart is in flight."""

    current: np.ndarray  # int32[V]: the architecture the climb stands on
    current_score: np.ndarray  # float64[]: its score; -inf before the climb starts
    restart: np.ndarray  # bool[]: the queries asked last are a restart's random architecture


def neighbours(space: Space, arch: np.ndarray) -> np.ndarray:
    """Every canonical architecture one variable away from ``arch`` (itself excluded), unique."""
    arch = np.asarray(arch, np.int32)
    rows = []
    for v, card in enumerate(space.cardinalities):
        for value in range(card):
            if value != arch[v]:
                row = arch.copy()
                row[v] = value
                rows.append(row)
    if not rows:
        return np.zeros((0, space.num_variables), np.int32)
    canon = np.asarray(space.canonicalize(np.stack(rows)), np.int32)
    canon = canon[np.any(canon != np.asarray(space.canonicalize(arch)), axis=1)]
    _, first = np.unique(canon, axis=0, return_index=True)
    return canon[np.sort(first)]


def start_climb(algo: Algorithm, state):
    """``state`` standing on the best evaluated architecture, if the climb has not started."""
    if np.isfinite(state.current_score):
        return state
    archs, scores = algo.evaluated(state)
    best = int(np.argmax(scores))
    return state.replace(current=archs[best].copy(), current_score=np.asarray(float(scores[best])))


def advance_climb(state, archs: np.ndarray, scores: np.ndarray):
    """Moves the climb to the best of a told batch if it beats the current score (first
    improvement), or unconditionally when the batch was a restart."""
    scores = np.asarray(scores, np.float64)
    best = int(np.argmax(scores))
    if bool(state.restart) or scores[best] > state.current_score:
        state = state.replace(
            current=np.asarray(archs[best], np.int32).copy(),
            current_score=np.asarray(float(scores[best])),
            restart=np.asarray(False),
        )
    return state


@dataclasses.dataclass(frozen=True)
class LocalSearch(Algorithm):
    """Hill climbing over one-variable neighbours with random restarts (White et al., 2020).

    Attributes:
      num_init: random architectures queried before the climb starts from the best of them.
    """

    num_init: int = 10

    name = "local_search"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.num_init, int) or self.num_init < 1:
            raise SearchError(
                f"local_search: num_init must be a positive int, got {self.num_init!r}"
            )

    @property
    def random_warmup(self) -> int | None:
        return self.num_init

    def init(self, key: jax.Array, budget: int) -> LocalSearchState:
        del key
        return LocalSearchState.empty(
            self.space,
            budget,
            current=np.zeros(self.space.num_variables, np.int32),
            current_score=np.asarray(-np.inf),
            restart=np.asarray(False),
        )

    def ask(self, key: jax.Array, state: LocalSearchState):
        rng = host_rng(key)
        seen = self.seen(state)
        warm = self.warmup(rng, seen, state)
        if warm is not None:
            return warm, state
        n = self.batch(state)
        state = start_climb(self, state)  # from the best random start
        cands = neighbours(self.space, state.current)
        novel = self.take_novel(cands[rng.permutation(len(cands))], seen, n)
        if len(novel):
            return novel, state.replace(restart=np.asarray(False))
        # a local optimum: every neighbour is seen and none is better
        return self.random_novel(rng, seen, 1), state.replace(restart=np.asarray(True))

    def tell(self, state: LocalSearchState, archs: np.ndarray, scores: np.ndarray):
        before = int(state.count)
        state = super().tell(state, archs, scores)
        if before < self.num_init:
            return state
        return advance_climb(state, archs, scores)
