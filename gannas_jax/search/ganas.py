"""GAN-NAS (in the style of GA-NAS, Rezaei et al., IJCAI 2021) as an ask/tell algorithm.

Each iteration after a random warm-up:
  1. the real set is the top-k of everything evaluated so far;
  2. the GAN is fitted to it (continuing from the previous iteration, or re-initialized);
  3. the generator proposes many candidates; those already evaluated (and repeats) are dropped;
  4. the discriminator ranks the rest, and the best ``batch_size`` are evaluated.

If the generator has collapsed so far that too few unseen candidates remain, the batch is filled
with one-variable mutations of the real set (ranked by the discriminator too), then with random
architectures, so every query is new.

With ``climb=True`` step 3-4 become a discriminator-guided hill climb: the queries are unseen
one-variable edits of the architecture the climb stands on, the discriminator's favourite first
(or, with probability ``explore``, a uniformly drawn one); the climb moves to an edit that scores
better. At a local optimum (every edit seen) it restarts from the discriminator's favourite among
``restart_pool`` random architectures. ``rank_steps`` further discriminator updates per iteration
use the evaluated architectures outside the real set as fakes, so that the discriminator ranks
like a predictor of "among the best" (:func:`gannas_jax.gan.fit_ranker`); with
``rank_loss="pairwise"`` they are pairwise ranking updates over every evaluated architecture
instead (:func:`gannas_jax.gan.fit_pairwise`).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import numpy as np

from gannas_jax.gan import (
    GanConfig,
    GanState,
    discriminate,
    fit_gan,
    fit_pairwise,
    fit_ranker,
    generate,
    init_gan,
)
from gannas_jax.search.base import (
    Algorithm,
    History,
    SearchError,
    host_rng,
    mutate_host,
    row_keys,
    sample_host,
)
from gannas_jax.search.local import advance_climb, neighbours, start_climb

RANK_LOSSES = ("gan", "pairwise")


@dataclasses.dataclass
class AskStep:
    """What one :meth:`GanNas.ask` carries between its steps (host objects and keys)."""

    k_init: jax.Array  # a fresh GAN's key (reinit, or a restart after divergence)
    k_fit: jax.Array  # the GAN steps' key; fold_in(k_fit, 1) is the ranking steps'
    k_gen: jax.Array  # the generator's samples
    rng: np.random.Generator  # host draws
    seen: set  # keys of the evaluated architectures
    n: int  # queries to ask
    real: np.ndarray  # int32[k, V]: the real set
    rank_archs: np.ndarray | None  # the ranking steps' architectures (None: no ranking steps)
    rank_scores: np.ndarray | None  # their scores (pairwise), or None (negatives)


@flax.struct.dataclass
class GanNasState(History):
    """The search history and the GAN, which keeps training across iterations."""

    gan: GanState = None  # generator, discriminator and their optimizers
    current: np.ndarray = None  # int32[V]: where the climb stands (climb=True)
    current_score: np.ndarray = None  # float64[]: its score; -inf before the climb starts
    restart: np.ndarray = None  # bool[]: the last query was a restart


@dataclasses.dataclass(frozen=True)
class GanNas(Algorithm):
    """GAN-based NAS.

    Attributes:
      batch_size: architectures evaluated per iteration (b).
      num_init: random architectures evaluated before the first GAN fit.
      top_k: size of the real set (k).
      gan_steps: adversarial steps per iteration.
      num_candidates: generator samples per iteration, before deduplication.
      num_mutants: one-variable mutants of the real set added to the candidate pool (0: the pool
        is the generator's alone, as in GA-NAS).
      reinit: re-initialize the GAN every iteration instead of continuing to train it.
      climb: query discriminator-ranked one-variable edits of the climb's architecture, with
        restarts at local optima (see the module docstring), instead of generator samples.
      explore: with climb, the chance that a query is a uniformly drawn unseen edit instead of
        the discriminator's favourite.
      restart_pool: with climb, random architectures the discriminator chooses a restart from.
      rank_steps: discriminator updates per iteration against the evaluated architectures
        outside the real set (0: none, as in GA-NAS).
      rank_loss: "gan": the ranking steps take the real set against the evaluated rest with the
        GAN's loss; "pairwise": a logistic loss on the logit margin of random evaluated pairs,
        in the order of their scores.
      gan: the GAN's settings.
    """

    batch_size: int = 10
    num_init: int = 30
    top_k: int = 8
    gan_steps: int = 300
    num_candidates: int = 1000
    num_mutants: int = 0
    reinit: bool = False
    climb: bool = False
    explore: float = 0.0
    restart_pool: int = 100
    rank_steps: int = 0
    rank_loss: str = "gan"
    # Without spectral norm the discriminator ranks candidates more sharply (NAS-Bench-201 cifar10,
    # 30 seeds, budget 150: see the README's design notes for the figures and the command).
    gan: GanConfig = dataclasses.field(default_factory=lambda: GanConfig(d_spectral_norm=False))

    name = "ganas"

    @property
    def random_warmup(self) -> int | None:
        return self.num_init

    def __post_init__(self):
        super().__post_init__()
        for field in ("num_init", "top_k", "gan_steps", "num_candidates", "restart_pool"):
            v = getattr(self, field)
            if not isinstance(v, int) or v < 1:
                raise SearchError(f"ganas: {field} must be a positive int, got {v!r}")
        for field in ("num_mutants", "rank_steps"):
            v = getattr(self, field)
            if not isinstance(v, int) or v < 0:
                raise SearchError(f"ganas: {field} must be an int >= 0, got {v!r}")
        if self.rank_loss not in RANK_LOSSES:
            raise SearchError(
                f"ganas: rank_loss must be one of {RANK_LOSSES}, got {self.rank_loss!r}"
            )
        if not 0.0 <= self.explore <= 1.0:  # also False for NaN
            raise SearchError(f"ganas: explore must be in [0, 1], got {self.explore!r}")

    def init(self, key: jax.Array, budget: int) -> GanNasState:
        return GanNasState.empty(
            self.space,
            budget,
            gan=init_gan(key, self.space, self.gan),
            current=np.zeros(self.space.num_variables, np.int32),
            current_score=np.asarray(-np.inf),
            restart=np.asarray(False),
        )

    def ask(self, key: jax.Array, state: GanNasState) -> tuple[np.ndarray, GanNasState]:
        warm, it = self.begin(key, state)
        if warm is not None:
            return warm, state
        state = state.replace(gan=self.fit(it, state.gan))
        pool = (
            None if self.climb else np.asarray(generate(state.gan, it.k_gen, self.num_candidates))
        )
        cands, kind, state = self.candidates(it, state, pool)
        logits = (
            np.asarray(discriminate(state.gan, cands)) if self.needs_logits(it, cands) else None
        )
        return self.choose(it, state, cands, kind, logits)

    # The steps of one ask, in order. Host steps and device steps alternate, so that
    # gannas_jax.search.multiseed can run the device steps of many seeds as one program.

    def begin(self, key: jax.Array, state: GanNasState):
        """``(warm-up archs, None)`` while the random warm-up lasts, else ``(None, it)``: this
        ask's keys, host generator, seen set, batch size and the real and ranking sets."""
        k_init, k_fit, k_gen, k_host = jax.random.split(key, 4)
        return self.begin_from_keys((k_init, k_fit, k_gen), host_rng(k_host), state)

    def begin_from_keys(self, keys, rng: np.random.Generator, state: GanNasState):
        """:meth:`begin` with the keys already split (``k_init, k_fit, k_gen``, and ``rng``
        from ``k_host``)."""
        seen = self.seen(state)
        warm = self.warmup(rng, seen, state)
        if warm is not None:
            return warm, None
        return None, AskStep(*keys, rng, seen, self.batch(state), *self._ranking_sets(state))

    def _ranking_sets(self, state: GanNasState):
        """The real set, and the ranking steps' inputs: ``(archs, scores)`` for pairwise
        updates, or the negatives for the GAN-loss ranker (None when there are none)."""
        real = self.top(state, self.top_k)
        if not self.rank_steps:
            return real, None, None
        archs, scores = self.evaluated(state)
        if self.rank_loss == "pairwise":
            finite = np.flatnonzero(np.isfinite(scores))
            if len(finite) < 2:
                return real, None, None
            # the best of them, if more than fit
            order = finite[np.argsort(-scores[finite], kind="stable")][: self.gan.real_capacity]
            return real, archs[order], scores[order]
        if int(state.count) <= self.top_k:
            return real, None, None
        # the evaluated outside the real set (the best of them, if more than fit)
        order = np.argsort(-scores, kind="stable")[self.top_k :][: self.gan.real_capacity]
        return real, archs[order], None

    def fit(self, it: AskStep, gan: GanState) -> GanState:
        """This iteration's GAN steps, then its ranking steps."""
        if self.reinit:
            gan = init_gan(it.k_init, self.space, self.gan)
        try:
            gan, _ = fit_gan(gan, it.real, it.k_fit, self.gan_steps)
        except FloatingPointError:
            # A long-trained GAN can still diverge; the search goes on from a fresh one (the
            # same key gives the same restart, so runs stay reproducible).
            gan = init_gan(it.k_init, self.space, self.gan)
            gan, _ = fit_gan(gan, it.real, it.k_fit, self.gan_steps)
        if it.rank_archs is None:
            return gan
        k_rank = jax.random.fold_in(it.k_fit, 1)
        if self.rank_loss == "pairwise":
            return fit_pairwise(gan, it.rank_archs, it.rank_scores, k_rank, self.rank_steps)[0]
        return fit_ranker(gan, it.real, it.rank_archs, k_rank, self.rank_steps)[0]

    def candidates(self, it: AskStep, state: GanNasState, pool: np.ndarray | None):
        """``(cands, kind, state)``: the unseen candidates the discriminator ranks. ``kind`` is
        "edits" or "restart" (climb) or "pool" (``pool``: the generator's samples)."""
        rng, seen, n = it.rng, it.seen, it.n
        if self.climb:
            state = start_climb(self, state)
            cands = neighbours(self.space, state.current)
            edits = self.take_novel(cands, set(seen), len(cands))
            if len(edits):
                return edits, "edits", state
            # a local optimum: restart from the discriminator's favourite random architecture
            pool = sample_host(self.space, rng, self.restart_pool)
            pool = self.take_novel(pool, set(seen), len(pool))
            if len(pool) == 0:
                pool = self.random_novel(rng, seen, 1)
            return pool, "restart", state
        pool = [pool]
        if self.num_mutants:
            parents = it.real[rng.integers(0, len(it.real), size=self.num_mutants)]
            pool.append(mutate_host(self.space, rng, parents))
        pool = np.concatenate(pool)
        cands = self.take_novel(pool, set(seen), len(pool))
        if len(cands) < n:  # collapse: top up with mutants of the real set, then random
            real = it.real
            extra = mutate_host(self.space, rng, real[rng.integers(0, len(real), size=8 * n)])
            cands = np.concatenate(
                [cands, self.take_novel(extra, seen | set(row_keys(cands)), n - len(cands))]
            )
        return cands, "pool", state

    def needs_logits(self, it: AskStep, cands: np.ndarray) -> bool:
        """Whether :meth:`choose` ranks ``cands`` by the discriminator."""
        return self.climb or len(cands) > it.n

    def choose(self, it: AskStep, state: GanNasState, cands, kind: str, logits):
        """This ask's queries from the candidates and their discriminator logits."""
        rng, seen, n = it.rng, it.seen, it.n
        if kind == "edits":
            ranked = list(cands[np.argsort(-logits, kind="stable")])
            picked = []
            while ranked and len(picked) < n:
                j = int(rng.integers(len(ranked))) if rng.random() < self.explore else 0
                picked.append(ranked.pop(j))
            return np.asarray(picked, np.int32), state.replace(restart=np.asarray(False))
        if kind == "restart":
            pick = cands[np.argsort(-logits, kind="stable")[:1]]
            return pick, state.replace(restart=np.asarray(True))
        if logits is not None:
            cands = cands[np.argsort(-logits, kind="stable")[:n]]
        if len(cands) < n:
            cands = np.concatenate(
                [cands, self.random_novel(rng, seen | set(row_keys(cands)), n - len(cands))]
            )
        if len(cands) != n:
            raise SearchError(f"ganas: produced {len(cands)} of {n} architectures")
        return cands, state

    def tell(self, state: GanNasState, archs: np.ndarray, scores: np.ndarray) -> GanNasState:
        before = int(state.count)
        state = super().tell(state, archs, scores)
        if not self.climb or before < self.num_init:
            return state
        return advance_climb(state, archs, scores)
