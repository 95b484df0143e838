"""Config rules of the gradient-based family over the bilevel core (GDAS, SNAS,
FairDARTS, DrNAS, DARTS-): DARTS' rules and checks plus each method's own section
(`config.<method>.*`); `jaxnas.runners.darts` runs them all."""

from __future__ import annotations

import ml_collections

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError
from jaxnas.methods import darts as darts_rules


def _ordered(section: str, lo: str, hi: str, *, strict_lo: bool) -> callable:
    """A check that config.<section>.<lo> <= config.<section>.<hi>."""
    def check(config: ml_collections.ConfigDict) -> None:
        darts_rules.check(config)
        s = config[section]
        if s[lo] > s[hi]:
            raise ConfigError(f"config.{section}.{lo}={s[lo]!r} is not allowed: expected "
                              f"{'0 < ' if strict_lo else '0 <= '}{section}.{lo} <= "
                              f"{section}.{hi}={s[hi]!r}")
    return check


def _register(name: str, title: str, own: dict[str, C.Rule], check) -> methods.Method:
    return methods.register(methods.Method(
        name=name, title=title, rules={**darts_rules.RULES, **own},
        loop="jaxnas.runners.darts", check=check))


GDAS = _register("gdas", "GDAS", {"gdas.tau_max": C.positive(), "gdas.tau_min": C.positive()},
                 _ordered("gdas", "tau_min", "tau_max", strict_lo=True))
SNAS = _register("snas", "SNAS", {"snas.tau_max": C.positive(), "snas.tau_min": C.positive()},
                 _ordered("snas", "tau_min", "tau_max", strict_lo=True))
FAIRDARTS = _register("fairdarts", "FairDARTS",
                      {"fairdarts.zero_one_weight": C.non_negative()}, darts_rules.check)
DRNAS = _register("drnas", "DrNAS", {"drnas.kl_weight": C.non_negative(),
                                     "drnas.anchor": C.positive()}, darts_rules.check)
DARTS_MINUS = _register("darts_minus", "DARTS-",
                        {"darts_minus.beta_max": C.in_range(0.0, 1.0),
                         "darts_minus.beta_min": C.in_range(0.0, 1.0)},
                        _ordered("darts_minus", "beta_min", "beta_max", strict_lo=False))
