"""Config rules of the gradient-based family over the bilevel core (GDAS, SNAS,
FairDARTS, DrNAS, DARTS-, PC-DARTS, ProxylessNAS): DARTS' rules and checks plus each
method's own section (`config.<method>.*`); `jaxnas.runners.darts` runs them all."""

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


def _check_gdas(config: ml_collections.ConfigDict) -> None:
    """tau_min <= tau_max; the optional `gdas.single_path` (default False) a bool, True
    only on the DARTS cell supernet's loop mixed op (the only one that runs one op)."""
    _ordered("gdas", "tau_min", "tau_max", strict_lo=True)(config)
    single = config.gdas.get("single_path", False)
    if not isinstance(single, bool):
        raise ConfigError(f"config.gdas.single_path={single!r} is not allowed: expected "
                          "true or false")
    space, mixed = config.model.get("space", "darts"), config.model.get("mixed_op")
    if single and (space != "darts" or mixed != "loop"):
        raise ConfigError(f"config.gdas.single_path=True is not allowed with "
                          f"model.space={space!r}, model.mixed_op={mixed!r}: expected "
                          "model.space='darts' and model.mixed_op='loop' (the only "
                          "supernet that runs just the sampled op)")


GDAS = _register("gdas", "GDAS", {"gdas.tau_max": C.positive(), "gdas.tau_min": C.positive()},
                 _check_gdas)
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


def _check_pcdarts(config: ml_collections.ConfigDict) -> None:
    """PC-DARTS: the DARTS cell supernet, K dividing the channels, and the loop mixed op
    when K > 1 (the only formulation with the channel split)."""
    darts_rules.check(config)
    k, m = config.pcdarts.partial_channels, config.model
    space = m.get("space", "darts")
    if space != "darts":
        raise ConfigError(f"config.model.space={space!r} is not allowed for pcdarts: "
                          "expected 'darts' (partial channels and edge normalisation are "
                          "built for the DARTS cell supernet)")
    if m.channels % k:
        raise ConfigError(f"config.pcdarts.partial_channels={k} is not allowed: expected "
                          f"a divisor of model.channels={m.channels}")
    if k > 1 and m.mixed_op != "loop":
        raise ConfigError(f"config.model.mixed_op={m.mixed_op!r} is not allowed with "
                          f"pcdarts.partial_channels={k}: expected 'loop' (the only "
                          "formulation with partial channels; or partial_channels=1)")


PCDARTS = _register("pcdarts", "PC-DARTS",
                    {"pcdarts.partial_channels": C.positive(int)}, _check_pcdarts)

# ProxylessNAS' resource term: "none", or "params" (each op's parameter count, in
# millions: jaxnas.strategies.proxyless.op_param_table) times cost_weight
PROXYLESS_COSTS = ("none", "params")


def _check_proxyless(config: ml_collections.ConfigDict) -> None:
    """The parameter table is of the DARTS cell ops: other spaces search without it. The
    optional `proxyless.paths` (default "all"): "two" runs only the sampled pair, which
    on the DARTS cell supernet needs the loop mixed op."""
    from jaxnas.strategies.proxyless import PATHS
    darts_rules.check(config)
    space = config.model.get("space", "darts")
    if config.proxyless.cost == "params" and space != "darts":
        raise ConfigError(f"config.proxyless.cost='params' is not allowed with "
                          f"model.space={space!r}: expected 'none' (the parameter table "
                          "is built for the DARTS cell ops)")
    paths = config.proxyless.get("paths", "all")
    if paths not in PATHS:
        raise ConfigError(f"config.proxyless.paths={paths!r} is not allowed: expected "
                          f"one of {', '.join(repr(p) for p in PATHS)}")
    mixed = config.model.get("mixed_op")
    if paths == "two" and space not in ("darts", "chain"):
        raise ConfigError(f"config.proxyless.paths='two' is not allowed with "
                          f"model.space={space!r}: expected model.space 'darts' or "
                          "'chain' (the supernets that run only the sampled pair)")
    if paths == "two" and space == "darts" and mixed != "loop":
        raise ConfigError(f"config.model.mixed_op={mixed!r} is not allowed with "
                          "proxyless.paths='two': expected 'loop' (the only DARTS mixed "
                          "op that runs just the two sampled ops)")


PROXYLESS = _register("proxyless", "ProxylessNAS",
                      {"proxyless.cost": C.choice(*PROXYLESS_COSTS),
                       "proxyless.cost_weight": C.non_negative()}, _check_proxyless)
