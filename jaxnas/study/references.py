"""Reference hypergradients to judge estimators by: the unrolled and the implicit
gradient solved to a tolerance, the exact architecture Hessian, and the direct part."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse import linalg as sparse_linalg

from jaxnas import hypergrad
from jaxnas.hypergrad import Loss, tree_axpy, tree_norm

PyTree = Any

SOLVERS = ("auto", "cg", "normal", "gmres")


def unrolled_weights(train_loss: Loss, params: PyTree, arch: PyTree, train_batch: Any,
                     *, lr: Any, steps: int, per_step_batches: bool = False) -> PyTree:
    """w_T after `steps` plain SGD steps w_{t+1} = w_t - lr * grad_w L_t(w_t, a).

    per_step_batches: `train_batch` then holds one batch per step on a leading axis
    (batch t for step t) instead of one batch used by every step.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r}: expected a non-negative int")

    def body(w, batch):
        return hypergrad.virtual_step(train_loss, w, arch, batch, lr=lr), None

    if per_step_batches:
        w, _ = jax.lax.scan(body, params, train_batch, length=steps)
        return w
    w, _ = jax.lax.scan(lambda w, _: body(w, train_batch), params, None, length=steps)
    return w


UNROLLED_METHODS = ("autodiff", "adjoint")


def unrolled(train_loss: Loss, val_loss: Loss, params: PyTree, arch: PyTree,
             train_batch: Any, val_batch: Any, *, lr: Any, steps: int,
             per_step_batches: bool = False, method: str = "autodiff") -> PyTree:
    """Exact d/d arch of L_v(w_T(a), a) through `steps` plain SGD steps from `params`.

    method "autodiff": reverse-mode autodiff through the whole unroll
    (`unrolled_weights`); "adjoint": the same derivative by the backward recursion
    lambda_T = grad_w L_v(w_T), g = grad_a L_v(w_T) - lr sum_t d2_{a,w} L_t(w_t) .
    lambda_{t+1}, lambda_t = lambda_{t+1} - lr H_t lambda_{t+1}, every product
    forward-over-reverse (`hypergrad.hvp`, `hypergrad.mixed_vjp`): equal to rounding,
    but without differentiating a gradient in reverse mode, which on a supernet
    compiles and runs several times slower. steps=0 is `hypergrad.first_order`,
    steps=1 `hypergrad.darts_second_order(method="exact")`. Memory grows linearly
    with `steps` (every w_t is kept for the backward pass).
    """
    if method not in UNROLLED_METHODS:
        raise ValueError(f"method={method!r}: expected one of {UNROLLED_METHODS}")
    if method == "adjoint":
        return _unrolled_adjoint(train_loss, val_loss, params, arch, train_batch,
                                 val_batch, lr=lr, steps=steps,
                                 per_step_batches=per_step_batches)

    def objective(a):
        w = unrolled_weights(train_loss, params, a, train_batch, lr=lr, steps=steps,
                             per_step_batches=per_step_batches)
        return val_loss(w, a, val_batch)

    return jax.grad(objective)(arch)


def _unrolled_adjoint(train_loss: Loss, val_loss: Loss, params: PyTree, arch: PyTree,
                      train_batch: Any, val_batch: Any, *, lr: Any, steps: int,
                      per_step_batches: bool) -> PyTree:
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r}: expected a non-negative int")

    def batch_at(xs):
        return xs if per_step_batches else train_batch

    def forward(w, xs):
        return hypergrad.virtual_step(train_loss, w, arch, batch_at(xs), lr=lr), w

    xs = train_batch if per_step_batches else None
    w_T, ws = jax.lax.scan(forward, params, xs, length=steps)
    lam, g = jax.grad(val_loss, argnums=(0, 1))(w_T, arch, val_batch)

    def backward(carry, inputs):
        lam, g = carry
        w_t, batch = inputs[0], batch_at(inputs[1])
        g = tree_axpy(-lr, hypergrad.mixed_vjp(train_loss, w_t, arch, batch, lam), g)
        lam = tree_axpy(-lr, hypergrad.hvp(lambda w: train_loss(w, arch, batch), w_t,
                                           lam), lam)
        return (lam, g), None

    (_, g), _ = jax.lax.scan(backward, (lam, g), (ws, xs), length=steps, reverse=True)
    return g


