"""BANANAS (White, Neiswanger & Savani, AAAI 2021): Bayesian optimization with an ensemble of
neural predictors.

``num_init`` random architectures, then each iteration:
  1. an ensemble of ``ensemble_size`` MLPs (:mod:`gannas_jax.search.predictor`) is trained from
     scratch on everything evaluated so far;
  2. ``num_candidates`` unseen candidates are made by mutating the ``num_parents`` best
     architectures (1 to ``max_mutations`` one-variable mutations each; topped up with random
     architectures when the neighbourhood is used up);
  3. the acquisition ranks them and the best ``batch_size`` are evaluated. "its" (independent
     Thompson sampling, as in the paper) draws one value per candidate from a Gaussian with the
     ensemble's mean and standard deviation; "ucb" is mean + ``ucb_beta`` * std.

The state is the history alone: the predictor is retrained each iteration from a key derived
from the ask key, so a resumed run asks exactly what the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from gannas_jax.search.base import (
    Algorithm,
    History,
    SearchError,
    host_rng,
    mutate_host,
)
from gannas_jax.search.predictor import PredictorConfig, fit_predictor, predict

ACQUISITIONS = ("its", "ucb")


@dataclasses.dataclass(frozen=True)
class Bananas(Algorithm):
    """BANANAS with a mutation-based acquisition search.

    Attributes:
      batch_size: architectures evaluated per iteration (the paper's b = 10).
      num_init: random architectures evaluated before the first predictor.
      ensemble_size, hidden_size, num_layers, train_steps, train_batch, learning_rate: the
        predictor (see :class:`~gannas_jax.search.predictor.PredictorConfig`).
      num_candidates: mutants in the pool the acquisition ranks.
      num_random: random unseen architectures added to that pool (BANANAS' "mutation + random"
        acquisition search), a way out of the best architectures' neighbourhood.
      num_parents: how many of the best architectures so far are mutated into candidates.
      max_mutations: each candidate is 1 to this many one-variable mutations of its parent.
      acquisition: "its" or "ucb".
      ucb_beta: the UCB's weight on the ensemble's standard deviation.
    """

    batch_size: int = 10
    num_init: int = 10
    ensemble_size: int = 5
    hidden_size: int = 32
    num_layers: int = 2
    train_steps: int = 200
    train_batch: int = 64
    learning_rate: float = 0.01
    num_candidates: int = 100
    num_random: int = 0
    num_parents: int = 3
    max_mutations: int = 2
    acquisition: str = "its"
    ucb_beta: float = 1.0

    name = "bananas"

    def __post_init__(self):
        super().__post_init__()
        for field in (
            "num_init",
            "ensemble_size",
            "hidden_size",
            "num_layers",
            "train_steps",
            "train_batch",
            "num_candidates",
            "num_parents",
            "max_mutations",
        ):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SearchError(f"bananas: {field} must be a positive int, got {v!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise SearchError(f"bananas: learning_rate must be > 0, got {self.learning_rate!r}")
        if self.acquisition not in ACQUISITIONS:
            raise SearchError(
                f"bananas: unknown acquisition {self.acquisition!r}; expected one of "
                f"{list(ACQUISITIONS)}"
            )
        if not (isinstance(self.ucb_beta, (int, float)) and self.ucb_beta >= 0):
            raise SearchError(f"bananas: ucb_beta must be >= 0, got {self.ucb_beta!r}")
        if not isinstance(self.num_random, int) or self.num_random < 0:
            raise SearchError(f"bananas: num_random must be an int >= 0, got {self.num_random!r}")
        if self.num_candidates < self.batch_size:
            raise SearchError(
                f"bananas: num_candidates ({self.num_candidates}) must be at least batch_size "
                f"({self.batch_size})"
            )

    @property
    def random_warmup(self) -> int | None:
        return self.num_init

    @property
    def predictor(self) -> PredictorConfig:
        return PredictorConfig(
            ensemble_size=self.ensemble_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            steps=self.train_steps,
            batch_size=self.train_batch,
            learning_rate=float(self.learning_rate),
        )

    def candidates(self, rng: np.random.Generator, state: History, seen: set[bytes]) -> np.ndarray:
        """``num_candidates`` unseen, unique mutants of the best architectures (topped up with
        random ones when there are too few), then ``num_random`` random ones (SearchError when the
        space has too few unseen left). ``seen`` is left as it is."""
        parents = self.top(state, self.num_parents)
        want = self.num_candidates
        kids = parents[rng.integers(0, len(parents), size=4 * want)]
        edits = rng.integers(1, self.max_mutations + 1, size=len(kids))
        for e in range(1, self.max_mutations + 1):
            more = edits >= e
            if more.any():
                kids[more] = mutate_host(self.space, rng, kids[more])
        taken = set(seen)
        pool = self.take_novel(kids, taken, want)
        need = want + self.num_random - len(pool)
        return np.concatenate([pool, self.random_novel(rng, taken, need)]) if need else pool

    def ask(self, key: jax.Array, state: History) -> tuple[np.ndarray, History]:
        k_fit, k_host = jax.random.split(key)
        rng = host_rng(k_host)
        seen = self.seen(state)
        warm = self.warmup(rng, seen, state)
        if warm is not None:
            return warm, state
        n = self.batch(state)
        cands = self.candidates(rng, state, seen)  # at least num_candidates >= n of them
        archs, scores = self.evaluated(state)
        model = fit_predictor(
            self.space, k_fit, archs, scores, self.predictor, pad_to=len(state.scores)
        )
        preds = predict(model, cands, pad_to=self.num_candidates + self.num_random)  # [E, n_cands]
        mean, std = preds.mean(0), preds.std(0)
        if self.acquisition == "its":
            value = mean + std * rng.standard_normal(len(cands))
        else:
            value = mean + self.ucb_beta * std
        return cands[np.argsort(-value, kind="stable")[:n]], state
