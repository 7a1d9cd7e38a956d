"""Many seeds of a GanNas search in lockstep, their GAN work batched over seeds (``run_seeds``).

Every seed runs the same algorithm on the same budget, so all of them ask the same number of
queries at every iteration: the warm-up ends together, and each iteration has one GAN fit, one
ranking fit and one ranking of candidates per seed. Those are run for all seeds at once, as one
compiled program each, over a leading seed axis:

* ``batching="vmap"``: ``jax.vmap`` over seeds, for GPUs and TPUs (one wide program);
* ``batching="map"``: ``lax.map`` over seeds, spread over the local devices with
  :func:`gannas_jax.population_parallel` (on CPU with :func:`gannas_jax.use_cpu_cores`, one
  device per core): each seed runs the single-seed kernels, one seed after another per device;
* ``"auto"``: ``map`` on CPU, ``vmap`` elsewhere.

The host bookkeeping (histories, seen sets, the climb, the host random draws) is each seed's own,
through the same :class:`~gannas_jax.search.ganas.GanNas` steps that ``ask`` runs, with the same
keys as :func:`~gannas_jax.search.run_search` derives from each seed. So each seed asks what its
own ``run_search`` would, up to floating point: batched programs may round the GAN's arithmetic
differently in the last bits, which can change a discriminator ranking and the trajectory after
it. A seed whose GAN fit turns non-finite is refitted alone, as ``ask`` does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gannas_jax.evaluate.base import Evaluator
from gannas_jax.gan.fit import _fit, pad_real
from gannas_jax.gan.rank import _fit_pairwise, _fit_ranker
from gannas_jax.gan.sample import _bucket, _discriminate, _generate
from gannas_jax.gan.state import _init
from gannas_jax.parallel import population_parallel
from gannas_jax.search.base import SearchError, rng_from_key_data
from gannas_jax.search.driver import SearchResult, check_asked, search_result
from gannas_jax.search.ganas import GanNas

BATCHINGS = ("auto", "vmap", "map")


def _resolve(batching: str) -> str:
    if batching not in BATCHINGS:
        raise SearchError(f"run_seeds: batching must be one of {BATCHINGS}, got {batching!r}")
    if batching == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return batching


def _over_seeds(fn, batching: str, num_devices: int):
    """``fn`` of one seed's arrays, jitted over a leading seed axis of every argument."""
    if batching == "vmap":
        return jax.jit(jax.vmap(fn))

    def mapped(*args):
        return jax.lax.map(lambda a: fn(*a), args)

    if num_devices > 1:
        return jax.jit(population_parallel(mapped, num_devices))
    return jax.jit(mapped)


def _keys(data):
    return jax.random.wrap_key_data(data)


def _fit_one(algo: GanNas, gan, real, num_real, k_fit, rank_archs, rank_scores, num_rank, rank_on):
    """One seed's :meth:`GanNas.fit` (without the divergence restart): the GAN steps, then the
    ranking steps where ``rank_on``; returns ``(gan, finite)``."""
    k_fit = _keys(k_fit)
    gan, metrics, finite = _fit(gan, real, num_real, k_fit, num_steps=algo.gan_steps)
    finite &= jnp.all(jnp.isfinite(metrics["d_loss"])) & jnp.all(jnp.isfinite(metrics["g_loss"]))
    if not algo.rank_steps:
        return gan, finite
    k_rank = jax.random.fold_in(k_fit, 1)
    if algo.rank_loss == "pairwise":
        ranked, losses, ok = _fit_pairwise(
            gan, rank_archs, rank_scores, num_rank, k_rank, num_steps=algo.rank_steps
        )
    else:
        ranked, losses, ok = _fit_ranker(
            gan, real, num_real, rank_archs, num_rank, k_rank, num_steps=algo.rank_steps
        )
    ok &= jnp.all(jnp.isfinite(losses))
    gan = jax.tree.map(lambda a, b: jnp.where(rank_on, a, b), ranked, gan)
    return gan, finite & (ok | ~rank_on)


@functools.lru_cache(maxsize=8)
def _batched(algo: GanNas, batching: str, num_seeds: int) -> _Batched:
    """One :class:`_Batched` per setting, so that repeated runs reuse its compiled programs."""
    return _Batched(algo, batching, num_seeds)


