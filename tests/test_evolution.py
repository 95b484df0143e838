"""Tests for regularized evolution and random search (jaxnas.strategies.evolution)."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.strategies import evolution as ev

NUM_LAYERS, NUM_CHOICES = 6, 4
CHOICES = (NUM_CHOICES,) * NUM_LAYERS
TARGET = np.array([1, 3, 0, 2, 3, 1], np.int32)
P, S, CYCLES = 16, 4, 200


def matches(archs: jax.Array) -> jax.Array:
    """Number of layers equal to TARGET (optimum: NUM_LAYERS at TARGET)."""
    return jnp.sum(archs == TARGET, axis=1).astype(jnp.float32)


def _recording(fitness_fn, shapes: list):
    """fitness_fn that records the shape of every (traced) call in ``shapes``."""

    def fn(archs: jax.Array) -> jax.Array:
        shapes.append(tuple(archs.shape))
        return fitness_fn(archs)

    return fn


_BASE_SHAPES: list = []
_base_fitness = _recording(matches, _BASE_SHAPES)


@pytest.fixture(scope="module")
def base() -> ev.EvolutionResult:
    return ev.regularized_evolution(_base_fitness, CHOICES, population_size=P,
                                    sample_size=S, num_cycles=CYCLES,
                                    key=jax.random.key(0))


def _np(result: ev.EvolutionResult):
    return (np.asarray(result.history.archs), np.asarray(result.history.fitness),
            np.asarray(result.parents))


def _check_lineage(result: ev.EvolutionResult, population_size: int,
                   batch_size: int) -> None:
    """Each child's recorded parent was alive when its round started and differs
    from it in exactly one layer."""
    archs, _, parents = _np(result)
    assert np.all(parents[:population_size] == -1)
    for i in range(population_size, len(archs)):
        start = population_size + (i - population_size) // batch_size * batch_size
        assert start - population_size <= parents[i] < start, (i, parents[i])
        assert np.sum(archs[i] != archs[parents[i]]) == 1, i


def _check_aging(result: ev.EvolutionResult, population_size: int) -> None:
    """Replaying the history through a deque gives the final population."""
    archs, fitness, _ = _np(result)
    alive = collections.deque(maxlen=population_size)
    for i in range(len(archs)):
        alive.append(i)
    pop, fit, birth = (np.asarray(x) for x in result.state.by_age())
    np.testing.assert_array_equal(birth, np.array(alive))
    np.testing.assert_array_equal(pop, archs[list(alive)])
    alive_fitness = fitness[list(alive)]
    np.testing.assert_array_equal(
        fit, np.where(np.isnan(alive_fitness), -np.inf, alive_fitness))


def test_finds_optimum_and_best_is_consistent(base: ev.EvolutionResult) -> None:
    np.testing.assert_array_equal(base.best_arch, TARGET)
    assert float(base.best_fitness) == NUM_LAYERS
    assert float(matches(base.best_arch[None])[0]) == float(base.best_fitness)
    archs, fitness, _ = _np(base)
    assert float(base.best_fitness) == fitness.max()
    # the best is the first evaluation reaching the maximum
    first = int(np.argmax(fitness))
    assert int(base.state.best_index) == first
    np.testing.assert_array_equal(archs[first], base.best_arch)


def test_history_shapes_dtypes_and_values(base: ev.EvolutionResult) -> None:
    archs, fitness, parents = _np(base)
    assert archs.shape == (P + CYCLES, NUM_LAYERS) and archs.dtype == np.int32
    assert fitness.shape == (P + CYCLES,) and fitness.dtype == np.float32
    assert parents.shape == (P + CYCLES,) and parents.dtype == np.int32
    assert base.best_arch.shape == (NUM_LAYERS,) and base.best_arch.dtype == np.int32
    assert base.best_fitness.shape == () and base.best_fitness.dtype == np.float32
    assert archs.min() >= 0 and archs.max() < NUM_CHOICES
    np.testing.assert_array_equal(fitness, np.asarray(matches(archs)))
    hist_archs, hist_fitness = base.history  # also unpacks as a pair
    assert hist_archs.shape == archs.shape and hist_fitness.shape == fitness.shape
    assert int(base.state.num_evals) == P + CYCLES


def test_children_mutate_exactly_one_layer_of_a_living_parent(
        base: ev.EvolutionResult) -> None:
    _check_lineage(base, P, 1)


def test_aging_final_population_is_last_evaluated(base: ev.EvolutionResult) -> None:
    _check_aging(base, P)


def test_whole_population_evaluated_in_one_call(base: ev.EvolutionResult) -> None:
    # traced once for the initial population and once for the scanned cycle
    assert _BASE_SHAPES == [(P, NUM_LAYERS), (1, NUM_LAYERS)]


def test_deterministic_per_key(base: ev.EvolutionResult) -> None:
    again = ev.regularized_evolution(_base_fitness, CHOICES, population_size=P,
                                     sample_size=S, num_cycles=CYCLES,
                                     key=jax.random.key(0))
    for a, b in zip(jax.tree_util.tree_leaves(base), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    other = ev.regularized_evolution(_base_fitness, CHOICES, population_size=P,
                                     sample_size=S, num_cycles=CYCLES,
                                     key=jax.random.key(1))
    assert not np.array_equal(other.history.archs, base.history.archs)
    assert len(_BASE_SHAPES) == 2  # no retrace for a new key


def test_ask_tell_loop_reproduces_regularized_evolution(
        base: ev.EvolutionResult) -> None:
    num_cycles = 12
    key = jax.random.key(0)
    k_init, k_loop = jax.random.split(key)
    state = jax.jit(lambda k: ev.init(k, CHOICES, population_size=P,
                                      sample_size=S))(k_init)
    assert int(state.num_evals) == 0
    ask, tell, fit = jax.jit(ev.ask), jax.jit(ev.tell), jax.jit(matches)
    state = tell(state, state.population, fit(state.population))
    keys = jax.random.split(k_loop, CYCLES + 1)
    archs, parents = [np.asarray(state.population)], [np.full(P, -1)]
    for i in range(num_cycles):
        children, state = ask(keys[i], state)
        assert children.shape == (1, NUM_LAYERS) and children.dtype == jnp.int32
        parents.append(np.asarray(state.parents))
        state = tell(state, children, fit(children))
        archs.append(np.asarray(children))
    n = P + num_cycles
    np.testing.assert_array_equal(np.concatenate(archs), base.history.archs[:n])
    np.testing.assert_array_equal(np.concatenate(parents), base.parents[:n])
    # tell: NaN stored as -inf, never the best; the first entry is best by default
    nan_state = tell(state, state.population, jnp.full((P,), jnp.nan))
    assert not np.any(np.isnan(nan_state.fitness))
    assert float(nan_state.best_fitness) == float(state.best_fitness)


def test_tournament_with_full_sample_picks_the_best_living_member() -> None:
    choices = (3, 1, 4, 2, 5)
    weights = jnp.array([1.0, 100.0, 0.1, 0.37, 0.013])
    pop = 8

    def weighted(archs: jax.Array) -> jax.Array:
        return jnp.sin(archs @ weights * 3.0) + archs.sum(axis=1) * 0.01

    result = ev.regularized_evolution(weighted, choices, population_size=pop,
                                      sample_size=pop, num_cycles=60,
                                      key=jax.random.key(3))
    archs, fitness, parents = _np(result)
    for i in range(pop, len(archs)):
        window = fitness[i - pop:i]
        assert fitness[parents[i]] == window.max(), i
    _check_lineage(result, pop, 1)
    _check_aging(result, pop)
    assert np.all(archs[:, 1] == 0)  # a single-choice layer never mutates
    assert np.all(archs < np.array(choices))


def test_batched_variant() -> None:
    shapes: list = []
    pop, batch, cycles = 12, 4, 42  # 10 full rounds and a last one of 2
    result = ev.regularized_evolution(_recording(matches, shapes), CHOICES,
                                      population_size=pop, sample_size=3,
                                      num_cycles=cycles, key=jax.random.key(5),
                                      batch_size=batch)
    assert shapes == [(pop, NUM_LAYERS), (batch, NUM_LAYERS), (2, NUM_LAYERS)]
    assert result.history.archs.shape == (pop + cycles, NUM_LAYERS)
    _check_lineage(result, pop, batch)
    _check_aging(result, pop)
    archs, fitness, _ = _np(result)
    assert float(result.best_fitness) == fitness.max()
    np.testing.assert_array_equal(fitness, np.asarray(matches(archs)))


def _nan_fitness(archs: jax.Array) -> jax.Array:
    """matches(), but NaN whenever layer 0 is right (so at most 5 is finite)."""
    return jnp.where(archs[:, 0] == TARGET[0], jnp.nan, matches(archs))


def test_nan_fitness_never_wins() -> None:
    result = ev.regularized_evolution(_nan_fitness, CHOICES, population_size=P,
                                      sample_size=S, num_cycles=150,
                                      key=jax.random.key(2))
    _, fitness, _ = _np(result)
    assert np.isnan(fitness).any()
    assert float(result.best_fitness) == np.nanmax(fitness) == NUM_LAYERS - 1
    assert not np.isnan(_nan_fitness(result.best_arch[None])[0])
    assert not np.isnan(np.asarray(result.state.fitness)).any()


def _budget(archs: jax.Array) -> jax.Array:
    """A 'parameter budget': the choice indices may sum to at most 7."""
    return archs.sum(axis=1) <= 7


def _size(archs: jax.Array) -> jax.Array:
    return archs.sum(axis=1).astype(jnp.float32)


def test_constraint_respected() -> None:
    result = ev.regularized_evolution(_size, CHOICES, population_size=P,
                                      sample_size=S, num_cycles=120,
                                      key=jax.random.key(4), constraint_fn=_budget)
    archs, _, parents = _np(result)
    assert np.all(archs.sum(axis=1) <= 7)
    assert float(result.best_fitness) == 7.0
    diffs = np.array([np.sum(archs[i] != archs[parents[i]])
                      for i in range(P, len(archs))])
    assert np.all(diffs <= 1)         # a mutation, or the parent when none fit
    assert np.mean(diffs == 1) > 0.5  # ... but mostly real mutations


def test_mutation_and_tournament_distributions() -> None:
    choices = (3, 1, 4, 5)
    population = jnp.array([[0, 0, 0, 0], [1, 0, 1, 1], [2, 0, 2, 2], [0, 0, 3, 4]],
                           jnp.int32)
    num_draws = 6000

    @jax.jit
    def draw(key: jax.Array) -> tuple[jax.Array, ev.EvolutionState]:
        k_init, k_ask = jax.random.split(key)
        state = ev.init(k_init, choices, population_size=4, sample_size=2)
        state = ev.tell(state, population, jnp.array([0.0, 1.0, 2.0, 3.0]))
        keys = jax.random.split(k_ask, num_draws)
        return jax.vmap(ev.ask, (0, None))(keys, state)

    children, asked = draw(jax.random.key(9))
    children, parent = np.asarray(children[:, 0]), np.asarray(asked.parents[:, 0])
    # tournament of 2 out of 4: the member of rank j (0-based) wins w.p. j / 6
    freq = np.bincount(parent, minlength=4) / num_draws
    np.testing.assert_allclose(freq, np.arange(4) / 6, atol=0.025)
    parents = np.asarray(population)[parent]
    changed = children != parents
    assert np.all(changed.sum(axis=1) == 1) and not changed[:, 1].any()
    # the layer is uniform over the 3 mutable layers ...
    layer_freq = changed.sum(axis=0)[[0, 2, 3]] / num_draws
    np.testing.assert_allclose(layer_freq, 1 / 3, atol=0.03)
    # ... and the new value uniform over the other choices of that layer
    hit = changed[:, 3] & (parents[:, 3] == 4)
    new = np.bincount(children[hit, 3], minlength=5)
    assert new[4] == 0
    np.testing.assert_allclose(new[:4] / hit.sum(), 0.25, atol=0.06)


def test_random_search() -> None:
    shapes: list = []
    fitness_fn = _recording(_nan_fitness, shapes)
    result = ev.random_search(fitness_fn, CHOICES, num_samples=50,
                              key=jax.random.key(6), batch_size=16,
                              constraint_fn=_budget)
    assert shapes == [(16, NUM_LAYERS), (2, NUM_LAYERS)]  # 3 full calls + 2 left
    assert isinstance(result, ev.EvolutionResult)
    archs, fitness, parents = _np(result)
    assert archs.shape == (50, NUM_LAYERS) and fitness.shape == (50,)
    assert np.all(parents == -1) and result.state is None
    assert np.all(archs.sum(axis=1) <= 7)  # constraint respected
    assert np.isnan(fitness).any()
    clean = np.where(np.isnan(fitness), -np.inf, fitness)
    assert float(result.best_fitness) == np.nanmax(fitness)
    np.testing.assert_array_equal(result.best_arch, archs[np.argmax(clean)])
    np.testing.assert_array_equal(fitness, np.asarray(_nan_fitness(archs)))
    assert len({a.tobytes() for a in archs}) > 25  # independent draws
    again = ev.random_search(fitness_fn, CHOICES, num_samples=50,
                             key=jax.random.key(6), batch_size=16,
                             constraint_fn=_budget)
    np.testing.assert_array_equal(again.history.archs, archs)
    assert len(shapes) == 2  # same function objects: compiled once


def test_argument_validation() -> None:
    with pytest.raises(TypeError):
        ev.regularized_evolution(matches, 4, population_size=4, sample_size=2,
                                 num_cycles=3, key=jax.random.key(0))
    with pytest.raises(ValueError):
        ev.init(jax.random.key(0), CHOICES, population_size=4, sample_size=5)
    with pytest.raises(ValueError):
        ev.init(jax.random.key(0), CHOICES, population_size=4, sample_size=2,
                batch_size=5)
    with pytest.raises(ValueError):
        ev.init(jax.random.key(0), (4, 0), population_size=4, sample_size=2)
