"""Ask/tell baselines, the tabular evaluator and the in-process driver."""

import json

import chex
import jax
import numpy as np
import pytest

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.evaluate.tabular import BenchmarkError, NB201Table, TabularEvaluator
from gannas_jax.search import (
    Bananas,
    LocalSearch,
    RandomSearch,
    RegularizedEvolution,
    Reinforce,
    SearchError,
    mutate_host,
    run_search,
)
from gannas_jax.search.base import host_rng


@pytest.fixture(scope="module")
def cifar10(nb201_dir):
    return NB201Table.load("cifar10", nb201_dir)


def test_table_matches_known_optima(nb201_dir):
    expected = {
        "cifar10": (6111, 91.61),
        "cifar100": (9930, 73.49),
        "ImageNet16-120": (10676, 46.73),
    }
    for ds, (index, best) in expected.items():
        table = NB201Table.load(ds, nb201_dir)
        assert table.best_index == index
        assert table.best_valid == pytest.approx(best, abs=0.005)
    assert int(np.argmax(NB201Table.load("ImageNet16-120", nb201_dir).test)) == 857


def test_tabular_evaluator_scores_and_counts(cifar10):
    ev = TabularEvaluator(table=cifar10)
    space = ev.space
    archs = space.from_index(np.array([6111, 0, 6111]))
    res = ev.evaluate(archs)
    np.testing.assert_allclose(res.scores, cifar10.valid[[6111, 0, 6111]])
    np.testing.assert_allclose(res.test, cifar10.test[[6111, 0, 6111]])
    assert [m["index"] for m in res.metrics] == [6111, 0, 6111]
    assert ev.num_queries == 2  # a repeated architecture counts once


@pytest.mark.parametrize("space", [NB201Space(), SequentialSpace()], ids=["nb201", "sequential"])
def test_mutation_changes_exactly_one_variable_and_stays_canonical(space):
    rng = host_rng(jax.random.key(0))
    parents = np.asarray(space.sample(jax.random.key(1), 200))
    children = mutate_host(space, rng, parents)
    np.testing.assert_array_equal(np.asarray(space.canonicalize(children)), children)
    if isinstance(space, NB201Space):
        np.testing.assert_array_equal((children != parents).sum(1), 1)


class _Recorder:
    """A fake evaluator (score = sum of codes) that records what it was asked."""

    def __init__(self, space):
        self.space, self.asked = space, []

    def evaluate(self, archs, key):
        from gannas_jax.evaluate.base import EvalResult

        self.asked.append(np.asarray(archs))
        s = np.asarray(archs).sum(1).astype(float)
        return EvalResult(scores=s, test=-s, metrics=[{} for _ in s])


@pytest.mark.parametrize(
    "algo_cls", [RandomSearch, RegularizedEvolution, LocalSearch, Reinforce, Bananas]
)
@pytest.mark.parametrize("space", [NB201Space(), SequentialSpace()], ids=["nb201", "sequential"])
def test_queries_are_unique_canonical_and_deterministic(algo_cls, space):
    algo = {
        RandomSearch: lambda: RandomSearch(space, batch_size=3),
        RegularizedEvolution: lambda: RegularizedEvolution(
            space, population_size=10, tournament_size=3
        ),
        LocalSearch: lambda: LocalSearch(space, batch_size=2, num_init=5),
        Reinforce: lambda: Reinforce(space, batch_size=2),
        Bananas: lambda: Bananas(
            space, batch_size=5, num_init=10, ensemble_size=2, train_steps=20, num_candidates=20
        ),
    }[algo_cls]()
    runs = [
        run_search(algo, _Recorder(space), 40, None, seed, progress=False) for seed in (5, 5, 6)
    ]
    archs = runs[0].archs
    assert len({a.tobytes() for a in archs}) == 40
    np.testing.assert_array_equal(np.asarray(space.canonicalize(archs)), archs)
    chex.assert_trees_all_equal(runs[0].archs, runs[1].archs)
    assert not np.array_equal(runs[0].archs, runs[2].archs)
    best = int(np.argmax(runs[0].scores))
    assert runs[0].best_score == runs[0].scores[best] and runs[0].best_test == -runs[0].scores[best]


