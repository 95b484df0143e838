"""`jaxnas search`: validate a search config up front, then hand it to its method's loop.

This module imports no JAX so that a bad config fails in well under a second; the
loops live in `jaxnas.runners`.
"""

from __future__ import annotations

import importlib

import ml_collections

from jaxnas import config as C

METHODS = {"darts": "jaxnas.runners.darts", "spos": "jaxnas.runners.oneshot",
           "fairnas": "jaxnas.runners.oneshot"}
DATASETS_HINT = "digits (embedded) or a TFDS name prepared in data.data_dir, e.g. cifar10"

COMMON_RULES = {
    "seed": C.non_negative(int),
    "epochs": C.positive(int),
    "num_steps": C.integer_or_minus_one(),
    "log_every": C.positive(int),
    "eval_every": C.non_negative(int),
    "checkpoint_every": C.positive(int),
    "keep_checkpoints": C.positive(int),
    "data.dataset": C.Rule(lambda v: isinstance(v, str) and v != "", DATASETS_HINT),
    "data.data_dir": C.Rule(lambda v: isinstance(v, str), "a directory path, or '' for "
                            "the default cache"),
    "data.batch_size": C.positive(int),
    "data.split_fraction": C.in_range(0.0, 1.0, lo_open=True, hi_open=True),
    "data.crop_padding": C.non_negative(int),
    "data.flip": C.Rule(lambda v: isinstance(v, bool), "true or false"),
    "data.cutout": C.non_negative(int),
}

DARTS_RULES = {
    "model.channels": C.positive(int),
    "model.layers": C.Rule(lambda v: isinstance(v, int) and v >= 3,
                           "an integer >= 3 (two reduction cells at 1/3 and 2/3 depth)"),
    "model.steps": C.positive(int),
    "model.multiplier": C.positive(int),
    "model.stem_multiplier": C.positive(int),
    "model.mixed_op": C.choice("fused", "loop"),
    "model.impl": C.choice("auto", "slices", "taps", "lax"),
    "darts.estimator": C.choice("first_order", "darts_fd", "darts_exact", "amended",
                                "implicit_cg", "implicit_neumann"),
    "darts.unroll_momentum": C.Rule(lambda v: isinstance(v, bool), "true or false"),
    "darts.fd_eps": C.positive(),
    "darts.implicit_iters": C.positive(int),
    "darts.implicit_damping": C.non_negative(),
    "darts.neumann_alpha": C.positive(),
    "darts.warmup_epochs": C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                                  and v >= 0, "a non-negative integer"),
    "optim.w_lr": C.positive(),
    "optim.w_lr_min": C.non_negative(),
    "optim.w_momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.w_weight_decay": C.non_negative(),
    "optim.grad_clip": C.positive(),
    "optim.a_lr": C.positive(),
    "optim.a_b1": C.in_range(0.0, 1.0, hi_open=True),
    "optim.a_b2": C.in_range(0.0, 1.0, hi_open=True),
    "optim.a_weight_decay": C.non_negative(),
}



def _int_tuple(ok, describe: str) -> C.Rule:
    """A non-empty tuple/list of ints whose every element satisfies ``ok``."""
    return C.Rule(lambda v: isinstance(v, (tuple, list)) and len(v) > 0
                  and all(isinstance(x, int) and not isinstance(x, bool) and ok(x)
                          for x in v), describe)


ONESHOT_RULES = {
    "model.stem_channels": C.positive(int),
    "model.widths": _int_tuple(lambda x: x > 0, "a non-empty tuple of positive "
                               "integers (one width per stage)"),
    "model.depths": _int_tuple(lambda x: x > 0, "a non-empty tuple of positive "
                               "integers (searchable layers per stage)"),
    "model.strides": _int_tuple(lambda x: x in (1, 2), "a non-empty tuple of 1s and "
                                "2s (stride of each stage's first layer)"),
    "model.head_channels": C.positive(int),
    "model.stem_stride": C.choice(1, 2),
    "model.dispatch": C.choice("gather", "switch"),
    "model.impl": C.choice("auto", "slices", "taps", "toeplitz", "lax"),
    "model.bn_momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.lr": C.positive(),
    "optim.lr_min": C.non_negative(),
    "optim.momentum": C.in_range(0.0, 1.0, hi_open=True),
    "optim.weight_decay": C.non_negative(),
    "optim.grad_clip": C.positive(),
    "oneshot.calib_batches": C.positive(int),
    "oneshot.eval_paths": C.non_negative(int),
    "oneshot.eval_batch_size": C.positive(int),
    "oneshot.val_examples": C.non_negative(int),
    "evolution.method": C.choice("evolution", "random"),
    "evolution.population_size": C.positive(int),
    "evolution.sample_size": C.positive(int),
    "evolution.num_cycles": C.non_negative(int),
    "evolution.batch_size": C.positive(int),
    "evolution.max_params": C.non_negative(int),
}


def _mesh_axis() -> C.Rule:
    return C.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                  and (v >= 1 or v == -1),
                  "a positive integer, or -1 for every device the other axes leave")


# Optional: a config without a `mesh` section puts every device on `data`.
MESH_RULES = {"mesh.data": _mesh_axis(), "mesh.path": _mesh_axis(),
              "mesh.pop": _mesh_axis()}

METHOD_RULES = {
    "darts": DARTS_RULES,
    "spos": ONESHOT_RULES,
    "fairnas": {**ONESHOT_RULES,
                "fairnas.shared_batch": C.Rule(lambda v: isinstance(v, bool),
                                               "true or false")},
}


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming every bad key and value, before anything compiles."""
    method = config.get("method")
    if method not in METHODS:
        raise C.ConfigError(f"config.method={method!r} is not allowed: expected one of "
                            f"{', '.join(repr(m) for m in METHODS)}")
    rules = {**COMMON_RULES, **METHOD_RULES[method]}
    C.validate(config, {**rules, **MESH_RULES}, required=list(rules))
    mesh = config.get("mesh")
    if mesh is not None:
        unknown = sorted(set(mesh.keys()) - {"data", "path", "pop"})
        if unknown:
            raise C.ConfigError(f"config.mesh has unknown axes {', '.join(unknown)}: "
                                "expected data, path, pop")
        if sum(1 for a in ("data", "path", "pop") if mesh.get(a, 1) == -1) > 1:
            raise C.ConfigError(
                "config.mesh: at most one of mesh.data, mesh.path, mesh.pop may be -1 "
                f"(got {', '.join(f'mesh.{k}={v}' for k, v in mesh.items())})")
    if method == "darts" and mesh is not None and (
            mesh.get("path", 1) != 1 or mesh.get("pop", 1) != 1):
        raise C.ConfigError(
            f"config.mesh.path={mesh.get('path', 1)}, mesh.pop={mesh.get('pop', 1)} are "
            "not allowed for DARTS (no paths or population to spread): expected 1")
    if method == "darts" and config.darts.warmup_epochs >= config.epochs:
        raise C.ConfigError(f"config.darts.warmup_epochs={config.darts.warmup_epochs} is "
                            f"not allowed: expected fewer than epochs={config.epochs} (the "
                            "architecture would never be updated)")
    if method == "darts" and config.model.multiplier > config.model.steps:
        raise C.ConfigError(f"config.model.multiplier={config.model.multiplier} is not "
                            f"allowed: expected at most model.steps={config.model.steps}")


def run(config: ml_collections.ConfigDict, workdir: str):
    """Runs (or resumes) the search that `config.method` names in `workdir`."""
    validate_config(config)
    runner = importlib.import_module(METHODS[config.method])
    return runner.run(config, workdir)
