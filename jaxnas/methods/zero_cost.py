"""The zero-cost proxy study's config rules: random chain-space architectures scored
by zero-cost proxies, then retrained, and the proxies' rank correlation reported."""

from __future__ import annotations

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError
from jaxnas.methods import oneshot

# jaxnas.proxies.PROXIES, repeated here so that checking a config imports no JAX
PROXY_NAMES = ("synflow", "snip", "grad_norm", "naswot", "jacov", "fisher")


def _proxy_tuple(v) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) > 0
            and all(isinstance(n, str) and n in PROXY_NAMES for n in v))


RULES: dict[str, C.Rule] = {
    **{k: oneshot.RULES[k] for k in (
        "model.stem_channels", "model.widths", "model.depths", "model.strides",
        "model.head_channels", "model.stem_stride", "model.impl", "model.bn_momentum",
        "optim.lr", "optim.lr_min", "optim.momentum", "optim.weight_decay",
        "optim.grad_clip")},
    "data.eval_batch_size": C.positive(int),
    "zero_cost.num_archs": C.Rule(lambda v: isinstance(v, int)
                                  and not isinstance(v, bool) and v >= 3,
                                  "an integer >= 3 (a rank correlation needs pairs)"),
    "zero_cost.proxies": C.Rule(_proxy_tuple, "a non-empty tuple of proxy names "
                                f"from {', '.join(PROXY_NAMES)}"),
    "zero_cost.proxy_batch": C.Rule(lambda v: isinstance(v, int)
                                    and not isinstance(v, bool) and v >= 2,
                                    "an integer >= 2 (NASWOT and jacov compare inputs "
                                    "with each other)"),
}


def check(config) -> None:
    """Cross-key checks before any data or compile."""
    if config.optim.lr_min > config.optim.lr:
        raise ConfigError(f"config.optim.lr_min={config.optim.lr_min!r} is not allowed: "
                          f"expected at most optim.lr={config.optim.lr!r}")


ZERO_COST = methods.register(methods.Method(
    name="zero_cost", title="the zero-cost proxy study", rules=RULES,
    loop="jaxnas.runners.zero_cost", check=check))
