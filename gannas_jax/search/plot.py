"""The progress plot of a search: best-so-far score against queries."""

from __future__ import annotations

import os

import numpy as np


def plot_progress(scores: np.ndarray, path: str | os.PathLike, title: str = "") -> None:
    """Saves best-so-far score against queries, with every query's score behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = np.arange(1, len(scores) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter(q, scores, s=8, alpha=0.35, color="tab:gray", label="query score")
    ax.plot(q, np.maximum.accumulate(scores), color="tab:blue", lw=2, label="best so far")
    lo = np.percentile(scores, 5)
    ax.set_ylim(
        lo - 0.05 * (scores.max() - lo + 1e-9), scores.max() + 0.1 * (scores.max() - lo + 1e-9)
    )
    ax.set_xlabel("queries")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
