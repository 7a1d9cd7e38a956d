"""The search driver: ask, evaluate, record, tell, checkpoint; resumable after any kill.

One iteration, in this order, is what makes a killed run resumable without losing or duplicating
a query:

    archs, state = algorithm.ask(fold_in(key_ask, it), state)
    result = evaluator.evaluate(archs, fold_in(key_eval, it))
    append one line per query to history.jsonl (flushed and fsynced)
    state = algorithm.tell(state, archs, result.scores)
    checkpoint (it + 1, state)  with orbax, atomically, if checkpoint_every_s have passed
                                since the last one, and always after the last iteration

On restart the latest checkpoint is restored and ``history.jsonl`` is cut back to the queries it
holds: lines written after it (and a line torn by the kill) belong to the iterations that are
redone, and since every key is derived from ``(seed, iteration)`` the redo asks for the same
architectures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from gannas_jax import distributed
from gannas_jax.evaluate.base import Evaluator
from gannas_jax.search.base import Algorithm, History, SearchError
from gannas_jax.search.plot import plot_progress

HISTORY = "history.jsonl"
RESULT = "result.json"
PLOT = "progress.png"
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass
class SearchResult:
    """What a finished search found.

    Attributes:
      best_arch: string form of the best architecture (by score).
      best_score: its score (validation accuracy, %).
      best_test: its test metric (test accuracy, %).
      num_queries: unique architectures evaluated.
      archs: ``int32[num_queries, V]`` every query, in order.
      scores, tests: ``float64[num_queries]``.
    """

    best_arch: str
    best_score: float
    best_test: float
    num_queries: int
    archs: np.ndarray
    scores: np.ndarray
    tests: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {
            "best_arch": self.best_arch,
            "best_score": self.best_score,
            "best_test": self.best_test,
            "num_queries": self.num_queries,
        }


def search_result(algorithm: Algorithm, state: History, tests: np.ndarray) -> SearchResult:
    """The :class:`SearchResult` of a finished search's state and its test metrics."""
    archs, scores = algorithm.evaluated(state)
    best = int(np.argmax(scores))
    return SearchResult(
        best_arch=algorithm.space.to_string(archs[best]),
        best_score=float(scores[best]),
        best_test=float(tests[best]),
        num_queries=len(scores),
        archs=archs,
        scores=scores,
        tests=tests[: len(scores)],
    )


def check_asked(algorithm: Algorithm, state: History, archs) -> np.ndarray:
    """``archs`` as int32, or a SearchError when an ask returned none or more than are left."""
    archs = np.asarray(archs, np.int32)
    if len(archs) == 0 or len(archs) > algorithm.remaining(state):
        raise SearchError(
            f"{algorithm.name} asked for {len(archs)} architectures with "
            f"{algorithm.remaining(state)} left"
        )
    return archs


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serializable: {type(x).__name__}")


class RunState(NamedTuple):
    """What a checkpoint holds: everything a resumed run needs."""

    iteration: np.ndarray  # int64[]: iterations done
    algo: History  # the algorithm's state
    tests: np.ndarray  # float64[budget]: the test metric of each query (NaN beyond count)


class _Checkpoints:
    """Orbax checkpoints of the search state, one per iteration (the last two kept)."""

    def __init__(self, directory: pathlib.Path):
        import orbax.checkpoint as ocp  # heavy; only runs that write a workdir need it

        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=2,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(directory.resolve(), options=options)

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: RunState) -> None:
        # Host copies: NumPy leaves are written by the primary process alone in a multi-process
        # run, and a checkpoint restores with any process or device count.
        state = jax.device_get(state)
        self.manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, like: RunState) -> RunState:
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, jax.device_get(like))
        restored = self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        # Back on device where `like` has JAX leaves; NumPy where it has NumPy.
        return jax.tree.map(
            lambda r, ref: (
                jax.numpy.asarray(r, ref.dtype)
                if isinstance(ref, jax.Array)
                else np.asarray(r, dtype=np.asarray(ref).dtype)
            ),
            restored,
            like,
        )


