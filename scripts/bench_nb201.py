"""NAS-Bench-201 benchmark: S seeds of every algorithm on each dataset, at several budgets.

Usage:
  python scripts/bench_nb201.py --datasets cifar10 --seeds 30 --out results/nb201

Each (algorithm, seed) runs once to the largest budget; the smaller budgets read its first queries.
That equals separate runs at each budget, because no algorithm's asks depend on the budget left
(the last batch is only cut short). Settings come from configs/nb201.py, as for scripts/search.py,
and can be overridden with --set ganas.top_k=10 (repeatable).

Writes <out>.md (the markdown table, also printed), <out>.json (every run's best-so-far curves)
and <out>.png (mean regret against queries).
"""

import argparse
import ast
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import nb201 as nb201_config  # noqa: E402
from gannas_jax.evaluate.tabular import NB201Table, TabularEvaluator  # noqa: E402
from gannas_jax.runtime import use_cpu_cores  # noqa: E402
from gannas_jax.search import run_search, run_seeds  # noqa: E402
from gannas_jax.search.factory import ALGORITHMS, build_algorithm  # noqa: E402
from gannas_jax.spaces import NB201Space  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--datasets", default="cifar10", help="comma list of cifar10, cifar100, ImageNet16-120"
    )
    p.add_argument("--algorithms", default=",".join(ALGORITHMS))
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--budgets", default="25,50,100,150,300")
    p.add_argument("--benchmark-dir", default=None, help="default: $GANNAS_NB201_DIR")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. ganas.top_k=10",
    )
    p.add_argument("--out", default=None, help="output path prefix (writes .md, .json, .png)")
    p.add_argument(
        "--vectorize",
        action="store_true",
        help="run GanNas's seeds in lockstep, their GAN work batched over seeds as one program "
        "(gannas_jax.search.run_seeds; on CPU one XLA device per core)",
    )
    p.add_argument(
        "--compare-sequential",
        action="store_true",
        help="with --vectorize: also run GanNas's seeds one after another, and print both "
        "times, how many seeds asked the same queries, and both mean regrets",
    )
    return p.parse_args(argv)


