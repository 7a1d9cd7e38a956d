"""Adversarial training steps/s: gannas_jax's compiled ``fit_gan`` against the PyTorch original.

Usage:
  python scripts/bench_torch.py gan [--spaces nb201,sequential] [--steps 1000] [--repeats 7]
                                    [--out F.json]

Both sides run the original sketch's algorithm: generator ``z (100) -> 256 (ReLU) -> N
(sigmoid)``, discriminator ``N -> 256 (LeakyReLU 0.2) -> 1 (sigmoid)``, BCE (non-saturating),
Adam 2e-4 (betas 0.5, 0.999), batch 64, per step one discriminator then one generator update,
real batches drawn uniformly from a fixed real set; JAX without spectral norm or entropy bonus,
generating through straight-through Gumbel-softmax. N is the space's compact one-hot size, the
one ``fit_gan`` trains on (``gannas_jax.gan.encoding``). Where the dense ``V * Cmax`` encoding is
larger (``SequentialSpace``: 154 against 92, the extra entries structural zeros), PyTorch is also
timed at that size, for reference only: the same function with dead weights.

All sides run in one process, timed with ``time.perf_counter`` (JAX after
``block_until_ready``, compile excluded and reported apart), in interleaved repeats that rotate
which side goes first; medians are reported. PyTorch is timed with its default thread count and
with one thread and the faster is the baseline: on a loaded machine its OpenMP barriers make the
default far slower.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import bench_common as bc

SPACES = ("nb201", "sequential")


def _make_space(name):
    from gannas_jax import NB201Space, SequentialSpace

    return NB201Space() if name == "nb201" else SequentialSpace()


# --- PyTorch: the original loop ---


class TorchGan:
    """The original PyTorch GAN loop, ported faithfully (sizes as in the module docstring)."""

    def __init__(self, real_onehot, z_dim=100, hidden=256, batch_size=64, lr=2e-4, seed=0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.torch = torch
        out = real_onehot.shape[1]
        self.generator = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, out), nn.Sigmoid()
        )
        self.discriminator = nn.Sequential(
            nn.Linear(out, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1), nn.Sigmoid()
        )
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()
        self.real = torch.tensor(real_onehot.tolist(), dtype=torch.float32)
        self.z_dim, self.batch_size = z_dim, batch_size
        self.ones = torch.ones(batch_size, 1)
        self.zeros = torch.zeros(batch_size, 1)

    def step(self):
        torch, b = self.torch, self.batch_size
        real = self.real[torch.randint(0, self.real.shape[0], (b,))]
        fake = self.generator(torch.randn(b, self.z_dim))
        # Discriminator: real -> 1, detached fake -> 0.
        self.opt_d.zero_grad()
        d_loss = self.criterion(self.discriminator(real), self.ones) + self.criterion(
            self.discriminator(fake.detach()), self.zeros
        )
        d_loss.backward()
        self.opt_d.step()
        # Generator: fool the updated discriminator.
        self.opt_g.zero_grad()
        g_loss = self.criterion(self.discriminator(fake), self.ones)
        g_loss.backward()
        self.opt_g.step()
        return d_loss, g_loss

    def run(self, num_steps):
        for _ in range(num_steps):
            d_loss, g_loss = self.step()
        return float(d_loss.detach()), float(g_loss.detach())


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


def _timed(fn, num_steps):
    t0, c0 = time.perf_counter(), time.process_time()
    fn(num_steps)
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
    torch_gan = TorchGan(onehot, seed=args.seed)
    torch_dense = TorchGan(dense, seed=args.seed) if dense.shape[1] != onehot.shape[1] else None
    jax_gan = JaxGan(space, real, seed=args.seed)

    t0 = time.perf_counter()
    jax_gan.run(args.steps)  # compiles
    first_call = time.perf_counter() - t0
    jax_gan.run(args.steps)
    torch_gan.run(args.warmup_steps)
    if torch_dense is not None:
        torch_dense.run(args.warmup_steps)

    # Its default thread count and one thread (the module docstring says why).
    default_threads = torch.get_num_threads()
    thread_counts = (
        sorted({default_threads, 1}, reverse=True) if args.threads == 0 else [args.threads]
    )

    def run_torch(gan, threads):
        def go(num_steps):
            torch.set_num_threads(threads)
            gan.run(num_steps)

        return go

    sides = [("jax", jax_gan.run)] + [
        (f"torch_{t}t", run_torch(torch_gan, t)) for t in thread_counts
    ]
    if torch_dense is not None:
        sides += [(f"torchdense_{t}t", run_torch(torch_dense, t)) for t in thread_counts]
    walls = {side: [] for side, _ in sides}
    cpus = {side: [] for side, _ in sides}
    loads = []
    for r in range(args.repeats):
        loads.append(bc.load())
        shift = r % len(sides)  # rotate which side goes first
        for side, fn in sides[shift:] + sides[:shift]:
            wall, cpu = _timed(fn, args.steps)
            walls[side].append(wall)
            cpus[side].append(cpu)
        bc.log(
            f"  {name} repeat {r}: "
            + ", ".join(f"{side} {args.steps / walls[side][-1]:8.1f} steps/s" for side, _ in sides)
            + f", load {loads[-1]:.2f}"
        )
    torch.set_num_threads(default_threads)
    sps = {side: args.steps / statistics.median(w) for side, w in walls.items()}
    torch_sides = [side for side, _ in sides if side.startswith("torch_")]
    dense_sides = [side for side, _ in sides if side.startswith("torchdense_")]
    best_torch = max(torch_sides, key=sps.get)
    best_walls = [min(ws) for ws in zip(*(walls[t] for t in torch_sides), strict=True)]
    paired = bc.paired_ratios(best_walls, walls["jax"])
    macs = _macs_per_step(onehot.shape[1])  # what both baseline sides compute
    return {
        "space": name,
        "onehot_size": int(onehot.shape[1]),
        "steps_per_call": args.steps,
        "jax_steps_per_s": sps["jax"],
        "torch_steps_per_s": sps[best_torch],
        "torch_baseline": best_torch,
        "torch_steps_per_s_by_threads": {side: sps[side] for side in torch_sides},
        "ratio": sps["jax"] / sps[best_torch],
        "dense_onehot_size": int(dense.shape[1]),
        "torch_dense_steps_per_s": max((sps[side] for side in dense_sides), default=None),
        "ratio_vs_dense": sps["jax"] / max(sps[side] for side in dense_sides)
        if dense_sides
        else None,
        "paired_ratio_median": statistics.median(paired),
        "jax_compile_s": max(first_call - statistics.median(walls["jax"]), 0.0),
        "jax_first_call_s": first_call,
        "wall_s": walls,
        "cpu_per_wall": cpus,
        "loadavg_1min": loads,
        "dense_macs_per_step": macs,
        "jax_gflops": 2 * macs * sps["jax"] / 1e9,
        "torch_gflops": 2 * macs * sps[best_torch] / 1e9,
    }


def markdown(results):
    header = [
        "space",
        "one-hot size",
        "JAX steps/s",
        "PyTorch steps/s (threads)",
        "PyTorch, each thread count",
        "ratio (medians)",
        "paired ratio",
        "PyTorch at dense size (ratio)",
        "JAX compile (s)",
        "JAX GFLOP/s",
        "load (1-min avg)",
    ]
    rows = []
    for r in results:
        by_threads = r["torch_steps_per_s_by_threads"].items()
        dense = "-"
        if r["torch_dense_steps_per_s"]:
            dense = (
                f"{r['dense_onehot_size']}: {r['torch_dense_steps_per_s']:.0f} "
                f"({r['ratio_vs_dense']:.2f})"
            )
        rows.append(
            [
                r["space"],
                str(r["onehot_size"]),
                f"{r['jax_steps_per_s']:.0f}",
                f"{r['torch_steps_per_s']:.0f} ({r['torch_baseline'].split('_')[1]})",
                ", ".join(f"{k.split('_')[1]}: {v:.0f}" for k, v in by_threads),
                f"{r['ratio']:.2f}",
                f"{r['paired_ratio_median']:.2f}",
                dense,
                f"{r['jax_compile_s']:.1f}",
                f"{r['jax_gflops']:.1f}",
                bc.load_range(r["loadavg_1min"]),
            ]
        )
    return bc.markdown_table(header, rows)


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
        help="PyTorch threads (0: time both its default and 1 thread; the faster is the baseline)",
    )
    args = parser.parse_args(argv)
    bc.require_positive(parser, args, "steps", "repeats")
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    unknown = [s for s in spaces if s not in SPACES]
    if unknown or not spaces:
        parser.error(f"unknown spaces {unknown}; choose from {SPACES}")

    bc.log(f"load average before: {os.getloadavg()}")
    results = [bench_space(s, args) for s in spaces]
    print(markdown(results))
    print()
    print(
        f"Medians of {args.repeats} interleaved repeats of {args.steps} steps; JAX compile "
        f"excluded. {os.cpu_count()} CPUs; PyTorch baseline = the faster of its thread counts; "
        f"load average after {tuple(round(x, 2) for x in os.getloadavg())}. GFLOP/s counts the "
        "dense MLP multiply-adds only."
    )
    bc.write_json(args.out, {"results": results, **bc.environment(), "args": vars(args)}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
