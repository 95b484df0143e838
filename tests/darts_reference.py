"""Frozen copy of `jaxnas/strategies/darts.py` at commit 75a55e8, before the bilevel core.

A test reference only: `tests/test_bilevel.py` checks that the new `darts(...)` gives these
states and metrics bit for bit. Do not edit except to keep it importable.
"""

# Original module docstring:
# DARTS bilevel search (Liu et al. 2019) with a choice of hypergradient estimator.
#
# `darts(model, ...)` returns a `Strategy` of pure functions: `init(key, sample_images)`,
# `step(state, train_batch, val_batch) -> (state, metrics)` (architecture update on the
# validation batch, then weight update on the training batch, in one jitted function) and
# `derive(state) -> Genotype`. Estimators (`ESTIMATORS`):
# first_order, darts_fd, darts_exact, amended (Bi et al.), implicit_cg, implicit_neumann.

from __future__ import annotations

import functools

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxnas import hypergrad
from jaxnas.spaces import genotypes
from jaxnas.supernet.darts import init_key
from jaxnas.types import Batch, Metrics, PyTree
from typing import Any, Mapping, NamedTuple, Optional


class Strategy(NamedTuple):  # was jaxnas.strategies.base.Strategy
    init: Callable[..., Any]
    step: Callable[..., Any]
    derive: Callable[..., Any]
    evaluate: Optional[Callable[..., Any]] = None
    parts: Optional[Mapping[str, Callable[..., Any]]] = None

ESTIMATORS = ("first_order", "darts_fd", "darts_exact", "amended", "implicit_cg",
              "implicit_neumann")


class DartsState(struct.PyTreeNode):
    """Everything a DARTS search carries from one step to the next."""

    step: jax.Array
    params: PyTree          # supernet weights w
    batch_stats: PyTree     # BatchNorm running averages (not optimised)
    alphas: PyTree          # {"normal": [E, K], "reduce": [E, K]} architecture logits
    w_opt: optax.OptState
    a_opt: optax.OptState


def cosine_epoch_schedule(lr: float, lr_min: float, epochs: int,
                          steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """PyTorch CosineAnnealingLR stepped once per epoch, as DARTS uses it."""

    def schedule(step: jax.Array) -> jax.Array:
        epoch = jnp.minimum(step // steps_per_epoch, epochs)
        return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * epoch / epochs))

    return schedule


def weight_optimizer(schedule: Callable, *, momentum: float = 0.9,
                     weight_decay: float = 3e-4, grad_clip: float = 5.0
                     ) -> optax.GradientTransformation:
    """torch SGD(momentum, weight_decay) after clip_grad_norm_, as in DARTS."""
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(schedule),
    )


def arch_optimizer(lr: float = 3e-4, b1: float = 0.5, b2: float = 0.999,
                   weight_decay: float = 1e-3) -> optax.GradientTransformation:
    """torch Adam with coupled L2 weight decay, as DARTS uses for the alphas."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8), optax.scale(-lr))


def init_alphas(key: jax.Array, num_edges: int, num_ops: int, scale: float = 1e-3) -> dict:
    """DARTS' initial architecture logits: scale * N(0, 1) per cell type."""
    k1, k2 = jax.random.split(key)
    return {"normal": scale * jax.random.normal(k1, (num_edges, num_ops)),
            "reduce": scale * jax.random.normal(k2, (num_edges, num_ops))}


def arch_weights(alphas: dict) -> dict:
    """Softmax over the op axis: the mixed-op weights the supernet takes."""
    return jax.tree.map(lambda a: jax.nn.softmax(a, axis=-1), alphas)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _global_norm(tree: PyTree) -> jax.Array:
    return optax.tree.norm(tree)


