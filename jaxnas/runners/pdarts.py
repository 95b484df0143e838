"""P-DARTS' progressive search: its stages, each a DARTS search (`jaxnas.runners.darts`
hooks in the one loop) of a deeper supernet with fewer ops per edge, in
``workdir/stage_<s>/``; the pruning between stages; the final genotype.

``workdir/pdarts.json`` records every finished stage: the ops it searched, its length,
validation figures, genotype and the ops kept for the next stage. The kept ops are a
pure function of the stage's final alphas (`strategies.pdarts.prune` of their softmax,
read back from the stage's ``genotype.json``), so a run interrupted anywhere resumes
exactly: inside a stage from that stage's checkpoint, between stages by re-reading the
finished stage (its checkpoint is at its last step) and pruning again.

`config.num_steps` caps each stage: a stage stopped short ends the run (nothing is
pruned from an unfinished stage); re-run with a larger value, or -1, to continue.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxnas import workdir as wd
from jaxnas.runners import common
from jaxnas.runners import darts as darts_runner
from jaxnas.runners import loop as loop_lib
from jaxnas.spaces import cells
from jaxnas.spaces.genotypes import softmax_rows

log = logging.getLogger("jaxnas")

STATE_FILE = "pdarts.json"


def stage_of(config: ml_collections.ConfigDict, model: Any) -> tuple[int, Any]:
    """The stage a (stage) config runs and its op sets per edge; a config that names no
    stage (`jaxnas bench`, `study`) is the first stage: every primitive on every edge."""
    from jaxnas.strategies import pdarts

    stage = config.pdarts.get("stage", 0)
    if "stage_ops" in config.pdarts:
        ops = json.loads(config.pdarts.stage_ops)
    else:
        ops = pdarts.full_ops(model.primitives, cells.num_edges(model.steps))
    return stage, pdarts.check_ops(ops, model.primitives, cells.num_edges(model.steps))


def stage_config(config: ml_collections.ConfigDict, stage: int, ops: Any
                 ) -> ml_collections.ConfigDict:
    """The DARTS-loop config of one stage: its depth, its index and op sets."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        c.model.layers = config.model.layers + config.pdarts.add_layers[stage]
        c.pdarts.stage = stage
        c.pdarts.stage_ops = json.dumps(ops)
    return c


def _softmax(a: Any) -> np.ndarray:
    """The softmax of a stage's recorded alphas (JSON lists), in float64."""
    return softmax_rows(np.asarray(a, np.float64))


def _stage_total(config: ml_collections.ConfigDict) -> int:
    """Steps of a whole stage (every stage has `config.epochs` epochs)."""
    data = common.load_data(config)
    steps_per_epoch = loop_lib.bilevel_epochs_to_steps(config, data)[0]
    return config.epochs * steps_per_epoch


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a P-DARTS search in `workdir` (`jaxnas.search.run` validates the
    config first); returns the results dict, also written to ``genotype.json``."""
    from jaxnas.spaces.ops import PRIMITIVES
    from jaxnas.strategies import pdarts

    workdir = wd.prepare_workdir(workdir)
    lead = jax.process_index() == 0
    state_path = os.path.join(workdir, STATE_FILE)
    record = json.loads(wd.read_text(state_path)) if wd.exists(state_path) else None
    if record is not None:  # refuse another run's stages before touching anything
        common.check_resumable(config, {"config": record["config"]})
    common.record_config(config, workdir, enabled=lead)
    p = config.pdarts
    n_stages, total = len(p.num_ops), _stage_total(config)
    done = list(record["stages"]) if record is not None else []
    num_edges = cells.num_edges(config.model.steps)
    ops = pdarts.full_ops(PRIMITIVES, num_edges)
    results: dict[str, Any] = {}
    for stage in range(n_stages):
        if stage < len(done):
            if stage + 1 < n_stages:
                ops = pdarts.check_ops(done[stage]["next_ops"], PRIMITIVES, num_edges)
            continue
        layers = config.model.layers + p.add_layers[stage]
        log.info("P-DARTS stage %d of %d: %d cells, %d ops per edge, skip dropout %g "
                 "(in %s)", stage + 1, n_stages, layers, p.num_ops[stage],
                 p.skip_dropout[stage], os.path.join(workdir, f"stage_{stage}"))
        results = darts_runner.run(stage_config(config, stage, ops),
                                   os.path.join(workdir, f"stage_{stage}"))
        if results["steps"] < total and "early_stop" not in results:
            log.info("P-DARTS stage %d stopped at step %d of %d (config.num_steps=%d): "
                     "re-run with a larger num_steps, or -1, to continue", stage + 1,
                     results["steps"], total, config.num_steps)
            return {**results, "method": "pdarts", "complete": False,
                    "stages": done}
        entry = {"stage": stage, "layers": layers, "ops": _lists(ops),
                 "skip_dropout": p.skip_dropout[stage], "steps": results["steps"],
                 "final": results["final"], "genotype_str": results["genotype_str"],
                 **({"early_stop": results["early_stop"]}
                    if "early_stop" in results else {})}
        if stage + 1 < n_stages:
            weights = {cell: _softmax(results["arch"][cell]) for cell in ("normal",
                                                                           "reduce")}
            ops = pdarts.prune(weights, ops, p.num_ops[stage + 1])
            entry["next_ops"] = _lists(ops)
        done.append(entry)
        if lead:
            wd.write_json(state_path, {"config": config.to_dict(), "stages": done})
    if not results:  # every stage finished before: the last stage's results
        results = json.loads(wd.read_text(os.path.join(
            workdir, f"stage_{n_stages - 1}", "genotype.json")))
    last = results["arch"]
    _, removed = pdarts.derive(
        pdarts.expand({c: _softmax(last[c]) for c in ("normal", "reduce")}, ops,
                      PRIMITIVES),
        primitives=PRIMITIVES, steps=config.model.steps,
        multiplier=config.model.multiplier, max_skips=p.max_skips)
    out = {**results, "method": "pdarts", "complete": True, "max_skips": p.max_skips,
           "skips_removed": removed, "stages": done,
           "steps": sum(s["steps"] for s in done)}
    if lead:
        wd.write_json(os.path.join(workdir, "genotype.json"), out)
        log.info("P-DARTS genotype (%d skip weight(s) zeroed for max_skips=%d): %s",
                 removed, p.max_skips, out["genotype_str"])
        log.info("results in %s (genotype.json, pdarts.json, stage_*/)", workdir)
    return out


def _lists(ops: Any) -> list:
    return [[list(edge) for edge in cell] for cell in ops]
