"""The plot of mAP against the BoostLU alpha used at inference (numbers: ``pamc.engine.evaluate_at_alphas``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pamc.engine.checkpoint import atomic_write


def plot_alpha_sweep(rows: Sequence[dict[str, Any]], path: str | Path, *, train_alpha: float | None = None,
                     title: str | None = None, dpi: int = 80) -> None:
    """Line plot of mAP against inference alpha, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    alphas = [r["alpha"] for r in rows]
    maps = [r["map"] for r in rows]
    ax.plot(alphas, maps, marker="o")
    for a, m in zip(alphas, maps):
        ax.annotate(f"{m:.1f}", (a, m), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if train_alpha is not None:
        ax.axvline(train_alpha, color="gray", linestyle=":", linewidth=1, label=f"training alpha {train_alpha:g}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("BoostLU alpha at inference")
    ax.set_ylabel("mAP (%)")
    ax.set_title(title or "mAP vs inference alpha", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
