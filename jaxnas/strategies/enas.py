"""ENAS (Pham et al. 2018) on the chain supernet: shared weights trained on paths the
controller samples, alternating with REINFORCE controller updates whose reward is a
path's validation accuracy with the shared weights.

One `step(state, train_batch, val_batch)`:

1. the controller (`jaxnas.strategies.reinforce`: factorised, or the NAS/ENAS LSTM)
   samples ``B`` paths; the first is trained: one SGD step of the shared weights on the
   training batch through that path (the gather supernet runs only its blocks);
2. every sampled path is scored on the validation batch with the updated weights
   (BatchNorm in training mode: batch statistics, as ENAS evaluates a child), the
   accuracy is its reward, and `reinforce.tell` updates the controller (moving-average
   baseline, entropy bonus, Adam).

ENAS alternates whole phases (an epoch of shared-weight steps, then 2000 controller
steps); here the two alternate every step, so one compiled program holds both.
`derive` returns the controller's most likely path (greedy along the LSTM's prefix).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxnas.losses import accuracy, cross_entropy
from jaxnas.optim import as_schedule, init_key, weight_optimizer
from jaxnas.strategies import reinforce
from jaxnas.supernet.chain import ChainSupernet
from jaxnas.types import Array, Batch, Metrics, PyTree


class ENASState(struct.PyTreeNode):
    """Shared weights, their optimizer, the controller and the per-choice counts."""

    step: Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    controller: reinforce.ReinforceState
    key: Array
    counts: Array        # int32[L, K]: times each choice of each layer was trained


class ENAS(NamedTuple):
    init: Callable[[Array, Array], ENASState]
    step: Callable[..., tuple[ENASState, Metrics]]
    derive: Callable[[ENASState], Array]


def enas(model: ChainSupernet, *, learning_rate: Any = 0.05, momentum: float = 0.9,
         weight_decay: float = 4e-5, grad_clip: float = 5.0, controller_batch: int = 8,
         controller_lr: float = 0.0035, entropy_weight: float = 1e-4,
         baseline_decay: float = 0.99, controller: str = "lstm") -> ENAS:
    """The ENAS strategy over ``model`` (defaults: ENAS' controller Adam lr 0.0035,
    entropy weight 1e-4, baseline decay 0.99, LSTM controller)."""
    if controller not in reinforce.CONTROLLERS:
        raise ValueError(f"controller={controller!r}: expected one of "
                         f"{', '.join(reinforce.CONTROLLERS)}")
    schedule = as_schedule(learning_rate)
    tx = weight_optimizer(schedule, momentum=momentum, weight_decay=weight_decay,
                          grad_clip=grad_clip)
    space = model.space
    num_choices = space.num_choices
    lstm = (reinforce.LSTMController(num_choices) if controller == "lstm" else None)

    def init(key: Array, sample_images: Array) -> ENASState:
        k_model, k_ctrl, k_state = jax.random.split(key, 3)
        path = jnp.zeros((space.num_layers,), jnp.int32)
        variables = model.init(init_key(k_model), sample_images, path, train=True)
        ctrl = reinforce.init(k_ctrl, num_choices, batch_size=controller_batch,
                              learning_rate=controller_lr,
                              entropy_weight=entropy_weight,
                              baseline_decay=baseline_decay, controller=lstm)
        return ENASState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                         batch_stats=variables["batch_stats"],
                         opt_state=tx.init(variables["params"]), controller=ctrl,
                         key=k_state,
                         counts=jnp.zeros((space.num_layers, max(num_choices)),
                                          jnp.int32))

    def loss_fn(params, batch_stats, path, batch):
        logits, upd = model.apply({"params": params, "batch_stats": batch_stats},
                                  batch["image"], path, train=True,
                                  mutable=["batch_stats"])
        return cross_entropy(logits, batch["label"]), (logits, upd["batch_stats"])

    def rewards(params, batch_stats, paths, batch) -> Array:
        """Validation accuracy of each path with the shared weights."""
        def one(path):
            logits, _ = model.apply({"params": params, "batch_stats": batch_stats},
                                    batch["image"], path, train=True,
                                    mutable=["batch_stats"])
            return accuracy(logits, batch["label"])
        return jax.vmap(one)(paths)

    def step(state: ENASState, train_batch: Batch, val_batch: Batch
             ) -> tuple[ENASState, Metrics]:
        key, k_ask = jax.random.split(state.key)
        paths, ctrl = reinforce.ask(k_ask, state.controller)
        path = paths[0]
        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, path, train_batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        reward = rewards(params, stats, paths, val_batch)
        ctrl = reinforce.tell(ctrl, paths, reward)
        hits = jax.nn.one_hot(path, max(num_choices), dtype=jnp.int32)
        metrics = {"train_loss": loss, "train_accuracy": accuracy(logits,
                                                                  train_batch["label"]),
                   "lr": schedule(state.step), "reward_mean": jnp.mean(reward),
                   "baseline": ctrl.baseline.astype(jnp.float32)}
        return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                             opt_state=opt_state, controller=ctrl, key=key,
                             counts=state.counts + hits), metrics

    def derive(state: ENASState) -> Array:
        """int32[L]: the controller's most likely path."""
        c = state.controller
        probs = (lstm.greedy_probabilities(c.logits) if lstm is not None
                 else jnp.exp(reinforce.log_policy(c.logits, num_choices)))
        return jnp.argmax(probs, axis=-1).astype(jnp.int32)

    return ENAS(init=init, step=step, derive=derive)