def _read_history(path: pathlib.Path, space, upto: int) -> list[str]:
    """The first ``upto`` lines of history.jsonl, checked; later lines are dropped."""
    if not path.exists():
        if upto:
            raise SearchError(f"{path} is missing, but the checkpoint holds {upto} queries")
        return []
    raw = path.read_bytes().split(b"\n")
    if len(raw) - 1 < upto:  # the last piece is after the final newline
        raise SearchError(
            f"corrupt {path}: it has {len(raw) - 1} complete lines, the checkpoint holds "
            f"{upto} queries"
        )
    lines = []
    for i, line in enumerate(raw[:upto]):
        try:
            rec = json.loads(line)
            space.from_string(rec["arch"])
            if rec["query"] != i:
                raise ValueError(f"query {rec['query']} at line {i + 1}")
        except (ValueError, KeyError, TypeError) as err:
            raise SearchError(f"corrupt {path}, line {i + 1}: {err}") from None
        lines.append(line.decode())
    return lines


def _prepare_workdir(wd: pathlib.Path, run_config: dict, write: bool) -> None:
    """Checks that ``wd`` is a folder holding nothing or a run of ``run_config``; with
    ``write``, creates it and writes the config of a new run."""
    if wd.exists() and not wd.is_dir():
        raise SearchError(f"workdir {str(wd)!r} is not a folder")
    if write:
        try:
            wd.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SearchError(f"cannot create workdir {str(wd)!r}: {err}") from None
    cfg_path = wd / CONFIG
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except ValueError as err:
            raise SearchError(f"corrupt {cfg_path}: {err}") from None
        if not isinstance(old, dict):
            raise SearchError(f"corrupt {cfg_path}: not a JSON object")
        if old != run_config:
            diff = sorted(k for k in set(old) | set(run_config) if old.get(k) != run_config.get(k))
            raise SearchError(
                f"workdir {str(wd)!r} holds a run with another config "
                f"(differs in {', '.join(diff)}); use a new --workdir"
            )
    elif (wd / HISTORY).exists() or (wd / CHECKPOINTS).exists():
        raise SearchError(
            f"workdir {str(wd)!r} holds results but no {CONFIG}; refusing to overwrite it"
        )
    elif write:
        _atomic_write(cfg_path, json.dumps(run_config, indent=2, sort_keys=True))
    else:
        raise SearchError(f"workdir {str(wd)!r} has no {CONFIG}: is it shared by every process?")


