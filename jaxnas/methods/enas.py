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

# the gather chain supernet's keys (the one-shot methods'); "darts" is the bilevel
# methods' DARTS supernet, checked by `supernets.check_model`
CHAIN_MODEL_RULES: dict[str, C.Rule] = {k: oneshot.RULES[k] for k in (
    "model.stem_channels", "model.widths", "model.depths", "model.strides",
    "model.head_channels", "model.stem_stride", "model.impl", "model.bn_momentum")}

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
    if space == "darts":
        supernets.check_model(config)
    else:
        C.validate(config, CHAIN_MODEL_RULES, required=list(CHAIN_MODEL_RULES))


ENAS = methods.register(methods.Method(
    name="enas", title="ENAS", rules=RULES, loop="jaxnas.runners.enas", check=check))
