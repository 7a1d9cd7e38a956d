"""GAN-NAS (in the style of GA-NAS, Rezaei et al., IJCAI 2021) as an ask/tell algorithm.

Each iteration after a random warm-up:
  1. the real set is the top-k of everything evaluated so far;
  2. the GAN is fitted to it (continuing from the previous iteration, or re-initialized);
  3. the generator proposes many candidates; those already evaluated (and repeats) are dropped;
  4. the discriminator ranks the rest, and the best ``batch_size`` are evaluated.

If the generator has collapsed so far that too few unseen candidates remain, the batch is filled
with one-variable mutations of the real set (ranked by the discriminator too), then with random
architectures, so every query is new.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import numpy as np

from gannas_jax.gan import GanConfig, GanState, discriminate, fit_gan, generate, init_gan
from gannas_jax.search.base import Algorithm, History, SearchError, host_rng, mutate_host, row_keys
from gannas_jax.search.local import neighbours


@flax.struct.dataclass
class GanNasState(History):
    """The search history and the GAN, which keeps training across iterations."""

    gan: GanState = None  # generator, discriminator and their optimizers


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
      edit_parents: when > 0, the pool is first the unseen one-variable neighbours of the best
        ``edit_parents`` evaluated architectures (local edits of the real set), ranked by the
        discriminator; generator samples fill the batch only when too few such edits are left.
      gan: the GAN's settings.
    """

    batch_size: int = 10
    num_init: int = 30
    top_k: int = 8
    gan_steps: int = 300
    num_candidates: int = 1000
    num_mutants: int = 0
    reinit: bool = False
    edit_parents: int = 0
    # Without spectral norm the discriminator ranks candidates more sharply (NAS-Bench-201 cifar10,
    # 30 seeds, budget 150: see the README's design notes for the figures and the command).
    gan: GanConfig = dataclasses.field(default_factory=lambda: GanConfig(d_spectral_norm=False))

    name = "ganas"

    @property
    def random_warmup(self) -> int | None:
        return self.num_init

    def __post_init__(self):
        super().__post_init__()
        for field in ("num_init", "top_k", "gan_steps", "num_candidates"):
            v = getattr(self, field)
            if not isinstance(v, int) or v < 1:
                raise SearchError(f"ganas: {field} must be a positive int, got {v!r}")
        if self.num_mutants < 0 or self.edit_parents < 0:
            raise SearchError("ganas: num_mutants and edit_parents must be >= 0")

    def init(self, key: jax.Array, budget: int) -> GanNasState:
        return GanNasState.empty(self.space, budget, gan=init_gan(key, self.space, self.gan))

    def ask(self, key: jax.Array, state: GanNasState) -> tuple[np.ndarray, GanNasState]:
        k_init, k_fit, k_gen, k_host = jax.random.split(key, 4)
        rng = host_rng(k_host)
        seen = self.seen(state)
        warm = self.warmup(rng, seen, state)
        if warm is not None:
            return warm, state
        n = self.batch(state)

        real = self.top(state, self.top_k)
        gan = init_gan(k_init, self.space, self.gan) if self.reinit else state.gan
        try:
            gan, _ = fit_gan(gan, real, k_fit, self.gan_steps)
        except FloatingPointError:
            # A long-trained GAN can still diverge; the search goes on from a fresh one (the
            # same key gives the same restart, so runs stay reproducible).
            gan, _ = fit_gan(init_gan(k_init, self.space, self.gan), real, k_fit, self.gan_steps)
        state = state.replace(gan=gan)

        if self.edit_parents:  # climb: edits of the best first, then of the next best, ...
            picked, taken = [], set(seen)
            for parent in real[: self.edit_parents]:
                cands = neighbours(self.space, parent)
                edits = self.take_novel(cands, set(taken), len(cands))
                if len(edits):
                    logits = np.asarray(discriminate(gan, edits))
                    best = edits[np.argsort(-logits, kind="stable")][: n - len(picked)]
                    picked.extend(best)
                    taken.update(row_keys(best))
                if len(picked) == n:
                    return np.asarray(picked, np.int32), state
        pool = [np.asarray(generate(gan, k_gen, self.num_candidates))]
        if self.num_mutants:
            parents = real[rng.integers(0, len(real), size=self.num_mutants)]
            pool.append(mutate_host(self.space, rng, parents))
        pool = np.concatenate(pool)
        cands = self.take_novel(pool, set(seen), len(pool))
        if len(cands) < n:  # collapse: top up with mutants of the real set, then random
            extra = mutate_host(self.space, rng, real[rng.integers(0, len(real), size=8 * n)])
            cands = np.concatenate(
                [cands, self.take_novel(extra, seen | set(row_keys(cands)), n - len(cands))]
            )
        if len(cands) > n:
            logits = np.asarray(discriminate(gan, cands))
            cands = cands[np.argsort(-logits, kind="stable")[:n]]
        if len(cands) < n:
            cands = np.concatenate(
                [cands, self.random_novel(rng, seen | set(row_keys(cands)), n - len(cands))]
            )
        if len(cands) != n:
            raise SearchError(f"ganas: produced {len(cands)} of {n} architectures")
        return cands, state
