"""`jaxnas train`: validate a retraining config up front, then retrain in the search
loop.

This module imports no JAX so that a bad config fails in well under a second; the
rules live in `jaxnas.methods.train`, the loop hooks in `jaxnas.runners.train`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxnas import config as C
from jaxnas.methods import OPTIONAL_RULES
from jaxnas.methods import train as train_rules

COMMON_RULES = train_rules.COMMON_RULES
MODEL_RULES = train_rules.MODEL_RULES
EXAMPLE_CONFIGS = train_rules.EXAMPLE_CONFIGS
# The DARTS rule table (the default kind).
RULES: dict[str, C.Rule] = {**COMMON_RULES, **MODEL_RULES["darts"]}


def validate_config(config: ml_collections.ConfigDict, kind: str = "darts") -> None:
    """Raises ConfigError naming every bad key and value, before anything compiles.

    ``kind`` is the genotype's space name ("darts" or "chain"): every key of its rule
    table is required and must satisfy its rule; other keys are refused (a DARTS
    retraining config given with a chain genotype names the foreign model keys and
    the example config of the right kind); `optim.lr_min` may not exceed `optim.lr`.
    """
    if kind not in MODEL_RULES:
        raise ValueError(f"genotype kind {kind!r}: expected one of "
                         f"{', '.join(MODEL_RULES)}")
    # every loaded config carries the optional top-level keys (config.OPTIONAL_DEFAULTS)
    rules = {**COMMON_RULES, **MODEL_RULES[kind], **OPTIONAL_RULES}
    unknown = sorted(set(C.flat_keys(config)) - set(rules))
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
    C.validate(config, rules, required=[k for k in rules if k not in OPTIONAL_RULES])
    if config.optim.lr_min > config.optim.lr:
        raise C.ConfigError(f"config.optim.lr_min={config.optim.lr_min!r} is not "
                            f"allowed: expected at most optim.lr={config.optim.lr!r}")


def run(config: ml_collections.ConfigDict, genotype: Any, workdir: str
        ) -> dict[str, Any]:
    """Trains (or resumes training) `genotype` from scratch in `workdir`.

    `genotype` is a discrete architecture of a registered space (a DARTS `Genotype`,
    a chain `ChainGenotype`; `jaxnas.spaces.from_spec` reads names, JSON files and
    strings). Runs in the search loop (`jaxnas.runners.loop`). Returns the dict
    written to `workdir/result.json`.
    """
    from jaxnas import spaces

    validate_config(config, spaces.space_of(genotype).name)
    from jaxnas.runners import train as runner

    return runner.run(config, genotype, workdir)