def darts(model: nn.Module, *, estimator: str = "first_order",
          w_schedule: Callable[[jax.Array], jax.Array] | float = 0.025,
          w_momentum: float = 0.9, w_weight_decay: float = 3e-4, grad_clip: float = 5.0,
          a_tx: optax.GradientTransformation | None = None,
          unroll_momentum: bool = False, fd_eps: float = 0.01,
          implicit_iters: int = 5, implicit_damping: float = 0.0,
          neumann_alpha: float = 0.01, warmup_steps: int = 0) -> Strategy:
    """Builds the DARTS strategy for `model` (a supernet taking `arch` as an input).

    Args:
      estimator: one of ESTIMATORS.
      w_schedule: the weight learning rate (a schedule of the step, or a constant); the
        second-order estimators unroll with the current value, as DARTS does.
      unroll_momentum: if True the virtual step of the second-order estimators also
        applies the momentum buffer and weight decay, as the reference implementation;
        otherwise the virtual step is plain SGD (the contract of `hypergrad`).
      warmup_steps: steps (counted by `state.step`) that train the weights only, before
        the architecture updates start, as PC-DARTS and P-DARTS do: the alphas are
        first compared when the candidate convolutions have been trained, not while
        they are noise that the parameter-free ops beat. A `lax.cond` in the jitted
        step picks the branch, so one compiled function serves both phases; 0 (DARTS)
        leaves the step without it.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: expected one of {', '.join(ESTIMATORS)}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps!r}: expected an integer >= 0")
    schedule = w_schedule if callable(w_schedule) else (lambda _: jnp.asarray(w_schedule))
    w_tx = weight_optimizer(schedule, momentum=w_momentum, weight_decay=w_weight_decay,
                            grad_clip=grad_clip)
    a_tx = a_tx or arch_optimizer()
    primitives = tuple(model.primitives)

    def init(key: jax.Array, sample_images: jax.Array) -> DartsState:
        k_model, k_arch = jax.random.split(key)
        num_edges = sum(2 + j for j in range(model.steps))
        alphas = init_alphas(k_arch, num_edges, len(primitives))
        variables = model.init(init_key(k_model), sample_images, arch_weights(alphas),
                               train=True)
        params = variables["params"]
        return DartsState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), alphas=alphas,
                          w_opt=w_tx.init(params), a_opt=a_tx.init(alphas))

    # Traced once per input shape: a step differentiates the supernet several times
    # (arch and weight gradients, perturbed weights, Hessian-vector products), and
    # under a nested jit each of those transforms the cached jaxpr instead of tracing
    # the flax modules again (lowering a finite-difference iteration at C=16, 8 cells:
    # 82 s -> 36 s; `jaxnas bench` records it as lower_s).
    apply_train = jax.jit(functools.partial(model.apply, train=True,
                                            mutable=["batch_stats"]))

    def forward(params, batch_stats, alphas, batch, train=True):
        variables = {"params": params, "batch_stats": batch_stats}
        if train:
            logits, updates = apply_train(variables, batch["image"], arch_weights(alphas))
            return logits, updates["batch_stats"]
        return model.apply(variables, batch["image"], arch_weights(alphas), train=False), None

    def arch_gradient(state: DartsState, train_batch: Batch, val_batch: Batch, lr):
        def loss(params, alphas, batch):
            logits, _ = forward(params, state.batch_stats, alphas, batch)
            return _cross_entropy(logits, batch["label"])

        args = (loss, loss, state.params, state.alphas, train_batch, val_batch)
        if estimator == "first_order":
            return hypergrad.first_order(*args)
        if estimator in ("darts_fd", "darts_exact"):
            method = "exact" if estimator == "darts_exact" else "finite_difference"
            extra = {}
            if unroll_momentum:
                extra = dict(momentum=w_momentum, momentum_buffer=state.w_opt[2].trace,
                             weight_decay=w_weight_decay)
            return hypergrad.darts_second_order(*args, lr=lr, method=method, eps=fd_eps,
                                                **extra)
        if estimator == "amended":
            return hypergrad.amended(*args, lr=lr)
        method = "cg" if estimator == "implicit_cg" else "neumann"
        extra = {"alpha": neumann_alpha} if method == "neumann" else {}
        return hypergrad.implicit(*args, method=method, iters=implicit_iters,
                                  damping=implicit_damping, **extra)

    def arch_step(state: DartsState, train_batch: Batch, val_batch: Batch
                  ) -> tuple[DartsState, Metrics]:
        """The architecture half: hypergradient on the validation batch, Adam on the
        alphas (weights, statistics and the step count unchanged)."""
        lr = schedule(state.step)
        a_grad = arch_gradient(state, train_batch, val_batch, lr)
        a_updates, a_opt = a_tx.update(a_grad, state.a_opt, state.alphas)
        alphas = optax.apply_updates(state.alphas, a_updates)
        return (state.replace(alphas=alphas, a_opt=a_opt),
                {"lr": lr, "hypergrad_norm": _global_norm(a_grad)})

    def weight_step(state: DartsState, train_batch: Batch) -> tuple[DartsState, Metrics]:
        """The weight half: SGD on the training batch with the current alphas."""
        def weight_loss(params):
            logits, stats = forward(params, state.batch_stats, state.alphas, train_batch)
            return _cross_entropy(logits, train_batch["label"]), (logits, stats)

        (loss, (logits, batch_stats)), w_grad = jax.value_and_grad(
            weight_loss, has_aux=True)(state.params)
        w_updates, w_opt = w_tx.update(w_grad, state.w_opt, state.params)
        params = optax.apply_updates(state.params, w_updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == train_batch["label"])
        return (state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              w_opt=w_opt),
                {"train_loss": loss, "train_accuracy": accuracy,
                 "w_grad_norm": _global_norm(w_grad)})

    def step(state: DartsState, train_batch: Batch, val_batch: Batch
             ) -> tuple[DartsState, Metrics]:
        """One search iteration: `arch_step` then `weight_step`, one jitted function
        (`arch_step` skipped during the first `warmup_steps`)."""
        if warmup_steps:
            def skip(state, train_batch, val_batch):
                zero = jnp.zeros((), jnp.float32)
                return state, {"lr": schedule(state.step).astype(jnp.float32),
                               "hypergrad_norm": zero}

            state, arch_metrics = jax.lax.cond(state.step >= warmup_steps, arch_step,
                                               skip, state, train_batch, val_batch)
        else:
            state, arch_metrics = arch_step(state, train_batch, val_batch)
        state, w_metrics = weight_step(state, train_batch)
        return state, {"train_loss": w_metrics["train_loss"],
                       "train_accuracy": w_metrics["train_accuracy"],
                       "lr": arch_metrics["lr"],
                       "hypergrad_norm": arch_metrics["hypergrad_norm"],
                       "w_grad_norm": w_metrics["w_grad_norm"]}

    def evaluate(state: DartsState, batch: Batch) -> Metrics:
        """Summed loss, correct count and example count on `batch` (BatchNorm running
        averages; rows where `batch["mask"]` is False are padding and do not count)."""
        logits, _ = forward(state.params, state.batch_stats, state.alphas, batch, train=False)
        labels = batch["label"]
        mask = batch.get("mask", jnp.ones(labels.shape, bool)).astype(logits.dtype)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {"loss_sum": jnp.sum(losses * mask),
                "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
                "count": jnp.sum(mask)}

    def derive(state: DartsState) -> genotypes.Genotype:
        weights = jax.device_get(arch_weights(state.alphas))
        return genotypes.derive(weights, primitives=primitives, steps=model.steps,
                                multiplier=model.multiplier)

    return Strategy(init=init, step=step, derive=derive, evaluate=evaluate,
                    parts={"arch_step": arch_step, "weight_step": weight_step})
