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
