"""Child training throughput: TrainingEvaluator (JAX) against a PyTorch eager baseline.

Usage:
  python scripts/bench_torch.py child [--population 16] [--repeats 3] [--chunks 1]
                                      [--device cpu|cuda] [--out F.json]

Both sides train the same P random ``SequentialSpace`` architectures on ``digits`` with one recipe
(``TrainConfig``'s steps, batch size and constant-lr Adam, the same data order) from the same
initial weights (the evaluator's init, exported at exact size), so their accuracies compare; the
bench checks that each PyTorch variant's mean validation accuracy is within 1 point of JAX's.
JAX trains the population with one ``TrainingEvaluator`` program, compile included; like
``scripts/search.py`` it gets one XLA CPU device per core (``gannas_jax.use_cpu_cores``) and
trains the population on them in parallel. PyTorch builds each architecture at its exact size and
trains it, build included, in W spawned worker processes of one thread each, for W = 1 and W =
``os.cpu_count()``, jobs dealt costliest first to whichever worker is free
(``torch_child_workers``, which says why it is built so); the faster W is the baseline.

Each repeat runs JAX and each PyTorch variant in a fresh process (the PyTorch pool is created
inside it), so all pay their first-use costs as a search run from the command line does; the
PyTorch workers then train the architectures a second, warm time, reported too. Times exclude
imports and data loading (the PyTorch workers load theirs before the clock starts); medians over
the repeats. ``--chunks C`` trains C x P architectures, JAX as C evaluator batches sharing one
compile (a search's successive batches); the acceptance benchmark is ``--chunks 1``.
``--device cuda`` runs PyTorch on CUDA in one process, the architectures one after another, and
JAX on its default backend with ``--strategy vmap`` unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import bench_common as bc
import torch_child_workers as tw

MAX_VAL_GAP = 1.0  # points of mean validation accuracy a PyTorch variant may differ from JAX's


def _parse(argv):
    p = bc.parser(
        "child",
        __doc__,
        repeats=3,
        repeats_help="repeats per side, each in a fresh process (medians reported)",
        workers=("jax", "torch"),
    )
    p.add_argument("--population", type=int, default=16, help="P, architectures per side")
    p.add_argument(
        "--chunks",
        type=int,
        default=1,
        help="train chunks x P architectures (a search's successive batches): JAX compiles once "
        "for all chunks; the default, 1, is the acceptance benchmark",
    )
    p.add_argument("--steps", type=int, default=None, help="override TrainConfig.steps")
    p.add_argument("--batch-size", type=int, default=None, help="override TrainConfig.batch_size")
    p.add_argument(
        "--learning-rate", type=float, default=None, help="override TrainConfig.learning_rate"
    )
    p.add_argument(
        "--strategy", default=None, help="override TrainConfig.strategy (auto, map, vmap)"
    )
    p.add_argument(
        "--conv-impl", default=None, help="override TrainConfig.conv_impl (auto, blocked, masked)"
    )
    p.add_argument(
        "--jax-devices",
        type=int,
        default=None,
        help="XLA CPU devices for population parallelism; default: one per core "
        "(gannas_jax.use_cpu_cores, as scripts/search.py does)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads per worker process; 1 is fastest for these tiny models, and "
        "on a shared machine more threads stall on each other",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: PyTorch on CUDA in one process, JAX on its default backend (vmap by default)",
    )
    p.add_argument("--skip-torch", action="store_true", help="JAX side only")
    p.add_argument("--pool", type=int, default=1, help=argparse.SUPPRESS)  # torch worker's W
    args = p.parse_args(argv)
    positive = ("population", "repeats", "chunks", "jax-devices", "torch-threads", "pool")
    bc.require_positive(p, args, *positive)
    return args


def _setup(args):
    """What both workers share: the recipe, the space, the data and the architectures."""
    import dataclasses

    import jax
    import numpy as np

    from gannas_jax import SequentialSpace, use_cpu_cores

    if args.device == "cpu":  # before JAX starts: one XLA CPU device per core, as search.py does
        use_cpu_cores(args.jax_devices)
    from gannas_jax.data import digits
    from gannas_jax.train import TrainConfig

    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "strategy": args.strategy or ("vmap" if args.device == "cuda" else None),
            "conv_impl": args.conv_impl,
        }.items()
        if v is not None
    }
    cfg = dataclasses.replace(TrainConfig(), population=args.population, **overrides)
    space = SequentialSpace()
    k_arch, k_init = jax.random.split(jax.random.key(args.seed))
    archs = np.asarray(
        space.canonicalize(np.asarray(space.sample(k_arch, args.population * args.chunks)))
    )
    return cfg, space, digits(), archs, k_init


def _jax_worker(args) -> dict:
    """One cold JAX run: a fresh evaluator, compile included."""
    import jax
    import numpy as np

    from gannas_jax.evaluate import TrainingEvaluator

    cfg, space, ds, archs, k_init = _setup(args)
    ev = TrainingEvaluator(space, ds, cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    outs = [
        ev.train(archs[c : c + args.population], k_init)
        for c in range(0, len(archs), args.population)
    ]
    total = time.perf_counter() - t0
    return {
        "seconds": total,
        "cpu_s": time.process_time() - c0,  # all threads: up to devices x seconds when idle
        "compile_s": ev.compile_breakdown.get("compile_s", float("nan")),
        "trace_lower_s": ev.compile_breakdown.get("lower_s", float("nan")),
        "execute_s": ev.run_seconds,
        "compiles": ev.compile_count,
        "val": np.concatenate([o["val"] for o in outs]).tolist(),
        "test": np.concatenate([o["test"] for o in outs]).tolist(),
        "strategy": cfg.resolved_strategy(),
        "conv_impl": cfg.resolved_conv_impl(),
        "jax_devices": jax.local_device_count(),
        "backend": jax.default_backend(),
        "archs": [space.to_string(a) for a in archs],
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "learning_rate": cfg.learning_rate,
    }


def _torch_worker(args) -> dict:
    """PyTorch from the same initial weights: a pool of ``args.pool`` fresh worker processes
    trains the architectures (the timed first pass), then trains them again (warm)."""
    if args.device == "cuda":  # the weights' export needs no GPU; leave the GPU to torch
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np

    from gannas_jax.child import extract_static_sequential
    from gannas_jax.evaluate import TrainingEvaluator

    cfg, space, ds, archs, k_init = _setup(args)
    # Identical starting weights for both sides: the evaluator's own init, at exact size.
    probe = TrainingEvaluator(space, ds, cfg)
    keys = probe._keys(k_init, archs)
    child = probe.child
    init = jax.jit(jax.vmap(lambda k, a: child.init(k, a)["params"]))(keys, archs)
    statics = [
        extract_static_sequential(space, a, jax.tree.map(lambda t, i=i: np.asarray(t[i]), init))
        for i, a in enumerate(archs)
    ]
    specs = [space.to_spec(a) for a in archs]
    payload = {
        "specs": specs,
        "statics": statics,
        "idx": np.asarray(probe.batch_idx),
        "learning_rate": cfg.learning_rate,
        **{k: getattr(ds, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")},
    }
    cost = [tw.step_cost(spec, cfg.batch_size) for spec in specs]
    out = tw.run_pool(payload, cost, args.pool, args.device, args.torch_threads, passes=2)
    cold, warm = out.pop("seconds")
    return {"seconds": cold, "warm_seconds": warm, "workers": args.pool, "cost": cost, **out}


# Recipe fields the JSON copies from the first JAX run.
_RECIPE = (
    "steps",
    "batch_size",
    "optimizer",
    "learning_rate",
    "strategy",
    "conv_impl",
    "jax_devices",
    "backend",
    "archs",
)


def _run_all(args, argv, pools) -> tuple[dict, list]:
    """Every repeat: JAX, then PyTorch with each pool size, each in a fresh process."""
    runs: dict[str, list] = {"jax": [], **{f"torch_{w}": [] for w in pools}}
    load = [bc.load()]
    for r in range(args.repeats):
        runs["jax"].append(bc.spawn("child", argv, "jax"))
        load.append(bc.load())
        msg = f"repeat {r}: jax {runs['jax'][-1]['seconds']:.1f}s"
        for w in pools:
            t = bc.spawn("child", [*argv, "--pool", str(w)], "torch")
            runs[f"torch_{w}"].append(t)
            load.append(bc.load())
            msg += f", torch x{w} {t['seconds']:.1f}s (warm {t['warm_seconds']:.1f}s)"
        bc.log(msg)
    return runs, load


def main(argv: list[str]) -> int:
    args = _parse(argv)
    if args.worker:
        bc.report(_jax_worker(args) if args.worker == "jax" else _torch_worker(args))
        return 0
    if args.device == "cuda" and not args.skip_torch and not bc.torch_cuda_available():
        print(
            "bench_torch.py child: --device cuda, but torch.cuda.is_available() is False",
            file=sys.stderr,
        )
        return 2
    from gannas_jax.train import TrainConfig

    cfg = TrainConfig()
    if cfg.optimizer != "adam" or cfg.schedule != "constant":
        print("the PyTorch baseline implements constant-lr Adam only", file=sys.stderr)
        return 2
    # W = 1 and one process per core; on CUDA one process trains them one after another.
    pools = (
        []
        if args.skip_torch
        else [1]
        if args.device == "cuda"
        else sorted({1, os.cpu_count() or 1})
    )
    runs, load = _run_all(args, argv, pools)

    import numpy as np

    def times(side, field="seconds"):
        return [run[field] for run in runs[side]]

    P, first = args.population, runs["jax"][0]
    n_archs = P * args.chunks
    result = {
        "population": P,
        "chunks": args.chunks,
        "architectures": n_archs,
        "device": args.device,
        "protocol": "fresh process per side, pool size and repeat; PyTorch workers ready before "
        "the clock; second (warm) pass in the same workers",
        **{k: first[k] for k in _RECIPE},
        "repeats": args.repeats,
        "load_avg_1min": load,
        **bc.environment(),
        "runs": runs,
    }
    j_s = statistics.median(times("jax"))
    result["jax"] = {
        "seconds": j_s,
        "archs_per_min": 60 * n_archs / j_s,
        **{
            f: statistics.median(times("jax", f))
            for f in ("compile_s", "trace_lower_s", "execute_s")
        },
        "mean_val": float(np.mean(first["val"])),
        "mean_test": float(np.mean(first["test"])),
    }
    jax_name = f"JAX TrainingEvaluator, {first['jax_devices']} {first['backend']} device(s)"
    rows = [(jax_name, result["jax"])]
    where = "CUDA" if args.device == "cuda" else f"{args.torch_threads} thread(s) each"
    where += ", costliest-first queue"
    for w in pools:
        key, t0 = f"torch_{w}", runs[f"torch_{w}"][0]
        t_s = statistics.median(times(key))
        result[key] = {
            "workers": w,
            "seconds": t_s,
            "warm_seconds": statistics.median(times(key, "warm_seconds")),
            "archs_per_min": 60 * n_archs / t_s,
            "mean_val": float(np.mean(t0["val"])),
            "mean_test": float(np.mean(t0["test"])),
            "val_gap_vs_jax": float(np.mean(t0["val"])) - result["jax"]["mean_val"],
            "threads": t0["threads"],
            "ratio": t_s / j_s,
            "paired_ratios": bc.paired_ratios(times(key), times("jax")),
            "cost_vs_job_s_corr": float(np.corrcoef(t0["cost"], t0["job_s"])[0, 1]),
            "busy_s": t0["busy_s"],
            "busy_cpu_s": t0["busy_cpu_s"],
            "same_accuracy_every_run": all(
                r["val"] == t0["val"] and r["test"] == t0["test"] for r in runs[key]
            )
            and all(r["passes_agree"] for r in runs[key]),
        }
        procs = f"{w} process{'es' if w > 1 else ''}"
        rows.append((f"PyTorch {t0['version']} eager, {procs} ({where})", result[key]))

    what = f"P={P}" if args.chunks == 1 else f"{args.chunks} chunks of P={P} ({n_archs})"
    print(
        f"\nChild training, {what} random SequentialSpace archs on digits, {result['steps']} "
        f"steps x batch {result['batch_size']}, Adam lr {result['learning_rate']}; JAX: "
        f"{result['backend']} backend, {result['jax_devices']} XLA device(s), {first['strategy']}; "
        f"PyTorch on {args.device}; a fresh process per side and repeat, medians of "
        f"{args.repeats} repeats; 1-min load average {bc.load_range(load)}\n"
    )
    header = [
        "side",
        "archs/min",
        "total s",
        "compile s",
        "warm 2nd pass s",
        "mean val %",
        "mean test %",
    ]
    cells = [
        [
            name,
            f"{r['archs_per_min']:.1f}",
            f"{r['seconds']:.2f}",
            f"{r['compile_s']:.2f}" if "compile_s" in r else "-",
            f"{r['warm_seconds']:.2f}" if "warm_seconds" in r else "-",
            f"{r['mean_val']:.2f}",
            f"{r['mean_test']:.2f}",
        ]
        for name, r in rows
    ]
    if pools:
        best = min((f"torch_{w}" for w in pools), key=lambda k: result[k]["seconds"])
        b = result[best]
        result["baseline"], result["ratio"] = best, b["ratio"]
        result["paired_ratios"] = b["paired_ratios"]
        gaps = [result[f"torch_{w}"]["val_gap_vs_jax"] for w in pools]
        result["accuracy_check"] = "PASS" if max(map(abs, gaps)) <= MAX_VAL_GAP else "FAIL"
        cells.append(
            [f"**JAX / faster PyTorch ({b['workers']} proc.)**", f"**{b['ratio']:.2f}x**"]
            + [""] * 5
        )
    print(bc.markdown_table(header, cells, ["---"] + ["---:"] * 6))
    if pools:
        bar = "(>= 0.8 required, 1.5 target)" if args.chunks == 1 else "(the bar is for --chunks 1)"
        pr = ", ".join(f"{x:.2f}" for x in result["paired_ratios"])
        print(
            f"\nJAX / faster PyTorch ({b['workers']} process(es)) archs/min: {result['ratio']:.2f} "
            f"{bar}; paired by repeat: {pr}; above 1: JAX faster"
        )
        accs = ", ".join(
            f"{w} proc. {result[f'torch_{w}']['mean_val']:.2f}% ({g:+.2f})"
            for w, g in zip(pools, gaps, strict=True)
        )
        print(
            f"Accuracy check, PyTorch mean val within {MAX_VAL_GAP:g} point of JAX's "
            f"{result['jax']['mean_val']:.2f}%: {accs}: {result['accuracy_check']}"
        )
        lpt = []
        for w in pools:
            t = result[f"torch_{w}"]
            busy, cpu = ("/".join(f"{x:.1f}" for x in t[k]) for k in ("busy_s", "busy_cpu_s"))
            r = t["cost_vs_job_s_corr"]
            lpt.append(f"{w} proc.: cost vs job time r={r:.2f}, busy s {busy} (CPU s {cpu})")
        print(f"PyTorch (first repeat): {'; '.join(lpt)}")
    jx = result["jax"]
    print(
        f"JAX time breakdown (median): trace+lower {jx['trace_lower_s']:.1f}s, XLA compile "
        f"{jx['compile_s']:.1f}s, execute {jx['execute_s']:.1f}s "
        f"({1e3 * jx['execute_s'] / (n_archs * result['steps']):.2f} ms per child-step); CPU "
        f"time {first['cpu_s']:.1f}s in {first['seconds']:.1f}s (first repeat)"
    )
    bc.write_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
