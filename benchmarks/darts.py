"""DARTS suite: the weight step, the architecture step and the full search iteration.

Records (names are a contract):
  darts/weight_step                 weight half of `jaxnas.strategies.darts.darts(...).step`
  darts/arch_step/<estimator>       architecture half: hypergradient + Adam on the alphas
  darts/iteration/<estimator>       the strategy's own `step` (architecture then weights)

The iteration is `darts(model, estimator=...).step` itself.  The strategy runs both
halves in one jitted function and does not expose them, so `parts` builds them from
the same pieces (the supernet's `apply`, `arch_weights`, the `hypergrad` estimators,
`weight_optimizer` and `arch_optimizer`); `tests/test_bench.py` checks that the two
halves in sequence give exactly the strategy's step.  Settings are those of the search
configs (`experiments/darts_cifar10.py`): SGD 0.025 with momentum 0.9 and weight decay
3e-4 under a per-epoch cosine schedule, Adam 3e-4 on the alphas, plain-SGD virtual
step, finite-difference radius 0.01, 5 conjugate-gradient iterations.
Images per second count the batch of one step (`--batch`), as the reference figures do,
although an iteration also reads a validation batch of the same size.
"""

from __future__ import annotations

import functools

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from jaxnas import hypergrad
from jaxnas.strategies import darts as darts_lib
from jaxnas.supernet.darts import DartsSupernet

# The search configs' settings (experiments/darts_digits.py, darts_cifar10.py).
SETTINGS = dict(w_lr=0.025, w_lr_min=0.001, epochs=50, steps_per_epoch=390,
                w_momentum=0.9, w_weight_decay=3e-4, grad_clip=5.0, a_lr=3e-4, a_b1=0.5,
                a_b2=0.999, a_weight_decay=1e-3, unroll_momentum=False, fd_eps=0.01,
                implicit_iters=5, implicit_damping=0.0, neumann_alpha=0.01)


def build_model(args: Any) -> DartsSupernet:
    return DartsSupernet(channels=args.channels, num_classes=args.num_classes,
                         layers=args.layers, steps=args.nodes, multiplier=args.nodes,
                         mixed_op=args.mixed_op, impl=args.impl)


def _schedule(s: dict) -> Callable:
    return darts_lib.cosine_epoch_schedule(s["w_lr"], s["w_lr_min"], s["epochs"],
                                           s["steps_per_epoch"])


def strategy(model: DartsSupernet, estimator: str, s: dict = SETTINGS):
    """`jaxnas.strategies.darts.darts` with the search configs' settings."""
    return darts_lib.darts(
        model, estimator=estimator, w_schedule=_schedule(s), w_momentum=s["w_momentum"],
        w_weight_decay=s["w_weight_decay"], grad_clip=s["grad_clip"],
        a_tx=darts_lib.arch_optimizer(s["a_lr"], s["a_b1"], s["a_b2"], s["a_weight_decay"]),
        unroll_momentum=s["unroll_momentum"], fd_eps=s["fd_eps"],
        implicit_iters=s["implicit_iters"], implicit_damping=s["implicit_damping"],
        neumann_alpha=s["neumann_alpha"])


