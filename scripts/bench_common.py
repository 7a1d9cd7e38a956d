"""What the PyTorch benches (``scripts/bench_torch.py MODE``) share: the common options, fresh
worker processes, load averages, paired ratios, a Markdown table and the results JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

DISPATCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch.py")
RESULT = "RESULT "  # prefix of the line on which a worker reports its result


def parser(
    mode: str, doc: str, repeats: int, repeats_help: str, workers=()
) -> argparse.ArgumentParser:
    """The parser of ``bench_torch.py MODE`` with ``--repeats``, ``--seed`` and ``--out``, and
    the hidden ``--worker`` that :func:`spawn` passes when ``workers`` are named."""
    p = argparse.ArgumentParser(prog=f"bench_torch.py {mode}", description=doc.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the architectures and weights")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    if workers:
        p.add_argument("--worker", choices=workers, default=None, help=argparse.SUPPRESS)
    return p


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *options: str) -> None:
    """Exits with a usage error if one of the ``options`` (set, not None) is below 1."""
    for option in options:
        value = getattr(args, option.replace("-", "_"))
        if value is not None and value < 1:
            p.error(f"--{option} must be >= 1")


def spawn(mode: str, argv: list[str], worker: str) -> dict:
    """Runs ``bench_torch.py MODE ARGV --worker WORKER`` in a fresh Python process, so that it pays
    its first-use costs (imports aside) as a run from the command line does, and returns the dict
    the worker passed to :func:`report`. Its stderr passes through."""
    cmd = [sys.executable, DISPATCHER, mode, *argv, "--worker", worker]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        raise SystemExit(f"the {worker} worker failed (exit code {proc.returncode}); see above")
    return json.loads(lines[-1][len(RESULT) :])


def report(result: dict) -> None:
    """A worker's side of :func:`spawn`: prints its result for the parent."""
    print(RESULT + json.dumps(result), flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> float:
    """The 1-minute load average (the benches record it: a loaded machine skews the ratios)."""
    return os.getloadavg()[0]


def load_range(loads: list[float]) -> str:
    return f"{min(loads):.1f}-{max(loads):.1f}"


def paired_ratios(baseline_s: list[float], jax_s: list[float]) -> list[float]:
    """Per repeat, the baseline's time over JAX's (above 1: JAX was faster)."""
    return [b / j for b, j in zip(baseline_s, jax_s, strict=True)]


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, align, *rows])


def torch_cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device (imports torch)."""
    import torch

    return torch.cuda.is_available()


def environment() -> dict:
    """``machine`` and ``versions`` entries for a results JSON."""
    import jax
    import torch

    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def write_json(path: str | None, payload: dict, indent: int = 1) -> None:
    """Writes ``payload`` to ``path`` (``--out``); nothing when it is None."""
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=indent)
