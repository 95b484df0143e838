"""`mixed_op="edges"`: every edge of a cell under one scanned body is the fused
formulation's function (logits and every gradient, all eight ops, float64), with and
without rematerialised edges."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces import cells
from jaxnas.supernet import darts as sn

STEPS = 2
DARTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "experiments", "darts_digits.py")


def _edges_params_from_fused(fused: dict, layers: int, steps: int) -> dict:
    """The fused network's parameters in the edge-scan layout: edge (src -> node j) is
    row fan_out(src).index(j) of the fused group `from_<src>`, stacked in row order."""
    out = dict(fused)
    reductions = cells.reduction_layers(layers)
    edges = [(src, j) for j in range(steps) for src in range(j + 2)]
    for i in range(layers):
        cell = dict(fused[f"cell_{i}"])

        def stack(todo):
            rows = [jax.tree.map(lambda a: a[cells.fan_out(src, steps).index(j)][None],
                                 cell[f"from_{src}"]) for src, j in todo]
            return {"edge": jax.tree.map(lambda *a: jnp.stack(a), *rows)}

        new = {k: v for k, v in cell.items() if not k.startswith("from_")}
        if i in reductions:
            new["input_edges"] = stack([e for e in edges if e[0] < 2])
            new["node_edges"] = stack([e for e in edges if e[0] >= 2])
        else:
            new["edges"] = stack(edges)
        out[f"cell_{i}"] = new
    return out


@pytest.mark.parametrize("remat_edges", [False, True])
def test_edges_equal_fused_in_value_and_every_gradient(remat_edges):
    layers = 3
    with jax.enable_x64(True):
        kw = dict(channels=2, layers=layers, steps=STEPS, multiplier=STEPS, num_classes=3)
        fused = sn.DartsSupernet(**kw, mixed_op="fused")
        edges = sn.DartsSupernet(**kw, mixed_op="edges", remat_edges=remat_edges)
        rng = np.random.default_rng(0)
        e = cells.num_edges(STEPS)
        w = {k: jnp.asarray(rng.dirichlet(np.ones(8), size=e)) for k in ("normal", "reduce")}
        x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)))
        v = jax.jit(lambda k: fused.init(k, x, w))(sn.init_key(0))
        v = jax.tree.map(lambda a: a.astype(jnp.float64), v)
        pe = _edges_params_from_fused(v["params"], layers, STEPS)
        own = jax.eval_shape(lambda: edges.init(sn.init_key(0), x, w))["params"]
        chex.assert_trees_all_equal_shapes(own, pe)
        be = jax.tree.map(jnp.zeros_like,
                          jax.eval_shape(lambda: edges.init(sn.init_key(0), x, w)))

        def grads(m, params, stats):
            def loss(params, w):
                logits, _ = m.apply({"params": params, "batch_stats": stats}, x, w,
                                    mutable=["batch_stats"])
                return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), logits
            return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, w)

        (gp, gw), logits = grads(fused, v["params"], v["batch_stats"])
        (gpe, gwe), logits_e = grads(edges, pe, be["batch_stats"])
        np.testing.assert_allclose(logits_e, logits, rtol=1e-11, atol=1e-12)
        chex.assert_trees_all_close(gpe, _edges_params_from_fused(gp, layers, STEPS),
                                    rtol=1e-9, atol=1e-11)
        chex.assert_trees_all_close(gwe, gw, rtol=1e-9, atol=1e-11)
        assert float(jnp.max(jnp.abs(gw["reduce"]))) > 0


def test_remat_edges_is_refused_off_the_edges_formulation_and_ignored_by_configs():
    """The supernet refuses remat_edges with another formulation; a config's
    model.remat_edges applies to "edges" only, so one override switches formulation."""
    import ml_collections

    from jaxnas import config as C
    from jaxnas import search
    from jaxnas.runners import supernets

    x = jnp.zeros((2, 8, 8, 3))
    w = {k: jnp.ones((cells.num_edges(1), 8)) / 8 for k in ("normal", "reduce")}
    with pytest.raises(ValueError, match="remat_edges needs mixed_op='edges'"):
        sn.DartsSupernet(channels=2, layers=3, steps=1, multiplier=1, mixed_op="fused",
                         remat_edges=True).init(jax.random.key(0), x, w)
    config = C.load_config(DARTS)
    C.apply_overrides(config, ["model.remat_edges=True", "model.mixed_op=fused"])
    search.validate_config(config)
    assert supernets.build(config.model, 10)[0].remat_edges is False
    C.apply_overrides(config, ["model.mixed_op=edges", "model.scan_cells=True"])
    search.validate_config(config)
    model = supernets.build(config.model, 10)[0]
    assert model.remat_edges and model.scan_cells and model.mixed_op == "edges"
    bad = C.load_config(DARTS)
    bad.model = ml_collections.ConfigDict({**bad.model.to_dict(), "scan_cells": "yes"})
    with pytest.raises(C.ConfigError, match="config.model.scan_cells='yes' is not allowed"):
        search.validate_config(bad)
