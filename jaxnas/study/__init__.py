"""Studying hypergradient estimators: references (unrolled, implicit to a tolerance, the
exact arch Hessian), agreement figures and solver diagnostics, all pure functions."""

from jaxnas.study.figures import agreement, argmax_agreement, favoured_ops, split
from jaxnas.study.references import (
    DIRECT_STEPS,
    arch_hessian,
    arch_hessian_eigenvalues,
    direct_gradient,
    implicit_reference,
    implicit_solve,
    unrolled,
    unrolled_weights,
)
from jaxnas.study.solvers import (
    estimator_cost,
    hessian_extremes,
    implicit_trace,
    lanczos_extremes,
    neumann_radius,
    power_iteration,
    random_like,
    train_grad_norm,
    weight_hessian_extremes,
)

__all__ = [
    "DIRECT_STEPS", "agreement", "arch_hessian", "arch_hessian_eigenvalues",
    "argmax_agreement", "direct_gradient", "estimator_cost", "favoured_ops",
    "hessian_extremes", "implicit_reference", "implicit_solve", "implicit_trace",
    "lanczos_extremes", "neumann_radius", "power_iteration", "random_like", "split",
    "train_grad_norm", "unrolled", "unrolled_weights",
]
