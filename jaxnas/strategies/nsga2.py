"""NSGA-II (Deb et al. 2002) over a discrete space, as NSGA-Net uses it: non-dominated
sorting and crowding distance in jnp, the whole search one jitted program.

Objectives are *maximised* (pass minus a latency or a parameter count):
``objectives_fn: int32[N, L] -> float[N, M]``; a NaN objective counts as -inf in
that objective (worse than any number there).  ``a`` dominates ``b`` when ``a >= b`` in every
objective and ``a > b`` in one.

A generation: ``P`` children, each a uniform crossover of two parents picked by
binary tournaments under the crowded comparison (lower rank first, then larger
crowding distance, both as assigned when the parents were selected), with each layer then redrawn uniformly with probability
``mutation_rate`` (default ``1 / L``) among its *other* choices; parents and children
(2P) are ranked and the best ``P`` by (rank, -crowding) survive.  The result holds
every evaluated architecture and the Pareto front among them (`pareto_front`).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.strategies.evolution import _as_num_choices
from jaxnas.types import Array

ObjectivesFn = Callable[[Array], Array]  # int32[N, L] -> float[N, M], maximised


def _clean(objs: Array) -> Array:
    objs = jnp.asarray(objs)
    return jnp.where(jnp.isnan(objs), -jnp.inf, objs)


def domination_matrix(objs: Array) -> Array:
    """bool[N, N]: ``D[i, j]`` = point i dominates point j (maximisation)."""
    objs = _clean(objs)
    ge = jnp.all(objs[:, None, :] >= objs[None, :, :], axis=-1)
    gt = jnp.any(objs[:, None, :] > objs[None, :, :], axis=-1)
    return ge & gt


def non_dominated_rank(objs: Array) -> Array:
    """int32[N]: the non-dominated front of each point (0: the Pareto front; front k:
    non-dominated once fronts 0..k-1 are removed), by peeling fronts off the
    domination counts in a `jax.lax.while_loop`."""
    dom = domination_matrix(objs)
    n = dom.shape[0]

    def cond(carry):
        rank, _, _ = carry
        return jnp.any(rank < 0)

    def body(carry):
        rank, count, k = carry
        front = (count == 0) & (rank < 0)
        rank = jnp.where(front, k, rank)
        count = count - jnp.sum(dom & front[:, None], axis=0)
        return rank, count, k + 1

    rank, _, _ = jax.lax.while_loop(
        cond, body, (jnp.full(n, -1, jnp.int32), jnp.sum(dom, axis=0), jnp.int32(0)))
    return rank


def crowding_distance(objs: Array, rank: Array) -> Array:
    """float[N]: Deb's crowding distance within each point's front.

    Per objective, the front's points sorted by value: the two extremes get +inf, the
    others ``(next - previous) / (max - min)`` of the front (0 when the front has one
    value); the distances of the objectives add up.
    """
    objs = _clean(objs)
    n, m = objs.shape
    dist = jnp.zeros(n, objs.dtype)
    for j in range(m):
        v = objs[:, j]
        order = jnp.lexsort((v, rank))          # by front, then by value
        vs, rs = v[order], rank[order]
        has_prev = jnp.concatenate([jnp.array([False]), rs[1:] == rs[:-1]])
        has_next = jnp.concatenate([rs[:-1] == rs[1:], jnp.array([False])])
        prev = jnp.concatenate([vs[:1], vs[:-1]])
        nxt = jnp.concatenate([vs[1:], vs[-1:]])
        hi = jax.ops.segment_max(v, rank, num_segments=n)[rs]
        lo = jax.ops.segment_min(v, rank, num_segments=n)[rs]
        span = hi - lo
        inner = jnp.where(span > 0, (nxt - prev) / jnp.where(span > 0, span, 1.0), 0.0)
        inner = jnp.where(jnp.isfinite(inner), inner, 0.0)
        contrib = jnp.where(has_prev & has_next, inner, jnp.inf)
        dist = dist.at[order].add(contrib)
    return dist


def distinct_count(population: Array, mask: Array) -> Array:
    """The number of distinct architectures (rows of int ``population`` [P, L]) among
    the rows where ``mask`` is true: a front's size without the duplicates a
    population may hold."""
    same = jnp.all(population[:, None, :] == population[None, :, :], axis=-1)
    earlier = jnp.tril(jnp.ones_like(same), k=-1)
    repeated = jnp.any(same & earlier & mask[None, :], axis=1)
    return jnp.sum(mask & ~repeated)


def survivors(objs: Array, n: int) -> tuple[Array, Array, Array]:
    """``(indices int32[n], rank, crowding)``: the best ``n`` points by (rank,
    -crowding), ties by index, and the rank and crowding of every point."""
    rank = non_dominated_rank(objs)
    crowd = crowding_distance(objs, rank)
    order = jnp.lexsort((jnp.arange(rank.shape[0]), -crowd, rank))
    return order[:n].astype(jnp.int32), rank, crowd


def _better(rank: Array, crowd: Array, i: Array, j: Array) -> Array:
    """Crowded comparison: whether i beats j (lower rank, then larger crowding)."""
    return (rank[i] < rank[j]) | ((rank[i] == rank[j]) & (crowd[i] > crowd[j]))


def offspring(key: Array, population: Array, rank: Array, crowd: Array,
              num_choices: tuple[int, ...], mutation_rate: float) -> Array:
    """``P`` children int32[P, L]: tournaments, uniform crossover, mutation."""
    p, num_layers = population.shape
    k_t, k_x, k_m, k_v = jax.random.split(key, 4)
    pairs = jax.random.randint(k_t, (2, p, 2), 0, p)       # two tournaments a child
    winners = jnp.where(_better(rank, crowd, pairs[..., 0], pairs[..., 1]),
                        pairs[..., 0], pairs[..., 1])      # [2, P]
    mum, dad = population[winners[0]], population[winners[1]]
    child = jnp.where(jax.random.bernoulli(k_x, 0.5, mum.shape), mum, dad)
    counts = jnp.asarray(num_choices, jnp.int32)
    mutate = jax.random.bernoulli(k_m, mutation_rate, child.shape) & (counts > 1)
    # uniform over the other count - 1 choices: draw in [0, count - 1), skip the old
    u = jax.random.uniform(k_v, child.shape)
    new = jnp.minimum((u * (counts - 1)).astype(jnp.int32), jnp.maximum(counts - 2, 0))
    new = new + (new >= child).astype(jnp.int32)
    return jnp.where(mutate, new, child).astype(jnp.int32)


def next_generation(key: Array, population: Array, objs: Array, rank: Array,
                    crowd: Array, *, objectives_fn: ObjectivesFn,
                    num_choices: tuple[int, ...], mutation_rate: float):
    """One generation: ``(population, objs, rank, crowd, children, child_objs)``
    after ``P`` children are made, evaluated, and the best ``P`` of parents and
    children survive (what `nsga2` scans; a search loop can call it step by step)."""
    population_size = population.shape[0]
    children = offspring(key, population, rank, crowd, num_choices, mutation_rate)
    child_objs = _evaluate(objectives_fn, children)
    pool = jnp.concatenate([population, children])
    pool_objs = jnp.concatenate([objs, child_objs.astype(objs.dtype)])
    keep, pool_rank, pool_crowd = survivors(pool_objs, population_size)
    # the survivors keep their fronts (a point of front k is dominated by one of
    # front k - 1, which survives); their crowding is the pool's, as in Deb et al.
    return (pool[keep], pool_objs[keep], pool_rank[keep], pool_crowd[keep], children,
            child_objs)


class NSGA2Result(NamedTuple):
    """Outcome of `nsga2`."""

    front_archs: np.ndarray        # int32[F, L]: the Pareto front of all evaluations
    front_objectives: np.ndarray   # float[F, M] (distinct architectures)
    population: Array              # int32[P, L]: the last generation's survivors
    objectives: Array              # float[P, M]
    rank: Array                    # int32[P]: their fronts (the same within the
    #                                population as in the pool they survived)
    history_archs: Array           # int32[P * (G + 1), L]: every evaluation in order
    history_objectives: Array      # float[P * (G + 1), M]


def _evaluate(objectives_fn: ObjectivesFn, archs: Array) -> Array:
    objs = jnp.asarray(objectives_fn(archs))
    if objs.ndim != 2 or objs.shape[0] != archs.shape[0]:
        raise ValueError(f"objectives_fn must map int32[N, L] to float[N, M]; got "
                         f"shape {objs.shape} for N = {archs.shape[0]}")
    return objs.astype(jnp.result_type(objs.dtype, jnp.float32))


@functools.partial(jax.jit, static_argnames=(
    "objectives_fn", "num_choices", "population_size", "num_generations",
    "mutation_rate"))
def _nsga2(key, objectives_fn, num_choices, population_size, num_generations,
           mutation_rate):
    k_init, k_loop = jax.random.split(key)
    keys = jax.random.split(k_init, len(num_choices))
    population = jnp.stack([jax.random.randint(k, (population_size,), 0, c)
                            for k, c in zip(keys, num_choices)], axis=1).astype(jnp.int32)
    objs = _evaluate(objectives_fn, population)
    _, rank, crowd = survivors(objs, population_size)

    def generation(carry, k):
        *carry, children, child_objs = next_generation(
            k, *carry, objectives_fn=objectives_fn, num_choices=num_choices,
            mutation_rate=mutation_rate)
        return tuple(carry), (children, child_objs)

    first = (population, objs)
    (population, objs, rank, _), (kids, kid_objs) = jax.lax.scan(
        generation, (population, objs, rank, crowd),
        jax.random.split(k_loop, num_generations))
    m = objs.shape[1]
    history = jnp.concatenate([first[0], kids.reshape(-1, len(num_choices))])
    history_objs = jnp.concatenate([first[1], kid_objs.reshape(-1, m)])
    return population, objs, rank, history, history_objs


def pareto_front(archs: np.ndarray, objs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct architectures that no evaluated point dominates, sorted by their
    first objective (descending), with their objectives."""
    archs, objs = np.asarray(archs), np.asarray(objs)
    archs, first = np.unique(archs, axis=0, return_index=True)
    objs = objs[first]
    on_front = np.asarray(non_dominated_rank(jnp.asarray(objs))) == 0
    archs, objs = archs[on_front], objs[on_front]
    order = np.lexsort((np.arange(len(objs)), -objs[:, 0]))
    return archs[order], objs[order]


