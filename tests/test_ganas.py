"""GanNas: unique, canonical, reproducible queries, and better than random on NAS-Bench-201."""

import chex
import jax
import numpy as np
import pytest

import gannas_jax.search.ganas as ganas_module
from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.evaluate.base import EvalResult
from gannas_jax.evaluate.tabular import NB201Table, TabularEvaluator
from gannas_jax.gan import GanConfig, discriminate, init_gan
from gannas_jax.search import RandomSearch, SearchError, run_search
from gannas_jax.search.base import row_keys
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


@pytest.mark.parametrize("rank_loss", ["gan", "pairwise"])
def test_climb_reaches_a_planted_optimum(rank_loss):
    """On a sum score, whose only local optimum is the global one, the climb reaches it, with
    either ranking loss."""
    space = NB201Space()
    algo = GanNas(
        space,
        batch_size=1,
        num_init=5,
        top_k=4,
        gan_steps=5,
        climb=True,
        rank_steps=5,
        rank_loss=rank_loss,
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


def _tiny_ganas(**overrides) -> GanNas:
    """2 warm-up batches of 4, then a GAN fit of 10 steps per batch: 4 GAN iterations in 24."""
    settings = dict(batch_size=4, num_init=8, top_k=4, gan_steps=10, num_candidates=32)
    return GanNas(NB201Space(), **{**settings, **overrides, "gan": SMALL_GAN})


def _run_by_hand(algo, budget, before_ask=None):
    """Asks and tells ``algo`` on the sum score (init key 0, ask key ``fold_in(key(1), it)``),
    calling ``before_ask(state)`` first each iteration; returns the final state and the ask keys
    of the GAN iterations (after the warm-up)."""
    evaluator = _SumScore(algo.space)
    state = algo.init(jax.random.key(0), budget)
    gan_keys = []
    for it in range(budget):
        if not algo.remaining(state):
            break
        key = jax.random.fold_in(jax.random.key(1), it)
        if int(state.count) >= algo.num_init:
            gan_keys.append(key)
        if before_ask is not None:
            before_ask(state)
        archs, state = algo.ask(key, state)
        state = algo.tell(state, archs, evaluator.evaluate(archs, None).scores)
    return state, gan_keys


def _fresh_gan(algo, key):
    """The GAN ``ask(key, ...)`` starts from when it re-initializes: ``init_gan`` with the first
    of the 4 keys it splits ``key`` into."""
    return init_gan(jax.random.split(key, 4)[0], algo.space, algo.gan)


def test_diverged_gan_restarts_from_a_fresh_one(monkeypatch):
    """When fit_gan raises FloatingPointError (a diverged GAN), ask fits again from a freshly
    initialised GAN (that iteration's init key; the same real set and fit key), and the search
    goes on from the refitted GAN; the restart is reproducible."""
    real_fit = ganas_module.fit_gan

    def run():
        calls = []  # [gan, real, key, fitted gan] of each fit_gan call

        def diverging_second_fit(gan, real, key, num_steps):
            calls.append([gan, np.asarray(real), key, None])
            if len(calls) == 2:  # the second iteration's fit, of a trained GAN, diverges
                raise FloatingPointError("fit_gan: the losses became non-finite (test)")
            out = real_fit(gan, real, key, num_steps)
            calls[-1][3] = out[0]
            return out

        monkeypatch.setattr(ganas_module, "fit_gan", diverging_second_fit)
        algo = _tiny_ganas()
        state, gan_keys = _run_by_hand(algo, 24)
        return algo, state, gan_keys, calls

    algo, state, gan_keys, calls = run()
    assert len(gan_keys) == 4 and len(calls) == 5  # one fit per iteration, plus the retry
    assert int(calls[1][0].step) == 10 and int(calls[2][0].step) == 0
    chex.assert_trees_all_equal(calls[2][0], _fresh_gan(algo, gan_keys[1]))
    np.testing.assert_array_equal(calls[2][1], calls[1][1])
    np.testing.assert_array_equal(
        jax.random.key_data(calls[2][2]), jax.random.key_data(calls[1][2])
    )
    # The next iteration trains on from the refitted GAN, and the search ends normally.
    chex.assert_trees_all_equal(calls[3][0], calls[2][3])
    assert int(state.gan.step) == 30
    archs = algo.evaluated(state)[0]
    assert len(set(row_keys(archs))) == 24
    _, again, _, _ = run()
    np.testing.assert_array_equal(algo.evaluated(again)[0], archs)
    chex.assert_trees_all_equal(again.gan, state.gan)


@pytest.mark.parametrize("reinit", [True, False], ids=["reinit", "continue"])
def test_reinit_fits_a_fresh_gan_every_iteration(monkeypatch, reinit):
    """With reinit=True every iteration fits a freshly initialised GAN (that iteration's init
    key); with reinit=False each fit starts from the GAN the previous one returned."""
    real_fit = ganas_module.fit_gan
    calls = []  # (gan in, gan out) of each fit_gan call

    def recording_fit(gan, real, key, num_steps):
        out = real_fit(gan, real, key, num_steps)
        calls.append((gan, out[0]))
        return out

    monkeypatch.setattr(ganas_module, "fit_gan", recording_fit)
    algo = _tiny_ganas(reinit=reinit)
    state, gan_keys = _run_by_hand(algo, 24)
    assert len(calls) == len(gan_keys) == 4
    if reinit:
        expected = [_fresh_gan(algo, key) for key in gan_keys]
    else:
        expected = [algo.init(jax.random.key(0), 24).gan] + [out for _, out in calls[:-1]]
    for (gan_in, _), want in zip(calls, expected, strict=True):
        chex.assert_trees_all_equal(gan_in, want)
    assert int(state.gan.step) == (10 if reinit else 40)


def test_mutants_of_the_real_set_join_the_candidate_pool(monkeypatch):
    """With num_mutants > 0, that many one-variable mutants of real-set members join the pool.
    With a generator that proposes only evaluated architectures, the mutants are the only novel
    candidates: each batch is the discriminator's favourites among them, one edit from the real
    set, and no top-up is needed."""
    real_mutate = ganas_module.mutate_host
    seen, mutations = {}, []  # the history before the ask; (parents, mutants) of each call

    def stale_generate(gan, key, n):
        return np.resize(seen["archs"], (n, seen["archs"].shape[1]))

    def recording_mutate(space, rng, parents):
        out = real_mutate(space, rng, parents)
        mutations.append((np.asarray(parents), out))
        return out

    monkeypatch.setattr(ganas_module, "generate", stale_generate)
    monkeypatch.setattr(ganas_module, "mutate_host", recording_mutate)
    algo = _tiny_ganas(num_mutants=24)
    before = []  # the state before each GAN iteration's ask

    def before_ask(state):
        seen["archs"] = algo.evaluated(state)[0]
        if int(state.count) >= algo.num_init:
            before.append(state)

    state, _ = _run_by_hand(algo, 24, before_ask)
    assert len(before) == len(mutations) == 4  # one call per iteration: no top-up
    archs = algo.evaluated(state)[0]
    # each ask ranks with the GAN it fitted, which the state after it holds
    fitted = [s.gan for s in before[1:]] + [state.gan]
    for state_before, gan, (parents, mutants) in zip(before, fitted, mutations, strict=True):
        c = int(state_before.count)
        real = algo.top(state_before, algo.top_k)
        assert len(parents) == 24 and {p.tobytes() for p in parents} <= set(row_keys(real))
        novel = algo.take_novel(mutants, set(row_keys(archs[:c])), len(mutants))
        assert len(novel) > algo.batch_size
        logits = np.asarray(discriminate(gan, novel))
        queries = archs[c : c + algo.batch_size]
        assert ((queries[:, None] != real[None]).sum(-1) == 1).any(1).all()
        np.testing.assert_array_equal(queries, novel[np.argsort(-logits, kind="stable")[:4]])


def test_bad_settings():
    with pytest.raises(SearchError, match="explore must be in"):
        GanNas(NB201Space(), explore=float("nan"))
    with pytest.raises(SearchError, match="rank_loss must be one of"):
        GanNas(NB201Space(), rank_loss="hinge")
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


def test_fit_pairwise_ranks_held_out_archs_by_score():
    """The pairwise ranking updates order held-out architectures by an additive score (Kendall
    tau well above an untrained discriminator's), and bad inputs are refused."""
    import jax
    from scipy.stats import kendalltau

    from gannas_jax.gan import discriminate, fit_pairwise, init_gan
    from gannas_jax.search.base import sample_host

    space = NB201Space()
    rng = np.random.default_rng(0)
    archs = sample_host(space, rng, 200)
    scores = 1.0 * (archs[:, 0] == 3) + 0.5 * (archs[:, 5] == 2) + rng.normal(0, 0.1, 200)
    gan = init_gan(jax.random.key(0), space, SMALL_GAN)
    tau_before = kendalltau(np.asarray(discriminate(gan, archs[100:])), scores[100:]).statistic
    gan, losses = fit_pairwise(gan, archs[:100], scores[:100], jax.random.key(1), 200)
    tau = kendalltau(np.asarray(discriminate(gan, archs[100:])), scores[100:]).statistic
    assert losses.shape == (200,) and float(losses[-20:].mean()) < float(losses[:20].mean())
    assert abs(tau_before) < 0.3 and tau > 0.4, (tau_before, tau)
    with pytest.raises(ValueError, match="scores must have shape"):
        fit_pairwise(gan, archs[:10], scores[:9], jax.random.key(1), 5)
    with pytest.raises(ValueError, match="at least 2"):
        fit_pairwise(gan, archs[:1], scores[:1], jax.random.key(1), 5)
    with pytest.raises(ValueError, match="must be finite"):
        fit_pairwise(gan, archs[:3], np.array([1.0, np.nan, 0.0]), jax.random.key(1), 5)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        fit_pairwise(gan, archs[:3], scores[:3], jax.random.key(1), 0)
