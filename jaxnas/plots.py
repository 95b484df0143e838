"""PNG plots of a search: final op weights per edge, and their evolution over steps."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def arch_heatmap(weights: Mapping[str, np.ndarray], primitives: Sequence[str],
                 path: str) -> None:
    """One heatmap per cell type: rows are edges, columns ops, colour the op weight."""
    plt = _pyplot()
    names = list(weights)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 6), squeeze=False)
    for ax, name in zip(axes[0], names):
        w = np.asarray(weights[name])
        im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(w.max(), 1e-6))
        ax.set_title(f"{name} cell: op weights")
        ax.set_xticks(range(len(primitives)), primitives, rotation=60, ha="right")
        ax.set_yticks(range(w.shape[0]))
        ax.set_ylabel("edge")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def arch_evolution(steps: Sequence[int], history: Sequence[Mapping[str, np.ndarray]],
                   primitives: Sequence[str], path: str) -> None:
    """Per cell type, the op weight averaged over edges, against the search step."""
    plt = _pyplot()
    if not history:
        return
    names = list(history[0])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        mean = np.stack([np.asarray(h[name]).mean(axis=0) for h in history])  # (T, K)
        for k, op in enumerate(primitives):
            ax.plot(steps, mean[:, k], label=op)
        ax.set_title(f"{name} cell: mean op weight over edges")
        ax.set_xlabel("step")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fitness_curve(rounds: Sequence[int], best: Sequence[float], median: Sequence[float],
                  path: str) -> None:
    """Best and median population fitness per evolution round."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, best, label="best")
    ax.plot(rounds, median, label="median")
    ax.set_xlabel("round")
    ax.set_ylabel("fitness")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
