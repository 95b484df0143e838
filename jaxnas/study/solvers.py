"""Solver diagnostics for the implicit estimators: extreme weight-Hessian eigenvalues
by power iteration, CG/Neumann residuals per iteration, stationarity, product counts."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxnas import hypergrad
from jaxnas.hypergrad import Loss, tree_axpy, tree_norm, tree_scale, tree_vdot

PyTree = Any


def power_iteration(matvec: Callable[[PyTree], PyTree], v0: PyTree, *,
                    iters: int) -> tuple[jax.Array, PyTree, jax.Array]:
    """The eigenvalue of largest magnitude of a symmetric operator, by `iters` steps of
    power iteration from v0 (nonzero).

    Returns (lambda, v, residual): the Rayleigh quotient of the final unit vector v and
    ||M v - lambda v||, which bounds the distance from lambda to the spectrum, so a
    caller can tell whether it converged (slow when |lambda_2 / lambda_1| is near 1; it
    oscillates when lambda and -lambda are both eigenvalues).
    """
    def normalise(x, fallback):
        n = tree_norm(x)
        safe = jnp.where(n > 0, n, 1)
        return jax.tree.map(lambda a, b: jnp.where(n > 0, a / safe, b), x, fallback)

    v = normalise(v0, v0)
    v = jax.lax.fori_loop(0, iters, lambda _, v: normalise(matvec(v), v), v)
    mv = matvec(v)
    lam = tree_vdot(v, mv)
    return lam, v, tree_norm(tree_axpy(-lam, v, mv))


def hessian_extremes(matvec: Callable[[PyTree], PyTree], v0: PyTree, *,
                     iters: int) -> dict[str, jax.Array]:
    """Largest and smallest eigenvalue of a symmetric operator by power iteration, then
    power iteration on the shifted M - mu I (mu the first, dominant eigenvalue), whose
    dominant eigenvalue is the far end of the spectrum minus mu.

    Returns {"max", "min", "max_residual", "min_residual"} (residuals as in
    `power_iteration`, for the eigenvalue reported under each name).
    """
    mu, _, res_mu = power_iteration(matvec, v0, iters=iters)
    nu, _, res_nu = power_iteration(lambda x: tree_axpy(-mu, x, matvec(x)), v0,
                                    iters=iters)
    other = nu + mu
    mu_is_max = mu >= other
    return {"max": jnp.where(mu_is_max, mu, other),
            "min": jnp.where(mu_is_max, other, mu),
            "max_residual": jnp.where(mu_is_max, res_mu, res_nu),
            "min_residual": jnp.where(mu_is_max, res_nu, res_mu)}


def lanczos_extremes(matvec: Callable[[PyTree], PyTree], v0: PyTree, *,
                     iters: int) -> dict[str, jax.Array]:
    """Largest and smallest eigenvalue of a symmetric operator by `iters` Lanczos steps
    from v0 (nonzero), with full reorthogonalisation.

    Both ends at once, and far faster than power iteration when the top eigenvalues
    cluster; exact once `iters` reaches the dimension. Keeps the (iters + 1) basis
    vectors, flattened: memory (iters + 1) x dim. After a breakdown (an invariant
    subspace found) the remaining diagonal entries are set to the first Rayleigh
    quotient, which lies inside the spectrum, so they never move the extremes.
    Returns {"max", "min", "ritz": ascending Ritz values [iters]}.
    """
    flat0, unravel = ravel_pytree(v0)

    def mv(x):
        return ravel_pytree(matvec(unravel(x)))[0]

    tiny = 100 * jnp.finfo(flat0.dtype).eps
    basis = jnp.zeros((iters + 1, flat0.size), flat0.dtype)
    basis = basis.at[0].set(flat0 / jnp.linalg.norm(flat0))
    zeros = jnp.zeros(iters, flat0.dtype)

    def body(j, carry):
        basis, diag, off, alive = carry
        q = basis[j]
        w = mv(q)
        scale = jnp.linalg.norm(w)
        a = q @ w
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding
            w = w - basis.T @ (basis @ w)
        b = jnp.linalg.norm(w)
        alive_next = alive & (b > tiny * scale)
        q_next = jnp.where(alive_next, w / jnp.where(b > 0, b, 1), 0)
        basis = basis.at[j + 1].set(q_next)
        diag = diag.at[j].set(jnp.where(alive, a, jnp.nan))
        off = off.at[j].set(jnp.where(alive_next, b, 0))
        return basis, diag, off, alive_next

    _, diag, off, _ = jax.lax.fori_loop(0, iters, body,
                                        (basis, zeros, zeros, jnp.ones((), bool)))
    diag = jnp.where(jnp.isnan(diag), diag[0], diag)
    tri = jnp.diag(diag) + jnp.diag(off[:-1], 1) + jnp.diag(off[:-1], -1)
    ritz = jnp.linalg.eigvalsh(tri)
    return {"max": ritz[-1], "min": ritz[0], "ritz": ritz}


def random_like(key: jax.Array, tree: PyTree) -> PyTree:
    """A standard-normal pytree shaped and typed like `tree` (a start vector)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
                              for k, x in zip(keys, leaves)])


