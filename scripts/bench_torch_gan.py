"""Adversarial training steps/s: gannas_jax's compiled ``fit_gan`` against PyTorch: the original
loop and the fastest versions of it a PyTorch expert would write.

Usage:
  python scripts/bench_torch.py gan [--spaces nb201,sequential] [--steps 1000] [--repeats 7]
                                    [--variants original,eager,compile,compile-max-autotune]
                                    [--device cpu|cuda] [--out F.json]

Both sides run the original sketch's algorithm: generator ``z (100) -> 256 (ReLU) -> N
(sigmoid)``, discriminator ``N -> 256 (LeakyReLU 0.2) -> 1 (sigmoid)``, BCE (non-saturating),
Adam 2e-4 (betas 0.5, 0.999), batch 64, per step one discriminator then one generator update,
real batches drawn uniformly from a fixed real set; JAX without spectral norm or entropy bonus,
generating through straight-through Gumbel-softmax. N is the space's compact one-hot size, the
one ``fit_gan`` trains on (``gannas_jax.gan.encoding``). Where the dense ``V * Cmax`` encoding is
larger (``SequentialSpace``: 154 against 92, the extra entries structural zeros), the original
PyTorch loop is also timed at that size, for reference only: the same function with dead weights.

The PyTorch variants (``torch_gan_variants``, whose docstring says what each changes and what
was tried for ``torch.compile``): ``original`` (the faithful port), ``eager`` (tuned eager),
``compile`` (the whole step as one graph) and ``compile-max-autotune``; ``eager-foreach`` on
request; with ``--device cuda`` also ``compile-cudagraphs`` (``mode="reduce-overhead"``). A
variant that fails (e.g. ``torch.compile`` raising) gets a row saying why. The headline ratio is
JAX over the fastest variant.

All sides run in one process, timed with ``time.perf_counter`` (JAX after
``block_until_ready``, PyTorch on CUDA after ``torch.cuda.synchronize``), in interleaved repeats
that rotate which side goes first; medians are reported. Compile times (JAX's, each compiled
variant's first call) are excluded and reported apart; inductor compiles into a fresh cache
directory unless ``TORCHINDUCTOR_CACHE_DIR`` is set, so its compile times are cold, like JAX's.
On CPU every PyTorch variant is timed with its default thread count and with one thread and the
faster counts (on a loaded machine OpenMP barriers make the default far slower); a compiled
variant is compiled once per thread count (its C++ kernels are specialized on it). On CUDA only
the default thread count is timed. JAX runs on its default backend (printed).

Sanity check: from the same initial weights, and for ``eager`` and ``compile`` the same noise,
each variant's losses after the warm-up steps are printed; the compiled ones are checked
loosely against ``eager``'s (they do the same math; chaos and rounding aside they agree).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

import bench_common as bc
import torch_gan_variants as tv
from torch_gan_variants import TorchGan  # noqa: F401  (the original loop, re-exported)

SPACES = ("nb201", "sequential")


def _make_space(name):
    from gannas_jax import NB201Space, SequentialSpace

    return NB201Space() if name == "nb201" else SequentialSpace()


# --- JAX ---


class JaxGan:
    """``fit_gan`` with the benchmark's sizes."""

    def __init__(self, space, real_archs, seed=0):
        import jax

        from gannas_jax import GanConfig, init_gan

        self.jax = jax
        # The original's algorithm: plain MLPs (no spectral norm), no entropy bonus.
        self.config = GanConfig(
            z_dim=100,
            g_hidden=(256,),
            d_hidden=(256,),
            batch_size=64,
            g_learning_rate=2e-4,
            d_learning_rate=2e-4,
            n_critic=1,
            d_spectral_norm=False,
            entropy_weight=0.0,
            loss="nonsaturating",
            generator_mode="straight_through",
        )
        self.state = init_gan(jax.random.key(seed), space, self.config)
        self.real = real_archs
        self.calls = 0

    def run(self, num_steps):
        from gannas_jax import fit_gan

        # Always from the same initial state: every timed call does identical work.
        key = self.jax.random.fold_in(self.jax.random.key(1), self.calls)
        self.calls += 1
        state, metrics = fit_gan(self.state, self.real, key, num_steps)
        self.jax.block_until_ready((state, metrics))
        return float(metrics["d_loss"][-1]), float(metrics["g_loss"][-1])


def _macs_per_step(onehot_size, z_dim=100, hidden=256, batch=64):
    """Multiply-adds of one step of the dense MLPs (forward + backward), for FLOP/s figures."""
    g = z_dim * hidden + hidden * onehot_size
    d = onehot_size * hidden + hidden
    # G: forward + backward (weight grads for both layers, input grad for the second only).
    g_total = batch * (g + g + hidden * onehot_size)
    # D update on 2*batch rows: forward + weight grads + input grad of the second layer; the
    # generator update: forward on batch rows + input grads of both layers.
    d_total = 2 * batch * (d + d + hidden) + batch * (d + d)
    return g_total + d_total


def _timed(fn, num_steps, sync):
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn(num_steps)
    sync()
    wall = time.perf_counter() - t0
    return wall, (time.process_time() - c0) / wall


