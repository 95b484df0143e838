"""Config rules of the hardware-aware population search over a zero-cost proxy:
regularized evolution under a cost budget, or NSGA-II's (proxy, cost) Pareto front."""

from __future__ import annotations

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError
from jaxnas.methods import oneshot
from jaxnas.methods.zero_cost import PROXY_NAMES

STRATEGIES = ("evolution", "nsga2")
COSTS = ("params", "macs", "latency")  # jaxnas.hardware tables

RULES: dict[str, C.Rule] = {
    **{k: oneshot.RULES[k] for k in (
        "model.stem_channels", "model.widths", "model.depths", "model.strides",
        "model.head_channels", "model.stem_stride", "model.impl", "model.bn_momentum")},
    "population.strategy": C.choice(*STRATEGIES),
    "population.proxy": C.choice(*PROXY_NAMES),
    "population.proxy_batch": C.Rule(lambda v: isinstance(v, int)
                                     and not isinstance(v, bool) and v >= 2,
                                     "an integer >= 2 (NASWOT and jacov compare inputs "
                                     "with each other)"),
    "population.size": C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                              and v >= 2, "an integer >= 2"),
    "population.sample_size": C.positive(int),
    "population.batch_size": C.positive(int),
    "population.rounds": C.positive(int),
    "hardware.cost": C.choice(*COSTS),
    "hardware.latency_table": C.Rule(lambda v: isinstance(v, str),
                                     "a latency table JSON path (jaxnas latency), or ''"),
    "hardware.budget": C.Rule(lambda v: isinstance(v, (int, float))
                              and not isinstance(v, bool) and v >= 0,
                              "a number >= 0 (0: no budget)"),
}


def check(config) -> None:
    """Cross-key checks before any data or compile."""
    p, h = config.population, config.hardware
    if p.sample_size > p.size:
        raise ConfigError(f"config.population.sample_size={p.sample_size} is not "
                          f"allowed: expected at most population.size={p.size}")
    if p.strategy == "evolution" and p.batch_size > p.size:
        raise ConfigError(f"config.population.batch_size={p.batch_size} is not "
                          f"allowed: expected at most population.size={p.size}")
    if (h.cost == "latency") != bool(h.latency_table):
        raise ConfigError(f"config.hardware.latency_table={h.latency_table!r} is not "
                          f"allowed with hardware.cost={h.cost!r}: expected a table "
                          "file exactly when the cost is 'latency'")
    if p.strategy == "nsga2" and h.budget > 0:
        raise ConfigError(f"config.hardware.budget={h.budget!r} is not allowed with "
                          "population.strategy='nsga2': expected 0 (NSGA-II returns "
                          "the whole cost trade-off; read the budget off the front)")


PROXY_SEARCH = methods.register(methods.Method(
    name="proxy_search", title="the proxy population search", rules=RULES,
    loop="jaxnas.runners.proxy_search", check=check))
