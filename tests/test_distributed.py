"""Two local CPU processes on jax.distributed running one search with scripts/search.py.

Each process has one XLA CPU device, so the population of 4 is spread 2 + 2 over the two
processes. Every process runs under an audit hook that logs the files it opens for writing,
creates, renames or removes under the workdir (Python-level operations; tensorstore's C++
writes inside orbax are not seen, but orbax writes NumPy leaves from the primary process only).
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from tests.conftest import DIGITS_TINY

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEARCH = str(ROOT / "scripts" / "search.py")
XLA_CACHE = tempfile.mkdtemp(prefix="gannas_xla_cache_dist_")

# Runs scripts/search.py with an audit hook that appends every write-like file operation under
# $AUDIT_ROOT to $AUDIT_LOG.
AUDITED = """
import os, runpy, sys
root, log = os.path.realpath(os.environ["AUDIT_ROOT"]), os.environ["AUDIT_LOG"]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def hook(event, args):
    paths = []
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in str(mode) for c in "wax+") or flags & WRITE:
            paths = [args[0]]
    elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
        paths = [args[0], args[1]]
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree"):
        paths = [args[0]]
    for p in paths:
        if isinstance(p, (str, bytes, os.PathLike)):
            p = os.path.realpath(os.fsdecode(p))
            if p.startswith(root) and not p.startswith(log):
                with open(log, "a") as f:  # outside root: not logged itself
                    f.write(f"{event} {p}\\n")
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(**extra):
    return {
        **os.environ,
        "GANNAS_CPU_DEVICES": "1",
        "GANNAS_XLA_CACHE": XLA_CACHE,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }


def start(workdir, *extra, n=2, audit=None, port=None):
    """Starts the ``n`` processes of one search on ``workdir``; returns the Popen objects."""
    port = port or free_port()
    procs = []
    for i in range(n):
        env = _env()
        cmd = [sys.executable, SEARCH]
        if audit is not None:
            env.update(AUDIT_ROOT=str(workdir), AUDIT_LOG=str(audit / f"writes{i}.log"))
            cmd = [sys.executable, "-c", AUDITED, SEARCH]
        dist = [f"--coordinator=localhost:{port}", f"--num_processes={n}", f"--process_id={i}"]
        procs.append(
            subprocess.Popen(
                [*cmd, *DIGITS_TINY, "--workdir", str(workdir), *dist, *extra],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs, timeout=300):
    """Waits for every process; returns [(returncode, stderr)]."""
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


def history(workdir):
    """The history without wall times (the only field that differs between equal runs)."""
    recs = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("wall_time_s")
    return recs


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    wd = tmp_path_factory.mktemp("single") / "run"
    proc = subprocess.run(
        [sys.executable, SEARCH, *DIGITS_TINY, "--workdir", str(wd)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    wd = root / "run"
    results = finish(start(wd, audit=root))
    for i, (rc, err) in enumerate(results):
        assert rc == 0, f"process {i}: {err[-3000:]}"
    return wd, root, results


def test_two_processes_equal_one(single, two):
    """Same architectures in the same order, same scores (each child's key and per-device
    program do not depend on where it trains)."""
    a, b = history(single), history(two[0])
    assert len(a) == len(b) == 12
    assert [r["arch"] for r in a] == [r["arch"] for r in b]
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    np.testing.assert_allclose([r["test"] for r in a], [r["test"] for r in b], atol=1e-4)
    assert json.loads((two[0] / "result.json").read_text())["num_queries"] == 12


def test_only_process_0_writes(two):
    wd, root, results = two
    writes0 = (root / "writes0.log").read_text().splitlines()
    written = {pathlib.Path(line.split(" ", 1)[1]).name for line in writes0}
    assert {"history.jsonl", "result.json", "progress.png", "config.json"} <= written
    assert not (root / "writes1.log").exists(), (root / "writes1.log").read_text()[:2000]
    assert sorted(p.name for p in wd.iterdir()) == [
        "checkpoints",
        "config.json",
        "history.jsonl",
        "progress.png",
        "result.json",
    ]


def _wait_for_lines(workdir, n, proc):
    hist = workdir / "history.jsonl"
    deadline = time.time() + 300
    while not (hist.exists() and hist.read_bytes().count(b"\n") >= n):
        assert time.time() < deadline and proc.poll() is None, "no progress"
        time.sleep(0.02)


def test_killed_peer_is_named_and_a_rerun_resumes(two, tmp_path):
    """Process 1 of 2 is SIGKILLed: process 0 names it and exits non-zero. A 1-process rerun
    resumes (and is killed in turn), a 2-process rerun finishes: the history is the
    uninterrupted run's."""
    wd = tmp_path / "run"
    procs = start(wd)
    _wait_for_lines(wd, 4, procs[0])
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    (rc0, err0), _ = finish(procs, timeout=120)
    assert time.time() - t0 < 120
    assert rc0 != 0
    assert "lost process 1 of 2" in err0, err0[-2000:]
    assert "Traceback" not in err0
    lines = (wd / "history.jsonl").read_bytes().count(b"\n")
    assert lines < 8, "the run went too far before it could be killed"
    # Resume with another process count (1 divides the population too), killed in turn.
    one = subprocess.Popen(
        [sys.executable, SEARCH, *DIGITS_TINY, "--workdir", str(wd)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_lines(wd, 8, one)
    finally:
        one.send_signal(signal.SIGKILL)
        one.wait()
    assert (wd / "history.jsonl").read_bytes().count(b"\n") < 12
    results = finish(start(wd))
    for i, (rc, err) in enumerate(results):
        assert rc == 0, f"process {i}: {err[-3000:]}"
    assert history(wd) == history(two[0])


def _one_error_line(rc, err, needle):
    assert rc == 2, (rc, err[-2000:])
    lines = [line for line in err.splitlines() if line.startswith("search.py: error:")]
    assert len(lines) == 1 and needle in lines[0], err[-2000:]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--coordinator=localhost:1", "--num_processes=2", "--process_id=2"], "process_id"),
        (["--num_processes=2"], "give all of"),
        (["--coordinator=nohost", "--num_processes=2", "--process_id=1"], "HOST:PORT"),
        (
            ["--num_processes=2", "--process_id=1", "--init_timeout_s=2"],
            "unreachable",
        ),
    ],
)
def test_bad_settings(tmp_path, flags, needle):
    if "--coordinator" not in " ".join(flags) and "--process_id=1" in flags:
        flags = [f"--coordinator=localhost:{free_port()}", *flags]  # nobody serves there
    proc = subprocess.run(
        [sys.executable, SEARCH, *DIGITS_TINY, "--workdir", str(tmp_path / "w"), *flags],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_error_line(proc.returncode, proc.stderr, needle)
    assert not (tmp_path / "w").exists()


def test_population_not_divisible_by_the_devices(tmp_path):
    results = finish(start(tmp_path / "w", "--config.train.population=3"), timeout=120)
    for rc, err in results:
        _one_error_line(rc, err, "not divisible by the 2 devices")
    assert not (tmp_path / "w").exists()