class _Planted(_Recorder):
    """A made-up table: the score is minus the Hamming distance to a planted optimum."""

    def __init__(self, space, optimum):
        super().__init__(space)
        self.optimum = np.asarray(optimum)

    def evaluate(self, archs, key):
        from gannas_jax.evaluate.base import EvalResult

        archs = np.asarray(archs)
        s = -(archs != self.optimum).sum(1).astype(float)
        return EvalResult(scores=s, test=s, metrics=[{} for _ in s])


@pytest.mark.parametrize("space", [NB201Space(), SequentialSpace()], ids=["nb201", "sequential"])
def test_local_search_climbs_to_a_planted_optimum(space):
    optimum = np.asarray(space.sample(jax.random.key(9), 1))[0]
    res = run_search(LocalSearch(space), _Planted(space, optimum), 150, None, 0, progress=False)
    # every step after the random starts is a one-variable move, so the distance falls by one
    # per accepted move: the optimum of a unimodal table is reached well inside the budget
    assert res.best_score == 0 and space.to_string(optimum) == res.best_arch
    assert np.max(res.scores[:10]) < 0  # not found by the random starts


def test_local_search_restarts_at_a_local_optimum():
    """On a table where every architecture scores the same, no neighbour improves: the climb
    exhausts the start's neighbourhood, then restarts from a random architecture."""
    from gannas_jax.search.local import neighbours

    space = NB201Space()
    algo = LocalSearch(space, num_init=1)
    state = algo.init(jax.random.key(0), 60)
    asked = []
    for it in range(40):
        archs, state = algo.ask(jax.random.fold_in(jax.random.key(1), it), state)
        asked.append(archs)
        state = algo.tell(state, archs, np.zeros(len(archs)))
    asked = np.concatenate(asked)
    start_nbrs = {r.tobytes() for r in neighbours(space, asked[0])}
    n = len(start_nbrs)
    assert {r.tobytes() for r in asked[1 : n + 1]} == start_nbrs  # the whole neighbourhood
    assert asked[n + 1].tobytes() not in start_nbrs  # then a random restart
    # and the climb moved there: the next queries are its neighbours
    restart_nbrs = {r.tobytes() for r in neighbours(space, asked[n + 1])}
    assert {r.tobytes() for r in asked[n + 2 : n + 5]} <= restart_nbrs


def test_evolution_mutates_tournament_winners(cifar10):
    space = NB201Space()
    algo = RegularizedEvolution(space, population_size=10, tournament_size=10)
    res = run_search(algo, TabularEvaluator(table=cifar10), 60, None, 0, progress=False)
    # With the tournament as large as the population, the parent is the best of the last 10
    # queries; its child differs from it in one variable, unless that mutant had been seen
    # already and was mutated again.
    dist = [
        int((res.archs[q] != res.archs[q - 10 : q][np.argmax(res.scores[q - 10 : q])]).sum())
        for q in range(10, 60)
    ]
    assert min(dist) >= 1 and np.mean(np.asarray(dist) == 1) >= 0.75, dist


def test_evolution_and_local_search_beat_random_on_cifar10(cifar10):
    bests = {}
    for algo in (
        RandomSearch(NB201Space(), batch_size=10),
        RegularizedEvolution(NB201Space()),
        LocalSearch(NB201Space()),
    ):
        bests[algo.name] = np.mean(
            [
                run_search(
                    algo, TabularEvaluator(table=cifar10), 150, None, s, progress=False
                ).best_score
                for s in range(10)
            ]
        )
    assert bests["evolution"] > bests["random"] + 0.2
    assert bests["local_search"] > bests["random"] + 0.2


