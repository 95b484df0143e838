"""Plots of a search (PNG, and PDF beside it): final op weights per edge, and their
evolution over steps."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def edge_labels(num_edges: int) -> list[str]:
    """Readable names of a cell's edges: DARTS cells (2, 5, 9, 14, ... edges) as
    "n2 <- c[k-1]" (node <- input: the two cell inputs c[k-2], c[k-1], then earlier
    nodes), NAS-Bench-201's 6 as "1 <- 0" (node <- node, its edge order); else
    "edge i"."""
    labels, node = [], 0
    while len(labels) < num_edges:
        inputs = ["c[k-2]", "c[k-1]"] + [f"n{j}" for j in range(node)]
        labels += [f"n{node} <- {x}" for x in inputs]
        node += 1
    if len(labels) == num_edges:
        return labels
    if num_edges == 6:
        return [f"{i} <- {j}" for i in range(1, 4) for j in range(i)]
    return [f"edge {i}" for i in range(num_edges)]


def save_figure(fig, path: str, **kwargs) -> None:
    """`fig` written to `path` (local or a workdir URI: `jaxnas.workdir`), in the
    format its extension names."""
    from jaxnas import workdir as wd

    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with wd.open_binary(path, "wb") as f:
        fig.savefig(f, format=fmt, **kwargs)


def _save(fig, path: str) -> None:
    """`path` (PNG) and the same figure as PDF beside it, for papers."""
    save_figure(fig, path, dpi=120)
    root, ext = os.path.splitext(path)
    if ext.lower() == ".png":
        save_figure(fig, root + ".pdf")


def arch_heatmap(weights: Mapping[str, np.ndarray], primitives: Sequence[str],
                 path: str) -> None:
    """One heatmap per cell type: rows are edges (named node <- input), columns ops,
    one colour scale (op weight, 0 to the largest) for every panel; a dot marks each
    edge's largest op weight (what the edge would keep on its own)."""
    plt = _pyplot()
    names = list(weights)
    arrays = {n: np.asarray(weights[n]) for n in names}
    vmax = max(max(float(w.max()) for w in arrays.values()), 1e-6)
    rows = max(w.shape[0] for w in arrays.values())
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names) + 1.5, 2.5 + 0.3 * rows),
                             squeeze=False, layout="constrained")
    im = None
    for ax, name in zip(axes[0], names):
        w = arrays[name]
        im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=vmax)
        best = w.argmax(axis=1)
        ax.scatter(best, np.arange(w.shape[0]), marker="o", s=18, c="white",
                   edgecolors="black", linewidths=0.5)
        ax.set_title(f"{name} cell: op weights")
        ax.set_xticks(range(len(primitives)), primitives, rotation=60, ha="right")
        ax.set_yticks(range(w.shape[0]), edge_labels(w.shape[0]), fontsize=8)
        ax.set_xlabel("op (dot: the edge's largest weight)")
    axes[0][0].set_ylabel("edge (node <- input)")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, label="op weight")
    _save(fig, path)
    plt.close(fig)


def arch_evolution(steps: Sequence[int], history: Sequence[Mapping[str, np.ndarray]],
                   primitives: Sequence[str], path: str, *,
                   warmup_step: int | None = None) -> None:
    """Per cell type, each op's weight on every edge (thin) and averaged over edges
    (bold) against the search step; the weights-only warm-up shaded when given."""
    plt = _pyplot()
    if not history:
        return
    names = list(history[0])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names) + 2, 4), squeeze=False,
                             layout="constrained")
    for ax, name in zip(axes[0], names):
        w = np.stack([np.asarray(h[name]) for h in history])  # (T, E, K)
        for k, op in enumerate(primitives[:w.shape[-1]]):
            ax.plot(steps, w[:, :, k], color=f"C{k}", alpha=0.15, lw=0.6)
            ax.plot(steps, w[:, :, k].mean(axis=1), color=f"C{k}", lw=2, label=op)
        if warmup_step:
            ax.axvspan(min(steps[0], 0), warmup_step, color="grey", alpha=0.15,
                       label="warm-up (weights only)")
        ax.set_title(f"{name} cell: op weights (bold: mean over edges)")
        ax.set_xlabel("search step")
        ax.set_ylabel("op weight")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    _save(fig, path)
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
    save_figure(fig, path, dpi=100)
    plt.close(fig)
