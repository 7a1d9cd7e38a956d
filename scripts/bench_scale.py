"""Multi-process scaling of child evaluation on jax.distributed: architectures/min of the digits
evaluator (configs/digits.py) with 1 process x 1 CPU device against N processes x 1 CPU device.

Usage:
  python scripts/bench_scale.py [--processes 2] [--population 16] [--rounds 3] [--repeats 3]

Each run starts fresh processes (local, on a free port, gloo collectives), builds the evaluator,
compiles on a first population (not timed), then times ``rounds`` populations of new random
architectures, the same ones at every process count; process 0 reports. The runs alternate
1, N, 1, N, ... so that a change of machine load hits both. Scaling efficiency is
``rate(N) / (N * rate(1))`` from the medians. ``--pin`` gives each process a core of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT = "RESULT "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker(args) -> None:
    """One process of a run: times ``rounds`` populations; process 0 prints the result."""
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[args.process_id % len(cores)]})
    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from configs.digits import get_config
    from gannas_jax import distributed
    from gannas_jax.search.factory import build_evaluator

    if args.num_processes > 1:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    config = get_config()
    config.train.population = args.population
    if args.steps:
        config.train.steps = args.steps
    evaluator = build_evaluator(config)
    space = evaluator.space
    archs = np.asarray(space.sample(jax.random.key(args.seed), (args.rounds + 1) * args.population))
    chunks = archs.reshape(args.rounds + 1, args.population, -1)
    key = jax.random.key(args.seed + 1)
    first = evaluator.train(chunks[0], key)  # compiles; not timed
    distributed.allgather(np.zeros(1))  # every process starts the clock together
    t0 = time.perf_counter()
    for i, chunk in enumerate(chunks[1:]):
        out = evaluator.train(chunk, jax.random.fold_in(key, i))
    seconds = time.perf_counter() - t0
    if distributed.is_primary():
        result = {
            "processes": args.num_processes,
            "devices": jax.device_count(),
            "archs": args.rounds * args.population,
            "seconds": seconds,
            "archs_per_min": 60 * args.rounds * args.population / seconds,
            "compile_s": first["wall_s"],
            "mean_val": float(np.mean(out["val"])),
        }
        print(RESULT + json.dumps(result), flush=True)


def run(args, n: int) -> dict:
    """One run with ``n`` fresh processes; process 0's result."""
    port = _free_port()
    env = {**os.environ, "GANNAS_CPU_DEVICES": "1", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    common = [
        f"--population={args.population}",
        f"--rounds={args.rounds}",
        f"--steps={args.steps}",
        f"--seed={args.seed}",
        *(["--pin"] if args.pin else []),
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                f"--coordinator=localhost:{port}",
                f"--num_processes={n}",
                f"--process_id={i}",
                *common,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        codes = [p.returncode for p in procs]
        raise SystemExit(f"bench_scale.py: a {n}-process run failed (exit codes {codes})")
    lines = [ln for ln in outs[0].splitlines() if ln.startswith(RESULT)]
    return json.loads(lines[-1][len(RESULT) :])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2, help="N, the processes of the scaled run")
    p.add_argument("--population", type=int, default=16, help="children trained per round")
    p.add_argument("--rounds", type=int, default=3, help="timed populations per run")
    p.add_argument("--steps", type=int, default=0, help="training steps (0: the config's)")
    p.add_argument("--repeats", type=int, default=3, help="runs at each process count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pin", action="store_true", help="pin process i to core i")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--num_processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    for name in ("processes", "population", "rounds", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.steps < 0:
        p.error("--steps must be >= 0")
    n = args.processes
    if args.population % n:
        p.error(f"--population {args.population} must be divisible by --processes {n}")

    from tqdm.auto import tqdm

    runs: dict[int, list[dict]] = {1: [], n: []}
    loads = []
    with tqdm(total=2 * args.repeats, desc="bench_scale runs", unit="run") as bar:
        for _ in range(args.repeats):
            for k in (1, n):
                loads.append(os.getloadavg()[0])
                runs[k].append(run(args, k))
                bar.set_postfix(last=f"{k}p {runs[k][-1]['archs_per_min']:.1f}/min")
                bar.update()
    rate = {k: statistics.median(r["archs_per_min"] for r in rs) for k, rs in runs.items()}
    paired = [
        b["archs_per_min"] / (n * a["archs_per_min"]) for a, b in zip(runs[1], runs[n], strict=True)
    ]
    efficiency = rate[n] / (n * rate[1])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"digits evaluator, population {args.population}, {args.rounds} timed rounds per run, "
        f"{args.repeats} runs each, load {min(loads):.1f}-{max(loads):.1f}"
        + (", pinned" if args.pin else "")
    )
    for k in (1, n):
        each = ", ".join(f"{r['archs_per_min']:.1f}" for r in runs[k])
        print(f"  {k} process x 1 CPU device: {rate[k]:.1f} architectures/min (runs: {each})")
    print(
        f"scaling efficiency rate({n}) / ({n} x rate(1)) = {efficiency:.2f} "
        f"(paired runs: {', '.join(f'{e:.2f}' for e in paired)}); required >= 0.7, target >= 0.9"
    )
    if args.out:
        out = {
            "args": vars(args),
            "runs": {str(k): v for k, v in runs.items()},
            "archs_per_min": {str(k): v for k, v in rate.items()},
            "efficiency": efficiency,
            "paired_efficiency": paired,
            "load": loads,
            "cores": os.cpu_count(),
        }
        pathlib.Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
