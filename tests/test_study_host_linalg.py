"""Tests for the study's host-side linear algebra (jaxnas.study.host_linalg) against
dense numpy: Krylov projections, explicit series, eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest

from jaxnas.study import host_linalg


def _sym(eigs, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigs), len(eigs))))
    return q @ np.diag(eigs) @ q.T


def test_solve_positive_definite_uses_cg():
    M = _sym([0.5, 1.0, 2.0, 3.0, 5.0, 8.0])
    v = np.random.default_rng(1).normal(size=6)
    x, info = host_linalg.solve(lambda y: M @ y, v, tol=1e-12, max_iters=100)
    assert info["solver"] == "cg" and info["relative_residual"] < 1e-12
    np.testing.assert_allclose(x, np.linalg.solve(M, v), rtol=1e-10)


def test_solve_indefinite_falls_back_to_minres():
    M = _sym([-3.0, -1.0, -0.2, 0.3, 2.0, 4.0], seed=2)
    v = np.random.default_rng(3).normal(size=6)
    x, info = host_linalg.solve(lambda y: M @ y, v, tol=1e-10, max_iters=3)
    # three CG steps cannot solve a 6-dim system; three MINRES steps neither, so the
    # better of the two is kept and its true residual reported
    assert info["relative_residual"] == pytest.approx(
        np.linalg.norm(M @ x - v) / np.linalg.norm(v), rel=1e-12)
    x, info = host_linalg.solve(lambda y: M @ y, v, tol=1e-10, max_iters=200)
    assert info["relative_residual"] < 1e-10
    np.testing.assert_allclose(x, np.linalg.solve(M, v), rtol=1e-8)


def test_cg_iterates_are_the_krylov_projections():
    M = _sym([0.3, 1.0, 1.5, 4.0, 9.0], seed=4)
    v = np.random.default_rng(5).normal(size=5)
    xs = host_linalg.cg_iterates(lambda y: M @ y, v, 5)
    assert len(xs) == 6 and not xs[0].any()
    for k in range(1, 6):  # x_k minimises the M-norm error over span{v, Mv, ..}
        K = np.stack([np.linalg.matrix_power(M, j) @ v for j in range(k)], axis=1)
        # an orthonormal basis of the same space: the raw powers are so ill-conditioned
        # that the reference itself varied by 2e-7 with the BLAS' summation order
        Q = np.linalg.qr(K)[0]
        expect = Q @ np.linalg.solve(Q.T @ M @ Q, Q.T @ v)
        np.testing.assert_allclose(xs[k], expect, rtol=1e-7, atol=1e-9)


def test_neumann_iterates_are_the_partial_sums():
    M = _sym([0.5, 1.0, 2.0, 3.0], seed=6)
    v = np.random.default_rng(7).normal(size=4)
    alpha = 0.2
    xs = host_linalg.neumann_iterates(lambda y: M @ y, v, 4, alpha)
    step = np.eye(4) - alpha * M
    for k, x in enumerate(xs):
        expect = alpha * sum(np.linalg.matrix_power(step, j) @ v for j in range(k + 1))
        np.testing.assert_allclose(x, expect, rtol=1e-12)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_extremes_match_eigvalsh(method):
    eigs = [-2.0, 0.1, 0.5, 1.0, 1.5, 6.0]
    M = _sym(eigs, seed=8)
    v0 = np.random.default_rng(9).normal(size=6)
    if method == "lanczos":
        out = host_linalg.lanczos_extremes(lambda y: M @ y, v0, 6)
        tol = 1e-10
    else:
        out = host_linalg.power_extremes(lambda y: M @ y, v0, 400)
        tol = 1e-6
    assert out["max"] == pytest.approx(6.0, rel=tol)
    assert out["min"] == pytest.approx(-2.0, rel=tol)


def test_lanczos_stops_at_an_invariant_subspace():
    M = np.diag([1.0, 2.0, 3.0, 4.0])
    v0 = np.array([1.0, 1.0, 0.0, 0.0])  # lies in the span of two eigenvectors
    out = host_linalg.lanczos_extremes(lambda y: M @ y, v0, 4)
    assert len(out["ritz"]) == 2
    assert (out["min"], out["max"]) == pytest.approx((1.0, 2.0), rel=1e-12)