class _Batched:
    """The seed-batched device steps of one algorithm: init, fit, generate, discriminate."""

    def __init__(self, algo: GanNas, batching: str, num_seeds: int):
        self.algo, self.batching = algo, batching
        self.devices = len(jax.local_devices()) if batching == "map" else 1
        # pad the seed axis to a multiple of the device count (the padding repeats a seed)
        self.width = -(-num_seeds // self.devices) * self.devices
        self.num_seeds = num_seeds
        space, config = algo.space, algo.gan
        self._init = _over_seeds(lambda k: _init(_keys(k), space, config), batching, self.devices)
        self._fit = _over_seeds(functools.partial(_fit_one, algo), batching, self.devices)
        self._generate = _over_seeds(
            lambda g, k: _generate(g, _keys(k), space, config, _bucket(algo.num_candidates)),
            batching,
            self.devices,
        )
        self._discriminate = _over_seeds(
            lambda d, x: _discriminate(d, x, space, config), batching, self.devices
        )

    def pad(self, rows: np.ndarray) -> np.ndarray:
        """``[num_seeds, ...] -> [width, ...]``, repeating the last seed."""
        extra = self.width - len(rows)
        return np.concatenate([rows, np.repeat(rows[-1:], extra, axis=0)]) if extra else rows

    def init(self, key_data: np.ndarray):
        return self._init(self.pad(key_data))

    def fit(self, gans, steps, k_fit: np.ndarray):
        algo = self.algo
        real = np.stack([pad_real(algo.space, algo.gan, s.real)[0] for s in steps])
        num_real = np.asarray([len(s.real) for s in steps], np.int32)
        cap, v = real.shape[1:]
        rank_archs = np.zeros((len(steps), cap, v), np.int32)
        rank_scores = np.zeros((len(steps), cap), np.float32)
        num_rank = np.ones(len(steps), np.int32)
        rank_on = np.zeros(len(steps), bool)
        for i, s in enumerate(steps):
            if s.rank_archs is not None:
                m = len(s.rank_archs)
                rank_archs[i, :m], num_rank[i], rank_on[i] = s.rank_archs, m, True
                if s.rank_scores is not None:
                    rank_scores[i, :m] = s.rank_scores
        args = (real, num_real, k_fit, rank_archs, rank_scores, num_rank, rank_on)
        gans, finite = self._fit(gans, *(self.pad(a) for a in args))
        return gans, np.asarray(finite)[: self.num_seeds]

    def generate(self, gans, k_gen: np.ndarray) -> np.ndarray:
        out = self._generate(gans.g_params, self.pad(k_gen))
        return np.asarray(out)[: self.num_seeds, : self.algo.num_candidates]

    def discriminate(self, gans, cands: list[np.ndarray]) -> list[np.ndarray]:
        padded = np.zeros((len(cands), _bucket(max(len(c) for c in cands)), cands[0].shape[1]))
        for i, c in enumerate(cands):
            padded[i, : len(c)] = c
        logits = np.asarray(self._discriminate(gans.d_params, self.pad(padded.astype(np.int32))))
        return [logits[i, : len(c)] for i, c in enumerate(cands)]


@jax.jit
def _iteration_keys(key_ask, key_eval, iteration):
    """Every seed's ask keys (split in 4) and evaluation key at ``iteration``."""
    ask = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, iteration), 4))(key_ask)
    return ask, jax.vmap(lambda k: jax.random.fold_in(k, iteration))(key_eval)


