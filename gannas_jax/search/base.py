"""Ask/tell search algorithms: the shared history, and the random and evolution baselines.

Every algorithm is a frozen dataclass of static settings with three pure methods:

    state = algo.init(key, budget)
    archs, state = algo.ask(key, state)          # int32[b, V], canonical, never seen before
    state = algo.tell(state, archs, scores)

The state is a :class:`History` (or a subclass that adds fields), a pytree of host NumPy arrays
(plus JAX arrays for GAN weights) that the driver checkpoints with orbax, so that a resumed run
continues bit for bit.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import numpy as np

from gannas_jax.spaces import Space


@flax.struct.dataclass
class History:
    """Every evaluated architecture and its score, at a fixed capacity (the budget)."""

    archs: np.ndarray  # int32[budget, V]: evaluated architectures, in query order
    scores: np.ndarray  # float64[budget]: their scores (higher is better), -inf beyond count
    count: np.ndarray  # int64[]: how many entries are filled

    @classmethod
    def empty(cls, space: Space, budget: int, **fields) -> History:
        """An empty history of ``budget`` entries (``fields``: a subclass's own fields)."""
        archs = np.zeros((budget, space.num_variables), np.int32)
        return cls(archs, np.full(budget, -np.inf), np.asarray(0, np.int64), **fields)


class SearchError(ValueError):
    """A search cannot go on (bad settings, or the space has no unseen architecture left)."""


def host_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key, for cheap host-side sampling."""
    return rng_from_key_data(np.asarray(jax.random.key_data(key)))


def rng_from_key_data(data: np.ndarray) -> np.random.Generator:
    """:func:`host_rng` of the key whose ``jax.random.key_data`` is ``data``."""
    return np.random.default_rng(np.asarray(data).astype(np.uint64).ravel())


def sample_host(space: Space, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` canonical architectures, each variable uniform, drawn on the host."""
    codes = rng.integers(0, np.asarray(space.cardinalities), size=(n, space.num_variables))
    return np.asarray(space.canonicalize(codes.astype(np.int32)))


def mutate_host(space: Space, rng: np.random.Generator, parents: np.ndarray) -> np.ndarray:
    """One-variable mutation of each parent (Real et al., 2019): a uniformly chosen variable
    gets a uniformly chosen different value; the result is canonicalized."""
    parents = np.atleast_2d(parents)
    card = np.asarray(space.cardinalities)
    n = len(parents)
    v = rng.integers(0, space.num_variables, size=n)
    # A value in [0, card - 1), shifted past the current one, is uniform over the others.
    shift = rng.integers(0, np.maximum(card[v] - 1, 1))
    cur = parents[np.arange(n), v]
    new = np.where(shift >= cur, shift + 1, shift)
    new = np.where(card[v] > 1, new, cur)
    children = parents.copy()
    children[np.arange(n), v] = new
    return np.asarray(space.canonicalize(children.astype(np.int32)))


def row_keys(archs: np.ndarray) -> list[bytes]:
    """Hashable keys of architecture rows, for sets of seen architectures."""
    return [r.tobytes() for r in np.ascontiguousarray(archs, dtype=np.int32)]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Base class: history bookkeeping and novelty filtering."""

    space: Space
    batch_size: int = 1

    name = "base"

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SearchError(
                f"{self.name}: batch_size must be a positive int, got {self.batch_size!r}"
            )

    # --- history ------------------------------------------------------------------------------

    def init(self, key: jax.Array, budget: int) -> History:
        del key
        return History.empty(self.space, budget)

    def tell(self, state: History, archs: np.ndarray, scores: np.ndarray) -> History:
        archs, scores = np.asarray(archs, np.int32), np.asarray(scores, np.float64)
        c, n = int(state.count), len(archs)
        if c + n > len(state.scores):
            raise SearchError(
                f"{self.name}: told {c + n} results, more than the budget {len(state.scores)}"
            )
        new_archs, new_scores = state.archs.copy(), state.scores.copy()
        new_archs[c : c + n] = archs
        new_scores[c : c + n] = scores
        return state.replace(archs=new_archs, scores=new_scores, count=np.asarray(c + n, np.int64))

    def remaining(self, state: History) -> int:
        return len(state.scores) - int(state.count)

    def evaluated(self, state: History) -> tuple[np.ndarray, np.ndarray]:
        c = int(state.count)
        return state.archs[:c], state.scores[:c]

    def seen(self, state: History) -> set[bytes]:
        return set(row_keys(self.evaluated(state)[0]))

    def top(self, state: History, k: int) -> np.ndarray:
        """The ``k`` best evaluated architectures (ties broken by query order)."""
        archs, scores = self.evaluated(state)
        order = np.argsort(-scores, kind="stable")[:k]
        return archs[order]

    # --- novelty ------------------------------------------------------------------------------

    @staticmethod
    def take_novel(candidates: np.ndarray, seen: set[bytes], n: int) -> np.ndarray:
        """The first ``n`` candidates not in ``seen`` and not repeated; updates ``seen``."""
        out = []
        for row, k in zip(candidates, row_keys(candidates), strict=True):
            if len(out) == n:
                break
            if k not in seen:
                seen.add(k)
                out.append(row)
        return np.asarray(out, np.int32).reshape(len(out), candidates.shape[-1])

    def random_novel(self, rng: np.random.Generator, seen: set[bytes], n: int) -> np.ndarray:
        """``n`` random architectures not in ``seen``."""
        got = [np.zeros((0, self.space.num_variables), np.int32)]
        need = n
        for _ in range(1000):
            if need == 0:
                break
            new = self.take_novel(sample_host(self.space, rng, 4 * need + 16), seen, need)
            got.append(new)
            need -= len(new)
        if need:
            raise SearchError(
                f"{self.name}: could not find {n} unseen architectures; the space may be exhausted"
            )
        return np.concatenate(got)

    @property
    def random_warmup(self) -> int | None:
        """How many first queries are uniform random (None: all of them)."""
        return 0

    def batch(self, state: History) -> int:
        return min(self.batch_size, self.remaining(state))

    def warmup(self, rng: np.random.Generator, seen: set[bytes], state: History):
        """The next batch of the uniform random warm-up (``random_warmup`` queries, filled in
        batches that stop at it), or None once it is done."""
        count, n = int(state.count), self.random_warmup
        if n is not None and count >= n:
            return None
        left = self.batch(state) if n is None else min(self.batch(state), n - count)
        return self.random_novel(rng, seen, left)

    def ask(self, key: jax.Array, state: History) -> tuple[np.ndarray, History]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class RandomSearch(Algorithm):
    """Uniform random sampling of unseen architectures."""

    name = "random"

    @property
    def random_warmup(self) -> int | None:
        return None

    def ask(self, key: jax.Array, state: History) -> tuple[np.ndarray, History]:
        return self.random_novel(host_rng(key), self.seen(state), self.batch(state)), state


@dataclasses.dataclass(frozen=True)
class RegularizedEvolution(Algorithm):
    """Regularized (aging) evolution, Real et al., AAAI 2019.

    The population is the ``population_size`` most recent queries (aging: the oldest dies when a
    child is added). Until it is full, members are random; after that each child is a one-variable
    mutation of the best of ``tournament_size`` members drawn without replacement. A mutant that
    was already evaluated is mutated again, so every query is new.
    """

    population_size: int = 20
    tournament_size: int = 5
    max_retries: int = 100

    name = "evolution"

    @property
    def random_warmup(self) -> int | None:
        return self.population_size

    def __post_init__(self):
        super().__post_init__()
        if self.population_size < 1 or not 1 <= self.tournament_size <= self.population_size:
            raise SearchError(
                f"evolution: need 1 <= tournament_size <= population_size, got "
                f"{self.tournament_size} and {self.population_size}"
            )

    def ask(self, key: jax.Array, state: History) -> tuple[np.ndarray, History]:
        rng = host_rng(key)
        seen = self.seen(state)
        archs, scores = self.evaluated(state)
        n = self.batch(state)
        out = []
        for j in range(n):
            if len(archs) + j < self.population_size:
                out.append(self.random_novel(rng, seen, 1)[0])
                continue
            pop = np.arange(len(archs) - self.population_size, len(archs))
            contenders = rng.choice(pop, size=self.tournament_size, replace=False)
            parent = archs[contenders[np.argmax(scores[contenders])]]
            child = None
            for _ in range(self.max_retries):
                cand = mutate_host(self.space, rng, parent)
                got = self.take_novel(cand, seen, 1)
                if len(got):
                    child = got[0]
                    break
                parent = cand[0]  # walk on: a seen mutant's own mutants are near the parent
            out.append(child if child is not None else self.random_novel(rng, seen, 1)[0])
        return np.asarray(out, np.int32), state