def nsga2(objectives_fn: ObjectivesFn, num_choices: Sequence[int], *,
          population_size: int, num_generations: int, key: Array,
          mutation_rate: Optional[float] = None) -> NSGA2Result:
    """NSGA-II, jitted end to end (see the module docstring).

    Args:
      objectives_fn: pure, jittable int32[N, L] -> float[N, M], every objective
        maximised; called once per generation on ``population_size`` children.
      num_choices: per-layer choice counts.
      population_size: ``P`` (>= 2).
      num_generations: generations after the random initial population.
      key: PRNG key.
      mutation_rate: per-layer mutation probability; None means ``1 / L``.
    """
    counts = _as_num_choices(num_choices)
    if int(population_size) < 2:
        raise ValueError(f"population_size must be >= 2, got {population_size}")
    if int(num_generations) < 0:
        raise ValueError(f"num_generations must be >= 0, got {num_generations}")
    rate = 1.0 / len(counts) if mutation_rate is None else float(mutation_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mutation_rate must be in [0, 1], got {mutation_rate}")
    population, objs, rank, history, history_objs = _nsga2(
        key, objectives_fn, counts, int(population_size), int(num_generations), rate)
    front, front_objs = pareto_front(np.asarray(history), np.asarray(history_objs))
    return NSGA2Result(front, front_objs, population, objs, rank, history,
                       history_objs)
