"""Shared test fixtures and strict JAX settings."""

import hashlib
import os
import pathlib

import jax
import pytest

# The suite is bound by XLA:CPU compile time (hundreds of small programs), and LLVM's optimization
# passes are much of it; without them test_gan.py runs ~20% faster. The tests check results against
# references and tolerances, not against optimized builds. Set before any backend starts; the
# tests' subprocesses inherit it.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

# Catch silent broadcasting bugs: implicit rank promotion raises in the whole suite.
jax.config.update("jax_numpy_rank_promotion", "raise")

from gannas_jax.evaluate.tabular import NB201_DATASETS  # noqa: E402


def folder_digest(folder: pathlib.Path) -> str:
    """A hash of every file's relative path and bytes under ``folder`` (to see it untouched)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def nb201_dir() -> pathlib.Path:
    """The folder of NAS-Bench-201 CSV tables, from ``$GANNAS_NB201_DIR``.

    Unset: the tests that need the tables are skipped with that reason (a user without the data).
    Set but wrong: the tests fail, so CI never skips them silently.
    """
    value = os.environ.get("GANNAS_NB201_DIR")
    if not value:
        pytest.skip("GANNAS_NB201_DIR is not set; NAS-Bench-201 tables unavailable")
    path = pathlib.Path(value)
    missing = [d for d in NB201_DATASETS if not (path / f"nasbench201_{d}.csv").is_file()]
    if missing:
        pytest.fail(f"GANNAS_NB201_DIR={value} lacks nasbench201_{{{','.join(missing)}}}.csv")
    return path


# The longest modules first: `pytest -n 2 --dist loadfile` hands whole modules to the workers in
# collection order, so a long module collected last runs alone at the end. Longest first balances
# the two workers (~50 s of a ~10 minute run on 2 cores). Modules not listed keep their order.
_LONGEST_FIRST = (
    "test_cli",
    "test_distributed",
    "test_gan",
    "test_child",
    "test_evaluate",
    "test_parallel",
    "test_ganas",
    "test_readme",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rpartition(".")[2]
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order


# A digits search small enough for a test: 12 queries of 30-step children, 4 at a time.
DIGITS_TINY = [
    "--config",
    str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "digits.py"),
    "--config.budget=12",
    "--config.train.steps=30",
    "--config.train.population=4",
    "--config.ganas.batch_size=4",
    "--config.ganas.num_init=4",
    "--config.ganas.gan_steps=20",
    "--config.ganas.num_candidates=64",
]