def weight_hessian_extremes(train_loss: Loss, params: PyTree, arch: PyTree, batch: Any,
                            *, key: jax.Array, iters: int = 50,
                            damping: float = 0.0,
                            method: str = "power") -> dict[str, jax.Array]:
    """Extreme eigenvalues of H + damping I, H = d2_w L_t (products by `hypergrad.hvp`).

    method: "power" (`hessian_extremes`: 2 * (iters + 1) Hessian-vector products,
    memory of a few weight vectors) or "lanczos" (`lanczos_extremes`: iters products,
    iters + 1 weight vectors kept). What the implicit solvers assume: CG a positive
    "min"; the Neumann series a contraction (`neumann_radius` < 1).
    """
    def matvec(x):
        hx = hypergrad.hvp(lambda w: train_loss(w, arch, batch), params, x)
        return tree_axpy(damping, x, hx)

    if method == "power":
        return hessian_extremes(matvec, random_like(key, params), iters=iters)
    if method == "lanczos":
        return lanczos_extremes(matvec, random_like(key, params), iters=iters)
    raise ValueError(f"method={method!r}: expected 'power' or 'lanczos'")


def neumann_radius(alpha: Any, lam_min: Any, lam_max: Any,
                   damping: Any = 0.0) -> jax.Array:
    """Spectral radius of I - alpha (H + damping I) given H's extreme eigenvalues: the
    Neumann series of `hypergrad.implicit` converges iff it is below 1 (that is,
    0 < alpha (lambda + damping) < 2 for every eigenvalue lambda of H)."""
    lo, hi = jnp.asarray(lam_min) + damping, jnp.asarray(lam_max) + damping
    return jnp.maximum(jnp.abs(1 - alpha * lo), jnp.abs(1 - alpha * hi))


def train_grad_norm(train_loss: Loss, params: PyTree, arch: PyTree,
                    batch: Any) -> jax.Array:
    """||grad_w L_t(w, a)||: how far w is from the stationary point that the implicit
    function theorem (implicit, amended estimators) takes it to be."""
    return tree_norm(jax.grad(train_loss)(params, arch, batch))


