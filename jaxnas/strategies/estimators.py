"""The registry of hypergradient estimators by name: each a `functools.partial` of a
`jaxnas.hypergrad` estimator, adapted to the one signature the bilevel core calls."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Protocol

import optax

from jaxnas import hypergrad
from jaxnas.hypergrad import Loss
from jaxnas.optim import momentum_trace
from jaxnas.types import Array, Batch, PyTree


class Hypergradient(Protocol):
    """An architecture gradient as the bilevel core calls it.

    The `jaxnas.hypergrad` arguments, plus what a step knows: `lr`, the current weight
    learning rate (the virtual step of the unrolled estimators), and `w_opt`, the weight
    optimizer's state (its momentum buffer, for a virtual step with momentum).
    """

    def __call__(self, train_loss: Loss, val_loss: Loss, params: PyTree, arch: PyTree,
                 train_batch: Batch, val_batch: Batch, *, lr: Array,
                 w_opt: optax.OptState) -> PyTree: ...


class Settings(NamedTuple):
    """Estimator settings (each estimator reads the ones it needs).

    unroll_momentum: None (plain SGD virtual step, the `hypergrad` contract) or
    (momentum, weight_decay) of the weight optimizer, whose momentum buffer the virtual
    step of the second-order estimators then also applies, as the reference DARTS does.
    """

    fd_eps: float = 0.01
    implicit_iters: int = 5
    implicit_damping: float = 0.0
    neumann_alpha: float = 0.01
    unroll_momentum: Optional[tuple[float, float]] = None


def without_lr(estimate: Callable[..., PyTree]) -> Hypergradient:
    """A `hypergrad` estimator that takes no learning rate, with the core's signature."""
    def call(*args: Any, lr: Array, w_opt: optax.OptState) -> PyTree:
        del lr, w_opt
        return estimate(*args)

    return call


def with_lr(estimate: Callable[..., PyTree]) -> Hypergradient:
    """A `hypergrad` estimator that unrolls with the weight learning rate `lr`."""
    def call(*args: Any, lr: Array, w_opt: optax.OptState) -> PyTree:
        del w_opt
        return estimate(*args, lr=lr)

    return call


def _second_order(method: str, s: Settings) -> Hypergradient:
    estimate = functools.partial(hypergrad.darts_second_order, method=method, eps=s.fd_eps)
    if s.unroll_momentum is None:
        return with_lr(estimate)
    momentum, weight_decay = s.unroll_momentum

    def call(*args: Any, lr: Array, w_opt: optax.OptState) -> PyTree:
        return estimate(*args, lr=lr, momentum=momentum,
                        momentum_buffer=momentum_trace(w_opt), weight_decay=weight_decay)

    return call


def _implicit(method: str, s: Settings) -> Hypergradient:
    extra = {"alpha": s.neumann_alpha} if method == "neumann" else {}
    return without_lr(functools.partial(hypergrad.implicit, method=method,
                                        iters=s.implicit_iters, damping=s.implicit_damping,
                                        **extra))


REGISTRY: dict[str, Callable[[Settings], Hypergradient]] = {
    "first_order": lambda s: without_lr(hypergrad.first_order),
    "darts_fd": functools.partial(_second_order, "finite_difference"),
    "darts_exact": functools.partial(_second_order, "exact"),
    "amended": lambda s: with_lr(hypergrad.amended),
    "implicit_cg": functools.partial(_implicit, "cg"),
    "implicit_neumann": functools.partial(_implicit, "neumann"),
}


def get(name: str, **settings: Any) -> Hypergradient:
    """The estimator registered as `name`, with `Settings` fields as keywords."""
    if name not in REGISTRY:
        raise ValueError(f"estimator={name!r}: expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name](Settings(**settings))
