"""Training-based evaluation: train a population of children in one compiled program.

:class:`TrainingEvaluator` pads each batch of new architectures to a fixed population capacity P
and runs one jitted program over it: init (exact-size fan-in), a ``lax.scan`` over optimizer
steps, and validation and test accuracy. Params, optimizer states and architectures are stacked on
the leading population axis, which is run either with ``vmap`` (accelerators: one batched program)
or with ``lax.map`` (CPU: members one after another, so each ``lax.switch`` executes only its
taken branch). Shapes never depend on the architectures, so any batch of any architectures reuses
the same compiled program.

With ``lax.map``, a member whose architecture the child's narrow variant accepts (sequential
space: no conv, 40% of uniform random architectures) is trained by that variant, chosen by a
``lax.cond`` in the same program: it computes on the image's channels only and has no stage
weights, so it runs several times faster than the max-size child. The evaluator deals the other
members evenly over the devices.

Where the time goes on a 2-core CPU (default ``SequentialSpace``, P=16, the default recipe;
``scripts/bench_torch.py child``, each repeat in a fresh process): 0.8-1.3 s tracing and lowering
(with Python's garbage collector paused, see :func:`_gc_paused`), 3.5-5.3 s XLA compilation (at
LLVM -O1, see ``CPU_COMPILER_OPTIONS``; ~470 fusions, on ~1.6 cores; a profile of the compile:
code generation per distinct kernel, LLVM ~35% and MLIR fusion emitters ~19% of its CPU time, HLO
passes ~12%) and 2.2-3.3 s running on the two XLA CPU devices that ``gannas_jax.use_cpu_cores()``
creates, as the scripts do, against 7.1-9.2 s for PyTorch eager at exact sizes on one thread in a
fresh process (6.0-8.6 s warm): parity (median ratio 1.03 over 25 repeats in four runs); over six
such batches (one compile) 25 s against 46-48 s.
The children's exact forward cost is only 0.06 MFLOP per image, so both sides are
overhead-bound. On the JAX side the running time is the members with a conv (about 1.1-1.5 ms per step
on one device with light convs; a conv-less member on the narrow variant takes 0.17
ms): the 512-row head's matmuls (its first layer about a fifth of the step of a member with one
conv), the zero-filled buffers and stacking of per-slot activations
and gradients in the stage loops, Adam over the 89k parameters outside the stage kernels (those
are updated at their conv slots only: :class:`~gannas_jax.parallel.SlotSparse`), and memory
traffic on 32-channel padded activations. Convs on the second stage's 4x4 maps are matmuls
(:func:`~gannas_jax.child.ops.dense_conv`). Compilation is dominated by the per-slot op switches
(forward and backward of each stage, for each variant). The two devices need both cores: with another
busy process on the machine the JAX side slows down about 2x, the one-thread PyTorch side hardly
at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gannas_jax import parallel
from gannas_jax.child import Child, arch_seed, make_child
from gannas_jax.child.sequential import geometry
from gannas_jax.data import Dataset, batch_indices, load_dataset
from gannas_jax.evaluate.base import EvalResult
from gannas_jax.spaces import SequentialSpace, Space
from gannas_jax.spaces.sequential import CONV

STRATEGIES = ("auto", "vmap", "map")

# XLA:CPU compile options of the training program. LLVM's default -O2 pipeline took 4 s of the
# 10 s compile of the default digits program and bought nothing at run time: the children are
# bound by per-op overhead and memory traffic, not by the quality of the emitted loops (measured,
# P=16, 50 steps: -O2 compile 9.8 s, 4.0 ms per child-step; -O1 5.7 s, 3.9 ms; -O0 4.0 s, 35 ms).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training recipe of :class:`TrainingEvaluator` (defaults: the digits recipe).

    Attributes:
      steps: optimizer steps per child.
      batch_size: training batch size.
      optimizer: ``'adam'`` or ``'sgd'`` (with momentum).
      learning_rate: peak learning rate.
      schedule: ``'constant'`` or ``'cosine'`` decay to 0 over ``steps``.
      momentum: SGD momentum.
      strategy: population execution: ``'vmap'``, ``'map'`` (``lax.map``) or ``'auto'`` (``map`` on
        CPU, ``vmap`` elsewhere).
      conv_impl: sequential space conv (see :class:`~gannas_jax.child.SequentialChild`):
        ``'exact'``, ``'kernel'``, ``'blocked'``, ``'masked'`` or ``'auto'`` (``blocked`` with
        ``map``, or ``kernel`` when the space's channel counts share no block of 4 or more;
        ``masked`` with ``vmap``).
      population: capacity P; batches are padded to it so their size never recompiles.
      devices: devices to spread the population over (population parallelism); 0 means all local
        devices that divide P, 1 disables. On CPU, call ``gannas_jax.use_cpu_cores()`` before JAX
        starts (the scripts do) for one XLA device per core, so that the default uses every core.
      data_seed: seed of the training data order (shared by all children).
      eval_batch_size: chunk size of validation/test inference for children with BatchNorm (the
        others are scored in training-size batches inside the training scan, see
        :func:`train_member`).
      nb201_channels: NB201 skeleton width C.
      nb201_cells: NB201 cells per stage N.
      narrow: with ``map``, train each architecture that the child's narrow variant accepts
        (sequential space: no conv) with that variant, chosen per member by ``lax.cond`` inside
        the one program (see :meth:`~gannas_jax.child.Child.narrow_variant`). Same results up to
        float summation order; ignored with ``vmap``, where ``cond`` would run both.
    """

    steps: int = 300
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    schedule: str = "constant"
    momentum: float = 0.9
    strategy: str = "auto"
    conv_impl: str = "auto"
    population: int = 16
    devices: int = 0
    data_seed: int = 0
    eval_batch_size: int = 512
    nb201_channels: int = 16
    nb201_cells: int = 5
    narrow: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"TrainConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if self.conv_impl not in ("auto", "exact", "kernel", "blocked", "masked"):
            raise ValueError(
                f"TrainConfig.conv_impl must be auto, exact, kernel, blocked or masked, "
                f"got {self.conv_impl!r}"
            )
        for f in ("steps", "batch_size", "population", "eval_batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"TrainConfig.{f} must be >= 1, got {getattr(self, f)}")

    def resolved_strategy(self) -> str:
        """``'vmap'`` or ``'map'``, resolving ``'auto'`` by the default backend."""
        if self.strategy != "auto":
            return self.strategy
        return "map" if jax.default_backend() == "cpu" else "vmap"

    def resolved_conv_impl(self, space: Space | None = None) -> str:
        """The sequential child's conv: ``'auto'`` is ``'masked'`` with ``vmap``, and with ``map``
        ``'blocked'`` when the space's channel block (the gcd of its channel counts) is at least
        4, else ``'kernel'``."""
        if self.conv_impl != "auto":
            return self.conv_impl
        if self.resolved_strategy() != "map":
            return "masked"
        if isinstance(space, SequentialSpace) and geometry(space)["block"] >= 4:
            return "blocked"
        return "kernel"


def make_optimizer(
    cfg: TrainConfig, freeze_after: int | None = None, slot_leaves: tuple[str, ...] = ()
) -> optax.GradientTransformation | parallel.SlotSparse:
    """The optax optimizer of a recipe.

    Args:
      cfg: the recipe.
      freeze_after: if given, the learning rate is exactly 0 from that update on, so later steps
        leave the params unchanged (the evaluator's scoring steps, see :func:`train_member`).
      slot_leaves: the child's :attr:`~gannas_jax.child.Child.slot_leaves`: with any, the rule
        is wrapped in :class:`~gannas_jax.parallel.SlotSparse`, which updates those only at their
        live slots. Measured on the default digits program (in-process A/B, two compiles of each,
        each run twice on two batches of 16): running time 2.53-2.76 s against 2.83-3.03 s on one
        batch, 4.41-4.61 s against 4.67-4.86 s on the other, the same accuracies, compile time
        unchanged within noise (3.73-3.82 s against 3.59-3.85 s).
    """
    lr = (
        optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
        if cfg.schedule == "cosine"
        else cfg.learning_rate
    )
    if freeze_after is not None:
        base = lr

        def lr(count):
            return jnp.where(count < freeze_after, base(count) if callable(base) else base, 0.0)

    # One flat vector for the optimizer (optax.flatten): optax's elementwise update is otherwise
    # compiled once per parameter shape, which was ~10% of the XLA compile time of the default
    # digits training program (in-process A/B, 4 pairs: median 4.43 s against 4.89 s). The same
    # update rule; results move only by float rounding (XLA fuses the arithmetic differently).
    rule = optax.adam(lr) if cfg.optimizer == "adam" else optax.sgd(lr, momentum=cfg.momentum)
    if slot_leaves:
        return parallel.SlotSparse(rule, tuple(slot_leaves))
    return optax.flatten(rule)


def correct(
    child: Child, variables: dict, arch: jax.Array, x: jax.Array, y: jax.Array, chunk: int
) -> jax.Array:
    """``bool[n]``: whether each example of ``x [n, ...]`` is classified as ``y [n]``.

    Inference runs in equal chunks of at most ``chunk`` examples (one traced forward pass, in
    ``lax.map`` when there are several chunks), sized for the least padding.
    """
    n = x.shape[0]
    n_chunks = -(-n // min(chunk, n))
    chunk = -(-n // n_chunks)
    pad = n_chunks * chunk - n
    xp = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape((n_chunks, chunk) + x.shape[1:])
    yp = jnp.pad(y, (0, pad), constant_values=-1).reshape(n_chunks, chunk)

    def one(batch):
        logits, _ = child.apply(variables, arch, batch[0], train=False)
        return jnp.argmax(logits, axis=-1) == batch[1]

    hits = one((xp[0], yp[0]))[None] if n_chunks == 1 else lax.map(one, (xp, yp))
    return hits.reshape(-1)[:n]


def train_member(
    child: Child,
    cfg: TrainConfig,
    key: jax.Array,
    arch: jax.Array,
    data: dict,
    variables: dict | None = None,
) -> dict:
    """Initializes, trains and scores one child. Traceable; the population maps this.

    Args:
      child: the child network.
      cfg: the recipe.
      key: this child's init key.
      arch: ``int32[V]``.
      data: ``x``, ``y``: the train split, then the validation split, then the test split;
        ``idx`` (``int32[steps, B]``): the training batches' indices into ``x``; ``eval_idx``
        (``int32[chunks, B]``): the validation-then-test examples' indices into ``x`` in batches
        of B (the last one padded); and the static ints ``n_train``, ``n_val``.
      variables: initial variables, instead of ``child.init(key, arch)``.

    Returns:
      ``{'val': %, 'test': %, 'loss': final train loss, 'loss0': first-step loss}``.

    When the child's training-mode forward pass is its inference pass (no BatchNorm; see
    :attr:`Child.train_mode_is_inference`), the validation and test batches run as extra steps of
    the training scan, with the learning rate exactly 0 from step ``cfg.steps`` on: every
    example is scored by the final params through the same compiled forward pass, so XLA
    compiles one forward pass instead of two (measured on the default digits program: ~0.8 s of
    compile and ~0.2 s of tracing saved, for ~7% more steps). Otherwise a separate inference
    pass scores them.
    """
    n_train, n_val = data["n_train"], data["n_val"]
    x, y = data["x"], data["y"]
    n_eval = x.shape[0] - n_train
    plan = child.plan(arch)  # decoded once, not at every step (see Child.plan)

    def init_state(tx):
        if variables is None:
            return parallel.init_state(child, tx, key, arch)
        return parallel.ChildState(
            variables["params"], variables["batch_stats"], tx.init(variables["params"])
        )

    if child.train_mode_is_inference:
        tx = make_optimizer(cfg, freeze_after=cfg.steps, slot_leaves=child.slot_leaves)
        state = init_state(tx)

        def body(st, step):
            idx, scoring = step
            st, loss, logits = parallel.train_step(
                child, tx, st, child.scoring_plan(plan, scoring), x[idx], y[idx], return_logits=True
            )
            return st, (loss, jnp.argmax(logits, axis=-1) == y[idx])

        idx = jnp.concatenate([data["idx"], data["eval_idx"]])
        _, (losses, hits) = lax.scan(body, state, (idx, jnp.arange(idx.shape[0]) >= cfg.steps))
        losses, hits = losses[: cfg.steps], hits[cfg.steps :].reshape(-1)[:n_eval]
    else:
        tx = make_optimizer(cfg, slot_leaves=child.slot_leaves)
        state = init_state(tx)

        def body(st, idx):
            return parallel.train_step(child, tx, st, plan, x[idx], y[idx])

        state, losses = lax.scan(body, state, data["idx"])
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        hits = correct(child, variables, plan, x[n_train:], y[n_train:], cfg.eval_batch_size)
    return {
        "val": 100.0 * jnp.mean(hits[:n_val]),
        "test": 100.0 * jnp.mean(hits[n_val:]),
        "loss": losses[-1],
        "loss0": losses[0],
    }


def _narrow_child(child: Child, cfg: TrainConfig, strategy: str) -> Child | None:
    """The narrow variant the population uses for the architectures it accepts, or None."""
    return child.narrow_variant() if strategy == "map" and cfg.narrow else None


def train_population(
    child: Child, cfg: TrainConfig, strategy: str, keys: jax.Array, archs: jax.Array, data: dict
) -> dict:
    """:func:`train_member` over a population ``keys [P]``, ``archs [P, V]`` by ``vmap`` or ``lax.map``.

    With ``map`` and ``cfg.narrow``, each member whose architecture the child's narrow variant
    accepts is trained by that variant instead (``lax.cond`` runs one of the two).
    """
    narrow = _narrow_child(child, cfg, strategy)

    def member(key, arch):
        if narrow is None:
            return train_member(child, cfg, key, arch, data)
        # One init for both (the narrow variant's weights are cut out of it), compiled once.
        v = child.init(key, arch)
        return lax.cond(
            child.is_narrow(arch),
            lambda: train_member(narrow, cfg, key, arch, data, narrow.narrow_from(v)),
            lambda: train_member(child, cfg, key, arch, data, v),
        )

    if strategy == "vmap":
        return jax.vmap(member)(keys, archs)
    return lax.map(lambda ka: member(*ka), (keys, archs))


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic garbage collector paused (then restored as it was).

    Tracing and lowering the training program allocate so many objects that the collector ran
    ~130 times during them, once over the whole heap: ~0.15 s of the ~1 s trace and lowering of
    the default digits program, ~0.25 s with PyTorch imported in the process (a larger heap to
    scan), as in the benchmark (measured: trace+lower 0.9-1.1 s paused against 1.2-1.3 s). The
    garbage is collected after the compile instead.
    """
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


class TrainingEvaluator:
    """Scores architectures by training them (the :class:`~gannas_jax.evaluate.Evaluator` protocol).

    Results are cached by canonical architecture. New architectures are trained in chunks padded
    to ``config.population``, by one compiled program reused for every chunk.

    Args:
      space: the search space.
      dataset: a :class:`~gannas_jax.data.Dataset` or a dataset name.
      config: the recipe (default :class:`TrainConfig`).
    """

    def __init__(
        self, space: Space, dataset: Dataset | str = "digits", config: TrainConfig | None = None
    ):
        self.space = space
        self.config = config or TrainConfig()
        self.dataset = load_dataset(dataset) if isinstance(dataset, str) else dataset
        cfg = self.config
        self.strategy = cfg.resolved_strategy()
        self.child = make_child(
            space,
            self.dataset.input_shape,
            self.dataset.num_classes,
            conv_impl=cfg.resolved_conv_impl(space),
            nb201_channels=cfg.nb201_channels,
            nb201_cells=cfg.nb201_cells,
        )
        ds = self.dataset
        self.batch_idx = batch_indices(len(ds.x_train), cfg.batch_size, cfg.steps, cfg.data_seed)
        n_train, n_eval = len(ds.x_train), len(ds.x_val) + len(ds.x_test)
        chunks = -(-n_eval // cfg.batch_size)
        eval_idx = n_train + np.minimum(np.arange(chunks * cfg.batch_size), n_eval - 1)
        self._data = {
            "x": jnp.asarray(np.concatenate([ds.x_train, ds.x_val, ds.x_test])),
            "y": jnp.asarray(np.concatenate([ds.y_train, ds.y_val, ds.y_test])),
            "idx": jnp.asarray(self.batch_idx),
            "eval_idx": jnp.asarray(eval_idx.reshape(chunks, cfg.batch_size).astype(np.int32)),
        }
        self._statics = {"n_train": n_train, "n_val": len(ds.x_val)}
        self.n_devices = self._pick_devices()
        self._cache: dict[tuple[int, ...], tuple[float, float, dict]] = {}
        self._program = self._build_program()
        self.trace_count = 0  # how many times the training program was traced (compile guard)
        self.compile_count = 0  # how many times it was compiled
        self.compile_breakdown: dict[
            str, float
        ] = {}  # lower_s, compile_s, execute_s of the first chunk
        self._compiled = None
        self.compile_seconds = 0.0
        self.run_seconds = 0.0

    def _pick_devices(self) -> int:
        cfg = self.config
        if cfg.devices == 1:
            return 1
        n = jax.local_device_count() if cfg.devices == 0 else cfg.devices
        n = min(n, jax.local_device_count())
        while n > 1 and cfg.population % n:
            n -= 1
        return max(n, 1)

    def _build_program(self):
        # train() canonicalizes on the host, so the program need not do it at every step
        child = dataclasses.replace(self.child, assume_canonical=True)
        cfg, strategy = self.config, self.strategy

        statics = self._statics

        def program(key, seeds, archs, data):
            self.trace_count += 1  # Python side effect: runs once per trace
            data = {**data, **statics}
            keys = _fold_keys(key, seeds)

            def pop(keys, archs):
                return train_population(child, cfg, strategy, keys, archs, data)

            if self.n_devices > 1:
                pop = parallel.population_parallel(pop, self.n_devices)
            return pop(keys, archs)

        return jax.jit(program)

    def _balance(self, archs: np.ndarray) -> np.ndarray:
        """A permutation of the padded population that spreads the members the narrow variant
        cannot train (the slow ones) over the devices by their estimated cost, so that no device
        waits on another. Results do not depend on it (each member's key depends on its codes
        only).

        A member's cost is ``1 + its conv count``: on the 2-core CPU a member with one conv took
        0.6-0.8 s to train and one with two 0.9-1.1 s, whatever the convs' sizes, because the
        max-size child's fixed work per step dominates. The costliest members go first, each to
        the least loaded device that has a free place (longest-processing-time first); the cheap
        narrow members fill the remaining places.
        """
        p, n = len(archs), self.n_devices
        if n == 1 or _narrow_child(self.child, self.config, self.strategy) is None:
            return np.arange(p)
        is_narrow = np.asarray(self.child.is_narrow(archs), bool)
        cost = np.where(is_narrow, 0.0, 1.0)
        if isinstance(self.space, SequentialSpace):
            stage, _ = self.space.split(np.asarray(archs, np.int32))
            cost = cost * (1.0 + np.sum(stage[..., 0] == CONV, axis=(-2, -1)))
        m = p // n  # places per device
        places: list[list[int]] = [[] for _ in range(n)]
        load = np.zeros(n)
        for i in sorted(range(p), key=lambda i: -cost[i]):  # stable: ties keep their order
            d = min(
                (d for d in range(n) if len(places[d]) < m), key=lambda d: (load[d], len(places[d]))
            )
            places[d].append(i)
            load[d] += cost[i]
        return np.concatenate([np.asarray(pl, np.int64) for pl in places])

    def _keys(self, key: jax.Array, archs: np.ndarray) -> jax.Array:
        """The init key of each child, as the training program derives it."""
        return _fold_keys(key, _seeds(archs))

    def train(self, archs: np.ndarray, key: jax.Array) -> dict[str, np.ndarray]:
        """Trains one padded chunk of at most ``population`` architectures; no caching.

        Returns:
          numpy ``val``, ``test``, ``loss``, ``loss0`` of the real (unpadded) members, plus
          ``wall_s`` (float): the wall time of the chunk, compile included when it compiled (the
          first chunk; the split is in ``compile_breakdown``).
        """
        archs = np.asarray(self.space.canonicalize(np.asarray(archs, np.int32)), np.int32)
        n, p = len(archs), self.config.population
        if not 0 < n <= p:
            raise ValueError(f"train: need 1..{p} architectures, got {n}")
        # Padding members are the all-zero codes (in the sequential space, the empty network: the
        # narrow variant trains it at almost no cost); their results are dropped.
        empty = np.asarray(
            self.space.canonicalize(np.zeros((1, archs.shape[1]), np.int32)), np.int32
        )
        padded = np.concatenate([archs, np.repeat(empty, p - n, axis=0)])
        order = self._balance(padded)
        padded = padded[order]
        t0 = time.perf_counter()
        # the program derives the init keys (a separate jitted fold-in was a 0.15 s compile)
        args = (key, _seeds(padded), padded, self._data)
        if self._compiled is None:
            # Ahead-of-time, so that the benchmark can split tracing, compiling and running.
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
        out = jax.tree.map(
            lambda a: np.asarray(a)[inverse][:n], jax.device_get(self._compiled(*args))
        )
        t4 = time.perf_counter()
        self.compile_seconds += t3 - t0
        self.run_seconds += t4 - t3
        self.compile_breakdown.setdefault("execute_s", t4 - t3)
        wall = t4 - t0
        out["wall_s"] = wall
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
            chunk = np.asarray(todo[start : start + p], np.int32)
            out = self.train(chunk, jax.random.fold_in(key, c))
            for i, t in enumerate(todo[start : start + p]):
                self._cache[t] = (
                    float(out["val"][i]),
                    float(out["test"][i]),
                    {
                        "train_loss": float(out["loss"][i]),
                        "wall_time_s": out["wall_s"] / len(chunk),
                    },
                )
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


__all__ = [
    "TrainConfig",
    "TrainingEvaluator",
    "make_optimizer",
    "train_member",
    "train_population",
    "correct",
]