def test_driver_writes_workdir_and_resumes_complete_run(cifar10, tmp_path):
    algo = RegularizedEvolution(NB201Space())
    res = run_search(
        algo, TabularEvaluator(table=cifar10), 30, tmp_path, 1, progress=False, config={"name": "x"}
    )
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 30
    recs = [json.loads(line) for line in lines]
    assert [r["query"] for r in recs] == list(range(30))
    assert max(r["score"] for r in recs) == pytest.approx(res.best_score)
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result) == {"best_arch", "best_score", "best_test", "num_queries"}
    assert (tmp_path / "progress.png").stat().st_size > 1000
    # Running again on a finished workdir changes nothing.
    again = run_search(
        algo, TabularEvaluator(table=cifar10), 30, tmp_path, 1, progress=False, config={"name": "x"}
    )
    assert (tmp_path / "history.jsonl").read_text().splitlines() == lines
    assert again.summary() == res.summary()
    with pytest.raises(SearchError, match="another config .*differs in name"):
        run_search(
            algo,
            TabularEvaluator(table=cifar10),
            30,
            tmp_path,
            1,
            progress=False,
            config={"name": "y"},
        )


class _Stop(Exception):
    pass


class _DiesAfter(_Recorder):
    """The fake evaluator, raising on its ``n``-th call: a run killed mid-iteration."""

    def __init__(self, space, n):
        super().__init__(space)
        self.n = n

    def evaluate(self, archs, key):
        if len(self.asked) + 1 == self.n:
            raise _Stop
        return super().evaluate(archs, key)


@pytest.mark.parametrize("algo_cls", [RegularizedEvolution, LocalSearch, Reinforce, Bananas])
@pytest.mark.parametrize("every", [0.0, float("inf")], ids=["every-iteration", "first-and-last"])
def test_interrupted_run_resumes_to_the_uninterrupted_queries(tmp_path, every, algo_cls):
    """Whatever the checkpoint interval, the iterations after the last checkpoint are redone
    with the same keys: the resumed run ends with the uninterrupted run's queries (and the
    algorithm's own state fields survive the orbax round trip)."""
    space = NB201Space()
    if algo_cls is Bananas:  # one query per iteration, like the others, and a tiny predictor
        algo = Bananas(space, batch_size=1, ensemble_size=2, train_steps=20, num_candidates=20)
    else:
        algo = algo_cls(space)
    ref = run_search(algo, _Recorder(space), 40, None, 3, progress=False)
    with pytest.raises(_Stop):
        run_search(
            algo, _DiesAfter(space, 26), 40, tmp_path, 3, progress=False, checkpoint_every_s=every
        )
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == (25 if every == 0 else 0)
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 25
    res = run_search(
        algo, _Recorder(space), 40, tmp_path, 3, progress=False, checkpoint_every_s=every
    )
    np.testing.assert_array_equal(res.archs, ref.archs)
    np.testing.assert_array_equal(res.scores, ref.scores)
    recs = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["query"] for r in recs] == list(range(40))
    assert [space.from_string(r["arch"]).tolist() for r in recs] == ref.archs.tolist()


@pytest.mark.parametrize("budget", [0, -3, 2.5, 20000])
def test_bad_budget(cifar10, budget):
    with pytest.raises(SearchError, match="budget"):
        run_search(
            RandomSearch(NB201Space()),
            TabularEvaluator(table=cifar10),
            budget,
            None,
            0,
            progress=False,
        )


def test_missing_benchmark_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GANNAS_NB201_DIR", raising=False)
    with pytest.raises(BenchmarkError, match="set \\$GANNAS_NB201_DIR"):
        NB201Table.load("cifar10")
    with pytest.raises(BenchmarkError, match="does not exist"):
        NB201Table.load("cifar10", tmp_path / "nope")
    with pytest.raises(BenchmarkError, match="not found"):
        NB201Table.load("cifar10", tmp_path)
    with pytest.raises(BenchmarkError, match="unknown NAS-Bench-201 dataset 'svhn'"):
        NB201Table.load("svhn", tmp_path)