def bootstrap_ci(x: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``x`` (resampling seeds)."""
    means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value over seeds (1.0 when all pairs tie)."""
    from scipy.stats import wilcoxon

    if np.allclose(a, b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue)


def curves_of(results, budget: int) -> dict[str, np.ndarray]:
    """Best-so-far validation score and its test score, ``float64[seeds, budget]`` each."""
    best_val = np.zeros((len(results), budget))
    best_test = np.zeros((len(results), budget))
    for s, res in enumerate(results):
        arg = np.zeros(budget, int)  # index of the best query so far
        for q in range(1, budget):
            arg[q] = q if res.scores[q] > res.scores[arg[q - 1]] else arg[q - 1]
        best_val[s], best_test[s] = res.scores[arg], res.tests[arg]
    return {"val": best_val, "test": best_test}


def run_curves(config, table: NB201Table, seeds: int, budget: int, bar, vectorize=False):
    """:func:`curves_of` the seeds' runs: one after another, or (``vectorize``, GanNas only)
    all seeds in lockstep with their GAN work batched (``gannas_jax.search.run_seeds``)."""
    algorithm = build_algorithm(config, NB201Space())
    evaluator = TabularEvaluator(table=table)
    if vectorize and config.algorithm == "ganas":
        results = run_seeds(algorithm, evaluator, budget, range(seeds), progress=False)
        bar.update(seeds)
        return curves_of(results, budget)
    results = []
    for s in range(seeds):
        results.append(run_search(algorithm, evaluator, budget, None, s, progress=False))
        bar.update(1)
    return curves_of(results, budget)


def compare(vec, seq, vec_s, seq_s, table, boot, budgets) -> dict:
    """--compare-sequential: both times, the seeds whose best-so-far curves are equal, and at
    each budget both mean regrets with the sequential one's 95% bootstrap interval."""
    same = [bool(np.array_equal(a, b)) for a, b in zip(vec["val"], seq["val"], strict=True)]
    out = {"vectorized_s": vec_s, "sequential_s": seq_s, "speedup": seq_s / vec_s}
    out["identical_seeds"], out["seeds"] = sum(same), len(same)
    out["budgets"] = {}
    for b in budgets:
        rv, rs = table.best_valid - vec["val"][:, b - 1], table.best_valid - seq["val"][:, b - 1]
        lo, hi = bootstrap_ci(rs, boot)
        out["budgets"][b] = {
            "vectorized": rv.mean(),
            "sequential": rs.mean(),
            "sequential_ci": (lo, hi),
            "within": bool(lo - 1e-12 <= rv.mean() <= hi + 1e-12),
        }
    return out


def compare_lines(compared) -> list[str]:
    lines = []
    for ds, c in compared.items():
        lines.append(
            f"GanNas on {ds}, {c['seeds']} seeds: vectorized {c['vectorized_s']:.1f} s, "
            f"sequential {c['sequential_s']:.1f} s ({c['speedup']:.2f}x); "
            f"{c['identical_seeds']} of {c['seeds']} seeds have the same best-so-far curve."
        )
        for b, r in c["budgets"].items():
            lo, hi = r["sequential_ci"]
            lines.append(
                f"  budget {b}: mean regret vectorized {r['vectorized']:.3f}, sequential "
                f"{r['sequential']:.3f} [{lo:.3f}, {hi:.3f}]: "
                + ("within" if r["within"] else "OUTSIDE")
                + " the sequential interval"
            )
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    if args.compare_sequential and not args.vectorize:
        print("bench_nb201.py: error: --compare-sequential needs --vectorize", file=sys.stderr)
        return 2
    if args.vectorize:
        use_cpu_cores()  # before JAX starts: the seeds are spread over one device per core

    budgets = sorted(int(b) for b in args.budgets.split(","))
    datasets = args.datasets.split(",")
    algorithms = args.algorithms.split(",")
    base = nb201_config.get_config()
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            pass
        node = base
        *path, last = k.split(".")
        try:
            for p in path:
                node = node[p]
            node[last] = v
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            print(
                f"bench_nb201.py: error: --set {item}: {' '.join(str(err).split())}",
                file=sys.stderr,
            )
            return 2

    rows, curves, opt, compared = [], {}, {}, {}
    boot = np.random.default_rng(0)
    t_start = time.perf_counter()
    bar = tqdm(total=len(datasets) * len(algorithms) * args.seeds, desc="nb201 bench", unit="run")
    for ds in datasets:
        table = NB201Table.load(ds, args.benchmark_dir)
        opt[ds] = table.best_valid
        for algo in algorithms:
            config = base.copy_and_resolve_references()
            config.algorithm = algo
            t0 = time.perf_counter()
            c = run_curves(config, table, args.seeds, budgets[-1], bar, args.vectorize)
            secs = time.perf_counter() - t0
            curves[(ds, algo)] = c
            if args.compare_sequential and algo == "ganas":
                t1 = time.perf_counter()
                seq = run_curves(config, table, args.seeds, budgets[-1], bar)
                compared[ds] = compare(c, seq, secs, time.perf_counter() - t1, table, boot, budgets)
            for b in budgets:
                v, t = c["val"][:, b - 1], c["test"][:, b - 1]
                lo, hi = bootstrap_ci(table.best_valid - v, boot)
                rows.append(
                    {
                        "dataset": ds,
                        "algorithm": algo,
                        "budget": b,
                        "val_mean": v.mean(),
                        "val_std": v.std(),
                        "test_mean": t.mean(),
                        "test_std": t.std(),
                        "regret": (table.best_valid - v).mean(),
                        "regret_ci": (lo, hi),
                        "hit_rate": float(np.mean(v >= table.best_valid - 1e-9)),
                        "seconds": secs,
                    }
                )
    bar.close()
    total = time.perf_counter() - t_start
    for r in rows:  # paired over seeds: the same seed gives the same first random queries
        if r["algorithm"] != "ganas" and (r["dataset"], "ganas") in curves:
            g = curves[(r["dataset"], "ganas")]["val"][:, r["budget"] - 1]
            v = curves[(r["dataset"], r["algorithm"])]["val"][:, r["budget"] - 1]
            r["p_vs_ganas"] = wilcoxon_p(g, v)
            r["ganas_better"] = bool(g.mean() > v.mean() and r["p_vs_ganas"] < 0.05)

    cols = ["dataset", "algorithm", "budget", "best val (mean ± std)", "its test (mean ± std)"]
    cols += ["regret [95% CI]", "hit rate", "GanNas vs it (Wilcoxon p)"]
    lines = [
        f"NAS-Bench-201, {args.seeds} seeds; best validation accuracy (%) found within the "
        "budget, the test accuracy of that architecture, mean regret to the best validation "
        "accuracy in the table with a 95% bootstrap interval over seeds, the share of seeds that "
        "found that optimum, and a paired two-sided Wilcoxon signed-rank test of GanNas's best "
        "validation accuracy against each baseline's (\"better\": GanNas's mean is higher and "
        "p < 0.05).",
        "",
        "| " + " | ".join(cols) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [r["dataset"], r["algorithm"], r["budget"]]
        cells += [f"{r['val_mean']:.2f} ± {r['val_std']:.2f}"]
        cells += [f"{r['test_mean']:.2f} ± {r['test_std']:.2f}"]
        lo, hi = r["regret_ci"]
        cells += [f"{r['regret']:.3f} [{lo:.3f}, {hi:.3f}]", f"{r['hit_rate']:.0%}"]
        if "p_vs_ganas" in r:
            word = "better" if r["ganas_better"] else "not better"
            cells += [f"{word} (p={r['p_vs_ganas']:.2g})"]
        else:
            cells += [""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    lines.append(
        "Optimum (best validation accuracy): "
        + ", ".join(f"{d} {v:.2f}" for d, v in opt.items())
        + f". Total wall time {total:.0f} s"
        + (
            f" ({sum(c['sequential_s'] for c in compared.values()):.0f} s of it the sequential "
            "comparison)."
            if compared
            else "."
        )
    )
    if compared:
        lines += ["", *compare_lines(compared)]
    table_md = "\n".join(lines)
    print(table_md)

    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table_md + "\n")
        out.with_suffix(".json").write_text(
            json.dumps(
                {
                    "seeds": args.seeds,
                    "budgets": budgets,
                    "overrides": args.set,
                    "seconds": total,
                    "vectorize": args.vectorize,
                    "compare_sequential": compared,
                    "rows": rows,
                    "curves": {
                        f"{d}/{a}": {k: v.tolist() for k, v in c.items()}
                        for (d, a), c in curves.items()
                    },
                }
            )
        )
        plot(curves, opt, datasets, algorithms, out.with_suffix(".png"))
        print(
            f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}"
        )
    return 0


def plot(curves, opt, datasets, algorithms, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(datasets), figsize=(5 * len(datasets), 3.8), dpi=120, squeeze=False
    )
    for ax, ds in zip(axes[0], datasets, strict=True):
        for algo in algorithms:
            regret = opt[ds] - curves[(ds, algo)]["val"]
            q = np.arange(1, regret.shape[1] + 1)
            m = regret.mean(0)
            rng = np.random.default_rng(0)
            means = regret[rng.integers(0, len(regret), size=(500, len(regret)))].mean(1)
            lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
            floor = 1e-3  # log scale: a zero regret (every seed at the optimum) is drawn here
            ax.plot(q, np.maximum(m, floor), label=algo)
            ax.fill_between(q, np.maximum(lo, floor), np.maximum(hi, floor), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("queries")
        ax.set_ylabel("mean regret, 95% bootstrap band (%)")
        ax.set_title(f"NAS-Bench-201 {ds}")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
