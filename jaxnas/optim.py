"""Optimizers, learning-rate schedules and the parameter-initialisation key shared by
strategies and trainers."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]


def as_schedule(lr: Schedule | float) -> Schedule:
    """`lr` itself when it is a schedule of the step, else the constant schedule of it."""
    return lr if callable(lr) else optax.constant_schedule(lr)


def cosine_epoch_schedule(lr: float, lr_min: float, epochs: int,
                          steps_per_epoch: int) -> Schedule:
    """PyTorch CosineAnnealingLR stepped once per epoch, as DARTS uses it."""

    def schedule(step: jax.Array) -> jax.Array:
        epoch = jnp.minimum(step // steps_per_epoch, epochs)
        return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * epoch / epochs))

    return schedule


def cosine_schedule(lr: float, lr_min: float, total_steps: int) -> Schedule:
    """Cosine decay from `lr` to `lr_min` over `total_steps`, stepped every step (SPOS)."""

    def schedule(step: jax.Array) -> jax.Array:
        frac = jnp.minimum(step, total_steps) / max(total_steps, 1)
        return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * frac))

    return schedule


def weight_optimizer(schedule: Schedule | float, *, momentum: float = 0.9,
                     weight_decay: float = 3e-4, grad_clip: float = 5.0
                     ) -> optax.GradientTransformation:
    """torch SGD(momentum, weight_decay) after clip_grad_norm_, as DARTS, SPOS and FairNAS
    train supernet and network weights (coupled L2 decay, then the momentum trace)."""
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(as_schedule(schedule)),
    )


def momentum_trace(opt_state: optax.OptState) -> optax.Updates:
    """The momentum buffer of an optimizer state built by `weight_optimizer` (or any chain
    holding one `optax.trace`), found by the state's type, not its position in the chain."""
    trace = optax.tree_utils.tree_get(opt_state, "TraceState")
    if trace is None:
        raise ValueError("the optimizer state holds no optax.trace (TraceState)")
    return trace.trace


def arch_optimizer(lr: float = 3e-4, b1: float = 0.5, b2: float = 0.999,
                   weight_decay: float = 1e-3) -> optax.GradientTransformation:
    """torch Adam with coupled L2 weight decay, as DARTS uses for the alphas."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8), optax.scale(-lr))


def init_key(seed_or_key: int | jax.Array) -> jax.Array:
    """A PRNG key for parameter initialisation, in the "rbg" implementation.

    Initialising a supernet draws a few hundred random arrays; with the default threefry
    generator XLA compiles each draw as an unrolled hash, which made `jit(init)` of a
    3-cell DARTS supernet take ~20 s here against ~6 s with "rbg". Deterministic per seed
    or key (the key's data, cycled to the four words "rbg" wants).
    """
    if isinstance(seed_or_key, int):
        return jax.random.key(seed_or_key, impl="rbg")
    data = jax.random.key_data(seed_or_key).reshape(-1)
    data = jnp.resize(data.astype(jnp.uint32), (4,))
    return jax.random.wrap_key_data(data, impl="rbg")
