"""DARTS' config rules (the supernet's, by `model.space`, are in `supernets`), beside
the code they guard: allowed values are read from the kernels and strategy modules
themselves (`config.choice_from`)."""

from __future__ import annotations

import ml_collections

from jaxnas import config as C
from jaxnas import methods
from jaxnas.methods import supernets
from jaxnas.errors import ConfigError

RULES: dict[str, C.Rule] = {
    # strategies.darts.ESTIMATORS is the registry's names
    "darts.estimator": C.choice_from("jaxnas.strategies.estimators", "REGISTRY"),
    "darts.unroll_momentum": methods.BOOL,
    "darts.fd_eps": C.positive(),
    "darts.implicit_iters": C.positive(int),
    "darts.implicit_damping": C.non_negative(),
    "darts.neumann_alpha": C.positive(),
    "darts.warmup_epochs": C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                                  and v >= 0, "a non-negative integer"),
    "optim.w_lr": C.positive(),
    "optim.w_lr_min": C.non_negative(),
    "optim.w_momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.w_weight_decay": C.non_negative(),
    "optim.grad_clip": C.positive(),
    "optim.a_lr": C.positive(),
    "optim.a_b1": C.in_range(0.0, 1.0, hi_open=True),
    "optim.a_b2": C.in_range(0.0, 1.0, hi_open=True),
    "optim.a_weight_decay": C.non_negative(),
}


# Optional section of every bilevel method (jaxnas.strategies.early_stop): 0 = off.
EARLY_STOP_RULES: dict[str, C.Rule] = {
    "early_stop.max_skips": C.non_negative(int),
    "early_stop.stable_epochs": C.non_negative(int),
    "early_stop.eigen_ratio": C.in_range(0.0, 1.0, hi_open=True),
    "early_stop.eigen_epochs": C.positive(int),
    "early_stop.eigen_batch": C.positive(int),
}


def check(config: ml_collections.ConfigDict) -> None:
    """The supernet's rules (by `model.space`), the optional `early_stop` section and
    the cross-key rules of a DARTS config (every bilevel method's check calls it)."""
    supernets.check_model(config)
    from jaxnas.methods import hardware_loss
    hardware_loss.check(config)  # the optional expected-cost loss (chain space)
    if "early_stop" in config:
        C.validate(config, EARLY_STOP_RULES, required=list(EARLY_STOP_RULES))
        unknown = sorted(set(config.early_stop.keys())
                         - {k.split(".")[1] for k in EARLY_STOP_RULES})
        if unknown:
            raise ConfigError(f"config.early_stop has unknown keys {', '.join(unknown)}: "
                              f"expected {', '.join(EARLY_STOP_RULES)}")
    if config.darts.warmup_epochs >= config.epochs:
        raise ConfigError(f"config.darts.warmup_epochs={config.darts.warmup_epochs} is "
                          f"not allowed: expected fewer than epochs={config.epochs} (the "
                          "architecture would never be updated)")


DARTS = methods.register(methods.Method(
    name="darts", title="DARTS", rules=RULES, loop="jaxnas.runners.darts", check=check))
