"""`mixed_op="edges"`: every edge of a cell under one scanned body is the fused
formulation's function (logits and every gradient, all eight ops, float64)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces import cells
from jaxnas.supernet import darts as sn

STEPS = 2


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


@pytest.mark.parametrize("layers", [3])
def test_edges_equal_fused_in_value_and_every_gradient(layers):
    with jax.enable_x64(True):
        kw = dict(channels=2, layers=layers, steps=STEPS, multiplier=STEPS, num_classes=3)
        fused = sn.DartsSupernet(**kw, mixed_op="fused")
        edges = sn.DartsSupernet(**kw, mixed_op="edges")
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
