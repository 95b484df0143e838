"""NSGA-II: sorting against brute-force dominance, crowding against a hand loop, and
the search's front against the exhaustive front of a tiny space."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas.strategies import nsga2 as ns


def _brute_ranks(pts):
    n = len(pts)
    dom = [[bool(np.all(pts[i] >= pts[j]) and np.any(pts[i] > pts[j]))
            for j in range(n)] for i in range(n)]
    rank, left, k = [-1] * n, set(range(n)), 0
    while left:
        front = [j for j in left if not any(dom[i][j] for i in left)]
        for j in front:
            rank[j] = k
        left -= set(front)
        k += 1
    return np.array(rank)


def _brute_crowding(pts, rank):
    dist = np.zeros(len(pts))
    for r in set(rank.tolist()):
        idx = [i for i in range(len(pts)) if rank[i] == r]
        for m in range(pts.shape[1]):
            srt = sorted(idx, key=lambda i: pts[i, m])
            span = pts[srt[-1], m] - pts[srt[0], m]
            dist[srt[0]] = dist[srt[-1]] = np.inf
            for a, i, b in zip(srt, srt[1:], srt[2:]):
                if span > 0:
                    dist[i] += (pts[b, m] - pts[a, m]) / span
    return dist


def test_sorting_and_crowding_against_brute_force():
    rng = np.random.default_rng(0)
    jitted = jax.jit(lambda p: (ns.non_dominated_rank(p),
                                ns.crowding_distance(p, ns.non_dominated_rank(p))))
    for m in (2, 3):
        # integer points: ties and duplicates (neither of two equal points dominates)
        ints = rng.integers(0, 5, size=(40, m)).astype(np.float32)
        rank, _ = jitted(jnp.asarray(ints))
        np.testing.assert_array_equal(np.asarray(rank), _brute_ranks(ints))
        pts = rng.normal(size=(40, m)).astype(np.float32)
        rank, crowd = jitted(jnp.asarray(pts))
        want_rank = _brute_ranks(pts)
        np.testing.assert_array_equal(np.asarray(rank), want_rank)
        assert want_rank.max() >= 3  # several fronts were peeled
        np.testing.assert_allclose(np.asarray(crowd), _brute_crowding(pts, want_rank),
                                   rtol=1e-5)
    # a NaN objective counts as -inf: [nan, 5] is dominated by [1, 6] only
    nan = np.array([[1.0, 6.0], [np.nan, 5.0], [0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(ns.non_dominated_rank(nan)), [0, 1, 1])


COUNTS = (3, 3, 3, 3)
COST = np.array([1.0, 2.0, 3.0, 4.0])


def _objectives(archs):
    a = archs.astype(jnp.float32)
    return jnp.stack([a.sum(1), -(a * jnp.asarray(COST)).sum(1)], axis=1)


def test_nsga2_reaches_the_exhaustive_front():
    space = np.array(list(itertools.product(*(range(k) for k in COUNTS))), np.int32)
    objs = np.asarray(_objectives(jnp.asarray(space)))
    true_front = {tuple(o) for o, r in zip(objs, _brute_ranks(objs)) if r == 0}
    result = ns.nsga2(_objectives, COUNTS, population_size=16, num_generations=25,
                      key=jax.random.key(0))
    assert result.history_archs.shape == (16 * 26, 4)
    got = {tuple(o) for o in result.front_objectives}
    assert got == true_front  # 9 points: one per total, the cheapest layers first
    np.testing.assert_allclose(np.asarray(_objectives(jnp.asarray(result.front_archs))),
                               result.front_objectives)
    np.testing.assert_array_equal(np.asarray(result.rank),
                                  _brute_ranks(np.asarray(result.objectives)))


def test_bad_arguments_refused():
    with pytest.raises(ValueError, match="population_size"):
        ns.nsga2(_objectives, COUNTS, population_size=1, num_generations=1,
                 key=jax.random.key(0))
    with pytest.raises(ValueError, match="mutation_rate"):
        ns.nsga2(_objectives, COUNTS, population_size=4, num_generations=1,
                 key=jax.random.key(0), mutation_rate=2.0)


def test_distinct_count_against_numpy_unique():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pop = rng.integers(0, 2, size=(12, 3))          # small space: many duplicates
        mask = rng.random(12) < 0.6
        expect = len(np.unique(pop[mask], axis=0)) if mask.any() else 0
        assert int(ns.distinct_count(jnp.asarray(pop), jnp.asarray(mask))) == expect
