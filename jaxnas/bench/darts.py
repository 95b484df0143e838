"""DARTS suite: the weight step, the architecture step and the full search iteration.

Records (names are a contract):
  darts/weight_step                 weight half of `jaxnas.strategies.darts.darts(...).step`
  darts/arch_step/<estimator>       architecture half: hypergradient + Adam on the alphas
  darts/iteration/<estimator>       the strategy's own `step` (architecture then weights)

The iteration is `darts(model, estimator=...).step` itself; the two halves are its
`parts` (`arch_step`, `weight_step`), which the step runs in sequence.  Settings are
those of the search configs (`experiments/darts_cifar10.py`): SGD 0.025 with momentum
0.9 and weight decay 3e-4 under a per-epoch cosine schedule, Adam 3e-4 on the alphas,
plain-SGD virtual step, finite-difference radius 0.01, 5 conjugate-gradient iterations.
Images per second count the batch of one step (`--batch`), as the reference figures do,
although an iteration also reads a validation batch of the same size.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from jaxnas.bench import common
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
                         mixed_op=args.mixed_op, impl=args.impl,
                         remat=bool(getattr(args, "remat", False)),
                         scan_cells=bool(getattr(args, "scan_cells", False)),
                         remat_edges=bool(getattr(args, "remat_edges", False)))


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


def placed_state(strat, args: Any, placement: common.Placement):
    """``(image size, state, train batch, val batch, parameter count)``: a bilevel
    strategy's state initialised on synthetic batches, placed on `placement`."""
    image = args.image or 32
    train = common.synthetic_batch(0, args.batch, image, 3, args.num_classes)
    val = common.synthetic_batch(1, args.batch, image, 3, args.num_classes)
    state = jax.jit(strat.init)(jax.random.key(0), train["image"])
    n_params = common.param_count(state.params)
    state = placement.replicated(state)
    return image, state, placement.batch(train), placement.batch(val), n_params


def case(name: str, args: Any) -> common.Case:
    """The function and placed arguments of one record of this suite."""
    kind, _, estimator = name.partition("/")[2].partition("/")
    estimator = estimator or "first_order"  # the weight step does not depend on it
    placement = common.Placement(args.devices)
    model = build_model(args)
    strat = strategy(model, estimator)
    image, state, train, val, n_params = placed_state(strat, args, placement)
    arch_step, weight_step = strat.parts["arch_step"], strat.parts["weight_step"]
    if kind == "weight_step":
        fn, fn_args, state_out = weight_step, (state, train), "first"
    elif kind == "arch_step":
        fn, fn_args, state_out = arch_step, (state, train, val), "first"
    elif kind == "iteration":
        fn, fn_args, state_out = strat.step, (state, train, val), "first"
    else:
        raise ValueError(f"unknown darts record {name!r}")
    config = dict(channels=args.channels, layers=args.layers, nodes=args.nodes,
                  batch=args.batch, image=[image, image, 3], num_classes=args.num_classes,
                  mixed_op=args.mixed_op, impl=args.impl,
                  remat=bool(getattr(args, "remat", False)),
                  scan_cells=bool(getattr(args, "scan_cells", False)),
                  remat_edges=bool(getattr(args, "remat_edges", False)), params=n_params,
                  devices=args.devices, repeats=args.repeats, warmup=args.warmup,
                  settings=SETTINGS)
    if kind != "weight_step":
        config["estimator"] = estimator
    return common.Case(fn, fn_args, args.batch, placement.devices, config,
                       lambda r: {"images_per_s": r["items_per_s"]}, state_out)
