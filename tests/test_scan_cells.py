"""Scanned runs of cells (`DartsSupernet(scan_cells=True)`): which cells share a body,
and the same function, gradients and BatchNorm statistics as one module per cell."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces import cells
from jaxnas.supernet import darts as sn

LAYERS = 11  # reductions at 3 and 7: runs (5, 7) and (9, 11)


def _maximal_equal_runs(layers: int) -> list[tuple[int, int]]:
    """Brute force: maximal runs (>= 2) of consecutive cells, from cell 2 on, whose
    variables have identical shapes (so whose inputs have identical channels)."""
    model = sn.DartsSupernet(channels=2, layers=layers, steps=1, multiplier=1,
                             num_classes=3, mixed_op="loop",
                             primitives=("sep_conv_3x3",))
    arch = {k: jnp.ones((1, 1)) for k in ("normal", "reduce")}
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((2, 8, 8, 3)), arch))
    sig = [jax.tree.map(lambda a: a.shape, shapes["params"][f"cell_{i}"])
           for i in range(layers)]
    reductions = cells.reduction_layers(layers)
    runs, i = [], 2
    while i < layers:
        j = i + 1
        while j < layers and sig[j] == sig[i] and j not in reductions:
            j += 1
        if j - i >= 2 and i not in reductions:
            runs.append((i, j))
        i = j
    return runs


def test_steady_runs_are_the_maximal_runs_of_equal_cells():
    assert sn.steady_runs(8) == []      # the default search depth: nothing to share
    assert sn.steady_runs(LAYERS) == [(5, 7), (9, 11)]
    assert sn.steady_runs(20) == [(2, 6), (8, 13), (15, 20)]
    for layers in range(3, 21):
        assert sn.steady_runs(layers) == _maximal_equal_runs(layers), layers


def _case(mixed_op):
    if mixed_op == "loop":
        prims = ("skip_connect", "avg_pool_3x3", "sep_conv_3x3")
        kw = dict(mixed_op="loop", primitives=prims, remat=True)
    else:
        prims, kw = sn.PRIMITIVES, dict(mixed_op=mixed_op)
    model = sn.DartsSupernet(channels=2, layers=LAYERS, steps=1, multiplier=1,
                             num_classes=3, **kw)
    rng = np.random.default_rng(0)
    arch = {k: jnp.asarray(rng.dirichlet(np.ones(len(prims)), size=2))
            for k in ("normal", "reduce")}
    if mixed_op == "edges":   # P-DARTS' skip dropout: one mask per cell and edge
        arch["skip_dropout"] = {"key": jax.random.PRNGKey(5), "rate": jnp.asarray(0.3)}
    if mixed_op == "loop":    # ProxylessNAS' sampled paths
        arch["paths"] = {"normal": jnp.asarray([[0, 2], [1, 2]], jnp.int32),
                         "reduce": jnp.asarray([[2, 1], [0, 1]], jnp.int32)}
    return model, arch


@pytest.mark.parametrize("mixed_op", ["scan", "edges", "loop"])
def test_scanned_cells_compute_the_same_function(mixed_op):
    """Logits, every gradient (weights and architecture) and the updated BatchNorm
    statistics of the scanned network equal the per-cell network's (float64, with the
    per-cell variables stacked by `scanned_cells_layout`); the scanned network's own
    initialisation has exactly that layout."""
    with jax.enable_x64(True):
        model, arch = _case(mixed_op)
        scanned = model.clone(scan_cells=True)
        x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 3)))
        v = jax.jit(lambda k: model.init(k, x, arch))(sn.init_key(0))
        v = jax.tree.map(lambda a: a.astype(jnp.float64), v)
        vs = sn.scanned_cells_layout(v, LAYERS)
        own = jax.eval_shape(lambda: scanned.init(sn.init_key(0), x, arch))
        assert jax.tree.structure(own) == jax.tree.structure(vs)
        chex.assert_trees_all_equal_shapes(own, vs)
        assert "cells_5_7" in vs["params"] and "cell_6" not in vs["params"]

        def grads(m, variables):
            def loss(params, w):
                logits, upd = m.apply({"params": params,
                                       "batch_stats": variables["batch_stats"]},
                                      x, {**arch, **w}, mutable=["batch_stats"])
                return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), (logits, upd)
            w = {k: arch[k] for k in ("normal", "reduce")}
            return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
                variables["params"], w)

        (gp, ga), (logits, upd) = grads(model, v)
        (gps, gas), (logits_s, upd_s) = grads(scanned, vs)
        np.testing.assert_allclose(logits_s, logits, rtol=1e-11, atol=1e-12)
        expect = sn.scanned_cells_layout({"params": gp, "batch_stats": upd["batch_stats"]},
                                         LAYERS)
        chex.assert_trees_all_close((gps, upd_s["batch_stats"]),
                                    (expect["params"], expect["batch_stats"]),
                                    rtol=1e-9, atol=1e-11)
        chex.assert_trees_all_close(gas, ga, rtol=1e-9, atol=1e-11)
        assert float(jnp.max(jnp.abs(ga["normal"]))) > 0
