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
