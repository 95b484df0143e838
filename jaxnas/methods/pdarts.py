"""P-DARTS' config rules (`config.pdarts.*`): DARTS' rules plus the stages (depth added,
ops per edge, skip dropout) and the final skip-connect limit; the stages run in
`jaxnas.runners.pdarts`."""

from __future__ import annotations

import ml_collections

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError
from jaxnas.methods import darts as darts_rules


def _floats(ok, describe: str) -> C.Rule:
    return C.Rule(lambda v: isinstance(v, (tuple, list)) and len(v) > 0
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                          and ok(x) for x in v), describe)


RULES: dict[str, C.Rule] = {
    # cells added to model.layers in each stage (the paper: 0, 6, 12 on 5 cells)
    "pdarts.add_layers": methods.int_tuple(lambda x: x >= 0, "a non-empty tuple of "
                                           "integers >= 0, one per stage"),
    # ops per edge each stage searches (the paper: 8, 5, 3)
    "pdarts.num_ops": methods.int_tuple(lambda x: x >= 2, "a non-empty tuple of integers "
                                        ">= 2, one per stage"),
    # skip-connect dropout rate of each stage (the paper on CIFAR-10: 0.0, 0.4, 0.7)
    "pdarts.skip_dropout": _floats(lambda x: 0.0 <= x < 1.0, "a non-empty tuple of "
                                   "rates in [0, 1), one per stage"),
    # at most this many skip-connects in the final normal cell (the paper: 2)
    "pdarts.max_skips": C.non_negative(int),
}


def check(config: ml_collections.ConfigDict) -> None:
    """DARTS' checks, the loop or fused mixed op (skip dropout is not in scan), and stage
    tuples of one length with the op counts starting at every primitive and never
    growing, the added depth starting at 0 and never shrinking."""
    darts_rules.check(config)
    p, m = config.pdarts, config.model
    if m.get("space", "darts") != "darts":
        raise ConfigError(f"config.model.space={m.space!r} is not allowed for pdarts: "
                          "expected 'darts' (per-edge op sets are built for the DARTS "
                          "cell supernet)")
    if m.mixed_op not in ("loop", "fused", "edges"):
        raise ConfigError(f"config.model.mixed_op={m.mixed_op!r} is not allowed for "
                          "pdarts: expected 'loop' (runs just each edge's kept ops), "
                          "'fused' or 'edges' (run every op, the pruned ones weighted "
                          "0; faster on the CPU)")
    n = len(p.num_ops)
    for key in ("add_layers", "skip_dropout"):
        if len(p[key]) != n:
            raise ConfigError(f"config.pdarts.{key}={tuple(p[key])!r} is not allowed: "
                              f"expected {n} values, one per stage of pdarts.num_ops="
                              f"{tuple(p.num_ops)!r}")
    from jaxnas.spaces.ops import PRIMITIVES
    if p.num_ops[0] != len(PRIMITIVES):
        raise ConfigError(f"config.pdarts.num_ops={tuple(p.num_ops)!r} is not allowed: "
                          f"the first stage searches every primitive, expected "
                          f"num_ops[0]={len(PRIMITIVES)}")
    if any(b > a for a, b in zip(p.num_ops, p.num_ops[1:])):
        raise ConfigError(f"config.pdarts.num_ops={tuple(p.num_ops)!r} is not allowed: "
                          "expected non-increasing op counts (pruning only removes ops)")
    if p.add_layers[0] != 0 or any(b < a for a, b in zip(p.add_layers, p.add_layers[1:])):
        raise ConfigError(f"config.pdarts.add_layers={tuple(p.add_layers)!r} is not "
                          "allowed: expected 0 first (stage 1 is model.layers deep) and "
                          "non-decreasing")


PDARTS = methods.register(methods.Method(
    name="pdarts", title="P-DARTS", rules={**darts_rules.RULES, **RULES},
    loop="jaxnas.runners.darts", check=check, runner="jaxnas.runners.pdarts"))
