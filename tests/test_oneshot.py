"""SPOS and FairNAS strategies: fairness, uniform paths, fitness, parameter budget."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import oneshot
from jaxnas.strategies.fairnas import strict_fair_paths
from jaxnas.supernet.chain import ChainSupernet

SPACE = space_lib.ChainSpace(stem_channels=4, widths=(4, 6), depths=(1, 1),
                             strides=(1, 2), head_channels=8, in_channels=1)
L, K = SPACE.num_layers, max(SPACE.num_choices)
LR = 0.05
MODEL = ChainSupernet(SPACE, 3)
BATCH = {"image": jax.random.normal(jax.random.key(0), (8, 8, 8, 1)),
         "label": jnp.arange(8, dtype=jnp.int32) % 3}


def _chi2_p(counts: np.ndarray) -> float:
    """p-value of a chi-square test of uniformity of one row of counts."""
    from scipy import stats

    return float(stats.chisquare(counts).pvalue)


@pytest.fixture(scope="module")
def fair():
    # no weight decay or clipping: the first step from a fresh state is plain SGD
    strategy = oneshot.fairnas(MODEL, learning_rate=LR, weight_decay=0.0,
                               grad_clip=1e6)
    return strategy, jax.jit(strategy.init)(jax.random.key(1), BATCH["image"]), \
        jax.jit(strategy.step)


def test_fairnas_trains_every_choice_of_every_layer_once_per_step(fair):
    strategy, state, step = fair
    for i in range(1, 16):
        state, metrics = step(state, BATCH)
        np.testing.assert_array_equal(state.counts, np.full((L, K), i))
        assert np.isfinite(float(metrics["train_loss"]))
    assert int(state.step) == 15
    # one batch per path (a leading axis of m = K batches): the same invariant
    per_path = jax.tree.map(lambda a: jnp.stack([jnp.roll(a, i, 0) for i in range(K)]),
                            BATCH)
    state, _ = jax.jit(strategy.step)(state, per_path)
    np.testing.assert_array_equal(state.counts, np.full((L, K), 16))


def test_fair_step_is_one_update_with_the_sum_of_the_paths_gradients(fair):
    """The new weights are w - lr * (sum over the m paths of their gradients): the
    first step from a fresh state (momentum buffer zero) is plain SGD."""
    _, state, step = fair
    new, _ = step(state, BATCH)
    paths = strict_fair_paths(jax.random.split(state.key)[1], L, K)

    @jax.jit
    def grad(params, path):
        def loss(p):
            logits, _ = MODEL.apply({"params": p, "batch_stats": state.batch_stats},
                                    BATCH["image"], path, mutable=["batch_stats"])
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), BATCH["label"]])
        return jax.grad(loss)(params)

    total = jax.tree.map(jnp.zeros_like, state.params)
    for path in paths:  # a plain loop, one path at a time
        total = jax.tree.map(jnp.add, total, grad(state.params, path))
    expected = jax.tree.map(lambda w, g: w - LR * g, state.params, total)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 new.params, expected)


def test_uniform_path_is_uniform_and_independent_across_layers():
    keys = jax.random.split(jax.random.key(3), 6000)
    paths = np.asarray(jax.vmap(lambda k: oneshot.uniform_path(k, 4, K))(keys))
    assert paths.dtype == np.int32 and paths.min() >= 0 and paths.max() < K
    for layer in range(4):
        assert _chi2_p(np.bincount(paths[:, layer], minlength=K)) > 1e-3
    pairs = paths[:, 0] * K + paths[:, 1]  # joint of two layers: uniform over K^2
    assert _chi2_p(np.bincount(pairs, minlength=K * K)) > 1e-3


def test_spos_steps_train_the_sampled_path_from_the_state_key():
    strategy = oneshot.spos(MODEL, learning_rate=0.05)
    state = jax.jit(strategy.init)(jax.random.key(4), BATCH["image"])
    step = jax.jit(strategy.step)
    for i in range(180):
        expected = oneshot.uniform_path(jax.random.split(state.key)[1], L, K)
        before = np.asarray(state.counts)
        state, _ = step(state, BATCH)
        if i < 5:  # this step trained exactly the path its key split gives
            np.testing.assert_array_equal(np.asarray(state.counts) - before,
                                          np.eye(K, dtype=np.int32)[expected])
    counts = np.asarray(state.counts)
    np.testing.assert_array_equal(counts.sum(axis=1), 180)
    for layer in range(L):  # about 30 each; deterministic seed
        assert _chi2_p(counts[layer]) > 1e-3


@pytest.fixture(scope="module")
def trained(fair):
    strategy, state, step = fair
    for _ in range(3):
        state, _ = step(state, BATCH)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    calib = jax.random.normal(jax.random.key(5), (2, 8, 8, 8, 1))
    images = jax.random.normal(jax.random.key(6), (2, 8, 8, 8, 1))
    labels = jax.random.randint(jax.random.key(7), (2, 8), 0, 3)
    mask = jnp.arange(16).reshape(2, 8) < 13  # the last 3 rows are padding
    return variables, calib, {"image": images, "label": labels, "mask": mask}


def test_vmapped_population_fitness_equals_a_loop_over_members(trained):
    variables, calib, val = trained
    paths = jnp.asarray(np.random.default_rng(0).integers(0, K, (5, L)), jnp.int32)
    many = jax.jit(lambda p: oneshot.population_accuracy(MODEL, variables, p, calib,
                                                         val))(paths)
    one = jax.jit(lambda p: oneshot.path_accuracy(MODEL, variables, p, calib, val))
    loop = np.array([float(one(p)) for p in paths])
    np.testing.assert_allclose(np.asarray(many), loop, atol=1e-6)
    np.testing.assert_allclose(loop * 13, np.round(loop * 13), atol=1e-4)  # 13 rows


def test_recalibration_uses_the_mean_batch_statistics_of_the_path(trained):
    variables, calib, _ = trained
    path = jnp.array([3, 1], jnp.int32)
    stats = jax.jit(lambda p: oneshot.recalibrate(MODEL, variables, p, calib))(path)
    # the stem's BatchNorm sees conv(x): its mean is the mean of the batch means
    kernel = variables["params"]["stem"]["kernel"]
    conv = jax.vmap(lambda x: jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(1, 1), (1, 1)],
        dimension_numbers=("NHWC", "HWIO", "NHWC")))(calib)
    np.testing.assert_allclose(stats["stem"]["bn"]["mean"],
                               conv.mean(axis=(1, 2, 3)).mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    for l, choice in enumerate(np.asarray(path)):
        for name, value in stats[f"layer{l}"].items():
            old = variables["batch_stats"][f"layer{l}"][name]
            others = np.arange(K) != choice
            np.testing.assert_allclose(value[others], old[others], rtol=1e-6)
            assert not np.allclose(value[choice], old[choice])


def test_parameter_count_function_matches_count_params():
    space = space_lib.cifar_space()
    paths = np.random.default_rng(1).integers(0, K, (8, space.num_layers))
    counts = jax.jit(oneshot.param_count_fn(space, 10))(paths)
    assert [int(c) for c in counts] == [space_lib.count_params(space, p, 10)
                                        for p in paths]


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_search_respects_the_parameter_budget(method):
    space = space_lib.digits_space()
    count = oneshot.param_count_fn(space, 10)
    target = jnp.full((space.num_layers,), K - 1, jnp.int32)  # the largest path

    def fitness(paths):  # closer to the (infeasible) largest path is better
        return -jnp.sum(paths != target, axis=-1).astype(jnp.float32)

    fixed, table = space_lib.param_table(space, 10)
    budget = int(fixed + np.median(table, axis=1).sum())
    settings = oneshot.EvolutionSettings(method=method, population_size=8,
                                         sample_size=3, num_cycles=40, batch_size=4,
                                         max_params=budget)
    result = oneshot.search(fitness, space, 10, settings, jax.random.key(0))
    archs, fit = np.asarray(result.history.archs), np.asarray(result.history.fitness)
    assert len(fit) == 48
    feasible = np.isfinite(fit)
    assert feasible.any()
    assert np.all(np.asarray(count(archs))[feasible] <= budget)
    assert int(count(result.best_arch[None])[0]) <= budget
    assert float(result.best_fitness) == fit[feasible].max()
    with pytest.raises(ValueError, match="below the smallest path"):
        oneshot.param_budget(space, 10, 10)


def test_round_stats_follow_the_aging_population():
    settings = oneshot.EvolutionSettings(population_size=3, sample_size=2,
                                         num_cycles=4, batch_size=2)
    out = oneshot.round_stats([1.0, 5.0, 2.0, 0.0, 0.0, 3.0, -np.inf], settings)
    assert out["evaluations"] == [3, 5, 7]
    assert out["best"] == [5.0, 2.0, 3.0]        # windows [1,5,2], [2,0,0], [0,3]
    assert out["median"] == [2.0, 0.0, 1.5]
    assert out["best_so_far"] == [5.0, 5.0, 5.0]


def test_bad_evolution_settings_are_refused():
    with pytest.raises(ValueError, match="sample_size"):
        oneshot.spos(MODEL, evolution=oneshot.EvolutionSettings(population_size=2,
                                                                sample_size=3))
    with pytest.raises(ValueError, match="method"):
        oneshot.check_settings(oneshot.EvolutionSettings(method="anneal"))


def test_fair_paths_is_the_spaces_choice_count():
    from jaxnas.strategies import oneshot as oneshot_lib

    assert oneshot_lib.fair_paths(SPACE) == K == len(space_lib.CHOICES)
    assert oneshot_lib.fair_paths(space_lib.cifar_space()) == 6

    class Uneven:  # strict fairness needs one choice count for every layer
        num_choices = (6, 4)

    with pytest.raises(ValueError, match="one choice count"):
        oneshot_lib.fair_paths(Uneven())
