"""NAS-Bench-201 as a tabular evaluator: a query is a table lookup."""

from __future__ import annotations

import csv
import os
import pathlib
from typing import Any

import jax
import numpy as np

from gannas_jax.evaluate.base import EvalResult
from gannas_jax.spaces import NB201Space

NB201_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
ENV_VAR = "GANNAS_NB201_DIR"


class BenchmarkError(ValueError):
    """The benchmark data cannot be found or read."""


def resolve_benchmark_dir(benchmark_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The benchmark folder: ``benchmark_dir`` if given, else ``$GANNAS_NB201_DIR``.

    Raises:
      BenchmarkError: neither is set, or the folder does not exist.
    """
    value = benchmark_dir or os.environ.get(ENV_VAR)
    if not value:
        raise BenchmarkError(
            f"no NAS-Bench-201 folder: set ${ENV_VAR} or pass benchmark_dir "
            "(a folder with nasbench201_<dataset>.csv tables)"
        )
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise BenchmarkError(f"NAS-Bench-201 folder {str(path)!r} does not exist")
    return path


def _check_dataset(dataset: str) -> None:
    if dataset not in NB201_DATASETS:
        raise BenchmarkError(
            f"unknown NAS-Bench-201 dataset {dataset!r}; expected one of {list(NB201_DATASETS)}"
        )


class NB201Table:
    """All 15,625 cells of one NAS-Bench-201 dataset, indexed by the official index.

    Attributes:
      dataset: one of ``cifar10`` (the ``cifar10-valid`` setting), ``cifar100``,
        ``ImageNet16-120``.
      valid: ``float64[15625]`` validation accuracy (%), by official index.
      test: ``float64[15625]`` test accuracy (%).
      train_time: ``float64[15625]`` seconds of training, or None when the source lacks it.
    """

    def __init__(
        self,
        dataset: str,
        valid: np.ndarray,
        test: np.ndarray,
        train_time: np.ndarray | None = None,
        source: str = "",
    ):
        self.dataset, self.valid, self.test = dataset, valid, test
        self.train_time, self.source = train_time, source

    @classmethod
    def load(cls, dataset: str, benchmark_dir: str | os.PathLike | None = None) -> NB201Table:
        """Reads ``nasbench201_<dataset>.csv`` from the benchmark folder.

        Raises:
          BenchmarkError: unknown dataset, missing folder or file, or a malformed table.
        """
        _check_dataset(dataset)
        folder = resolve_benchmark_dir(benchmark_dir)
        path = folder / f"nasbench201_{dataset}.csv"
        if not path.is_file():
            raise BenchmarkError(f"NAS-Bench-201 table {str(path)!r} not found")
        space = NB201Space()
        valid = np.full(space.size, np.nan)
        test = np.full(space.size, np.nan)
        try:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    i = int(row["file id"])
                    if space.to_index(space.from_string(row["arch str"])) != i:
                        raise BenchmarkError(
                            f"{path}: row {i} names cell {row['arch str']!r}, which has "
                            "another index"
                        )
                    valid[i] = float(row["validation accuracy"])
                    test[i] = float(row["test accuracy"])
        except (KeyError, ValueError) as err:
            if isinstance(err, BenchmarkError):
                raise
            raise BenchmarkError(f"malformed NAS-Bench-201 table {str(path)!r}: {err}") from err
        if np.isnan(valid).any():
            raise BenchmarkError(
                f"{path}: {int(np.isnan(valid).sum())} of {space.size} cells are missing"
            )
        return cls(dataset, valid, test, None, str(path))

    @classmethod
    def from_official(cls, dataset: str, api: Any, hp: str = "200") -> NB201Table:
        """Builds the table from an official API object (``nas_201_api.NASBench201API`` or
        ``nats_bench`` topology API), when those packages and files are installed.

        Uses ``api.get_more_info(index, dataset, hp=hp, is_random=False)``; for cifar10 the
        validation score comes from the ``cifar10-valid`` setting, as in the CSV tables.
        """
        _check_dataset(dataset)
        size = NB201Space().size
        valid, test, time = np.empty(size), np.empty(size), np.empty(size)
        for i in range(size):
            if dataset == "cifar10":
                v = api.get_more_info(i, "cifar10-valid", hp=hp, is_random=False)
                t = api.get_more_info(i, "cifar10", hp=hp, is_random=False)
                valid[i], test[i] = v["valid-accuracy"], t["test-accuracy"]
                time[i] = v.get("train-all-time", np.nan)
            else:
                info = api.get_more_info(i, dataset, hp=hp, is_random=False)
                valid[i], test[i] = info["valid-accuracy"], info["test-accuracy"]
                time[i] = info.get("train-all-time", np.nan)
        return cls(dataset, valid, test, time, "official API")

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.valid))

    @property
    def best_valid(self) -> float:
        return float(self.valid.max())


class TabularEvaluator:
    """Scores NB201 cells by looking them up in an :class:`NB201Table`.

    ``scores`` is validation accuracy and ``test`` is test accuracy, both in percent. Each unique
    architecture counts once in ``num_queries``, however often it is asked for.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        benchmark_dir: str | os.PathLike | None = None,
        table: NB201Table | None = None,
    ):
        self.space = NB201Space()
        self.table = table if table is not None else NB201Table.load(dataset, benchmark_dir)
        self._seen: set[int] = set()

    @property
    def num_queries(self) -> int:
        """Unique architectures queried so far."""
        return len(self._seen)

    def evaluate(self, archs: np.ndarray, key: jax.Array | None = None) -> EvalResult:
        del key  # A table lookup is deterministic.
        idx = np.atleast_1d(self.space.to_index(np.asarray(archs)))
        self._seen.update(int(i) for i in idx)
        t = self.table
        metrics = [
            {
                "index": int(i),
                "wall_time_s": None if t.train_time is None else float(t.train_time[i]),
            }
            for i in idx
        ]
        return EvalResult(scores=t.valid[idx], test=t.test[idx], metrics=metrics)
