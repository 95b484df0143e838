"""ENAS' config rules: the shared weights of a supernet trained on controller-sampled
paths, alternating with REINFORCE controller updates on validation accuracy; the
supernet's rules by `config.model.space` ("chain", the default, or "darts": ENAS'
cells on the DARTS search supernet)."""

from __future__ import annotations

import ml_collections

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError
from jaxnas.methods import oneshot, supernets

SPACES = ("chain", "darts")

MODEL_RULES: dict[str, dict[str, C.Rule]] = {
    "chain": {k: oneshot.RULES[k] for k in (
        "model.stem_channels", "model.widths", "model.depths", "model.strides",
        "model.head_channels", "model.stem_stride", "model.impl", "model.bn_momentum")},
    "darts": {k: v for k, v in supernets.MODEL_RULES["darts"].items()},
}

RULES: dict[str, C.Rule] = {
    **{k: oneshot.RULES[k] for k in (
        "optim.lr", "optim.momentum", "optim.weight_decay", "optim.grad_clip")},
    # jaxnas.strategies.reinforce.CONTROLLERS
    "enas.controller": C.choice_from("jaxnas.strategies.reinforce", "CONTROLLERS"),
    "enas.controller_batch": C.positive(int),
    "enas.controller_lr": C.positive(),
    "enas.entropy_weight": C.non_negative(),
    "enas.baseline_decay": C.in_range(0.0, 1.0, hi_open=True),
}


def check(config: ml_collections.ConfigDict) -> None:
    """The supernet's rules for `config.model.space` (all required)."""
    space = config.model.get("space", "chain") if "model" in config else "chain"
    if space not in SPACES:
        raise ConfigError(f"config.model.space={space!r} is not allowed for ENAS: "
                          f"expected one of {', '.join(repr(s) for s in SPACES)}")
    rules = MODEL_RULES[space]
    C.validate(config, rules, required=list(rules))
    if space == "darts" and config.model.multiplier > config.model.steps:
        raise ConfigError(f"config.model.multiplier={config.model.multiplier} is not "
                          f"allowed: expected at most model.steps={config.model.steps}")


ENAS = methods.register(methods.Method(
    name="enas", title="ENAS", rules=RULES, loop="jaxnas.runners.enas", check=check))
