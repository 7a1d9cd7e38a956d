"""Child training throughput: TrainingEvaluator (JAX) against a PyTorch eager baseline.

Usage:
  python scripts/bench_torch.py child [--population 16] [--repeats 3] [--chunks 1] [--out F.json]

Both sides train the same P random ``SequentialSpace`` architectures on ``digits`` with one recipe
(``TrainConfig``'s steps, batch size and constant-lr Adam, the same data order) from the same
initial weights (the evaluator's init, exported at exact size), so their accuracies compare. JAX
trains the population with one ``TrainingEvaluator`` program, compile included; PyTorch builds
each architecture at its exact size and trains them one after another, build included.

Each repeat runs each side in a fresh process, so both pay their first-use costs as a search run
from the command line does; the PyTorch process then trains the architectures a second, warm time,
reported too. Times exclude imports and data loading; medians over the repeats. ``--chunks C``
trains C x P architectures, JAX as C evaluator batches sharing one compile (a search's successive
batches); the acceptance benchmark is ``--chunks 1``. Like ``scripts/search.py``, JAX gets one XLA
CPU device per core (``gannas_jax.use_cpu_cores``) and trains the population on them in parallel.
"""

from __future__ import annotations

import statistics
import sys
import time

import bench_common as bc


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
        help="torch intra-op threads; 1 is fastest for these tiny models, and on a shared "
        "machine more threads stall on each other",
    )
    p.add_argument("--skip-torch", action="store_true", help="JAX side only")
    args = p.parse_args(argv)
    bc.require_positive(p, args, "population", "repeats", "chunks", "jax-devices")
    return args


def _torch_model(torch, space, arch, static_params):
    """Exact-size PyTorch network of ``arch`` holding the given static (JAX layout) weights."""
    import numpy as np

    nn = torch.nn
    spec = space.to_spec(arch)
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    layers: list = []
    h, w, c = spec["input_shape"]
    for s, stage in enumerate(spec["stages"]):
        if s:
            layers.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
        for j, layer in enumerate(stage):
            if layer["type"] == "conv":
                conv = nn.Conv2d(c, layer["channels"], layer["kernel"], padding="same")
                sp = static_params[f"conv{s}_{j}"]
                conv.weight.data = torch.from_numpy(
                    np.ascontiguousarray(np.transpose(sp["kernel"], (3, 2, 0, 1)))
                )
                conv.bias.data = torch.from_numpy(np.asarray(sp["bias"]).copy())
                layers.append(conv)
                c = layer["channels"]
            elif layer["type"] == "pool":
                layers.append(
                    nn.MaxPool2d(3, 1, 1)
                    if layer["kind"] == "max"
                    else nn.AvgPool2d(3, 1, 1, count_include_pad=True)
                )
            else:
                layers.append(acts[layer["fn"]]())

    class NHWCFlatten(nn.Module):  # JAX flattens (h, w, c); keep its dense weights' row order
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1)

    layers.append(NHWCFlatten())
    d = h * w * c
    names = [f"fc{f}" for f in range(len(spec["head"]))] + ["out"]
    units = [layer["units"] for layer in spec["head"]] + [spec["num_classes"]]
    for i, (name, u) in enumerate(zip(names, units, strict=True)):
        dense = nn.Linear(d, u)
        dense.weight.data = torch.from_numpy(
            np.ascontiguousarray(np.asarray(static_params[name]["kernel"]).T)
        )
        dense.bias.data = torch.from_numpy(np.asarray(static_params[name]["bias"]).copy())
        layers.append(dense)
        if i < len(spec["head"]):
            layers.append(acts[spec["head"][i]["activation"]]())
        d = u
    return nn.Sequential(*layers)


