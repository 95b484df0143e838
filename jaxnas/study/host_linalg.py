"""Host-side linear algebra on a compiled Hessian-vector product: the study's implicit
reference, the CG/Neumann iterate traces and the weight Hessian's extreme eigenvalues.

Why on the host: written in `jax.lax` loops (`references.implicit_solve`,
`solvers.implicit_trace`, `solvers.weight_hessian_extremes`) each of these programs
inlines the supernet's forward-over-reverse product several times (CG, the normal-
equations fallback and the true residual: six copies in the implicit reference), and
XLA compiles every copy: on the study's small supernet such a program took tens of
minutes and 10 GB to compile. Here every product goes through ONE compiled program,
`mv(x)` on flat float vectors, shared by all three; the vector arithmetic runs in
float64 numpy (`scipy.sparse.linalg` for the solves). The `jax` versions stay the
library functions (pure, jit-able, and what the tests hold to closed forms).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.sparse import linalg as sparse_linalg

MatVec = Callable[[np.ndarray], np.ndarray]


def _operator(mv: MatVec, n: int) -> sparse_linalg.LinearOperator:
    return sparse_linalg.LinearOperator((n, n), matvec=lambda x: mv(np.ravel(x)),
                                        dtype=np.float64)


def relative_residual(mv: MatVec, x: np.ndarray, v: np.ndarray) -> float:
    """||M x - v|| / ||v|| (inf when not finite; ||v|| = 0 counts as 1)."""
    norm = np.linalg.norm(v)
    r = float(np.linalg.norm(mv(x) - v) / (norm if norm > 0 else 1.0))
    return r if np.isfinite(r) else float("inf")


def solve(mv: MatVec, v: np.ndarray, *, tol: float, max_iters: int | None
          ) -> tuple[np.ndarray, dict]:
    """x with M x = v for a symmetric M, to relative residual `tol`.

    CG (`scipy.sparse.linalg.cg`) first, right when M is positive definite; when its
    true residual misses `tol` (an indefinite or singular M: a weight Hessian away from
    a minimum), MINRES (`scipy.sparse.linalg.minres`, any symmetric M, least squares when
    singular) from zero, keeping the solution with the smaller true residual.
    Returns (x, {"relative_residual", "solver": "cg" or "minres"}).
    """
    op = _operator(mv, v.size)
    x, _ = sparse_linalg.cg(op, v, rtol=tol, atol=0.0, maxiter=max_iters)
    res = relative_residual(mv, x, v)
    solver = "cg"
    if not res <= tol:
        x_m, _ = sparse_linalg.minres(op, v, rtol=tol, maxiter=max_iters)
        res_m = relative_residual(mv, x_m, v)
        if res_m < res:
            x, res, solver = x_m, res_m, "minres"
    return x, {"relative_residual": res, "solver": solver}


def cg_iterates(mv: MatVec, v: np.ndarray, iters: int) -> list[np.ndarray]:
    """x_0 = 0, x_1, ..., x_iters of conjugate gradients on M x = v, the recurrence of
    `hypergrad.implicit`'s CG (a zero denominator keeps x), so x_k is the solution that
    `hypergrad.implicit(..., method="cg", iters=k)` uses."""
    x = np.zeros_like(v)
    r, p = v.copy(), v.copy()
    rs = r @ r
    out = [x]
    for _ in range(iters):  # every update binds new arrays: no copies needed
        mp = mv(p)
        pmp = p @ mp
        step = rs / pmp if pmp != 0 else 0.0
        x = x + step * p
        r = r - step * mp
        rs_new = r @ r
        beta = rs_new / rs if rs != 0 else 0.0
        p = r + beta * p
        rs = rs_new
        out.append(x)
    return out


def neumann_iterates(mv: MatVec, v: np.ndarray, iters: int,
                     alpha: float) -> list[np.ndarray]:
    """x_k = alpha sum_{j<=k} (I - alpha M)^j v for k = 0..iters, the truncated Neumann
    series of `hypergrad.implicit(..., method="neumann", iters=k)`."""
    term, total = v.copy(), v.copy()
    out = [alpha * total]
    for _ in range(iters):
        term = term - alpha * mv(term)
        total = total + term
        out.append(alpha * total)
    return out


def lanczos_extremes(mv: MatVec, v0: np.ndarray, iters: int) -> dict:
    """Largest and smallest eigenvalue of a symmetric M by `iters` Lanczos steps from
    v0 with full reorthogonalisation (as `solvers.lanczos_extremes`); a breakdown (an
    invariant subspace) ends the recurrence early, the Ritz values of the steps taken
    being exact for that subspace. Returns {"max", "min", "ritz"}."""
    q = v0 / np.linalg.norm(v0)
    basis = [q]
    diag, off = [], []
    for _ in range(iters):
        w = mv(basis[-1])
        scale = np.linalg.norm(w)
        diag.append(float(basis[-1] @ w))
        Q = np.stack(basis)
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding
            w = w - Q.T @ (Q @ w)
        b = np.linalg.norm(w)
        if not b > 100 * np.finfo(np.float64).eps * max(scale, 1e-300):
            break
        off.append(float(b))
        basis.append(w / b)
    k = len(diag)
    tri = np.diag(diag) + np.diag(off[:k - 1], 1) + np.diag(off[:k - 1], -1)
    ritz = np.linalg.eigvalsh(tri)
    return {"max": float(ritz[-1]), "min": float(ritz[0]), "ritz": ritz.tolist()}


def power_extremes(mv: MatVec, v0: np.ndarray, iters: int) -> dict:
    """Largest and smallest eigenvalue by power iteration, then power iteration on the
    shifted M - mu I (as `solvers.hessian_extremes`). Returns {"max", "min",
    "max_residual", "min_residual"}."""
    def power(op):
        v = v0 / np.linalg.norm(v0)
        for _ in range(iters):
            w = op(v)
            n = np.linalg.norm(w)
            if not n > 0:
                break
            v = w / n
        w = op(v)
        lam = float(v @ w)
        return lam, float(np.linalg.norm(w - lam * v))

    mu, res_mu = power(mv)
    nu, res_nu = power(lambda x: mv(x) - mu * x)
    other = nu + mu
    if mu >= other:
        return {"max": mu, "min": other, "max_residual": res_mu, "min_residual": res_nu}
    return {"max": other, "min": mu, "max_residual": res_nu, "min_residual": res_mu}