def bench_space(name, args):
    import jax
    import numpy as np
    import torch

    from gannas_jax.gan.encoding import encoding

    space = _make_space(name)
    real = np.asarray(space.sample(jax.random.key(args.seed), args.num_real))
    onehot = np.asarray(encoding(space).onehot(real))
    dense = np.asarray(space.onehot(real)).reshape(len(real), -1)
    jax_gan = JaxGan(space, real, seed=args.seed)

    t0 = time.perf_counter()
    jax_gan.run(args.steps)  # compiles
    first_call = time.perf_counter() - t0
    jax_gan.run(args.steps)

    # Its default thread count and one thread (the module docstring says why).
    default_threads = torch.get_num_threads()
    if args.threads:
        thread_counts = [args.threads]
    elif args.device == "cuda":
        thread_counts = [default_threads]
    else:
        thread_counts = sorted({default_threads, 1}, reverse=True)
    sides, info = tv.warm_all(args, onehot, dense, thread_counts)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    keys = ["jax", *sides]
    runs = {"jax": jax_gan.run, **{k: fn for k, (fn, _) in sides.items()}}
    walls = {k: [] for k in keys}
    cpus = {k: [] for k in keys}
    loads = []
    for r in range(args.repeats):
        loads.append(bc.load())
        shift = r % len(keys)  # rotate which side goes first
        for k in keys[shift:] + keys[:shift]:
            if k not in walls:
                continue
            try:
                wall, cpu = _timed(runs[k], args.steps, sync)
            except Exception as exc:  # drop the side, keep the bench going
                info[sides[k][1]]["error"] = tv.one_line(exc)
                bc.log(f"  {k} failed while timed: {info[sides[k][1]]['error']}")
                del walls[k], cpus[k]
                continue
            walls[k].append(wall)
            cpus[k].append(cpu)
        bc.log(
            f"  {name} repeat {r}: "
            + ", ".join(f"{k} {args.steps / w[-1]:.0f}" for k, w in walls.items())
            + f" steps/s, load {loads[-1]:.2f}"
        )
    torch.set_num_threads(default_threads)
    sps = {k: args.steps / statistics.median(w) for k, w in walls.items()}
    jax_sps = sps["jax"]
    variants = {}
    for v, rec in info.items():
        by_threads = {k.split("/")[1]: sps[k] for k in walls if k != "jax" and sides[k][1] == v}
        best = max(by_threads, key=by_threads.get) if by_threads else None
        variants[v] = dict(
            rec,
            steps_per_s_by_threads=by_threads,
            threads=best,
            steps_per_s=by_threads.get(best),
            ratio=jax_sps / by_threads[best] if best else None,
        )
    timed = {v: r for v, r in variants.items() if r["steps_per_s"] and v != "original-dense"}
    if not timed:
        raise SystemExit(
            f"{name}: no PyTorch variant ran ({ {v: r['error'] for v, r in info.items()} })"
        )
    fastest = max(timed, key=lambda v: timed[v]["steps_per_s"])
    fast_keys = [k for k in walls if k != "jax" and sides[k][1] == fastest]
    best_walls = [min(ws) for ws in zip(*(walls[k] for k in fast_keys), strict=True)]
    macs = _macs_per_step(onehot.shape[1])  # what every side computes
    dense_rec = variants.get("original-dense") or {}
    original = variants.get("original") or {}
    return {
        "space": name,
        "onehot_size": int(onehot.shape[1]),
        "steps_per_call": args.steps,
        "torch_device": args.device,
        "jax_backend": jax.default_backend(),
        "jax_steps_per_s": jax_sps,
        "torch_steps_per_s": timed[fastest]["steps_per_s"],
        "torch_baseline": f"{fastest}/{timed[fastest]['threads']}",
        "ratio": timed[fastest]["ratio"],
        "paired_ratio_median": statistics.median(bc.paired_ratios(best_walls, walls["jax"])),
        "ratio_vs_original": original.get("ratio"),
        "variants": variants,
        "dense_onehot_size": int(dense.shape[1]),
        "torch_dense_steps_per_s": dense_rec.get("steps_per_s"),
        "ratio_vs_dense": dense_rec.get("ratio"),
        "jax_compile_s": max(first_call - statistics.median(walls["jax"]), 0.0),
        "jax_first_call_s": first_call,
        "wall_s": walls,
        "cpu_per_wall": cpus,
        "loadavg_1min": loads,
        "dense_macs_per_step": macs,
        "jax_gflops": 2 * macs * jax_sps / 1e9,
        "torch_gflops": 2 * macs * timed[fastest]["steps_per_s"] / 1e9,
    }


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def markdown(results):
    header = [
        "space",
        "one-hot size",
        "JAX steps/s",
        "fastest PyTorch (threads)",
        "its steps/s",
        "JAX / fastest",
        "paired ratio",
        "JAX / original",
        "JAX compile (s)",
        "load (1-min avg)",
    ]
    rows = [
        [
            r["space"],
            str(r["onehot_size"]),
            f"{r['jax_steps_per_s']:.0f}",
            r["torch_baseline"],
            f"{r['torch_steps_per_s']:.0f}",
            f"{r['ratio']:.2f}",
            f"{r['paired_ratio_median']:.2f}",
            _fmt(r["ratio_vs_original"], ".2f"),
            f"{r['jax_compile_s']:.1f}",
            bc.load_range(r["loadavg_1min"]),
        ]
        for r in results
    ]
    out = [bc.markdown_table(header, rows)]
    header = [
        "side",
        "threads",
        "steps/s",
        "each thread count",
        "JAX / side",
        "compile (s)",
        "losses after warm-up (d, g)",
        "setup",
    ]
    for r in results:
        rows = [
            [
                "JAX `fit_gan`",
                "-",
                f"{r['jax_steps_per_s']:.0f}",
                "-",
                "1.00",
                f"{r['jax_compile_s']:.1f}",
                "-",
                f"XLA on {r['jax_backend']}",
            ]
        ]
        for v, rec in r["variants"].items():
            label = (
                v if v != "original-dense" else f"original at dense size {r['dense_onehot_size']}"
            )
            losses = next(iter(rec["losses_after_warmup"].values()), None)
            if rec["steps_per_s"] is None:
                rows.append([label, "-", "failed", "-", "-", "-", "-", rec["error"] or "-"])
                continue
            compile_s = rec["compile_s"].get(rec["threads"])
            rows.append(
                [
                    label,
                    rec["threads"][:-1],
                    f"{rec['steps_per_s']:.0f}",
                    ", ".join(
                        f"{k[:-1]}: {x:.0f}" for k, x in rec["steps_per_s_by_threads"].items()
                    ),
                    f"{rec['ratio']:.2f}",
                    _fmt(compile_s, ".1f"),
                    "-" if losses is None else f"{losses[0]:.3f}, {losses[1]:.3f}",
                    rec["setup"]
                    + (
                        f"; loss check vs eager: {rec['loss_check_vs_eager']}"
                        if "loss_check_vs_eager" in rec
                        else ""
                    ),
                ]
            )
        out += [
            "",
            f"`{r['space']}`: PyTorch on {r['torch_device']}, JAX on {r['jax_backend']}",
            "",
            bc.markdown_table(header, rows),
        ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = bc.parser("gan", __doc__, repeats=7, repeats_help="interleaved timed repeats per side")
    parser.add_argument(
        "--spaces", default=",".join(SPACES), help=f"comma-separated, from {SPACES}"
    )
    parser.add_argument("--steps", type=int, default=1000, help="steps per timed call")
    parser.add_argument(
        "--warmup-steps", type=int, default=200, help="untimed PyTorch warm-up steps"
    )
    parser.add_argument("--num-real", type=int, default=64, help="size of the real set")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="PyTorch threads (0: time both its default and 1 thread; the faster counts)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="PyTorch's device")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated PyTorch variants, from {tv.VARIANTS} (default: "
        f"{','.join(tv.DEFAULT_VARIANTS)}, plus {','.join(tv.CUDA_VARIANTS)} on cuda)",
    )
    args = parser.parse_args(argv)
    bc.require_positive(parser, args, "steps", "repeats", "warmup-steps")
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    unknown = [s for s in spaces if s not in SPACES]
    if unknown or not spaces:
        parser.error(f"unknown spaces {unknown}; choose from {SPACES}")
    default = tv.DEFAULT_VARIANTS + (tv.CUDA_VARIANTS if args.device == "cuda" else ())
    args.variants = [
        v.strip() for v in (args.variants or ",".join(default)).split(",") if v.strip()
    ]
    unknown = [v for v in args.variants if v not in tv.VARIANTS]
    if unknown or not args.variants:
        parser.error(f"unknown variants {unknown}; choose from {tv.VARIANTS}")
    if args.device == "cpu" and set(args.variants) & set(tv.CUDA_VARIANTS):
        parser.error(f"{tv.CUDA_VARIANTS} need --device cuda")
    if set(args.variants) & set(tv.COMPILE_MODES) and (
        args.steps % tv.UNROLL or args.warmup_steps % tv.UNROLL
    ):
        parser.error(
            f"compiled variants run {tv.UNROLL} steps per call: --steps and "
            f"--warmup-steps must be multiples of {tv.UNROLL}"
        )
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_torch.py gan: --device cuda but torch.cuda.is_available() is False",
            file=sys.stderr,
        )
        return 2
    cache = None
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # cold compiles, as JAX's
        cache = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor_")

    bc.log(f"load average before: {os.getloadavg()}")
    try:
        results = [bench_space(s, args) for s in spaces]
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    print(markdown(results))
    print()
    print(
        f"Medians of {args.repeats} interleaved repeats of {args.steps} steps; compile excluded. "
        f"{os.cpu_count()} CPUs; PyTorch {torch.__version__} on {args.device}; each variant at "
        f"its faster thread count; load average after "
        f"{tuple(round(x, 2) for x in os.getloadavg())}. Ratios are JAX steps/s over the "
        "side's; the headline is over the fastest PyTorch variant."
    )
    bc.write_json(args.out, {"results": results, **bc.environment(), "args": vars(args)}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