def run_search(
    algorithm: Algorithm,
    evaluator: Evaluator,
    budget: int,
    workdir: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    config: dict | None = None,
    progress: bool = True,
    plot: bool = True,
    checkpoint_every_s: float = 1.0,
) -> SearchResult:
    """Runs ``algorithm`` against ``evaluator`` until ``budget`` unique queries are spent.

    Args:
      algorithm: an ask/tell algorithm over ``evaluator.space``.
      evaluator: scores architectures.
      budget: number of unique architectures to evaluate.
      workdir: where history, checkpoints and results go. An existing run there is resumed.
        None keeps everything in memory (benchmarks).
      seed: the run's seed; every key is derived from it and the iteration number.
      config: JSON-able settings of the run, stored in ``workdir/config.json``; resuming with a
        different config is refused.
      progress: show a tqdm progress bar.
      plot: write ``workdir/progress.png``.
      checkpoint_every_s: least seconds between checkpoints (one orbax save costs ~0.1 s, far
        more than a tabular query). A kill redoes the iterations since the last checkpoint, with
        the same keys, so it costs at most this long plus one iteration and changes no result.
        0 checkpoints every iteration.

    Returns:
      A :class:`SearchResult`.

    Raises:
      SearchError: bad budget, a workdir holding another run, or corrupt history/checkpoint.
    """
    space = evaluator.space
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise SearchError(f"budget must be a positive int, got {budget!r}")
    if budget > space.size:
        raise SearchError(f"budget {budget} exceeds the {space.size} architectures of the space")
    if algorithm.space != space:
        raise SearchError("the algorithm and the evaluator use different search spaces")
    if not checkpoint_every_s >= 0:
        raise SearchError(f"checkpoint_every_s must be >= 0, got {checkpoint_every_s!r}")

    key = jax.random.key(seed)
    key_init, key_ask, key_eval = jax.random.split(key, 3)
    state = algorithm.init(key_init, int(budget))
    tests = np.full(budget, np.nan)
    lines: list[str] = []
    iteration = 0

    wd = None if workdir is None else pathlib.Path(workdir)
    ckpt = hist_file = None
    primary = distributed.is_primary()  # in a multi-process run only process 0 writes files
    if wd is not None:
        run_config = json.loads(
            json.dumps(
                {"seed": seed, "budget": int(budget), **(config or {})}, default=_json_default
            )
        )
        # Process 0 checks and prepares the folder first; then the others check what it left.
        err = None
        if primary:
            try:
                _prepare_workdir(wd, run_config, write=True)
            except SearchError as e:
                err = e
        if not distributed.primary_agrees(err is None):
            raise err or SearchError(f"process 0 refused the workdir {str(wd)!r} (see its error)")
        if not primary:
            _prepare_workdir(wd, run_config, write=False)
        ckpt = _Checkpoints(wd / CHECKPOINTS)
        step = ckpt.latest()
        hist_path = wd / HISTORY
        if step is None:
            if hist_path.exists() and hist_path.stat().st_size:
                raise SearchError(
                    f"corrupt run in {str(wd)!r}: {HISTORY} has queries but there is no checkpoint"
                )
            ckpt.save(0, RunState(np.asarray(0, np.int64), state, tests))
        else:
            try:
                saved = ckpt.restore(step, RunState(np.asarray(0, np.int64), state, tests))
            except Exception as err:  # orbax raises many kinds; all mean the same to the user
                raise SearchError(
                    f"corrupt checkpoint {step} in {str(wd / CHECKPOINTS)!r}: "
                    f"{type(err).__name__}: {err}"
                ) from None
            state, tests, iteration = saved.algo, saved.tests, int(saved.iteration)
            lines = _read_history(hist_path, space, int(state.count))
            for line, arch in zip(lines, algorithm.evaluated(state)[0], strict=False):
                if space.from_string(json.loads(line)["arch"]).tolist() != arch.tolist():
                    raise SearchError(
                        f"corrupt run in {str(wd)!r}: {HISTORY} and the checkpoint disagree"
                    )
        if primary:
            _atomic_write(hist_path, "".join(line + "\n" for line in lines))
            hist_file = open(hist_path, "a")
    last_save = time.monotonic()

    bar = None
    if progress and primary:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=int(budget),
            initial=int(state.count),
            desc=f"{algorithm.name} search",
            unit="query",
            dynamic_ncols=True,
        )
    try:
        while algorithm.remaining(state) > 0:
            archs, state = algorithm.ask(jax.random.fold_in(key_ask, iteration), state)
            archs = check_asked(algorithm, state, archs)
            distributed.agree(archs, f"the architectures asked at iteration {iteration}")
            t0 = time.perf_counter()
            result = evaluator.evaluate(archs, jax.random.fold_in(key_eval, iteration))
            wall = time.perf_counter() - t0
            c = int(state.count)
            tests[c : c + len(archs)] = result.test
            new_lines = []
            for j, arch in enumerate(archs):
                metrics = dict(result.metrics[j])
                rec = {
                    "query": c + j,
                    "iteration": iteration,
                    "arch": space.to_string(arch),
                    "score": float(result.scores[j]),
                    "test": float(result.test[j]),
                    "wall_time_s": metrics.pop("wall_time_s", wall / len(archs)),
                    "metrics": metrics,
                }
                new_lines.append(json.dumps(rec, default=_json_default))
            lines += new_lines
            if hist_file is not None:
                hist_file.write("".join(line + "\n" for line in new_lines))
                hist_file.flush()
                os.fsync(hist_file.fileno())
            state = algorithm.tell(state, archs, result.scores)
            iteration += 1
            done = algorithm.remaining(state) == 0
            if ckpt is not None and (done or time.monotonic() - last_save >= checkpoint_every_s):
                ckpt.save(iteration, RunState(np.asarray(iteration, np.int64), state, tests))
                last_save = time.monotonic()
            if bar is not None:
                bar.update(len(archs))
                bar.set_postfix(best=f"{float(np.max(algorithm.evaluated(state)[1])):.2f}")
    finally:
        if bar is not None:
            bar.close()
        if hist_file is not None:
            hist_file.close()

    res = search_result(algorithm, state, tests)
    scores = res.scores
    if wd is not None and primary:
        _atomic_write(wd / RESULT, json.dumps(res.summary(), indent=2))
        if plot:
            plot_progress(scores, wd / PLOT, title=f"{algorithm.name}, seed {seed}")
    return res
