"""`jaxnas train`: validate a retraining config up front, then run the retraining loop.

This module imports no JAX so that a bad config fails in well under a second; the
loop lives in `jaxnas.runners.train`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxnas import config as C
from jaxnas.search import COMMON_RULES as SEARCH_COMMON_RULES

_BOOL = C.Rule(lambda v: isinstance(v, bool), "true or false")

# Keys every retraining config has; any other key is refused (a search config given
# to `train` by mistake fails here, naming its first foreign keys).
COMMON_RULES: dict[str, C.Rule] = {
    # the search's loop, data and cadence keys, less the bilevel split of the data
    **{k: v for k, v in SEARCH_COMMON_RULES.items() if k != "data.split_fraction"},
    "data.eval_batch_size": C.non_negative(int),
    "optim.lr": C.positive(),
    "optim.lr_min": C.non_negative(),
    "optim.momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.weight_decay": C.non_negative(),
    "optim.grad_clip": C.positive(),
}

# The network of a DARTS genotype is sized by the config; a chain genotype carries its
# whole space (widths, depths, strides), so its config sets only BatchNorm's momentum.
MODEL_RULES: dict[str, dict[str, C.Rule]] = {
    "darts": {
        "model.channels": C.positive(int),
        "model.layers": C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                               and v >= 3, "an integer >= 3 (two reduction cells at "
                               "1/3 and 2/3 depth)"),
        "model.auxiliary": _BOOL,
        "model.auxiliary_weight": C.non_negative(),
        "model.drop_path_prob": C.in_range(0.0, 1.0, hi_open=True),
    },
    "chain": {
        "model.bn_momentum": C.in_range(0.0, 1.0, hi_open=True),
    },
}
EXAMPLE_CONFIGS = {"darts": "experiments/train_digits.py",
                   "chain": "experiments/train_chain_digits.py"}
# The DARTS rule table (the default kind).
RULES: dict[str, C.Rule] = {**COMMON_RULES, **MODEL_RULES["darts"]}


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def validate_config(config: ml_collections.ConfigDict, kind: str = "darts") -> None:
    """Raises ConfigError naming every bad key and value, before anything compiles.

    ``kind`` is the genotype's space ("darts" or "chain"): every key of its rule
    table is required and must satisfy its rule; other keys are refused (a DARTS
    retraining config given with a chain genotype names the foreign model keys and
    the example config of the right kind); `optim.lr_min` may not exceed `optim.lr`.
    """
    if kind not in MODEL_RULES:
        raise ValueError(f"genotype kind {kind!r}: expected one of "
                         f"{', '.join(MODEL_RULES)}")
    rules = {**COMMON_RULES, **MODEL_RULES[kind]}
    unknown = sorted(set(_flat_keys(config)) - set(rules))
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        other = [k for k in MODEL_RULES if k != kind
                 and set(unknown) <= set(COMMON_RULES) | set(MODEL_RULES[k])]
        if other:
            raise C.ConfigError(
                f"config key(s) {shown}{more} belong to {other[0]} retraining configs, "
                f"but the genotype is a {kind} one; use a {kind} retraining config "
                f"such as {EXAMPLE_CONFIGS[kind]}")
        raise C.ConfigError(
            f"config key(s) {shown}{more} are not retraining keys (is this a search "
            f"config?); allowed keys: {', '.join(rules)}")
    C.validate(config, rules, required=list(rules))
    if config.optim.lr_min > config.optim.lr:
        raise C.ConfigError(f"config.optim.lr_min={config.optim.lr_min!r} is not "
                            f"allowed: expected at most optim.lr={config.optim.lr!r}")


def run(config: ml_collections.ConfigDict, genotype: Any, workdir: str
        ) -> dict[str, Any]:
    """Trains (or resumes training) `genotype` from scratch in `workdir`.

    `genotype` is a DARTS `Genotype` or a chain-space `ChainGenotype` (see
    `jaxnas.spaces.resolve.resolve_architecture` for names, JSON files and strings).
    Returns the dict written to `workdir/result.json`.
    """
    from jaxnas.spaces import resolve

    validate_config(config, resolve.kind(genotype))
    from jaxnas.runners import train as runner

    return runner.run(config, genotype, workdir)