def _run_torch(torch, space, archs, statics, ds, idx, cfg):
    """Trains each architecture in turn; returns (seconds, per-arch val %, per-arch test %)."""
    import numpy as np

    x_tr = torch.from_numpy(np.ascontiguousarray(ds.x_train.transpose(0, 3, 1, 2)))
    y_tr = torch.from_numpy(ds.y_train.astype(np.int64))
    x_va = torch.from_numpy(np.ascontiguousarray(ds.x_val.transpose(0, 3, 1, 2)))
    x_te = torch.from_numpy(np.ascontiguousarray(ds.x_test.transpose(0, 3, 1, 2)))
    idx_t = torch.from_numpy(idx.astype(np.int64))
    vals, tests = [], []
    t0 = time.perf_counter()
    for arch, sp in zip(archs, statics, strict=True):
        model = _torch_model(torch, space, arch, sp)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        for step in range(cfg.steps):
            b = idx_t[step]
            loss = torch.nn.functional.cross_entropy(model(x_tr[b]), y_tr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            vals.append(100.0 * float((model(x_va).argmax(1).numpy() == ds.y_val).mean()))
            tests.append(100.0 * float((model(x_te).argmax(1).numpy() == ds.y_test).mean()))
    return time.perf_counter() - t0, vals, tests


def _setup(args):
    """What both workers share: the recipe, the space, the data and the architectures."""
    import dataclasses

    import jax
    import numpy as np

    from gannas_jax import SequentialSpace, use_cpu_cores

    # Before JAX starts: one XLA CPU device per core, as scripts/search.py does.
    use_cpu_cores(args.jax_devices)
    from gannas_jax.data import digits
    from gannas_jax.train import TrainConfig

    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "strategy": args.strategy,
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
    t0 = time.perf_counter()
    outs = [
        ev.train(archs[c : c + args.population], k_init)
        for c in range(0, len(archs), args.population)
    ]
    total = time.perf_counter() - t0
    return {
        "seconds": total,
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
    """PyTorch from the same initial weights: a first (cold) pass, then a second (warm) one."""
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
    import torch  # bench extra; imported only here

    torch.set_num_threads(args.torch_threads)
    cold, vals, tests = _run_torch(torch, space, archs, statics, ds, probe.batch_idx, cfg)
    warm, _, _ = _run_torch(torch, space, archs, statics, ds, probe.batch_idx, cfg)
    return {
        "seconds": cold,
        "warm_seconds": warm,
        "val": vals,
        "test": tests,
        "threads": torch.get_num_threads(),
        "version": torch.__version__,
    }


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


def main(argv: list[str]) -> int:
    args = _parse(argv)
    if args.worker:
        bc.report(_jax_worker(args) if args.worker == "jax" else _torch_worker(args))
        return 0
    from gannas_jax.train import TrainConfig

    cfg = TrainConfig()
    if cfg.optimizer != "adam" or cfg.schedule != "constant":
        print("the PyTorch baseline implements constant-lr Adam only", file=sys.stderr)
        return 2

    runs: dict[str, list] = {"jax": [], "torch": []}
    load = [bc.load()]
    for r in range(args.repeats):
        runs["jax"].append(bc.spawn("child", argv, "jax"))
        load.append(bc.load())
        msg = f"repeat {r}: jax {runs['jax'][-1]['seconds']:.1f}s"
        if not args.skip_torch:
            runs["torch"].append(bc.spawn("child", argv, "torch"))
            load.append(bc.load())
            t = runs["torch"][-1]
            msg += f", torch {t['seconds']:.1f}s (warm {t['warm_seconds']:.1f}s)"
        bc.log(msg)

    import numpy as np

    def times(side, field="seconds"):
        return [run[field] for run in runs[side]]

    P, first = args.population, runs["jax"][0]
    n_archs = P * args.chunks
    result = {
        "population": P,
        "chunks": args.chunks,
        "architectures": n_archs,
        "protocol": "fresh process per side and repeat",
        **{k: first[k] for k in _RECIPE},
        "repeats": args.repeats,
        "load_avg_1min": load,
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
    rows = [("JAX TrainingEvaluator", result["jax"])]
    if runs["torch"]:
        t0 = runs["torch"][0]
        for key, field, name in (
            ("torch", "seconds", "first pass in its process"),
            ("torch_warm", "warm_seconds", "second pass, warm"),
        ):
            t_s = statistics.median(times("torch", field))
            result[key] = {
                "seconds": t_s,
                "archs_per_min": 60 * n_archs / t_s,
                "mean_val": float(np.mean(t0["val"])),
                "mean_test": float(np.mean(t0["test"])),
                "threads": t0["threads"],
            }
            rows.append((f"PyTorch {t0['version']} eager, {name}", result[key]))
        apm = {k: result[k]["archs_per_min"] for k in ("jax", "torch", "torch_warm")}
        result["ratio"] = apm["jax"] / apm["torch"]
        result["ratio_vs_warm"] = apm["jax"] / apm["torch_warm"]
        result["paired_ratios"] = bc.paired_ratios(times("torch"), times("jax"))
        result["paired_ratios_vs_warm"] = bc.paired_ratios(
            times("torch", "warm_seconds"), times("jax")
        )
        result["mean_val_gap"] = result["jax"]["mean_val"] - result["torch"]["mean_val"]

    what = f"P={P}" if args.chunks == 1 else f"{args.chunks} chunks of P={P} ({n_archs})"
    print(
        f"\nChild training, {what} random SequentialSpace archs on digits, {result['steps']} "
        f"steps x batch {result['batch_size']}, Adam lr {result['learning_rate']}; "
        f"{result['backend']} backend, {result['jax_devices']} XLA device(s); each side in a fresh "
        f"process per repeat, medians of {args.repeats} repeats; 1-min load average "
        f"{bc.load_range(load)}\n"
    )
    header = ["side", "archs/min", "total s", "compile s", "mean val acc %", "mean test acc %"]
    cells = [
        [
            name,
            f"{r['archs_per_min']:.1f}",
            f"{r['seconds']:.1f}",
            f"{r['compile_s']:.1f}" if "compile_s" in r else "-",
            f"{r['mean_val']:.2f}",
            f"{r['mean_test']:.2f}",
        ]
        for name, r in rows
    ]
    print(bc.markdown_table(header, cells, ["---"] + ["---:"] * 5))
    if "ratio" in result:
        bar = (
            "(>= 1.0 required, 2.0 target)"
            if args.chunks == 1
            else "(the acceptance bar is for --chunks 1)"
        )
        pr = ", ".join(f"{x:.2f}" for x in result["paired_ratios"])
        print(
            f"\nJAX/PyTorch archs/min ratio: {result['ratio']:.2f} {bar}; paired by repeat: {pr}; "
            f"mean val gap {result['mean_val_gap']:+.2f} points"
        )
        print(f"Against PyTorch's warm second pass: {result['ratio_vs_warm']:.2f}")
    jx = result["jax"]
    print(
        f"JAX time breakdown (median): trace+lower {jx['trace_lower_s']:.1f}s, XLA compile "
        f"{jx['compile_s']:.1f}s, execute {jx['execute_s']:.1f}s "
        f"({1e3 * jx['execute_s'] / (n_archs * result['steps']):.2f} ms per child-step)"
    )
    bc.write_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
