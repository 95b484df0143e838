"""Search plots: edge names by cell layout, PNG and PDF written for both figures."""

from __future__ import annotations

import numpy as np

from jaxnas import plots


def test_edge_labels_name_node_and_input():
    darts = plots.edge_labels(14)
    assert darts[:2] == ["n0 <- c[k-2]", "n0 <- c[k-1]"]
    assert darts[-1] == "n3 <- n2" and len(set(darts)) == 14
    assert plots.edge_labels(6) == ["1 <- 0", "2 <- 0", "2 <- 1", "3 <- 0", "3 <- 1",
                                    "3 <- 2"]   # NAS-Bench-201's edge order
    assert plots.edge_labels(4) == [f"edge {i}" for i in range(4)]


def test_heatmap_and_evolution_write_png_and_pdf(tmp_path):
    rng = np.random.default_rng(0)
    prims = [f"op{k}" for k in range(8)]
    w = {c: rng.dirichlet(np.ones(8), size=14) for c in ("normal", "reduce")}
    plots.arch_heatmap(w, prims, str(tmp_path / "arch_weights.png"))
    plots.arch_evolution([10, 20, 30], [w, w, w], prims,
                         str(tmp_path / "arch_evolution.png"), warmup_step=15)
    for name in ("arch_weights", "arch_evolution"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000
