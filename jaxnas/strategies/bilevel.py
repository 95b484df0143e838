"""The bilevel core every gradient-based method composes: supernet, space, relaxation,
hypergradient estimator and two optimizers -> a `BilevelStrategy`.

One iteration is `arch_step` (the estimator's architecture gradient on the validation batch,
plus the relaxation's penalty, then `a_tx` on the architecture parameters) followed by
`weight_step` (the training loss in the weights, then `w_tx`), in one jitted function. The
state carries a PRNG key that each half splits once: a random relaxation (Gumbel, Dirichlet)
draws its sample from it, so a run is a pure function of its initial key. A sample is drawn
once per half and shared by every loss the estimator evaluates in that half (common random
numbers: the second-order terms differentiate one objective, not a new sample each time).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxnas.losses import accuracy, cross_entropy, eval_sums
from jaxnas.optim import Schedule, init_key
from jaxnas.relax import Relaxation
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.estimators import Hypergradient
from jaxnas.types import Array, Batch, Metrics, PyTree


class BilevelState(struct.PyTreeNode):
    """Everything a bilevel search carries from one step to the next."""

    step: Array             # int32[]: weight steps taken
    params: PyTree          # supernet weights w
    batch_stats: PyTree     # BatchNorm running averages (not optimised)
    alphas: PyTree          # architecture parameters (the tree of space.init_arch)
    w_opt: optax.OptState
    a_opt: optax.OptState
    key: Array              # PRNG key; each half of a step splits it once


def bilevel(model: nn.Module, space: Any, *, relax: Relaxation, hypergrad: Hypergradient,
            w_tx: optax.GradientTransformation, a_tx: optax.GradientTransformation,
            w_lr: Schedule, warmup_steps: int = 0, joint: bool = False) -> BilevelStrategy:
    """Builds a bilevel strategy.

    Args:
      model: a supernet, ``model.apply(variables, images, weights, train=...)`` with the op
        weights of `relax` as its architecture input and BatchNorm in "batch_stats".
      space: the search space (`jaxnas.spaces.base.Space`): `init_arch(key)` gives the
        architecture parameters, `derive(weights)` the discrete architecture.
      relax: architecture parameters -> op weights (`jaxnas.relax.Relaxation`).
      hypergrad: the architecture gradient (`jaxnas.strategies.estimators.get(name)`).
      w_tx, a_tx: the weight and architecture optimizers.
      w_lr: the weight learning rate as a schedule of `state.step`; the unrolled
        estimators take its current value, and it is logged as "lr".
      warmup_steps: steps that train the weights only before architecture updates start
        (PC-DARTS, P-DARTS); a `lax.cond` picks the branch in one compiled step.
      joint: SNAS' single-level step instead of the two halves: one sample, one gradient
        of the *training* loss (plus the penalty) in weights and alphas together, each
        applied by its optimizer; the validation batch is not read (`hypergrad` unused).
    """
    if (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
            or warmup_steps < 0):
        raise ValueError(f"warmup_steps={warmup_steps!r}: expected an integer >= 0")

    def init(key: Array, sample_images: Array) -> BilevelState:
        k_model, k_arch = jax.random.split(key)
        alphas = space.init_arch(k_arch)
        weights = relax.expected(alphas)
        variables = model.init(init_key(k_model), sample_images, weights, train=True)
        params = variables["params"]
        # fold_in, not a third split: the model and arch keys stay those of a 2-way split
        return BilevelState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=variables.get("batch_stats", {}), alphas=alphas,
                            w_opt=w_tx.init(params), a_opt=a_tx.init(alphas),
                            key=jax.random.fold_in(key, 1))

    # Traced once per input shape: a step differentiates the supernet several times
    # (arch and weight gradients, perturbed weights, Hessian-vector products), and under a
    # nested jit each of those transforms the cached jaxpr instead of tracing the flax
    # modules again (lowering a finite-difference iteration at C=16, 8 cells: 82 s -> 36 s).
    apply_train = jax.jit(functools.partial(model.apply, train=True,
                                            mutable=["batch_stats"]))

    def forward(params: PyTree, batch_stats: PyTree, weights: PyTree, images: Array
                ) -> tuple[Array, PyTree]:
        logits, updates = apply_train({"params": params, "batch_stats": batch_stats},
                                      images, weights)
        return logits, updates["batch_stats"]

    def arch_step(state: BilevelState, train_batch: Batch, val_batch: Batch
                  ) -> tuple[BilevelState, Metrics]:
        """The architecture half: the estimator's gradient (plus the penalty's) on the
        validation batch, `a_tx` on the alphas; weights, statistics and step unchanged."""
        key, k_sample = jax.random.split(state.key)
        lr = w_lr(state.step)

        def loss(params: PyTree, alphas: PyTree, batch: Batch) -> Array:
            weights = relax.weights(k_sample, alphas, state.step)
            logits, _ = forward(params, state.batch_stats, weights, batch["image"])
            return cross_entropy(logits, batch["label"])

        val_loss = loss
        if relax.penalty is not None:
            def val_loss(params: PyTree, alphas: PyTree, batch: Batch) -> Array:
                return loss(params, alphas, batch) + relax.penalty(alphas, state.step)

        a_grad = hypergrad(loss, val_loss, state.params, state.alphas, train_batch,
                           val_batch, lr=lr, w_opt=state.w_opt)
        a_updates, a_opt = a_tx.update(a_grad, state.a_opt, state.alphas)
        alphas = optax.apply_updates(state.alphas, a_updates)
        if relax.after_update is not None:
            alphas = relax.after_update(k_sample, state.alphas, alphas, state.step)
        return (state.replace(alphas=alphas, a_opt=a_opt, key=key),
                {"lr": lr, "hypergrad_norm": optax.tree.norm(a_grad)})

    def weight_step(state: BilevelState, train_batch: Batch
                    ) -> tuple[BilevelState, Metrics]:
        """The weight half: `w_tx` on the training loss with the current alphas."""
        key, k_sample = jax.random.split(state.key)
        weights = relax.weights(k_sample, state.alphas, state.step)

        def weight_loss(params: PyTree) -> tuple[Array, tuple[Array, PyTree]]:
            logits, stats = forward(params, state.batch_stats, weights,
                                    train_batch["image"])
            return cross_entropy(logits, train_batch["label"]), (logits, stats)

        (loss, (logits, batch_stats)), w_grad = jax.value_and_grad(
            weight_loss, has_aux=True)(state.params)
        w_updates, w_opt = w_tx.update(w_grad, state.w_opt, state.params)
        params = optax.apply_updates(state.params, w_updates)
        return (state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              w_opt=w_opt, key=key),
                {"train_loss": loss,
                 "train_accuracy": accuracy(logits, train_batch["label"]),
                 "w_grad_norm": optax.tree.norm(w_grad)})

    def skip_arch(state: BilevelState, train_batch: Batch, val_batch: Batch
                  ) -> tuple[BilevelState, Metrics]:
        del train_batch, val_batch
        return state, {"lr": w_lr(state.step).astype(jnp.float32),
                       "hypergrad_norm": jnp.zeros((), jnp.float32)}

    def step(state: BilevelState, train_batch: Batch, val_batch: Batch
             ) -> tuple[BilevelState, Metrics]:
        """One search iteration: `arch_step` (skipped in the first `warmup_steps`), then
        `weight_step`."""
        if warmup_steps:
            state, arch_metrics = jax.lax.cond(state.step >= warmup_steps, arch_step,
                                               skip_arch, state, train_batch, val_batch)
        else:
            state, arch_metrics = arch_step(state, train_batch, val_batch)
        state, w_metrics = weight_step(state, train_batch)
        return state, {"train_loss": w_metrics["train_loss"],
                       "train_accuracy": w_metrics["train_accuracy"],
                       "lr": arch_metrics["lr"],
                       "hypergrad_norm": arch_metrics["hypergrad_norm"],
                       "w_grad_norm": w_metrics["w_grad_norm"]}

    def joint_step(state: BilevelState, train_batch: Batch, val_batch: Batch
                   ) -> tuple[BilevelState, Metrics]:
        """SNAS: weights and alphas descend the training loss of one relaxed sample."""
        del val_batch  # single-level: the architecture learns from training data only
        key, k_sample = jax.random.split(state.key)
        lr = w_lr(state.step)

        def loss(params: PyTree, alphas: PyTree) -> tuple[Array, tuple[Array, PyTree]]:
            weights = relax.weights(k_sample, alphas, state.step)
            logits, stats = forward(params, state.batch_stats, weights,
                                    train_batch["image"])
            ce = cross_entropy(logits, train_batch["label"])
            total = ce if relax.penalty is None else ce + relax.penalty(alphas, state.step)
            return total, (ce, (logits, stats))

        (_, (ce, (logits, batch_stats))), (w_grad, a_grad) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True)(state.params, state.alphas)
        w_updates, w_opt = w_tx.update(w_grad, state.w_opt, state.params)
        params = optax.apply_updates(state.params, w_updates)
        a_updates, a_opt = a_tx.update(a_grad, state.a_opt, state.alphas)
        alphas = optax.apply_updates(state.alphas, a_updates)
        if warmup_steps:  # weights only at first: keep the old alphas and Adam state
            on = state.step >= warmup_steps
            alphas, a_opt = jax.tree.map(lambda new, old: jnp.where(on, new, old),
                                         (alphas, a_opt), (state.alphas, state.a_opt))
            a_grad = jax.tree.map(lambda g: jnp.where(on, g, jnp.zeros_like(g)), a_grad)
        return (state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              alphas=alphas, w_opt=w_opt, a_opt=a_opt, key=key),
                {"train_loss": ce,
                 "train_accuracy": accuracy(logits, train_batch["label"]),
                 "lr": lr, "hypergrad_norm": optax.tree.norm(a_grad),
                 "w_grad_norm": optax.tree.norm(w_grad)})

    def arch_weights(state: BilevelState) -> PyTree:
        """The relaxation's expected (deterministic) op weights of the alphas."""
        return relax.expected(state.alphas)

    def evaluate(state: BilevelState, batch: Batch) -> Metrics:
        """`eval_sums` on `batch` with the running BatchNorm averages and the relaxation's
        expected weights (padding rows, `batch["mask"]` False, do not count)."""
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                             batch["image"], arch_weights(state), train=False)
        return eval_sums(logits, batch)

    def derive(state: BilevelState) -> Any:
        """The space's discrete architecture of the expected op weights."""
        return space.derive(jax.device_get(arch_weights(state)))

    # SNAS' single-level iteration replaces the two halves (which stay as parts)
    return BilevelStrategy(init=init, step=joint_step if joint else step, derive=derive,
                           evaluate=evaluate,
                           arch_step=arch_step, weight_step=weight_step,
                           arch_weights=arch_weights)

