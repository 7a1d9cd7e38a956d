"""scripts/search.py end to end: the output contract, kill and resume, and bad input."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from gannas_jax import NB201Space
from gannas_jax.evaluate.tabular import NB201Table
from gannas_jax.search.factory import ALGORITHMS
from tests.conftest import DIGITS_TINY, folder_digest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEARCH = [sys.executable, str(ROOT / "scripts" / "search.py")]
NB201 = [
    "--config",
    str(ROOT / "configs" / "nb201.py"),
    "--config.dataset=cifar10",
    "--config.seed=0",
]
# The NB201 runs' budget: configs/nb201.py's 10 random starts, then 30 one-query iterations.
BUDGET = 40


# The scripts keep compiled programs in a persistent cache (default ~/.cache/gannas_jax/xla); the
# tests use one of their own, shared by this module's runs.
XLA_CACHE = tempfile.mkdtemp(prefix="gannas_xla_cache_")


def _env(nb201_dir=None):
    env = dict(os.environ)
    env["GANNAS_XLA_CACHE"] = XLA_CACHE
    if nb201_dir is not None:
        env["GANNAS_NB201_DIR"] = str(nb201_dir)
    return env


def search(workdir, *extra, nb201_dir=None, config=NB201, check=True):
    out = subprocess.run(
        [*SEARCH, *config, "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        env=_env(nb201_dir),
        cwd=ROOT,
        timeout=600,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def nb201_runs(nb201_dir, tmp_path_factory):
    """One uninterrupted budget-BUDGET run of each algorithm, shared by the tests below."""
    runs = {}
    for algo in ALGORITHMS:
        wd = tmp_path_factory.mktemp(algo)
        search(wd, f"--config.algorithm={algo}", f"--config.budget={BUDGET}", nb201_dir=nb201_dir)
        runs[algo] = wd
    return runs


@pytest.fixture(scope="module")
def cifar10(nb201_dir):
    return NB201Table.load("cifar10", nb201_dir)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_cli_contract(nb201_runs, cifar10, algo):
    """Each run writes BUDGET unique queries, in order, each scored with the table's validation
    and test accuracy of its architecture; result.json names the best of them; and a plot."""
    wd = nb201_runs[algo]
    lines = (wd / "history.jsonl").read_text().splitlines()
    assert len(lines) == BUDGET
    recs = [json.loads(line) for line in lines]
    assert len({r["arch"] for r in recs}) == BUDGET
    assert [r["query"] for r in recs] == list(range(BUDGET))
    space = NB201Space()
    index = space.to_index(np.stack([space.from_string(r["arch"]) for r in recs]))
    np.testing.assert_array_equal([r["score"] for r in recs], cifar10.valid[index])
    np.testing.assert_array_equal([r["test"] for r in recs], cifar10.test[index])
    result = json.loads((wd / "result.json").read_text())
    assert set(result) == {"best_arch", "best_score", "best_test", "num_queries"}
    assert result["num_queries"] == BUDGET
    best = max(recs, key=lambda r: r["score"])
    assert result["best_arch"] == best["arch"] and result["best_test"] == best["test"]
    assert (wd / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _lines(path):
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _run_and_kill(workdir, nb201_dir, at_lines):
    """Starts the ganas search and SIGKILLs it once history.jsonl has >= at_lines lines."""
    proc = subprocess.Popen(
        [
            *SEARCH,
            *NB201,
            "--workdir",
            str(workdir),
            "--config.algorithm=ganas",
            f"--config.budget={BUDGET}",
        ],
        env=_env(nb201_dir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while _lines(workdir / "history.jsonl") < at_lines and proc.poll() is None:
            assert time.time() < deadline, "search made no progress"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return _lines(workdir / "history.jsonl")


def test_kill_and_resume_is_bitwise_identical(nb201_runs, nb201_dir, tmp_path):
    reference = (nb201_runs["ganas"] / "history.jsonl").read_bytes()
    killed_at = [_run_and_kill(tmp_path, nb201_dir, n) for n in (1, 25)]
    assert killed_at[-1] < BUDGET, "the run finished before it could be killed"
    search(tmp_path, "--config.algorithm=ganas", f"--config.budget={BUDGET}", nb201_dir=nb201_dir)
    assert (tmp_path / "history.jsonl").read_bytes() == reference
    assert (tmp_path / "result.json").read_text() == (
        nb201_runs["ganas"] / "result.json"
    ).read_text()


def _assert_one_line_error(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("search.py: error:")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--config.algorithm=bayes"], ["unknown algorithm 'bayes'"]),
        (["--config.dataset=svhn"], ["unknown NAS-Bench-201 dataset 'svhn'"]),
        (["--config.budget=0"], ["budget must be a positive int"]),
        (["--config.budget=-5"], ["budget must be a positive int"]),
        (["--config.benchmark_dir=/nonexistent/nb201"], ["/nonexistent/nb201", "does not exist"]),
        (["--config.no_such_key=1"], ["no_such_key"]),
    ],
)
def test_bad_input(nb201_dir, tmp_path, extra, needles):
    out = search(tmp_path / "w", *extra, nb201_dir=nb201_dir, check=False)
    _assert_one_line_error(out, *needles)


def test_missing_benchmark_folder_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GANNAS_NB201_DIR"}
    out = subprocess.run(
        [*SEARCH, *NB201, "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    _assert_one_line_error(out, "GANNAS_NB201_DIR")


def test_workdir_of_another_config_is_refused(nb201_runs, nb201_dir):
    wd = nb201_runs["random"]
    before = folder_digest(wd)
    out = search(
        wd,
        "--config.algorithm=evolution",
        f"--config.budget={BUDGET}",
        nb201_dir=nb201_dir,
        check=False,
    )
    _assert_one_line_error(out, "another config", "algorithm")
    assert folder_digest(wd) == before


@pytest.mark.parametrize("damage", ["history", "checkpoint"])
def test_corrupt_files_are_refused(nb201_runs, nb201_dir, tmp_path, damage):
    import shutil

    wd = tmp_path / "copy"
    shutil.copytree(nb201_runs["evolution"], wd)
    if damage == "history":
        lines = (wd / "history.jsonl").read_text().splitlines()
        lines[10] = lines[10][: len(lines[10]) // 2]
        (wd / "history.jsonl").write_text("\n".join(lines) + "\n")
        needle = "corrupt"
    else:
        step = max(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
        for f in (wd / "checkpoints" / str(step)).rglob("*"):
            if f.is_file():
                f.write_bytes(b"garbage")
        needle = "corrupt checkpoint"
    before = folder_digest(wd)
    out = search(
        wd,
        "--config.algorithm=evolution",
        f"--config.budget={BUDGET}",
        nb201_dir=nb201_dir,
        check=False,
    )
    _assert_one_line_error(out, needle)
    assert folder_digest(wd) == before


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One uninterrupted tiny training search, compiled into an --xla_cache folder of its own
    (every program written, whatever its compile time). Returns (workdir, run)."""
    root = tmp_path_factory.mktemp("digits")
    cache = root / "xla"

    def run(workdir, **env):
        out = subprocess.run(
            [*SEARCH, *DIGITS_TINY, "--workdir", str(workdir), f"--xla_cache={cache}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            env={**_env(), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **env},
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    run.cache = cache
    run(root / "ref")
    run.first = sorted(p.name for p in cache.glob("*-cache"))
    return root / "ref", run


def _history(workdir):
    return [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]


def test_training_run_kill_and_resume(digits_run, tmp_path):
    """A training search killed mid-run resumes to the same architectures and scores."""
    ref, run = digits_run
    proc = subprocess.Popen(
        [*SEARCH, *DIGITS_TINY, "--workdir", str(tmp_path), f"--xla_cache={run.cache}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while _lines(tmp_path / "history.jsonl") < 4 and proc.poll() is None:
            assert time.time() < deadline, "search made no progress"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 4 <= _lines(tmp_path / "history.jsonl") < 12
    run(tmp_path)
    a, b = _history(ref), _history(tmp_path)
    assert [r["arch"] for r in a] == [r["arch"] for r in b] and len(a) == 12
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-3)
    np.testing.assert_allclose([r["test"] for r in a], [r["test"] for r in b], atol=1e-3)


def test_compilation_cache_is_written_then_reused(digits_run, tmp_path):
    """A rerun loads every compiled program from the --xla_cache folder, with the same results:
    JAX's compiler log shows a cache hit for each program the first run wrote, and no miss
    (unchanged file names alone would not show it: a cache written but never read keeps them)."""
    ref, run = digits_run
    assert len(run.first) >= 2  # at least the training program and the GAN program
    before = sorted(p.name for p in run.cache.glob("*-cache"))
    assert set(run.first) <= set(before)
    # JAX prints a module's debug log only while the "jax" logger's own level is above DEBUG.
    out = run(tmp_path, JAX_DEBUG_LOG_MODULES="jax._src.compiler", JAX_LOGGING_LEVEL="WARNING")
    assert sorted(p.name for p in run.cache.glob("*-cache")) == before  # nothing new compiled
    hits = re.findall(r"Persistent compilation cache hit for '.*?' with key '(.+?)'", out.stderr)
    # The very programs the first run wrote (the folder also holds those of the kill-and-resume
    # test's runs, which a plain rerun does not build).
    assert sorted(f"{key}-cache" for key in set(hits)) == run.first, out.stderr[-3000:]
    assert "PERSISTENT COMPILATION CACHE MISS" not in out.stderr
    a, b = _history(ref), _history(tmp_path)
    assert [r["arch"] for r in a] == [r["arch"] for r in b]
    assert [r["score"] for r in a] == [r["score"] for r in b]
