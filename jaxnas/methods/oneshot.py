"""SPOS' and FairNAS' config rules, beside the code they guard (allowed values read
from the chain supernet module itself, `config.choice_from`)."""

from __future__ import annotations

from jaxnas import config as C
from jaxnas import methods
from jaxnas.errors import ConfigError

# config.model rules per `model.space` (default "chain"): every key required
CHAIN_MODEL_RULES: dict[str, C.Rule] = {
    "model.stem_channels": C.positive(int),
    "model.widths": methods.int_tuple(lambda x: x > 0, "a non-empty tuple of positive "
                                      "integers (one width per stage)"),
    "model.depths": methods.int_tuple(lambda x: x > 0, "a non-empty tuple of positive "
                                      "integers (searchable layers per stage)"),
    "model.strides": methods.int_tuple(lambda x: x in (1, 2), "a non-empty tuple of 1s "
                                       "and 2s (stride of each stage's first layer)"),
    "model.head_channels": C.positive(int),
    "model.stem_stride": C.choice(1, 2),
    "model.dispatch": C.choice_from("jaxnas.supernet.chain", "DISPATCHES"),
    "model.impl": C.choice_from("jaxnas.supernet.chain", "IMPLS"),
    "model.bn_momentum": C.in_range(0.0, 1.0, hi_open=True),
}
MODEL_RULES: dict[str, dict[str, C.Rule]] = {
    "chain": CHAIN_MODEL_RULES,
    # the NAS-Bench-201 supernet (jaxnas.supernet.nb201): a path is one op per edge
    "nb201": {
        "model.channels": C.positive(int),
        "model.layers": C.positive(int),
        "model.mixed_op": C.choice_from("jaxnas.supernet.nb201", "MIXED_OPS"),
        "model.affine": methods.BOOL,
        "model.bn_momentum": C.in_range(0.0, 1.0, hi_open=True),
    },
}

COMMON_RULES: dict[str, C.Rule] = {
    "optim.lr": C.positive(),
    "optim.lr_min": C.non_negative(),
    "optim.momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.weight_decay": C.non_negative(),
    "optim.grad_clip": C.positive(),
    "oneshot.calib_batches": C.positive(int),
    "oneshot.eval_paths": C.non_negative(int),
    "oneshot.eval_batch_size": C.positive(int),
    "oneshot.val_examples": C.non_negative(int),
    # strategies.oneshot.search accepts these two (it names no constant for them)
    "evolution.method": C.choice("evolution", "random"),
    "evolution.population_size": C.positive(int),
    "evolution.sample_size": C.positive(int),
    "evolution.num_cycles": C.non_negative(int),
    "evolution.batch_size": C.positive(int),
    "evolution.max_params": C.non_negative(int),
}

# the chain space's full rule set (what other methods reuse by key)
RULES: dict[str, C.Rule] = {**CHAIN_MODEL_RULES, **COMMON_RULES}


def check(config) -> None:
    """The model rules of `config.model.space`; the parameter budget is the chain's."""
    space = config.model.get("space", "chain") if "model" in config else "chain"
    if space not in MODEL_RULES:
        raise ConfigError(f"config.model.space={space!r} is not allowed: expected one of "
                          f"{', '.join(repr(s) for s in MODEL_RULES)}")
    C.validate(config, MODEL_RULES[space], required=list(MODEL_RULES[space]))
    if space == "nb201" and config.evolution.max_params > 0:
        raise ConfigError(f"config.evolution.max_params={config.evolution.max_params} is "
                          "not allowed for model.space='nb201': expected 0 (the "
                          "parameter budget is implemented for the chain space only)")


# The mesh axes are checked against the built mesh by the loop hooks (SPOS refuses
# mesh.path > 1 there: only FairNAS trains several paths a step).
SPOS = methods.register(methods.Method(
    name="spos", title="SPOS", rules=COMMON_RULES, loop="jaxnas.runners.oneshot",
    mesh_axes=methods.MESH_AXES, check=check))
FAIRNAS = methods.register(methods.Method(
    name="fairnas", title="FairNAS",
    rules={**COMMON_RULES, "fairnas.shared_batch": methods.BOOL},
    loop="jaxnas.runners.oneshot", mesh_axes=methods.MESH_AXES, check=check))
