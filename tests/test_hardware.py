"""Hardware-aware objectives: the expected table cost against the enumerated
expectation over every path, and its gradient through a softmax by autodiff of that
enumeration."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import hardware
from jaxnas.spaces import chain as space_lib


def _enumerated(probs: jnp.ndarray, table: np.ndarray) -> jnp.ndarray:
    """E[cost] = sum over every path of prod_l p[l, a_l] * sum_l table[l, a_l]."""
    num_layers, k = table.shape
    paths = np.array(list(itertools.product(range(k), repeat=num_layers)))  # [K^L, L]
    layers = np.arange(num_layers)
    weights = jnp.prod(probs[layers, paths], axis=1)
    costs = table[layers, paths].sum(axis=1)
    return jnp.sum(weights * costs)


def test_expected_cost_is_the_expectation_over_every_path_and_differentiates():
    rng = np.random.default_rng(0)
    table = rng.integers(1, 100, size=(3, 4)).astype(np.float64)
    alphas = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    probs = jax.nn.softmax(alphas, axis=-1)
    np.testing.assert_allclose(float(hardware.expected_cost(probs, table)),
                               float(_enumerated(probs, table)), rtol=1e-5)
    g = jax.grad(lambda a: hardware.expected_cost(jax.nn.softmax(a, -1), table))(alphas)
    g_ref = jax.grad(lambda a: _enumerated(jax.nn.softmax(a, -1), table))(alphas)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-4, atol=1e-4)
    # a batch of distributions keeps its leading axis; one-hot rows give table_cost
    onehot = jax.nn.one_hot(jnp.array([[0, 3, 1], [2, 2, 0]]), 4)
    cost = hardware.table_cost(0.0, table)(jnp.array([[0, 3, 1], [2, 2, 0]]))
    np.testing.assert_allclose(np.asarray(hardware.expected_cost(onehot, table)),
                               np.asarray(cost), rtol=1e-6)
    with pytest.raises(ValueError, match="table's shape"):
        hardware.expected_cost(probs[:2], table)


SPACE = space_lib.ChainSpace(stem_channels=4, widths=(6,), depths=(1,),
                             strides=(2,), head_channels=8, in_channels=1)


def test_latency_table_measured_saved_and_refused_for_another_space(tmp_path):
    record = hardware.measure_latency_table(SPACE, 3, 8, batch=2, repeats=2, warmup=1)
    fixed, table = hardware.latency_table(record)
    assert table.shape == (1, 6) and np.all(table > 0) and fixed > 0
    assert record["device_kind"] == jax.devices()[0].device_kind
    assert record["fixed"] == pytest.approx(sum(record["fixed_parts"].values()))
    path = str(tmp_path / "latency.json")
    hardware.save_latency_table(record, path)
    loaded = hardware.load_latency_table(path, SPACE, 3, 8)
    assert loaded == record
    cost = hardware.table_cost(*hardware.latency_table(loaded))
    np.testing.assert_allclose(float(cost(jnp.array([[4]]))[0]), fixed + table[0, 4],
                               rtol=1e-6)
    other = space_lib.ChainSpace(stem_channels=4, widths=(8,), depths=(1,),
                                 strides=(2,), head_channels=8, in_channels=1)
    with pytest.raises(ValueError, match="measured for space="):
        hardware.load_latency_table(path, other)
    # what a config's hardware section reads (proxy_search, the bilevel loss)
    import ml_collections
    section = ml_collections.ConfigDict({"cost": "latency", "latency_table": path})
    got_fixed, got = hardware.config_table(section, SPACE, 3, 8)
    assert got_fixed == fixed and np.array_equal(got, table)
    with pytest.raises(ValueError, match="measured for space="):
        hardware.config_table(section, other, 3, 8)
    with pytest.raises(ValueError, match="measured for image_size=8"):
        hardware.load_latency_table(path, SPACE, 3, 16)
    (tmp_path / "bad.json").write_text('{"table": []}')
    with pytest.raises(ValueError, match="not a latency table"):
        hardware.load_latency_table(str(tmp_path / "bad.json"))


@pytest.mark.slow
def test_additive_latency_model_ranks_whole_networks():
    """Spearman correlation of the table's prediction with whole networks' measured
    latency over paths that span the space (one choice everywhere, and mixtures).
    Process CPU time: on a shared CPU (load 12) wall-clock medians gave rho 0.50,
    the noise of other jobs rather than the model's error."""
    from scipy import stats

    space = space_lib.digits_space()
    record = hardware.measure_latency_table(space, 10, 8, batch=64, repeats=15,
                                            clock="process")
    predict = hardware.table_cost(*hardware.latency_table(record))
    rng = np.random.default_rng(0)
    paths = [[c] * space.num_layers for c in range(6)]
    paths += rng.integers(6, size=(4, space.num_layers)).tolist()
    measured = [hardware.measure_network_latency(space, p, 10, 8, batch=64, repeats=15,
                                                 clock="process") for p in paths]
    predicted = np.asarray(predict(jnp.asarray(paths, jnp.int32)))
    rho = stats.spearmanr(predicted, measured).statistic
    assert rho > 0.6, (rho, predicted, measured)


