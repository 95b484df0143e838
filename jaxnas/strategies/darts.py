"""DARTS (Liu et al. 2019) over the bilevel core: softmax relaxation, the DARTS cell
space, a hypergradient estimator chosen by name (`ESTIMATORS`: first_order, darts_fd,
darts_exact, amended (Bi et al.), implicit_cg, implicit_neumann), SGD on the weights and
Adam on the alphas.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxnas import relax as relax_lib
from jaxnas.optim import arch_optimizer, cosine_epoch_schedule, weight_optimizer
from jaxnas.spaces.darts import DartsSpace
from jaxnas.strategies import estimators
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.bilevel import BilevelState, bilevel

__all__ = ["ESTIMATORS", "DartsState", "arch_optimizer", "arch_weights",
           "cosine_epoch_schedule", "darts", "init_alphas", "weight_optimizer"]

ESTIMATORS = tuple(estimators.REGISTRY)
DartsState = BilevelState
arch_weights = relax_lib.softmax  # the mixed-op weights DARTS feeds the supernet


def init_alphas(key: jax.Array, num_edges: int, num_ops: int, scale: float = 1e-3) -> dict:
    """DARTS' initial architecture logits: scale * N(0, 1) per cell type."""
    k1, k2 = jax.random.split(key)
    return {"normal": scale * jax.random.normal(k1, (num_edges, num_ops)),
            "reduce": scale * jax.random.normal(k2, (num_edges, num_ops))}


def darts(model: nn.Module, *, estimator: str = "first_order",
          w_schedule: Callable[[jax.Array], jax.Array] | float = 0.025,
          w_momentum: float = 0.9, w_weight_decay: float = 3e-4, grad_clip: float = 5.0,
          a_tx: optax.GradientTransformation | None = None,
          unroll_momentum: bool = False, fd_eps: float = 0.01,
          implicit_iters: int = 5, implicit_damping: float = 0.0,
          neumann_alpha: float = 0.01, warmup_steps: int = 0, space: Any = None,
          relax: relax_lib.Relaxation | None = None, joint: bool = False,
          hardware_cost: tuple[Any, float] | None = None) -> BilevelStrategy:
    """Builds the DARTS strategy for `model` (a supernet taking op weights as an input).

    Args:
      estimator: one of ESTIMATORS.
      w_schedule: the weight learning rate (a schedule of the step, or a constant); the
        second-order estimators unroll with the current value, as DARTS does.
      unroll_momentum: if True the virtual step of the second-order estimators also
        applies the momentum buffer and weight decay, as the reference implementation;
        otherwise the virtual step is plain SGD (the contract of `hypergrad`).
      warmup_steps: steps that train the weights only before the architecture updates
        start, as PC-DARTS and P-DARTS do: the alphas are first compared when the
        candidate convolutions have been trained, not while they are noise that the
        parameter-free ops beat. 0 (DARTS) leaves the step without the branch.
      space: the search space (default: the DARTS cell space of the model's primitives,
        steps and multiplier); relax: the relaxation (default: softmax). Methods that
        change only these are a few lines over `darts` (see `fairdarts`).
      joint: the core's single-level step (SNAS): weights and alphas on the training
        loss together.
      hardware_cost: ``(table, weight)``: adds ``weight`` times the expected table cost
        under the relaxation's expected op weights to the architecture objective
        (`jaxnas.hardware.with_expected_cost`; `config.hardware.*`).
    """
    hypergradient = estimators.get(
        estimator, fd_eps=fd_eps, implicit_iters=implicit_iters,
        implicit_damping=implicit_damping, neumann_alpha=neumann_alpha,
        unroll_momentum=(w_momentum, w_weight_decay) if unroll_momentum else None)
    schedule = w_schedule if callable(w_schedule) else (lambda _: jnp.asarray(w_schedule))
    if space is None:
        space = DartsSpace(primitives=tuple(model.primitives), steps=model.steps,
                           multiplier=model.multiplier)
    relax = relax or relax_lib.softmax_relaxation()
    if hardware_cost is not None:
        from jaxnas import hardware
        relax = hardware.with_expected_cost(relax, *hardware_cost)
    return bilevel(model, space, relax=relax,
                   hypergrad=hypergradient,
                   w_tx=weight_optimizer(schedule, momentum=w_momentum,
                                         weight_decay=w_weight_decay, grad_clip=grad_clip),
                   a_tx=a_tx or arch_optimizer(), w_lr=schedule, warmup_steps=warmup_steps,
                   joint=joint)
