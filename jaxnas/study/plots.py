"""The study's plots (PNG and PDF) from study.json's payload: cosine to each reference
against the step, cosine against solver iterations, Hessian eigenvalues against the
step, and the op weights' trajectories."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from jaxnas.plots import _pyplot
from jaxnas.plots import _save as save

REFERENCE_TITLES = {"unrolled": "unrolled reference ({T} SGD step{s})",
                    "implicit": "implicit-function reference (solved to tol or CG/MINRES limit)"}


def _save(fig: Any, workdir: str, name: str) -> None:
    """DIR/name.png and name.pdf, as every search plot is saved."""
    save(fig, os.path.join(workdir, f"{name}.png"))


def cosine_vs_step(payload: Mapping[str, Any], workdir: str) -> None:
    plt = _pyplot()
    records = payload["records"]
    steps = [r["step"] for r in records]
    names = list(records[0]["estimators"])
    T = payload["settings"]["unrolled_steps"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, ref in zip(axes, ("unrolled", "implicit")):
        for name in names:
            ax.plot(steps, [r["estimators"][name][ref]["cosine"] for r in records],
                    marker="o", ms=3, label=name)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(REFERENCE_TITLES[ref].format(T=T, s="" if T == 1 else "s"))
        ax.set_xlabel("search step")
    axes[0].set_ylabel("cosine(estimate, reference)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    _save(fig, workdir, "study_cosine")
    plt.close(fig)


def cosine_vs_iterations(payload: Mapping[str, Any], workdir: str) -> None:
    plt = _pyplot()
    records = payload["records"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, color in (("cg", "C0"), ("neumann", "C1")):
        for i, r in enumerate(records):
            trace = r["solvers"][method]
            last = i == len(records) - 1
            kw = dict(color=color, alpha=1.0 if last else 0.25, lw=1.6 if last else 0.8,
                      label=f"{method} (last probe, step {r['step']})" if last else None)
            axes[0].plot(trace["cosine_vs_implicit"], **kw)
            axes[1].semilogy(np.maximum(trace["relative_residual"], 1e-12), **kw)
    axes[0].set_ylabel("cosine to the implicit reference")
    axes[1].set_ylabel("relative residual ||(H + dI) x - v|| / ||v||")
    for ax in axes:
        ax.set_xlabel("solver iteration (faint: earlier probes)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, workdir, "study_solvers")
    plt.close(fig)


def eigenvalues_vs_step(payload: Mapping[str, Any], workdir: str) -> None:
    plt = _pyplot()
    records = payload["records"]
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if "arch_hessian" in records[0]:
        axes[0].plot(steps, [r["arch_hessian"]["max"] for r in records], marker="o",
                     ms=3)
    axes[0].set_title("alpha Hessian: dominant eigenvalue (RobustDARTS)")
    axes[0].set_ylabel("lambda_max of d2 L_val / d alpha2")
    wh = [r["weight_hessian"] for r in records]
    axes[1].plot(steps, [w["max"] for w in wh], marker="o", ms=3, label="lambda_max")
    axes[1].plot(steps, [w["min"] for w in wh], marker="o", ms=3, label="lambda_min")
    axes[1].axhline(0.0, color="grey", lw=0.8)
    axes[1].set_title(f"weight Hessian of L_train ({wh[0]['method']})")
    axes[1].set_ylabel("eigenvalue")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("search step")
    fig.tight_layout()
    _save(fig, workdir, "study_eigenvalues")
    plt.close(fig)


def alpha_trajectories(payload: Mapping[str, Any], workdir: str) -> None:
    """Per cell type, each op's weight per edge (thin) and its mean over edges (bold)."""
    plt = _pyplot()
    records = payload["records"]
    steps = [r["step"] for r in records]
    prims = payload["primitives"]
    cells = list(records[0]["arch_weights"])
    fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        w = np.asarray([r["arch_weights"][cell] for r in records])  # (probes, E, K)
        for k, op in enumerate(prims[:w.shape[-1]]):
            ax.plot(steps, w[:, :, k], color=f"C{k}", alpha=0.2, lw=0.7)
            ax.plot(steps, w[:, :, k].mean(axis=1), color=f"C{k}", lw=2, label=op)
        ax.set_title(f"{cell} cell: op weights (thin: each edge, bold: mean)")
        ax.set_xlabel("search step")
        ax.set_ylabel("op weight")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    _save(fig, workdir, "study_alphas")
    plt.close(fig)


def write_all(payload: Mapping[str, Any], workdir: str) -> None:
    """Every study plot into `workdir` (nothing when there are no probes)."""
    if not payload["records"]:
        return
    cosine_vs_step(payload, workdir)
    cosine_vs_iterations(payload, workdir)
    eigenvalues_vs_step(payload, workdir)
    alpha_trajectories(payload, workdir)
