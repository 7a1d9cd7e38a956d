"""REINFORCE and BANANAS: the policy, the predictor, and search on planted optima."""

import chex
import jax
import numpy as np
import pytest
from scipy.stats import kendalltau

from gannas_jax import NB201Space, SequentialSpace
from gannas_jax.evaluate.base import EvalResult
from gannas_jax.search import (
    Bananas,
    PredictorConfig,
    RandomSearch,
    Reinforce,
    SearchError,
    fit_predictor,
    policy_probs,
    predict,
    run_search,
)
from gannas_jax.search.base import sample_host


class _Table:
    """A made-up table: score = -(Hamming distance to a planted optimum), or additive weights."""

    def __init__(self, space, optimum=None, weights=None):
        self.space, self.optimum, self.weights = space, optimum, weights

    def score(self, archs):
        archs = np.asarray(archs)
        if self.weights is not None:
            return self.weights[np.arange(archs.shape[1]), archs].sum(1)
        return -(archs != self.optimum).sum(1).astype(float)

    def evaluate(self, archs, key):
        s = self.score(archs)
        return EvalResult(scores=s, test=s, metrics=[{} for _ in s])


def _planted(space, seed=9):
    return np.asarray(space.sample(jax.random.key(seed), 1))[0]


def _additive(space, seed=0):
    """Weights ``[V, Cmax]``, standard normal, with a planted optimum at one arch."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((space.num_variables, space.max_cardinality))


def _drive(algo, table, budget, seed):
    """Ask/tell by hand (run_search returns the queries, not the final state)."""
    state = algo.init(jax.random.key(seed), budget)
    while algo.remaining(state):
        archs, state = algo.ask(
            jax.random.fold_in(jax.random.key(seed + 1), int(state.count)), state
        )
        state = algo.tell(state, archs, table.score(archs))
    return state


# --- REINFORCE ----------------------------------------------------------------------------------


def test_reinforce_policy_concentrates_on_a_planted_optimum():
    space = NB201Space()
    optimum = _planted(space)
    state = _drive(Reinforce(space), _Table(space, optimum), 120, 0)
    probs = policy_probs(state)
    chex.assert_shape(probs, (6, 5))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    p_opt = probs[np.arange(6), optimum]
    assert p_opt.mean() > 0.5, p_opt  # uniform is 0.2
    assert (np.argmax(probs, 1) == optimum).sum() >= 5


def test_reinforce_update_follows_the_told_rewards():
    """The step uses the told architectures (whatever was asked): above the baseline, their
    choices gain probability; below it, they lose it. Missing choices keep probability 0."""
    space = SequentialSpace()
    algo = Reinforce(space, learning_rate=0.1)
    state = algo.init(jax.random.key(0), 10)
    a, b = np.asarray(space.sample(jax.random.key(1), 2))
    state = algo.tell(state, a[None], np.array([50.0]))  # sets the baseline: no change
    uniform = space.mask / np.asarray(space.cardinalities)[:, None]
    np.testing.assert_allclose(policy_probs(state), uniform, rtol=1e-6)
    before = policy_probs(state)
    state = algo.tell(state, b[None], np.array([90.0]))
    after = policy_probs(state)
    v = np.arange(space.num_variables)
    multi = np.asarray(space.cardinalities) > 1
    assert np.all(after[v, b][multi] > before[v, b][multi])
    assert np.all(after[~space.mask] == 0)
    state = algo.tell(state, b[None], np.array([0.0]))
    assert np.all(policy_probs(state)[v, b][multi] < after[v, b][multi])


def test_reinforce_falls_back_to_mutating_a_seen_mode():
    """A policy concentrated on an evaluated architecture still asks for an unseen one: a
    one-variable mutation of the mode."""
    space = NB201Space()
    algo = Reinforce(space, max_tries=20)
    mode = _planted(space)
    state = algo.init(jax.random.key(0), 10)
    state = algo.tell(state, mode[None], np.array([1.0]))
    onehot = np.eye(5, dtype=np.float32)[mode]
    state = state.replace(logits=jax.numpy.asarray(np.where(onehot > 0, 100.0, -100.0)))
    archs, _ = algo.ask(jax.random.key(3), state)
    assert (archs[0] != mode).sum() == 1


# --- BANANAS' predictor ------------------------------------------------------------------------


def test_predictor_ranks_held_out_architectures_of_an_additive_table():
    space = NB201Space()
    table = _Table(space, weights=_additive(space))
    rng = np.random.default_rng(0)
    archs = sample_host(space, rng, 260)
    scores = table.score(archs) + 0.3 * rng.standard_normal(260)
    model = fit_predictor(space, jax.random.key(0), archs[:60], scores[:60], pad_to=128)
    preds = predict(model, archs[60:])
    chex.assert_shape(preds, (5, 200))
    tau = kendalltau(preds.mean(0), scores[60:]).statistic
    assert tau > 0.5, tau
    assert np.all(preds.std(0) > 0)  # the members disagree somewhat


def test_predictor_ranks_held_out_nb201_architectures(nb201_dir):
    from gannas_jax.evaluate.tabular import NB201Table

    table = NB201Table.load("cifar10", nb201_dir)
    space = NB201Space()
    idx = np.random.default_rng(1).choice(len(table.valid), 300, replace=False)
    archs, scores = space.from_index(idx), table.valid[idx]
    model = fit_predictor(space, jax.random.key(0), archs[:100], scores[:100], pad_to=128)
    tau = kendalltau(predict(model, archs[100:]).mean(0), scores[100:]).statistic
    assert tau > 0.3, tau


def test_predictor_is_deterministic_and_padding_free():
    """The same key gives the same fit; the padded size of the batch changes no prediction."""
    space = SequentialSpace()
    archs = sample_host(space, np.random.default_rng(0), 40)
    scores = np.arange(40.0)
    cfg = PredictorConfig(ensemble_size=2, steps=20)
    m1, m2 = (fit_predictor(space, jax.random.key(4), archs, scores, cfg) for _ in range(2))
    chex.assert_trees_all_equal(m1.params, m2.params)
    np.testing.assert_allclose(
        predict(m1, archs[:7]), predict(m1, archs[:7], pad_to=40), rtol=1e-5, atol=1e-5
    )


# --- BANANAS' search ---------------------------------------------------------------------------


def test_bananas_finds_a_planted_optimum_faster_than_random():
    space = NB201Space()
    table = _Table(space, weights=_additive(space, seed=3))
    optimum = np.argmax(np.where(space.mask, table.weights, -np.inf), axis=1)
    best = table.score(optimum[None])[0]
    algo = Bananas(space, ensemble_size=3, train_steps=100, num_candidates=50)
    regret = {}
    for a in (algo, RandomSearch(space, batch_size=10)):
        runs = [run_search(a, table, 80, None, s, progress=False) for s in range(3)]
        regret[a.name] = np.mean([best - r.best_score for r in runs])
    assert regret["bananas"] < 0.25 * regret["random"], regret


@pytest.mark.parametrize("acquisition, num_random", [("its", 0), ("ucb", 8)])
def test_bananas_asks_the_best_unseen_candidates(acquisition, num_random):
    space = SequentialSpace()
    table = _Table(space, optimum=_planted(space))
    algo = Bananas(
        space,
        batch_size=4,
        num_init=8,
        ensemble_size=2,
        train_steps=30,
        acquisition=acquisition,
        num_random=num_random,
    )
    state = _drive(algo, table, 20, 0)
    archs = state.archs
    assert len({a.tobytes() for a in archs}) == 20
    np.testing.assert_array_equal(np.asarray(space.canonicalize(archs)), archs)
    # after the random start, queries are near the best so far: better than random on average
    assert state.scores[8:].mean() > state.scores[:8].mean()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda s: Bananas(s, ensemble_size=0), "ensemble_size must be a positive int"),
        (lambda s: Bananas(s, acquisition="ei"), "unknown acquisition 'ei'"),
        (lambda s: Bananas(s, num_candidates=5), "num_candidates .* at least batch_size"),
        (lambda s: Bananas(s, learning_rate=-1.0), "learning_rate must be > 0"),
        (lambda s: Bananas(s, ucb_beta=-1.0), "ucb_beta must be >= 0"),
        (lambda s: Bananas(s, num_random=-1), "num_random must be an int >= 0"),
        (lambda s: Reinforce(s, learning_rate=0.0), "learning_rate must be > 0"),
        (lambda s: Reinforce(s, ema_decay=1.0), "ema_decay must be in"),
        (lambda s: Reinforce(s, optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
        (lambda s: Reinforce(s, max_tries=0), "max_tries must be a positive int"),
        (lambda s: Reinforce(s, batch_size=0), "batch_size must be a positive int"),
    ],
)
def test_bad_settings_raise(make, match):
    with pytest.raises(SearchError, match=match):
        make(NB201Space())
