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


def _one_variable_edits(space, parent) -> dict[bytes, float]:
    """The distribution of a one-variable mutation of ``parent``: a uniform variable, a uniform
    other value, then canonicalization. Maps each canonical result to its probability; the parent
    itself is among them where an edit is a no-op once canonical (in SequentialSpace, a kernel or
    channel count of a slot that is not a conv, or a width of an empty head slot)."""
    card = space.cardinalities
    rows, probs = [], []
    for v, c in enumerate(card):
        for value in range(c):
            if value != parent[v]:
                row = parent.copy()
                row[v] = value
                rows.append(row)
                probs.append(1 / (len(card) * (c - 1)))
    out: dict[bytes, float] = {}
    for row, p in zip(np.asarray(space.canonicalize(np.stack(rows))), probs, strict=True):
        out[row.tobytes()] = out.get(row.tobytes(), 0.0) + p
    return out


@pytest.mark.parametrize("space", [NB201Space(), SequentialSpace()], ids=["nb201", "sequential"])
def test_mutation_changes_exactly_one_variable_and_stays_canonical(space):
    """Each child is canonical and is the canonical form of its parent with one variable changed;
    no-op edits (the child equals the parent: never in NB201, about half the edits of a random
    sequential architecture) occur as often as uniform variable and value choices predict."""
    rng = host_rng(jax.random.key(0))
    parents = np.asarray(space.sample(jax.random.key(1), 200))
    children = mutate_host(space, rng, parents)
    np.testing.assert_array_equal(np.asarray(space.canonicalize(children)), children)
    if isinstance(space, NB201Space):
        np.testing.assert_array_equal((children != parents).sum(1), 1)
    edits = [_one_variable_edits(space, p) for p in parents]
    outside = [
        i for i, (c, e) in enumerate(zip(children, edits, strict=True)) if c.tobytes() not in e
    ]
    assert not outside, (
        f"{len(outside)} children are not one edit away, e.g. "
        f"{parents[outside[0]]} -> {children[outside[0]]}"
    )
    p_noop = np.asarray([e.get(p.tobytes(), 0.0) for p, e in zip(parents, edits, strict=True)])
    noops = int(np.all(children == parents, axis=1).sum())
    sd = np.sqrt(np.sum(p_noop * (1 - p_noop)))
    assert abs(noops - p_noop.sum()) <= 4 * sd, (noops, p_noop.sum(), sd)


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
    recorders = [_Recorder(space) for _ in range(3)]
    runs = [
        run_search(algo, rec, 40, None, seed, progress=False)
        for rec, seed in zip(recorders, (5, 5, 6), strict=True)
    ]
    archs = runs[0].archs
    # The driver evaluates each asked batch once, in order: the evaluator saw the history.
    asked = recorders[0].asked
    assert all(1 <= len(b) <= algo.batch_size for b in asked), [len(b) for b in asked]
    np.testing.assert_array_equal(np.concatenate(asked), archs)
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


@pytest.mark.parametrize("tournament_size", [10, 4])
def test_evolution_mutates_tournament_winners(cifar10, tournament_size):
    """After the random warm-up each child is one mutation away from a member of the population
    (the last 10 queries) that could have won its tournament (a member with at most
    population - tournament members scoring above it), or, where that mutant had been evaluated
    already, from where the walk went on: a chain of one-variable steps through evaluated
    architectures. Most children (>= 75%) are a possible winner's direct mutants."""
    space, pop_size = NB201Space(), 10
    algo = RegularizedEvolution(space, population_size=pop_size, tournament_size=tournament_size)
    res = run_search(algo, TabularEvaluator(table=cifar10), 60, None, 0, progress=False)

    def one_away(a, b):  # [m, V] x [n, V] -> bool[m, n]: one variable apart (NB201 is canonical)
        return (a[:, None, :] != b[None, :, :]).sum(-1) == 1

    direct = []
    for q in range(pop_size, 60):
        pop, pop_scores = res.archs[q - pop_size : q], res.scores[q - pop_size : q]
        above = (pop_scores[None, :] > pop_scores[:, None]).sum(1)
        winners = pop[above <= pop_size - tournament_size]
        # the walk's reach: the possible winners and the evaluated architectures chained to them
        reach, seen = winners, res.archs[:q]
        while True:
            grown = np.unique(np.concatenate([reach, seen[one_away(seen, reach).any(1)]]), axis=0)
            if len(grown) == len(reach):
                break
            reach = grown
        child = res.archs[q : q + 1]
        assert one_away(child, reach).any(), f"query {q} is no mutant of a possible winner"
        direct.append(bool(one_away(child, winners).any()))
    assert np.mean(direct) >= 0.75, direct


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
    dying = _DiesAfter(space, 26)
    with pytest.raises(_Stop):
        run_search(algo, dying, 40, tmp_path, 3, progress=False, checkpoint_every_s=every)
    np.testing.assert_array_equal(np.concatenate(dying.asked), ref.archs[:25])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == (25 if every == 0 else 0)
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 25
    resumed = _Recorder(space)
    res = run_search(algo, resumed, 40, tmp_path, 3, progress=False, checkpoint_every_s=every)
    np.testing.assert_array_equal(res.archs, ref.archs)
    # Only what the last checkpoint lacks is evaluated again (one query per iteration).
    np.testing.assert_array_equal(np.concatenate(resumed.asked), ref.archs[steps[-1] :])
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
