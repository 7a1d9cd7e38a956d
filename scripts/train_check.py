"""Trains a population of configs/cifar10.py's children on synthetic CIFAR-10-shaped data.

Usage:
  python scripts/train_check.py [--steps 300] [--population 8] [--out F.json]

The data are 32x32x3 images of 10 classes (a fixed random template per class plus noise), so
nothing is downloaded and the children can learn: the check is that one compiled program trains
the config's space end to end on this backend (vmap with masked convolutions on accelerators,
lax.map on CPU, TrainConfig's "auto"), in how long, and that validation accuracy beats chance.
scripts/gpu_check.sh runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic(n_train=4096, n_eval=1024, seed=0, noise=2.0):
    """A CIFAR-10-shaped :class:`gannas_jax.data.Dataset`: class templates plus noise."""
    from gannas_jax.data import _normalize

    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(10, 32, 32, 3)).astype(np.float32)

    def split(n):
        y = rng.integers(0, 10, n)
        return templates[y] + noise * rng.normal(size=(n, 32, 32, 3)).astype(np.float32), y

    return _normalize("synthetic-cifar10", [split(n_train), split(n_eval), split(n_eval)], 10)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per child")
    p.add_argument("--population", type=int, default=8, help="children trained together")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    p.add_argument("--train-size", type=int, default=4096, help="synthetic training images")
    p.add_argument(
        "--eval-size", type=int, default=1024, help="synthetic validation and test images, each"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    for name in ("steps", "population", "train_size", "eval_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    import gannas_jax as gj

    gj.use_cpu_cores()
    import jax

    from configs import cifar10
    from gannas_jax.evaluate import TrainingEvaluator
    from gannas_jax.train import TrainConfig

    c = cifar10.get_config()
    space = gj.SequentialSpace(**c.space.to_dict())
    train = dict(c.train.to_dict(), steps=args.steps, population=args.population)
    if args.batch_size:
        train["batch_size"] = args.batch_size
    cfg = dataclasses.replace(TrainConfig(), **train)
    ev = TrainingEvaluator(space, synthetic(args.train_size, args.eval_size, args.seed), cfg)
    archs = np.asarray(space.sample(jax.random.key(args.seed), args.population))
    t0 = time.perf_counter()
    res = ev.evaluate(archs, jax.random.key(args.seed + 1))
    wall = time.perf_counter() - t0
    out = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "strategy": cfg.resolved_strategy(),
        "conv_impl": cfg.resolved_conv_impl(),
        "population": args.population,
        "steps": args.steps,
        "batch_size": cfg.batch_size,
        "wall_s": wall,
        "compile_s": ev.compile_seconds,
        "child_steps_per_s": args.population * args.steps / max(wall - ev.compile_seconds, 1e-9),
        "val_acc": [float(s) for s in res.scores],
        "test_acc": [float(s) for s in res.test],
        "archs": [space.to_string(a) for a in archs],
        "beats_chance": bool(np.mean(res.scores) > 20.0),  # chance is 10%
    }
    print(
        f"{out['backend']} ({len(out['devices'])} devices, {out['strategy']}/{out['conv_impl']}): "
        f"{args.population} children x {args.steps} steps in {wall:.1f} s "
        f"(compile {ev.compile_seconds:.1f} s); mean val acc {np.mean(res.scores):.1f}% "
        f"(chance 10%)"
    )
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
    return 0 if np.all(np.isfinite(res.scores)) else 1


if __name__ == "__main__":
    sys.exit(main())
