"""The recall@K plot of an evaluation (evaluation.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from homefeed import atomic


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """Recall@K for K = 1..max_k, float `[max_k]`."""
    hits = np.bincount(np.minimum(ranks, max_k).astype(np.int64), minlength=max_k + 1)[:max_k]
    return np.cumsum(hits) / max(len(ranks), 1)


def write_plot(path: Path, curves: dict[str, np.ndarray], ks: tuple[int, ...], title: str) -> None:
    """Recall@K curves (`curves`: name -> target ranks; the first solid, the rest dashed) as a
    small PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_k = max(ks)
    x = np.arange(1, max_k + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for i, (label, ranks) in enumerate(curves.items()):
        style = "-" if i == 0 else "--"
        curve = recall_curve(ranks, max_k)
        ax.plot(x, curve, style, label=label)
        ax.plot(ks, curve[np.asarray(ks) - 1], "o", color=ax.lines[-1].get_color())
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    try:
        atomic.write_with(path, lambda temporary: fig.savefig(temporary, format="png"))
    finally:
        plt.close(fig)
