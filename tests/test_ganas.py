"""GanNas: unique, canonical, reproducible queries, and better than random on NAS-Bench-201."""

import chex
import numpy as np
import pytest

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.evaluate.base import EvalResult
from gannas_jax.evaluate.tabular import NB201Table, TabularEvaluator
from gannas_jax.gan import GanConfig
from gannas_jax.search import RandomSearch, SearchError, run_search
from gannas_jax.search.ganas import GanNas

SMALL_GAN = GanConfig(g_hidden=(64,), d_hidden=(64,), batch_size=32)


class _SumScore:
    """A fake evaluator: the score is the sum of the codes (so the optimum is known)."""

    def __init__(self, space):
        self.space = space

    def evaluate(self, archs, key):
        s = np.asarray(archs).sum(1).astype(float)
        return EvalResult(scores=s, test=s, metrics=[{} for _ in s])


@pytest.mark.parametrize("space", [NB201Space(), SequentialSpace()], ids=["nb201", "sequential"])
def test_queries_unique_canonical_reproducible(space):
    algo = GanNas(
        space, batch_size=8, num_init=16, top_k=8, gan_steps=50, num_candidates=64, gan=SMALL_GAN
    )
    a = run_search(algo, _SumScore(space), 48, None, 3, progress=False)
    b = run_search(algo, _SumScore(space), 48, None, 3, progress=False)
    assert len({r.tobytes() for r in a.archs}) == 48
    np.testing.assert_array_equal(np.asarray(space.canonicalize(a.archs)), a.archs)
    chex.assert_trees_all_equal(a.archs, b.archs)
    # The GAN phase moves towards high sums: later queries beat the random warm-up.
    assert a.scores[16:].mean() > a.scores[:16].mean()


def test_collapsed_generator_is_topped_up():
    # 4 candidates per iteration cannot fill a batch of 8 once duplicates are dropped.
    space = NB201Space()
    algo = GanNas(
        space, batch_size=8, num_init=8, top_k=4, gan_steps=20, num_candidates=4, gan=SMALL_GAN
    )
    res = run_search(algo, _SumScore(space), 40, None, 0, progress=False)
    assert len({r.tobytes() for r in res.archs}) == 40


@pytest.mark.parametrize("space", [NB201Space(), SequentialSpace()], ids=["nb201", "sequential"])
def test_edits_climb_from_the_best(space):
    """With edit_parents, each query is an unseen one-variable edit of one of the best evaluated
    architectures (the best first), chosen by the discriminator."""
    from gannas_jax.search.local import neighbours

    algo = GanNas(
        space, batch_size=2, num_init=6, top_k=4, gan_steps=10, edit_parents=4, gan=SMALL_GAN
    )
    res = run_search(algo, _SumScore(space), 30, None, 1, progress=False)
    assert len({r.tobytes() for r in res.archs}) == 30
    for q in range(6, 30, 2):
        seen_archs, seen_scores = res.archs[:q], res.scores[:q]
        parents = seen_archs[np.argsort(-seen_scores, kind="stable")[:4]]
        edits = {r.tobytes() for p in parents for r in neighbours(space, p)}
        assert all(r.tobytes() in edits for r in res.archs[q : q + 2])
        best_edits = {r.tobytes() for r in neighbours(space, parents[0])}
        unseen_best = best_edits - {r.tobytes() for r in seen_archs}
        if len(unseen_best) >= 2:  # the best's own edits come first
            assert all(r.tobytes() in unseen_best for r in res.archs[q : q + 2])
    # The climb on a sum score goes above the random start.
    assert res.scores[6:].max() > res.scores[:6].max()


def test_bad_settings():
    with pytest.raises(SearchError, match="top_k must be a positive int"):
        GanNas(NB201Space(), top_k=0)
    with pytest.raises(SearchError, match="batch_size must be a positive int"):
        GanNas(NB201Space(), batch_size=0)


def test_beats_random_on_cifar10(nb201_dir):
    table = NB201Table.load("cifar10", nb201_dir)
    seeds = range(4)
    ganas = GanNas(NB201Space())
    best = {
        name: np.mean(
            [
                run_search(
                    a, TabularEvaluator(table=table), 100, None, s, progress=False
                ).best_score
                for s in seeds
            ]
        )
        for name, a in (("ganas", ganas), ("random", RandomSearch(NB201Space(), batch_size=10)))
    }
    assert best["ganas"] > best["random"] + 0.2, best
