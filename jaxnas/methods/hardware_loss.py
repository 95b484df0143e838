"""The optional `config.hardware` section of every bilevel method on the chain space:
the expected-cost (latency) loss of ProxylessNAS added to the architecture objective
(`jaxnas.hardware.with_expected_cost`). No JAX is imported here."""

from __future__ import annotations

import ml_collections

from jaxnas import config as C
from jaxnas.errors import ConfigError

COSTS = ("params", "macs", "latency")  # jaxnas.hardware's chain tables

RULES: dict[str, C.Rule] = {
    "hardware.cost": C.choice(*COSTS),
    "hardware.latency_table": C.Rule(lambda v: isinstance(v, str),
                                     "a latency table JSON path (jaxnas latency), or ''"),
    "hardware.weight": C.non_negative(),
}


def check(config: ml_collections.ConfigDict) -> None:
    """Validates `config.hardware` when present (the chain space only; a latency table
    exactly when the cost is 'latency')."""
    if "hardware" not in config:
        return
    C.validate(config, RULES, required=list(RULES))
    unknown = sorted(set(config.hardware.keys()) - {k.split(".")[1] for k in RULES})
    if unknown:
        raise ConfigError(f"config.hardware has unknown keys {', '.join(unknown)}: "
                          f"expected {', '.join(RULES)}")
    space = config.model.get("space", "darts")
    if space != "chain":
        raise ConfigError(f"config.hardware is not allowed with model.space={space!r}: "
                          "expected model.space='chain' (the cost tables are the chain "
                          "space's)")
    h = config.hardware
    if (h.cost == "latency") != bool(h.latency_table):
        raise ConfigError(f"config.hardware.latency_table={h.latency_table!r} is not "
                          f"allowed with hardware.cost={h.cost!r}: expected a table "
                          "file exactly when the cost is 'latency'")
