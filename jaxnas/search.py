"""`jaxnas.search.run(config, workdir)`: validate a search config, then run its method
in the one search loop (`jaxnas.runners.loop`).

This module imports no JAX so that a bad config fails in well under a second. Methods
are looked up by `config.method` in `jaxnas.methods` (rules beside each method).

Example (Python API)::

    from jaxnas import config, search
    cfg = config.load_config("experiments/darts_digits.py")
    config.apply_overrides(cfg, ["num_steps=20"])
    results = search.run(cfg, "/tmp/run")   # also written to /tmp/run/genotype.json
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxnas import methods

METHODS = methods.names()
DATASETS_HINT = methods.DATASETS_HINT
COMMON_RULES = methods.LOOP_RULES
MESH_RULES = methods.MESH_RULES
METHOD_RULES = {name: methods.get(name).rules for name in METHODS}
DARTS_RULES = METHOD_RULES["darts"]
ONESHOT_RULES = METHOD_RULES["spos"]


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming every bad key and value, before anything compiles."""
    methods.validate(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) the search that `config.method` names in `workdir`.

    Writes ``workdir/config.json``, ``metrics.jsonl``, ``checkpoints/``, the results
    (``genotype.json``) and plots; re-running on the same workdir resumes from the
    last checkpoint and refuses a config that computes differently. Returns the
    results dict (``genotype``, ``genotype_str`` or ``path``, ``steps``, ...).
    """
    method = methods.validate(config)
    if method.runner is not None:
        import importlib

        return importlib.import_module(method.runner).run(config, workdir)
    from jaxnas.runners import loop

    return loop.run(config, workdir, method.hooks(config))
