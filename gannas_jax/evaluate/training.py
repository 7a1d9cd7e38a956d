"""Training-based evaluation: score architectures by training children.

:class:`TrainingEvaluator` pads each batch of new architectures to the population capacity P and
runs one jitted program over it (:func:`gannas_jax.train.train_population`): init, a ``lax.scan``
over optimizer steps, and validation and test accuracy. Shapes never depend on the
architectures, so every batch reuses the same compiled program. With several devices the
population is spread over them (:func:`gannas_jax.parallel.population_parallel`); in a
multi-process run (:mod:`gannas_jax.distributed`) over every process's devices, each process
feeding and training only its own share, and the scores gathered back to all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time

import jax
import numpy as np

from gannas_jax import distributed
from gannas_jax.child import arch_seed, make_child
from gannas_jax.data import Dataset, batch_indices, load_dataset
from gannas_jax.evaluate.base import EvalResult
from gannas_jax.parallel import POP_AXIS, population_parallel
from gannas_jax.spaces import SequentialSpace, Space
from gannas_jax.spaces.sequential import CONV
from gannas_jax.train import TrainConfig, TrainData, narrow_child, train_population

# XLA:CPU compile options of the training program: LLVM -O1 compiles much faster than the
# default -O2 and runs as fast, since the children are bound by per-op overhead.
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic garbage collector paused, then restored as it was: tracing and lowering
    the training program allocate so many objects that the collector would run ~100 times."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _seeds(archs: np.ndarray) -> np.ndarray:
    """``uint32[P]``: each architecture's :func:`~gannas_jax.child.arch_seed`."""
    return np.asarray([arch_seed(a) for a in archs], np.uint32)


def _fold_keys(key: jax.Array, seeds: jax.Array) -> jax.Array:
    # Each child's init key depends on the evaluate key and its own codes only, not on its
    # position in the batch, so padding and chunking do not change results.
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(seeds)


