"""The supernets a bilevel method can search, by `config.model.space`, with each one's
config rules (no JAX imported; `jaxnas.runners.supernets` builds them)."""

from __future__ import annotations

import ml_collections

from jaxnas import config as C
from jaxnas.errors import ConfigError

DEFAULT_SPACE = "darts"

# config.model rules per space; every key of the chosen space's rules is required but
# those in OPTIONAL.
MODEL_RULES: dict[str, dict[str, C.Rule]] = {
    "darts": {
        "model.channels": C.positive(int),
        "model.layers": C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                               and v >= 3,
                               "an integer >= 3 (two reduction cells at 1/3 and 2/3 "
                               "depth)"),
        "model.steps": C.positive(int),
        "model.multiplier": C.positive(int),
        "model.stem_multiplier": C.positive(int),
        "model.mixed_op": C.choice_from("jaxnas.supernet.darts", "MIXED_OPS"),
        "model.impl": C.choice_from("jaxnas.supernet.kernels", "IMPLS"),
        # optional (default False): runs of equal-shaped cells under one scanned body;
        # each edge rematerialised (applies to mixed_op="edges" only, ignored by the
        # other formulations, so that a config switches formulation with one override)
        "model.scan_cells": C.Rule(lambda v: isinstance(v, bool), "True or False"),
        "model.remat_edges": C.Rule(lambda v: isinstance(v, bool), "True or False"),
    },
    # NAS-Bench-201 (jaxnas.supernet.nb201): C initial channels, N cells per stage
    "nb201": {
        "model.channels": C.positive(int),
        "model.layers": C.positive(int),
        "model.mixed_op": C.choice_from("jaxnas.supernet.nb201", "MIXED_OPS"),
        "model.affine": C.Rule(lambda v: isinstance(v, bool), "True or False"),
    },
    # the chain space with soft op weights (jaxnas.supernet.chain_mixed): L layers of
    # six inverted-residual blocks (the one-shot methods' model keys, less dispatch,
    # plus the input's channels, which fix the stem)
    "chain": {
        "model.stem_channels": C.positive(int),
        "model.widths": C.Rule(lambda v: _ints(v, lambda x: x > 0), "a non-empty "
                               "tuple of positive integers (one width per stage)"),
        "model.depths": C.Rule(lambda v: _ints(v, lambda x: x > 0), "a non-empty "
                               "tuple of positive integers (layers per stage)"),
        "model.strides": C.Rule(lambda v: _ints(v, lambda x: x in (1, 2)), "a non-empty "
                                "tuple of 1s and 2s (each stage's first stride)"),
        "model.head_channels": C.positive(int),
        "model.stem_stride": C.choice(1, 2),
        "model.in_channels": C.positive(int),
    },
}

OPTIONAL = frozenset({"model.scan_cells", "model.remat_edges"})


def _ints(v, ok) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) > 0
            and all(isinstance(x, int) and not isinstance(x, bool) and ok(x) for x in v))


def space_name(config: ml_collections.ConfigDict) -> str:
    """`config.model.space` (default "darts"); ConfigError naming the known spaces."""
    name = config.model.get("space", DEFAULT_SPACE) if "model" in config else DEFAULT_SPACE
    if name not in MODEL_RULES:
        raise ConfigError(f"config.model.space={name!r} is not allowed: expected one of "
                          f"{', '.join(repr(s) for s in MODEL_RULES)}")
    return name


def check_model(config: ml_collections.ConfigDict) -> str:
    """Validates `config.model` against its space's rules; returns the space's name."""
    name = space_name(config)
    rules = MODEL_RULES[name]
    C.validate(config, rules, required=[k for k in rules if k not in OPTIONAL])
    if name == "darts" and config.model.multiplier > config.model.steps:
        raise ConfigError(f"config.model.multiplier={config.model.multiplier} is not "
                          f"allowed: expected at most model.steps={config.model.steps}")
    return name
