"""run_seeds: many GanNas seeds in lockstep ask what run_search asks for each seed."""

import functools

import jax
import numpy as np
import pytest

import gannas_jax.search.multiseed as multiseed
from gannas_jax import NB201Space
from gannas_jax.search import RandomSearch, SearchError, run_search
from gannas_jax.search.ganas import GanNas
from gannas_jax.search.multiseed import run_seeds
from tests.test_ganas import SMALL_GAN, _SumScore

SEEDS = [0, 1, 2]
# (settings, budget): the climb with pairwise ranking (the NB201 config's kind), and the
# generator's pool with mutants and GAN-loss ranking, refitted from scratch every iteration.
SETTINGS = {
    "climb": (
        dict(batch_size=1, num_init=5, top_k=3, gan_steps=6, climb=True, explore=0.3,
             restart_pool=8, rank_steps=4, rank_loss="pairwise"),
        14,
    ),
    "pool": (
        dict(batch_size=4, num_init=8, top_k=4, gan_steps=6, num_candidates=32, num_mutants=8,
             rank_steps=4, rank_loss="gan", reinit=True),
        20,
    ),
}  # fmt: skip


def _algo(name):
    settings, budget = SETTINGS[name]
    return GanNas(NB201Space(), **settings, gan=SMALL_GAN), budget


@functools.cache
def _sequential(name):
    """Each seed's own run_search (computed once per module: the tests compare with it)."""
    algo, budget = _algo(name)
    ev = _SumScore(algo.space)
    return [run_search(algo, ev, budget, None, s, progress=False) for s in SEEDS]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_map_asks_what_run_search_asks(name):
    """On one device, lax.map over seeds runs the single-seed programs: every seed's queries,
    scores and tests equal its own run_search's, bit for bit."""
    assert jax.device_count() == 1
    algo, budget = _algo(name)
    got = run_seeds(algo, _SumScore(algo.space), budget, SEEDS, batching="map", progress=False)
    want = _sequential(name)
    assert len(got) == len(SEEDS)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.archs, w.archs)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.tests, w.tests)
        assert g.best_arch == w.best_arch
    # the seeds really differ (a shared key would give equal histories)
    assert len({g.archs.tobytes() for g in got}) == len(SEEDS)


@pytest.mark.accelerator
def test_vmap_runs_every_seed():
    """vmap over seeds (the accelerator default): each seed's warm-up is its own run_search's,
    and every seed spends its budget on unique canonical architectures that climb."""
    algo, budget = _algo("climb")
    got = run_seeds(algo, _SumScore(algo.space), budget, SEEDS, batching="vmap", progress=False)
    want = _sequential("climb")
    n = algo.num_init
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.archs[:n], w.archs[:n])
        assert len({r.tobytes() for r in g.archs}) == budget
        np.testing.assert_array_equal(np.asarray(algo.space.canonicalize(g.archs)), g.archs)
    # the climb improves on the warm-up's best (the sum score's optimum, 24, is not reached)
    assert np.mean([g.scores.max() for g in got]) > np.mean([g.scores[:n].max() for g in got])


def test_a_diverged_seed_is_refitted_alone(monkeypatch):
    """When one seed's batched fit is non-finite, that seed alone is refitted by GanNas.fit with
    its own keys and pre-fit GAN (what ask does), and the run still equals run_search."""
    algo, budget = _algo("climb")
    real_fit = multiseed._Batched.fit
    calls = {"batched": 0, "alone": []}

    def flag_seed_1_once(self, gans, steps, k_fit):
        gans, finite = real_fit(self, gans, steps, k_fit)
        calls["batched"] += 1
        if calls["batched"] == 3:
            finite = finite.copy()
            finite[1] = False
        return gans, finite

    real_alone = GanNas.fit

    def recording_alone(self, step, gan):
        calls["alone"].append(int(gan.step))
        return real_alone(self, step, gan)

    monkeypatch.setattr(multiseed._Batched, "fit", flag_seed_1_once)
    monkeypatch.setattr(GanNas, "fit", recording_alone)
    got = run_seeds(algo, _SumScore(algo.space), budget, SEEDS, batching="map", progress=False)
    monkeypatch.undo()
    want = _sequential("climb")
    assert calls["alone"] == [2 * algo.gan_steps]  # seed 1's GAN after two fits
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.archs, w.archs)


def test_bad_arguments_are_search_errors():
    algo, _ = _algo("climb")
    ev = _SumScore(algo.space)
    with pytest.raises(SearchError, match="runs GanNas"):
        run_seeds(RandomSearch(algo.space), ev, 10, SEEDS)
    with pytest.raises(SearchError, match="distinct"):
        run_seeds(algo, ev, 10, [1, 1])
    with pytest.raises(SearchError, match="distinct"):
        run_seeds(algo, ev, 10, [])
    with pytest.raises(SearchError, match="batching"):
        run_seeds(algo, ev, 10, SEEDS, batching="pmap")
    with pytest.raises(SearchError, match="budget"):
        run_seeds(algo, ev, 0, SEEDS)