def _take(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def _put(tree, i, one):
    return jax.tree.map(lambda a, b: a.at[i].set(b), tree, one)


def run_seeds(
    algorithm: GanNas,
    evaluator: Evaluator,
    budget: int,
    seeds: Sequence[int],
    *,
    batching: str = "auto",
    progress: bool = True,
) -> list[SearchResult]:
    """Runs ``algorithm`` once per seed, all seeds in lockstep, in memory (no workdir).

    Args:
      algorithm: a :class:`GanNas` over ``evaluator.space``.
      evaluator: scores architectures (each seed's queries are evaluated with that seed's keys).
      budget: unique architectures per seed.
      seeds: distinct ints; seed ``s`` asks what ``run_search(..., seed=s)`` asks, up to the
        floating-point rounding of batched programs (see the module docstring).
      batching: "auto", "vmap" or "map" (see the module docstring).
      progress: show a tqdm progress bar over all seeds' queries.

    Returns:
      One :class:`~gannas_jax.search.SearchResult` per seed, in the order of ``seeds``.

    Raises:
      SearchError: bad arguments, or a seed could not go on.
    """
    if not isinstance(algorithm, GanNas):
        raise SearchError(f"run_seeds runs GanNas, got {type(algorithm).__name__}")
    if algorithm.space != evaluator.space:
        raise SearchError("the algorithm and the evaluator use different search spaces")
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise SearchError(f"budget must be a positive int, got {budget!r}")
    if budget > algorithm.space.size:
        raise SearchError(
            f"budget {budget} exceeds the {algorithm.space.size} architectures of the space"
        )
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SearchError(f"run_seeds: seeds must be distinct and not empty, got {seeds}")
    algo, n_seeds, budget = algorithm, len(seeds), int(budget)
    batched = _batched(algo, _resolve(batching), n_seeds)

    run_keys = jnp.stack([jax.random.split(jax.random.key(s), 3) for s in seeds])
    key_init, key_ask, key_eval = run_keys[:, 0], run_keys[:, 1], run_keys[:, 2]
    # each seed's history as algo.init makes it; the GANs initialized as one batch
    states = [algo.init(key_init[i], budget).replace(gan=None) for i in range(n_seeds)]
    gans = batched.init(np.asarray(jax.random.key_data(key_init)))
    tests = np.full((n_seeds, budget), np.nan)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_seeds * budget, desc=f"{algo.name} x {n_seeds} seeds", unit="query")
    try:
        iteration = 0
        while algo.remaining(states[0]) > 0:
            # each seed's ask keys, as GanNas.begin splits them: init, fit, gen, host
            split, k_evals = _iteration_keys(key_ask, key_eval, iteration)
            data = np.asarray(jax.random.key_data(split))  # uint32[S, 4, 2]
            # the device keys stay batched (None here); a lone refit makes its own
            begun = [
                algo.begin_from_keys((None,) * 3, rng_from_key_data(data[i, 3]), states[i])
                for i in range(n_seeds)
            ]
            warm = [w is not None for w, _ in begun]
            if all(warm):
                asked = [w for w, _ in begun]
            elif any(warm):
                raise SearchError("run_seeds: the seeds fell out of lockstep")  # cannot happen
            else:
                steps = [step for _, step in begun]
                gans, asked, states = _ask_batched(algo, batched, gans, steps, states, data)
            for i in range(n_seeds):
                archs = check_asked(algo, states[i], asked[i])
                result = evaluator.evaluate(archs, k_evals[i])
                c = int(states[i].count)
                tests[i, c : c + len(archs)] = result.test
                states[i] = algo.tell(states[i], archs, result.scores)
            iteration += 1
            if bar is not None:
                bar.update(n_seeds * len(asked[0]))
    finally:
        if bar is not None:
            bar.close()
    return [search_result(algo, states[i], tests[i]) for i in range(n_seeds)]


def _ask_batched(algo: GanNas, batched: _Batched, gans, steps, states, data):
    """Every seed's non-warm-up ask: ``GanNas.ask``'s steps, the device ones batched."""
    if algo.reinit:
        gans = batched.init(data[:, 0])
    before = gans
    gans, finite = batched.fit(gans, steps, data[:, 1])
    for i in np.flatnonzero(~finite):  # diverged: refit this seed alone, as ask does
        keys = [jax.random.wrap_key_data(data[i, j]) for j in range(3)]
        step = dataclasses.replace(steps[i], k_init=keys[0], k_fit=keys[1], k_gen=keys[2])
        gans = _put(gans, i, algo.fit(step, _take(before, i)))
    pools = batched.generate(gans, data[:, 2]) if not algo.climb else [None] * len(steps)
    picked = [algo.candidates(s, st, p) for s, st, p in zip(steps, states, pools, strict=True)]
    need = [algo.needs_logits(s, c) for s, (c, _, _) in zip(steps, picked, strict=True)]
    logits = [None] * len(steps)
    if any(need):
        ranked = batched.discriminate(gans, [c for c, _, _ in picked])
        logits = [lg if nd else None for lg, nd in zip(ranked, need, strict=True)]
    asked, new_states = [], []
    for s, (cands, kind, st), lg in zip(steps, picked, logits, strict=True):
        archs, st = algo.choose(s, st, cands, kind, lg)
        asked.append(archs)
        new_states.append(st)
    return gans, asked, new_states