def parts(model: DartsSupernet, estimator: str, s: dict = SETTINGS
          ) -> tuple[Callable, Callable]:
    """``(arch_step, weight_step)``: the two halves of `strategy(...).step`.

    ``arch_step(state, train_batch, val_batch) -> state`` (new alphas and Adam state);
    ``weight_step(state, train_batch) -> (state, metrics)`` (new weights, BatchNorm
    statistics, SGD state, step + 1).  ``weight_step(arch_step(state, t, v), t)`` is
    ``step(state, t, v)`` of the strategy, operation for operation.
    """
    if estimator not in darts_lib.ESTIMATORS:
        raise ValueError(f"estimator {estimator!r}: expected one of "
                         f"{', '.join(darts_lib.ESTIMATORS)}")
    schedule = _schedule(s)
    w_tx = darts_lib.weight_optimizer(schedule, momentum=s["w_momentum"],
                                      weight_decay=s["w_weight_decay"],
                                      grad_clip=s["grad_clip"])
    a_tx = darts_lib.arch_optimizer(s["a_lr"], s["a_b1"], s["a_b2"], s["a_weight_decay"])

    # the strategy's nested jit (traced once, transformed many times)
    apply_train = jax.jit(functools.partial(model.apply, train=True,
                                            mutable=["batch_stats"]))

    def forward(params, batch_stats, alphas, images):
        return apply_train({"params": params, "batch_stats": batch_stats}, images,
                           darts_lib.arch_weights(alphas))

    def hypergradient(state, train_batch, val_batch, lr):
        def loss(params, alphas, batch):
            logits, _ = forward(params, state.batch_stats, alphas, batch["image"])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, batch["label"]).mean()

        args = (loss, loss, state.params, state.alphas, train_batch, val_batch)
        if estimator == "first_order":
            return hypergrad.first_order(*args)
        if estimator in ("darts_fd", "darts_exact"):
            extra = {}
            if s["unroll_momentum"]:
                extra = dict(momentum=s["w_momentum"],
                             momentum_buffer=state.w_opt[2].trace,
                             weight_decay=s["w_weight_decay"])
            method = "exact" if estimator == "darts_exact" else "finite_difference"
            return hypergrad.darts_second_order(*args, lr=lr, method=method,
                                                eps=s["fd_eps"], **extra)
        if estimator == "amended":
            return hypergrad.amended(*args, lr=lr)
        method = "cg" if estimator == "implicit_cg" else "neumann"
        extra = {"alpha": s["neumann_alpha"]} if method == "neumann" else {}
        return hypergrad.implicit(*args, method=method, iters=s["implicit_iters"],
                                  damping=s["implicit_damping"], **extra)

    def arch_step(state, train_batch, val_batch):
        a_grad = hypergradient(state, train_batch, val_batch, schedule(state.step))
        updates, a_opt = a_tx.update(a_grad, state.a_opt, state.alphas)
        return state.replace(alphas=optax.apply_updates(state.alphas, updates),
                             a_opt=a_opt)

    def weight_step(state, train_batch):
        def loss(params):
            logits, upd = forward(params, state.batch_stats, state.alphas,
                                  train_batch["image"])
            ce = optax.softmax_cross_entropy_with_integer_labels(
                logits, train_batch["label"]).mean()
            return ce, (logits, upd["batch_stats"])

        (value, (logits, stats)), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params)
        updates, w_opt = w_tx.update(grads, state.w_opt, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train_loss": value,
                   "train_accuracy": jnp.mean(jnp.argmax(logits, -1)
                                              == train_batch["label"])}
        return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                             w_opt=w_opt), metrics

    return arch_step, weight_step


def case(name: str, args: Any) -> common.Case:
    """The function and placed arguments of one record of this suite."""
    kind, _, estimator = name.partition("/")[2].partition("/")
    estimator = estimator or "first_order"  # the weight step does not depend on it
    placement = common.Placement(args.devices)
    model = build_model(args)
    strat = strategy(model, estimator)
    image = args.image or 32
    train = common.synthetic_batch(0, args.batch, image, 3, args.num_classes)
    val = common.synthetic_batch(1, args.batch, image, 3, args.num_classes)
    state = jax.jit(strat.init)(jax.random.key(0), train["image"])
    n_params = common.param_count(state.params)
    state = placement.replicated(state)
    train, val = placement.batch(train), placement.batch(val)
    arch_step, weight_step = parts(model, estimator)
    if kind == "weight_step":
        fn, fn_args, state_out = weight_step, (state, train), "first"
    elif kind == "arch_step":
        fn, fn_args, state_out = arch_step, (state, train, val), "all"
    elif kind == "iteration":
        fn, fn_args, state_out = strat.step, (state, train, val), "first"
    else:
        raise ValueError(f"unknown darts record {name!r}")
    config = dict(channels=args.channels, layers=args.layers, nodes=args.nodes,
                  batch=args.batch, image=[image, image, 3], num_classes=args.num_classes,
                  mixed_op=args.mixed_op, impl=args.impl, params=n_params,
                  devices=args.devices, repeats=args.repeats, warmup=args.warmup,
                  settings=SETTINGS)
    if kind != "weight_step":
        config["estimator"] = estimator
    return common.Case(fn, fn_args, args.batch, placement.devices, config,
                       lambda r: {"images_per_s": r["items_per_s"]}, state_out)
