"""Tests for FairNAS strict-fairness path sampling (jaxnas.strategies.fairnas)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.strategies.fairnas import accumulate_fair_grads, strict_fair_paths


@functools.lru_cache(maxsize=None)
def _drawer(num_draws: int, num_layers: int, num_choices: int):
    """A jitted sampler of num_draws path sets (cached to compile each shape once)."""

    @jax.jit
    def draw(key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, num_draws)
        return jax.vmap(lambda k: strict_fair_paths(k, num_layers, num_choices))(keys)

    return draw


_NUM_DRAWS = 3000  # one compiled sampler of 3000 x [4, 6] tables serves most tests


def _many(num_draws: int, num_layers: int, num_choices: int, seed: int = 0
          ) -> np.ndarray:
    """int32[num_draws, m, L] paths for num_draws deterministic keys."""
    return np.asarray(_drawer(num_draws, num_layers, num_choices)(
        jax.random.key(seed)))


@pytest.mark.parametrize("num_layers,num_choices", [(6, 4), (3, 7)])
def test_shape_dtype_and_columns_are_permutations(num_layers: int,
                                                  num_choices: int) -> None:
    num_draws = _NUM_DRAWS if (num_layers, num_choices) == (6, 4) else 64
    many = _many(num_draws, num_layers, num_choices)
    assert many.shape == (num_draws, num_choices, num_layers)
    assert many.dtype == np.int32
    expected = np.broadcast_to(np.arange(num_choices)[:, None],
                               many.shape)
    np.testing.assert_array_equal(np.sort(many, axis=1), expected)


def test_single_call_shape_dtype_and_legacy_keys() -> None:
    paths = strict_fair_paths(jax.random.key(3), 6, 4)
    assert paths.shape == (4, 6)
    assert paths.dtype == jnp.int32
    legacy = strict_fair_paths(jax.random.PRNGKey(0), num_layers=6, num_choices=4)
    assert legacy.shape == (4, 6) and legacy.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(np.asarray(legacy), axis=0),
                                  np.repeat(np.arange(4)[:, None], 6, axis=1))


def test_deterministic_and_key_dependent() -> None:
    a = strict_fair_paths(jax.random.key(1), 6, 4)
    b = strict_fair_paths(jax.random.key(1), 6, 4)
    c = strict_fair_paths(jax.random.key(2), 6, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    many = _many(_NUM_DRAWS, 6, 4, seed=5)
    np.testing.assert_array_equal(many, _many(_NUM_DRAWS, 6, 4, seed=5))
    # (4!)^6 ~ 2e8 possible tables: 3000 draws should (almost surely) all differ
    assert len({p.tobytes() for p in many}) == _NUM_DRAWS


def test_jittable_inside_user_jit() -> None:
    @jax.jit
    def step(key: jax.Array) -> jax.Array:
        paths = strict_fair_paths(key, 6, 4)
        return paths.sum(axis=0)

    # each column is a permutation of 0..3, so every column sums to 6
    np.testing.assert_array_equal(step(jax.random.key(0)), np.full(6, 6))
    explicit = jax.jit(strict_fair_paths, static_argnums=(1, 2))
    np.testing.assert_array_equal(explicit(jax.random.key(5), 6, 4),
                                  strict_fair_paths(jax.random.key(5), 6, 4))


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        strict_fair_paths(jax.random.key(0), 0, 3)
    with pytest.raises(ValueError):
        strict_fair_paths(jax.random.key(0), 3, 0)


def test_each_choice_uniform_in_each_row_position() -> None:
    num_draws, num_layers, num_choices = _NUM_DRAWS, 6, 4
    many = _many(num_draws, num_layers, num_choices, seed=11)
    # counts[row, layer, choice]
    counts = np.stack([(many == c).sum(axis=0) for c in range(num_choices)], -1)
    expected = num_draws / num_choices
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # each column is a uniform permutation: L * (m-1)^2 = 54 degrees of freedom;
    # P(chi2_54 > 120) < 1e-6
    assert chi2 < 120.0, chi2
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected)


def test_layers_are_independent() -> None:
    num_draws, num_choices = _NUM_DRAWS, 4
    many = _many(num_draws, 6, num_choices, seed=12)
    # joint distribution of (layer 0, layer 1) choices in path 0: uniform over 16
    pair = many[:, 0, 0] * num_choices + many[:, 0, 1]
    counts = np.bincount(pair, minlength=num_choices ** 2)
    expected = num_draws / num_choices ** 2
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 60.0, chi2  # 15 dof; P(chi2_15 > 60) < 1e-6


@pytest.mark.parametrize("sequential", [False, True], ids=["vmap", "scan"])
def test_accumulate_fair_grads_sums_over_paths(sequential: bool) -> None:
    num_layers, num_choices = 6, 4
    params = {"w": jnp.arange(num_layers * num_choices, dtype=jnp.float32)
              .reshape(num_layers, num_choices) / 10.0, "b": jnp.float32(0.5)}

    def loss_fn(p: dict, path: jax.Array, x: jax.Array) -> jax.Array:
        picked = p["w"][jnp.arange(num_layers), path]
        return jnp.sum((picked * x + p["b"]) ** 2)

    x = jnp.array([1.0, -2.0, 0.5, 0.25, -1.0, 3.0])
    paths = strict_fair_paths(jax.random.key(0), num_layers, num_choices)
    losses, grads = jax.jit(accumulate_fair_grads, static_argnums=0,
                            static_argnames="sequential")(
        loss_fn, params, paths, x, sequential=sequential)
    assert losses.shape == (num_choices,)
    want_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    reference = jax.jit(jax.value_and_grad(loss_fn))
    for i in range(num_choices):
        loss, g = reference(params, paths[i], x)
        np.testing.assert_allclose(losses[i], loss, rtol=1e-6)
        want_grads = jax.tree_util.tree_map(jnp.add, want_grads, g)
    for got, want in zip(jax.tree_util.tree_leaves(grads),
                         jax.tree_util.tree_leaves(want_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # strict fairness: every weight of the supernet receives gradient exactly once
    assert np.all(np.asarray(grads["w"]) != 0.0)


@pytest.mark.parametrize("sequential", [False, True], ids=["vmap", "scan"])
def test_accumulate_fair_grads_with_aux_and_one_batch_per_path(sequential: bool) -> None:
    """`args_axes` gives each path its own slice of an argument (FairNAS with a batch per
    path) while another is shared; `has_aux` returns each path's aux stacked."""
    num_layers, num_choices = 3, 4
    params = {"w": jnp.linspace(-1.0, 1.0, num_layers * num_choices)
              .reshape(num_layers, num_choices)}

    def loss_fn(p, path, scale, x):
        picked = p["w"][jnp.arange(num_layers), path]
        out = scale * jnp.sum(picked * x)
        return out ** 2, out

    xs = jnp.arange(num_choices * num_layers, dtype=jnp.float32).reshape(
        num_choices, num_layers) / 7.0
    paths = strict_fair_paths(jax.random.key(1), num_layers, num_choices)
    (losses, outs), grads = accumulate_fair_grads(
        loss_fn, params, paths, jnp.float32(1.5), xs, has_aux=True,
        args_axes=(None, 0), sequential=sequential)
    want = jax.tree_util.tree_map(jnp.zeros_like, params)
    for i in range(num_choices):
        (loss, out), g = jax.value_and_grad(loss_fn, has_aux=True)(
            params, paths[i], jnp.float32(1.5), xs[i])
        np.testing.assert_allclose((losses[i], outs[i]), (loss, out), rtol=1e-6)
        want = jax.tree_util.tree_map(jnp.add, want, g)
    np.testing.assert_allclose(grads["w"], want["w"], rtol=1e-5, atol=1e-7)