def test_with_expected_cost_adds_the_cost_under_the_relaxations_expected_weights():
    from jaxnas import relax

    table = np.array([[1.0, 5.0, 2.0], [4.0, 0.5, 3.0]])
    alphas = jnp.array([[0.3, -0.2, 0.1], [0.0, 0.4, -0.5]])
    fair = relax.sigmoid_relaxation(10.0)  # FairDARTS: its own zero-one penalty
    both = hardware.with_expected_cost(fair, table, 0.5)
    want = fair.penalty(alphas, 0) + 0.5 * jnp.sum(jax.nn.sigmoid(alphas) * table)
    np.testing.assert_allclose(float(both.penalty(alphas, 0)), float(want), rtol=1e-6)
    soft = hardware.with_expected_cost(relax.softmax_relaxation(), table, 2.0)
    g = jax.grad(lambda a: soft.penalty(a, 0))(alphas)
    p = jax.nn.softmax(alphas, -1)  # d/da_j sum_i p_i t_i = p_j (t_j - sum_i p_i t_i)
    want_g = 2.0 * p * (table - jnp.sum(p * table, -1, keepdims=True))
    np.testing.assert_allclose(np.asarray(g), np.asarray(want_g), rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # 35-45 s on the shared CPU; the penalty itself is tested above
def test_darts_on_the_chain_space_with_a_dominant_cost_derives_the_cheapest_path(
        tmp_path, digits_data_dir):
    """config.hardware through `jaxnas search`: with the parameter cost weighted far
    above the loss, first-order DARTS derives each layer's smallest block (the same
    run with weight 0 derived [0, 3]: the second layer's choice is the cost's)."""
    import json
    import os

    from jaxnas import config as config_lib
    from jaxnas import search

    cfg = config_lib.load_config(os.path.join(os.path.dirname(__file__), "..",
                                              "experiments", "darts_chain_digits.py"))
    config_lib.apply_overrides(cfg, [
        "model.stem_channels=4", "model.widths=(4,6)", "model.depths=(1,1)",
        "model.strides=(1,2)", "model.head_channels=8", "darts.warmup_epochs=0",
        "num_steps=12", "checkpoint_every=100", "data.batch_size=16",
        "hardware.weight=1.0", f"data.data_dir={digits_data_dir}"])
    search.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "genotype.json").read_text())
    space = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                                 strides=(1, 2), head_channels=8, in_channels=1)
    table = space_lib.param_table(space, 10)[1]
    genotype = saved["genotype"]
    assert genotype["path"] == [int(i) for i in table.argmin(axis=1)], genotype


@pytest.mark.parametrize("override, match", [
    ("model.space=darts", "config.hardware is not allowed with model.space='darts'"),
    ("hardware.cost=latency", "config.hardware.latency_table=''"),
    ("hardware.weight=-1.0", "config.hardware.weight=-1.0"),
])
def test_bilevel_hardware_section_refused_before_any_work(override, match):
    import os

    from jaxnas import config as config_lib
    from jaxnas import search
    from jaxnas.errors import ConfigError

    cfg = config_lib.load_config(os.path.join(os.path.dirname(__file__), "..",
                                              "experiments", "darts_chain_digits.py"))
    if override == "model.space=darts":  # the DARTS supernet's config with the section
        darts_cfg = config_lib.load_config(os.path.join(
            os.path.dirname(__file__), "..", "experiments", "darts_digits.py"))
        with darts_cfg.unlocked():
            darts_cfg.hardware = cfg.hardware
        cfg = darts_cfg
    else:
        config_lib.apply_overrides(cfg, [override])
    with pytest.raises(ConfigError, match=match):
        search.validate_config(cfg)