def implicit_trace(train_loss: Loss, val_loss: Loss, params: PyTree, arch: PyTree,
                   train_batch: Any, val_batch: Any, *, method: str = "cg",
                   iters: int = 5, damping: float = 0.0, alpha: float = 0.01,
                   with_estimates: bool = False) -> dict[str, Any]:
    """The iterates of `hypergrad.implicit`'s solver, one per iteration k = 0..iters.

    The same recurrences as hypergrad's CG (x_0 = 0) and Neumann series (x_0 = alpha v,
    x_k = alpha sum_{j<=k} (I - alpha M)^j v), so x_k is the x that
    `hypergrad.implicit(..., iters=k)` uses. Returns {"relative_residual": [iters + 1],
    the true ||M x_k - v|| / ||v|| with M = H + damping I, v = grad_w L_v} and, with
    `with_estimates`, {"estimates": arch pytree with a leading [iters + 1] axis}, the
    hypergradient g_k = grad_a L_v - d2_{a,w} L_t . x_k (for cosine vs iterations).
    Cost: 2 Hessian-vector products per iteration, plus one mixed product per
    iteration with estimates.
    """
    if method not in hypergrad.IMPLICIT_METHODS:
        raise ValueError(
            f"method={method!r}: expected one of {hypergrad.IMPLICIT_METHODS}")
    g_params, g_arch = jax.grad(val_loss, argnums=(0, 1))(params, arch, val_batch)
    v = g_params

    def matvec(x):
        hx = hypergrad.hvp(lambda w: train_loss(w, arch, train_batch), params, x)
        return tree_axpy(damping, x, hx)

    v_norm = tree_norm(v)
    safe_norm = jnp.where(v_norm > 0, v_norm, jnp.ones_like(v_norm))

    def record(x):
        res = tree_norm(jax.tree.map(jnp.subtract, matvec(x), v)) / safe_norm
        if not with_estimates:
            return res, None
        mixed = hypergrad.mixed_vjp(train_loss, params, arch, train_batch, x)
        return res, jax.tree.map(jnp.subtract, g_arch, mixed)

    if method == "cg":
        def cg_step(carry, _):
            # Mirrors hypergrad._conjugate_gradient: a zero denominator keeps x.
            x, r, p, rs = carry
            mp = matvec(p)
            pmp = tree_vdot(p, mp)
            step = jnp.where(pmp != 0, rs / jnp.where(pmp != 0, pmp, 1), 0)
            x = tree_axpy(step, p, x)
            r = tree_axpy(-step, mp, r)
            rs_new = tree_vdot(r, r)
            beta = jnp.where(rs != 0, rs_new / jnp.where(rs != 0, rs, 1), 0)
            return (x, r, tree_axpy(beta, p, r), rs_new), record(x)

        x0 = jax.tree.map(jnp.zeros_like, v)
        init = (x0, v, v, tree_vdot(v, v))
        step_fn = cg_step
    else:
        def neumann_step(carry, _):
            term, total = carry
            term = tree_axpy(-alpha, matvec(term), term)
            total = jax.tree.map(jnp.add, total, term)
            return (term, total), record(tree_scale(alpha, total))

        x0 = tree_scale(alpha, v)
        init = (v, v)
        step_fn = neumann_step
    first = record(x0)
    _, rest = jax.lax.scan(step_fn, init, None, length=iters)
    stacked = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    out = {"relative_residual": stacked[0]}
    if with_estimates:
        out["estimates"] = stacked[1]
    return out


def estimator_cost(name: str, *, implicit_iters: int = 5) -> dict[str, int]:
    """What one call of a registered estimator (jaxnas.strategies.estimators) computes:
    "gradients" (reverse passes of a loss), "hvps" (Hessian-vector products in w,
    `hypergrad.hvp`), "mixed" (mixed products, `hypergrad.mixed_vjp`), and
    "second_order" = hvps + mixed, each a jvp over a gradient (about 2-3 gradients).
    `implicit_iters` is the estimators' Settings.implicit_iters.
    """
    table = {
        "first_order": (1, 0, 0),
        "darts_fd": (4, 0, 0),       # virtual step, val, two arch gradients of L_t
        "darts_exact": (2, 0, 1),
        "amended": (1, 1, 1),
        "implicit_cg": (1, implicit_iters, 1),
        "implicit_neumann": (1, implicit_iters, 1),
    }
    if name not in table:
        raise ValueError(f"estimator={name!r}: expected one of {', '.join(table)}")
    grads, hvps, mixed = table[name]
    return {"gradients": grads, "hvps": hvps, "mixed": mixed,
            "second_order": hvps + mixed}
