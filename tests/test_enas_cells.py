"""ENAS' cells on the DARTS space: paths decode to the DARTS op weights of the cells they
name (against a hand construction from the genotype), the controller's choices match
each decision's range, and the ENAS step drives the DARTS supernet with them."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import search
from jaxnas.errors import ConfigError
from jaxnas.spaces import cells, genotypes
from jaxnas.spaces.enas_cells import EnasCellSpace
from jaxnas.strategies import reinforce
from jaxnas.strategies.enas import enas
from jaxnas.supernet.darts import DartsSupernet
from jaxnas.supernet.enas_cells import EnasCellSupernet


def _by_hand(g: genotypes.Genotype, steps: int) -> dict:
    """Op weights from a genotype's (op, input) pairs, node by node (numpy)."""
    out = {}
    for name, edges in (("normal", g.normal), ("reduce", g.reduce)):
        w = np.zeros((cells.num_edges(steps), len(genotypes.PRIMITIVES)), np.float32)
        for i, (op, src) in enumerate(edges):
            w[cells.edge_index(src, i // 2), genotypes.PRIMITIVES.index(op)] += 1.0
        out[name] = w
    return out


def test_paths_decode_to_the_cells_they_name():
    space = EnasCellSpace(steps=3)
    assert space.num_choices == (2, 7, 2, 7, 3, 7, 3, 7, 4, 7, 4, 7) * 2
    assert "none" not in space.ops and len(space.ops) == 7
    ctrl = reinforce.init(jax.random.key(0), space.num_choices, batch_size=64,
                          learning_rate=0.1)
    paths, _ = reinforce.ask(jax.random.key(1), ctrl)
    decoded = jax.jit(jax.vmap(space.arch_weights))(paths)
    for i, path in enumerate(np.asarray(paths)):
        g = space.genotype(path)
        genotypes.validate(g, steps=3)
        expect = _by_hand(g, 3)
        for name in ("normal", "reduce"):
            np.testing.assert_array_equal(np.asarray(decoded[name][i]), expect[name])
    # the same input twice: both ops on one edge row; the same op twice: weight 2
    path = np.zeros(space.num_layers, np.int32)
    path[[1, 3]] = 4                            # node 0: op 4 on input 0, twice
    w = space.arch_weights(path)["normal"]
    assert float(w[cells.edge_index(0, 0), genotypes.PRIMITIVES.index(space.ops[4])]) == 2
    with pytest.raises(ValueError, match="decision 0 = 2"):
        space.genotype(np.r_[2, np.zeros(space.num_layers - 1, int)])


def test_enas_step_drives_the_darts_supernet_with_the_sampled_cell():
    space = EnasCellSpace(steps=2)
    model = EnasCellSupernet(DartsSupernet(channels=2, num_classes=3, layers=3, steps=2,
                                           multiplier=2, mixed_op="loop"), space)
    strategy = enas(model, controller="factorised", controller_batch=2)
    k = jax.random.split(jax.random.key(0), 4)
    train = {"image": jax.random.normal(k[0], (4, 8, 8, 1)),
             "label": jax.random.randint(k[1], (4,), 0, 3)}
    val = {"image": jax.random.normal(k[2], (4, 8, 8, 1)),
           "label": jax.random.randint(k[3], (4,), 0, 3)}
    state = jax.jit(strategy.init)(jax.random.key(1), train["image"][:1])
    target = jnp.asarray([1, 3, 0, 6, 2, 0, 1, 5, 0, 2, 1, 1, 2, 4, 0, 0], jnp.int32)
    sure = state.replace(controller=state.controller.replace(
        logits=50.0 * jax.nn.one_hot(target, 7) - 1e4 * (
            jnp.arange(7)[None] >= jnp.asarray(space.num_choices)[:, None])))
    sure1, metrics = jax.jit(strategy.step)(sure, train, val)
    np.testing.assert_array_equal(np.asarray(strategy.derive(sure1)), np.asarray(target))
    assert np.isfinite(float(metrics["train_loss"]))
    # the trained path's supernet output is the DARTS supernet at its op weights
    variables = {"params": sure1.params, "batch_stats": sure1.batch_stats}
    via_path = model.apply(variables, val["image"], target, train=False)
    direct = model.supernet.apply(
        {"params": sure1.params["supernet"], "batch_stats": sure1.batch_stats["supernet"]},
        val["image"], _by_hand(space.genotype(np.asarray(target)), 2), train=False)
    np.testing.assert_allclose(np.asarray(via_path), np.asarray(direct), rtol=1e-6)


EXAMPLE = "experiments/enas_cells_digits.py"


def _config(*overrides):
    import os
    cfg = config_lib.load_config(os.path.join(os.path.dirname(__file__), "..", EXAMPLE))
    config_lib.apply_overrides(cfg, list(overrides))
    return cfg


def test_enas_cell_configs_checked_by_space():
    search.validate_config(_config())
    with pytest.raises(ConfigError, match="config.model.space='nb201' is not allowed"):
        search.validate_config(_config("model.space=nb201"))
    with pytest.raises(ConfigError, match="config.model.mixed_op='stacked'"):
        search.validate_config(_config("model.mixed_op=stacked"))
    with pytest.raises(ConfigError, match="multiplier=5"):
        search.validate_config(_config("model.multiplier=5"))


@pytest.mark.slow
def test_tiny_enas_cell_search_end_to_end(tmp_path, digits_data_dir):
    cfg = _config("model.channels=2", "model.layers=3", "model.steps=2",
                  "model.multiplier=2", "model.mixed_op=loop", "num_steps=4",
                  "eval_every=2", "checkpoint_every=2", "enas.controller_batch=2",
                  f"data.data_dir={digits_data_dir}")
    results = search.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "genotype.json").read_text())
    g = genotypes.from_json(saved["genotype"])
    genotypes.validate(g, steps=2)
    assert g == EnasCellSpace(steps=2).genotype(saved["path"])
    assert saved["genotype"] == results["genotype"] and saved["steps"] == 4