def train_data(ds: Dataset, cfg: TrainConfig) -> TrainData:
    """The dataset as the training program reads it (the recipe's batches and eval chunks)."""
    idx = batch_indices(len(ds.x_train), cfg.batch_size, cfg.steps, cfg.data_seed)
    n_train, n_eval = len(ds.x_train), len(ds.x_val) + len(ds.x_test)
    chunks = -(-n_eval // cfg.batch_size)
    eval_idx = n_train + np.minimum(np.arange(chunks * cfg.batch_size), n_eval - 1)
    return TrainData(
        x=jax.numpy.asarray(np.concatenate([ds.x_train, ds.x_val, ds.x_test])),
        y=jax.numpy.asarray(np.concatenate([ds.y_train, ds.y_val, ds.y_test])),
        idx=jax.numpy.asarray(idx),
        eval_idx=jax.numpy.asarray(eval_idx.reshape(chunks, cfg.batch_size).astype(np.int32)),
        n_train=n_train,
        n_val=len(ds.x_val),
    )


class TrainingEvaluator:
    """Scores architectures by training them (the :class:`~gannas_jax.evaluate.Evaluator` protocol).

    Results are cached by canonical architecture. New architectures are trained in chunks padded
    to ``config.population``, by one compiled program reused for every chunk.

    Args:
      space: the search space.
      dataset: a :class:`~gannas_jax.data.Dataset` or a dataset name.
      config: the recipe (default :class:`~gannas_jax.TrainConfig`).
    """

    def __init__(
        self, space: Space, dataset: Dataset | str = "digits", config: TrainConfig | None = None
    ):
        self.space = space
        self.config = cfg = config or TrainConfig()
        self.dataset = ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
        self.strategy = cfg.resolved_strategy()
        self.child = make_child(
            space,
            ds.input_shape,
            ds.num_classes,
            conv_impl=cfg.resolved_conv_impl(),
            nb201_channels=cfg.nb201_channels,
            nb201_cells=cfg.nb201_cells,
        )
        self._data = train_data(ds, cfg)
        self.batch_idx = np.asarray(self._data.idx)
        self.n_devices = self._pick_devices()
        self._mesh = None
        if jax.process_count() > 1:
            # The population axis spans every process's devices; the program's inputs are global
            # arrays, each process placing only its devices' shards.
            self._mesh = jax.make_mesh(
                (self.n_devices,),
                (POP_AXIS,),
                devices=jax.devices(),
                axis_types=(jax.sharding.AxisType.Auto,),
            )
            self._data = self._globalize(self._data, jax.sharding.PartitionSpec())
        self._cache: dict[tuple[int, ...], tuple[float, float, dict]] = {}
        self.trace_count = 0  # how many times the training program was traced (compile guard)
        self.compile_count = 0  # how many times it was compiled
        self.compile_breakdown: dict[str, float] = {}  # lower_s, compile_s, execute_s (1st chunk)
        self.compile_seconds = 0.0
        self.run_seconds = 0.0
        self._program = jax.jit(self._population)
        self._compiled = None

    def _pick_devices(self) -> int:
        cfg = self.config
        if jax.process_count() > 1:
            n = jax.device_count()
            if cfg.population % n:
                raise ValueError(
                    f"train.population {cfg.population} is not divisible by the {n} devices of "
                    f"this {jax.process_count()}-process run; use a multiple of {n}"
                )
            return n
        if cfg.devices == 1:
            return 1
        n = min(
            jax.local_device_count() if cfg.devices == 0 else cfg.devices, jax.local_device_count()
        )
        while n > 1 and cfg.population % n:
            n -= 1
        return max(n, 1)

    def _globalize(self, tree, spec):
        """``tree``'s arrays (each process holds all of them) as global arrays on the mesh,
        sharded by ``spec``: every process transfers only its own devices' slices."""
        sharding = jax.sharding.NamedSharding(self._mesh, spec)

        def put(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

        return jax.tree.map(put, tree)

    def _population(self, key, seeds, archs, data):
        self.trace_count += 1  # a Python side effect: runs once per trace
        # train() canonicalizes on the host, so the program need not do it at every step
        child = dataclasses.replace(self.child, assume_canonical=True)

        def pop(keys, archs, data):
            return train_population(child, self.config, keys, archs, data)

        if self._mesh is not None:
            # The data is an argument, replicated: a closed-over global array is not allowed.
            key = jax.random.wrap_key_data(key, impl=self._key_impl)
            run = population_parallel(pop, mesh=self._mesh, replicated=1)
        elif self.n_devices > 1:
            run = population_parallel(pop, self.n_devices, replicated=1)
        else:
            run = pop
        return run(_fold_keys(key, seeds), archs, data)

    def _balance(self, archs: np.ndarray) -> np.ndarray:
        """A permutation of the padded population that deals the members the narrow variant
        cannot train (the slow ones) over the devices by estimated cost, ``1 + conv count``,
        costliest first, each to the least loaded device with a free place. Results do not
        depend on it (each member's key depends on its codes only)."""
        p, n = len(archs), self.n_devices
        if n == 1 or narrow_child(self.child, self.config) is None:
            return np.arange(p)
        cost = np.where(np.asarray(self.child.is_narrow(archs), bool), 0.0, 1.0)
        if isinstance(self.space, SequentialSpace):
            stage, _ = self.space.split(np.asarray(archs, np.int32))
            cost = cost * (1.0 + np.sum(stage[..., 0] == CONV, axis=(-2, -1)))
        m = p // n  # places per device
        places: list[list[int]] = [[] for _ in range(n)]
        load = np.zeros(n)
        for i in sorted(range(p), key=lambda i: -cost[i]):  # stable: ties keep their order
            free = (d for d in range(n) if len(places[d]) < m)
            d = min(free, key=lambda d: (load[d], len(places[d])))
            places[d].append(i)
            load[d] += cost[i]
        return np.concatenate([np.asarray(pl, np.int64) for pl in places])

    def _keys(self, key: jax.Array, archs: np.ndarray) -> jax.Array:
        """The init key of each child, as the training program derives it."""
        return _fold_keys(key, _seeds(archs))

    def train(self, archs: np.ndarray, key: jax.Array) -> dict[str, np.ndarray]:
        """Trains one padded chunk of at most ``population`` architectures; no caching.

        Returns:
          numpy ``val``, ``test``, ``loss``, ``loss0`` of the real (unpadded) members, and
          ``wall_s`` (float): the chunk's wall time, compile included when it compiled (the split
          is in ``compile_breakdown``).
        """
        archs = np.asarray(self.space.canonicalize(np.asarray(archs, np.int32)), np.int32)
        n, p = len(archs), self.config.population
        if not 0 < n <= p:
            raise ValueError(f"train: need 1..{p} architectures, got {n}")
        # Padding members are the all-zero codes (in the sequential space, the empty network: the
        # narrow variant trains it at almost no cost); their results are dropped.
        empty = self.space.canonicalize(np.zeros((1, archs.shape[1]), np.int32))
        padded = np.concatenate([archs, np.repeat(np.asarray(empty, np.int32), p - n, axis=0)])
        order = self._balance(padded)
        padded = padded[order]
        t0 = time.perf_counter()
        args = (key, _seeds(padded), padded, self._data)
        if self._mesh is not None:  # typed keys cannot be global arrays: their raw data is
            self._key_impl = jax.random.key_impl(key)
            pop, rep = jax.sharding.PartitionSpec(POP_AXIS), jax.sharding.PartitionSpec()
            args = (
                self._globalize(jax.random.key_data(key), rep),
                *self._globalize(args[1:3], pop),
                self._data,
            )
        if self._compiled is None:
            # Ahead of time, so that the benchmark can split tracing, compiling and running.
            with _gc_paused():
                lowered = self._program.lower(*args)
                t1 = time.perf_counter()
                opts = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
                self._compiled = lowered.compile(compiler_options=opts)
            t2 = time.perf_counter()
            self.compile_count += 1
            self.compile_breakdown = {"lower_s": t1 - t0, "compile_s": t2 - t1}
        t3 = time.perf_counter()
        inverse = np.argsort(order)
        result = distributed.allgather(self._compiled(*args))
        out = {k: np.asarray(v)[inverse][:n] for k, v in result._asdict().items()}
        t4 = time.perf_counter()
        self.compile_seconds += t3 - t0
        self.run_seconds += t4 - t3
        self.compile_breakdown.setdefault("execute_s", t4 - t3)
        out["wall_s"] = t4 - t0
        return out

    def evaluate(self, archs: np.ndarray, key: jax.Array) -> EvalResult:
        """Validation (``scores``) and test accuracy in percent of each architecture.

        Args:
          archs: ``int32[n, V]`` architectures (canonicalized here).
          key: init key of the children trained in this call.

        Returns:
          An :class:`EvalResult` in the order of ``archs``; ``metrics`` hold ``params``, ``flops``
          (per image, forward), ``train_loss``, ``wall_time_s`` (this child's share of its chunk's
          wall time), ``cached``, and the architecture string.
        """
        archs = self.space.validate(archs)
        if archs.ndim != 2:
            raise ValueError(
                f"evaluate: expected int32[n, {self.space.num_variables}], got shape {archs.shape}"
            )
        canon = np.asarray(self.space.canonicalize(archs), np.int32)
        todo: list[tuple[int, ...]] = []
        for a in canon:
            t = tuple(int(v) for v in a)
            if t not in self._cache and t not in todo:
                todo.append(t)
        p = self.config.population
        for c, start in enumerate(range(0, len(todo), p)):
            chunk = todo[start : start + p]
            out = self.train(np.asarray(chunk, np.int32), jax.random.fold_in(key, c))
            for i, t in enumerate(chunk):
                extra = {
                    "train_loss": float(out["loss"][i]),
                    "wall_time_s": out["wall_s"] / len(chunk),
                }
                self._cache[t] = (float(out["val"][i]), float(out["test"][i]), extra)
        scores, tests, metrics = [], [], []
        fresh = set(todo)
        for a in canon:
            t = tuple(int(v) for v in a)
            val, test, m = self._cache[t]
            scores.append(val)
            tests.append(test)
            metrics.append(
                {
                    "arch": self.space.to_string(a),
                    **self.child.cost(a),
                    **m,
                    "val_acc": val,
                    "test_acc": test,
                    "cached": t not in fresh,
                }
            )
        return EvalResult(np.asarray(scores, np.float64), np.asarray(tests, np.float64), metrics)


__all__ = ["CPU_COMPILER_OPTIONS", "TrainingEvaluator", "train_data"]