def implicit_solve(train_loss: Loss, params: PyTree, arch: PyTree, train_batch: Any,
                   v: PyTree, *, damping: float = 0.0, tol: float = 1e-8,
                   max_iters: int | None = None, solver: str = "auto"
                   ) -> tuple[PyTree, dict[str, jax.Array]]:
    """x with (H + damping I) x = v, H = d2_w L_t, solved to relative residual `tol`.

    Solvers (every matrix product is `hypergrad.hvp`; H is never built):
      "cg":     `jax.scipy.sparse.linalg.cg`, right when H + dI is positive definite;
      "normal": CG on the normal equations M^2 x = M v (M = H + dI is symmetric, so
                M^T M = M^2 is positive semi-definite for any M). From x0 = 0 this gives
                the minimum-norm least-squares solution M^+ v, also when M is indefinite
                or singular; it converges more slowly (the condition number is squared);
      "gmres":  `jax.scipy.sparse.linalg.gmres` (restart 20), any nonsingular M;
      "auto":   CG, then "normal" from x0 = 0 when CG's true residual misses `tol`
                (an indefinite or singular M, where CG may diverge or stall),
                keeping the solution with the smaller true residual.
    max_iters: per solver; None is the solver's default (10 x dim(w) for CG), which on
    a supernet is far too many: pass a bound there. `tol` is relative to ||v|| and the
    achieved value is returned: in float32 about 1e-6 is the floor, so pass a looser
    tol there. The normal equations are solved to tol**2 (their residual M r can be
    small while r is not, by up to the condition number of M), so they usually run to
    `max_iters`.

    Returns (x, info) with info["relative_residual"] = ||M x - v|| / ||v|| (the true
    residual, recomputed) and info["fallback"] (True when "auto" used "normal").
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}: expected one of {SOLVERS}")

    def matvec(x):
        hx = hypergrad.hvp(lambda w: train_loss(w, arch, train_batch), params, x)
        static_zero = isinstance(damping, (int, float)) and damping == 0
        return hx if static_zero else tree_axpy(damping, x, hx)

    v_norm = tree_norm(v)
    safe_norm = jnp.where(v_norm > 0, v_norm, jnp.ones_like(v_norm))

    def residual(x):
        r = tree_norm(jax.tree.map(jnp.subtract, matvec(x), v)) / safe_norm
        return jnp.where(jnp.isfinite(r), r, jnp.inf)

    def cg():
        return sparse_linalg.cg(matvec, v, tol=tol, maxiter=max_iters)[0]

    def normal():
        mv = matvec(v)
        return sparse_linalg.cg(lambda x: matvec(matvec(x)), mv, tol=tol ** 2,
                                maxiter=max_iters)[0]

    if solver == "gmres":
        x = sparse_linalg.gmres(matvec, v, tol=tol, maxiter=max_iters)[0]
    elif solver == "normal":
        x = normal()
    else:
        x = cg()
    res = residual(x)
    fallback = jnp.zeros((), bool)
    if solver == "auto":
        def use_normal(x_cg, res_cg):
            x_n = normal()
            res_n = residual(x_n)
            better = res_n < res_cg
            x = jax.tree.map(lambda a, b: jnp.where(better, a, b), x_n, x_cg)
            return x, jnp.minimum(res_n, res_cg), better

        x, res, fallback = jax.lax.cond(res > tol, use_normal,
                                        lambda x, r: (x, r, fallback), x, res)
    return x, {"relative_residual": res, "fallback": fallback}


def implicit_reference(train_loss: Loss, val_loss: Loss, params: PyTree, arch: PyTree,
                       train_batch: Any, val_batch: Any, *, damping: float = 0.0,
                       tol: float = 1e-8, max_iters: int | None = None,
                       solver: str = "auto", return_info: bool = False) -> PyTree:
    """grad_a L_v - d2_{a,w} L_t . (H + damping I)^-1 . grad_w L_v at the given params,
    the linear system solved to relative residual `tol` (see `implicit_solve`, which
    says what each solver does when H + dI is not positive definite).

    `hypergrad.implicit` with an exact solve. return_info: also return the solve's
    info dict (achieved relative residual, whether "auto" fell back).
    """
    g_params, g_arch = jax.grad(val_loss, argnums=(0, 1))(params, arch, val_batch)
    x, info = implicit_solve(train_loss, params, arch, train_batch, g_params,
                             damping=damping, tol=tol, max_iters=max_iters,
                             solver=solver)
    mixed = hypergrad.mixed_vjp(train_loss, params, arch, train_batch, x)
    g = jax.tree.map(jnp.subtract, g_arch, mixed)
    return (g, info) if return_info else g


def arch_hessian(val_loss: Loss, params: PyTree, arch: PyTree, batch: Any, *,
                 chunk_size: int | None = 16) -> jax.Array:
    """The dense Hessian d2_arch L_v, [n, n] over the flattened arch (in ravel_pytree
    order).

    Column i is a jvp of the gradient along basis vector e_i (forward-over-reverse),
    `chunk_size` columns at a time (None: all at once, the most memory), then
    symmetrised to remove rounding asymmetry.
    """
    flat, unravel = ravel_pytree(arch)

    def grad_flat(a):
        return ravel_pytree(jax.grad(val_loss, argnums=1)(params, unravel(a), batch))[0]

    def column(e):
        return jax.jvp(grad_flat, (flat,), (e,))[1]

    basis = jnp.eye(flat.size, dtype=flat.dtype)
    cols = jax.lax.map(column, basis, batch_size=chunk_size)  # row i = H e_i
    return 0.5 * (cols + cols.T)


def arch_hessian_eigenvalues(val_loss: Loss, params: PyTree, arch: PyTree, batch: Any,
                             *, chunk_size: int | None = 16) -> jax.Array:
    """Ascending eigenvalues of d2_arch L_v (exact: `arch_hessian` then eigvalsh).

    The last is RobustDARTS' dominant eigenvalue (the collapse indicator). The DARTS
    cell space has 2 x 14 x 8 = 224 alphas: 224 jvps of the gradient.
    """
    return jnp.linalg.eigvalsh(arch_hessian(val_loss, params, arch, batch,
                                            chunk_size=chunk_size))


def direct_gradient(val_loss: Loss, params: PyTree, arch: PyTree, val_batch: Any, *,
                    train_loss: Loss | None = None, train_batch: Any = None,
                    lr: Any = 0.0, steps: int = 0) -> PyTree:
    """g1 = grad_a L_v(w, a) with w held fixed: the direct part of a hypergradient.

    Taken at the weights where the estimate evaluates L_v: `params` (steps=0: first
    order, amended, implicit) or after `steps` plain SGD steps (1 for the DARTS
    second-order estimators, T for `unrolled`). The rest of an estimate, g - g1, is
    g2, the part through the weights (see `figures.split`).
    """
    w = params
    if steps and train_loss is None:
        raise ValueError(f"steps={steps}: the virtual steps need train_loss")
    if steps:
        w = unrolled_weights(train_loss, params, arch, train_batch, lr=lr, steps=steps)
    return jax.grad(val_loss, argnums=1)(w, arch, val_batch)


# Where each registered estimator (jaxnas.strategies.estimators) evaluates L_v: the
# number of virtual SGD steps from params (the `steps` of `direct_gradient`).
DIRECT_STEPS = {"first_order": 0, "darts_fd": 1, "darts_exact": 1, "amended": 0,
                "implicit_cg": 0, "implicit_neumann": 0}
