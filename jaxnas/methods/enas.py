"""ENAS' config rules: the chain supernet's shared weights trained on controller-sampled
paths, alternating with REINFORCE controller updates on validation accuracy."""

from __future__ import annotations

from jaxnas import config as C
from jaxnas import methods
from jaxnas.methods import oneshot

RULES: dict[str, C.Rule] = {
    **{k: oneshot.RULES[k] for k in (
        "model.stem_channels", "model.widths", "model.depths", "model.strides",
        "model.head_channels", "model.stem_stride", "model.impl", "model.bn_momentum",
        "optim.lr", "optim.momentum", "optim.weight_decay", "optim.grad_clip")},
    # jaxnas.strategies.reinforce.CONTROLLERS
    "enas.controller": C.choice_from("jaxnas.strategies.reinforce", "CONTROLLERS"),
    "enas.controller_batch": C.positive(int),
    "enas.controller_lr": C.positive(),
    "enas.entropy_weight": C.non_negative(),
    "enas.baseline_decay": C.in_range(0.0, 1.0, hi_open=True),
}

ENAS = methods.register(methods.Method(
    name="enas", title="ENAS", rules=RULES, loop="jaxnas.runners.enas"))
