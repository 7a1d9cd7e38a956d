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
def test_climb_takes_the_discriminators_favourite_edit(space):
    """With climb (explore=0), each query is the discriminator's favourite unseen edit of the
    climb's architecture, or at a local optimum a restart; the climb follows improvements."""
    import jax

    from gannas_jax.gan import discriminate
    from gannas_jax.search.base import row_keys
    from gannas_jax.search.local import neighbours

    algo = GanNas(
        space,
        batch_size=1,
        num_init=6,
        top_k=4,
        gan_steps=10,
        climb=True,
        rank_steps=5,
        gan=SMALL_GAN,
    )
    evaluator = _SumScore(space)
    state = algo.init(jax.random.key(0), 40)
    edits_taken = 0
    for q in range(40):
        key = jax.random.fold_in(jax.random.key(1), q)
        archs, new_state = algo.ask(key, state)
        assert archs.shape == (1, space.num_variables)
        if q >= 6 and not bool(new_state.restart):
            seen = set(row_keys(algo.evaluated(state)[0]))
            edits = np.asarray(
                [e for e in neighbours(space, new_state.current) if e.tobytes() not in seen]
            )
            logits = np.asarray(discriminate(new_state.gan, edits))
            np.testing.assert_array_equal(archs[0], edits[np.argmax(logits)])
            edits_taken += 1
        before = float(new_state.current_score)
        state = algo.tell(new_state, archs, evaluator.evaluate(archs, None).scores)
        if q >= 6:
            moved = bool(new_state.restart) or evaluator.evaluate(archs, None).scores[0] > before
            np.testing.assert_array_equal(state.current, archs[0] if moved else new_state.current)
    assert edits_taken >= 20
    assert len({r.tobytes() for r in algo.evaluated(state)[0]}) == 40


def test_climb_reaches_a_planted_optimum():
    """On a sum score, whose only local optimum is the global one, the climb reaches it."""
    space = NB201Space()
    algo = GanNas(
        space,
        batch_size=1,
        num_init=5,
        top_k=4,
        gan_steps=5,
        climb=True,
        rank_steps=5,
        explore=0.5,
        gan=SMALL_GAN,
    )
    res = run_search(algo, _SumScore(space), 80, None, 2, progress=False)
    assert res.scores[:5].max() < 6 * 4
    assert res.scores.max() == 6 * 4  # every edge the highest code


def test_fit_ranker_ranks_held_out_archs():
    """The ranking updates teach the discriminator the real set's feature: held-out
    architectures with it score above held-out ones without it."""
    import jax

    from gannas_jax.gan import discriminate, fit_ranker, init_gan
    from gannas_jax.search.base import sample_host

    space = NB201Space()
    archs = sample_host(space, np.random.default_rng(0), 400)
    good = archs[(archs[:, 0] == 3) & (archs[:, 5] == 3)]
    bad = archs[(archs[:, 0] != 3) & (archs[:, 5] != 3)]
    gan = init_gan(jax.random.key(0), space, SMALL_GAN)
    before = np.asarray(discriminate(gan, np.concatenate([good[8:], bad[60:]])))
    gan, losses = fit_ranker(gan, good[:8], bad[:60], jax.random.key(1), 200)
    assert losses.shape == (200,) and float(losses[-20:].mean()) < float(losses[:20].mean())
    logits = np.asarray(discriminate(gan, np.concatenate([good[8:], bad[60:]])))
    pos, neg = logits[: len(good) - 8], logits[len(good) - 8 :]
    auc = (pos[:, None] > neg[None, :]).mean()
    assert auc > 0.9, auc
    assert not np.allclose(before, logits)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        fit_ranker(gan, good[:8], bad[:60], jax.random.key(1), 0)


def test_bad_settings():
    with pytest.raises(SearchError, match="explore must be in"):
        GanNas(NB201Space(), explore=float("nan"))
    with pytest.raises(SearchError, match="rank_steps must be an int >= 0"):
        GanNas(NB201Space(), rank_steps=-1)
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
