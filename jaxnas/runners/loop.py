"""The one search loop: workdir, refusal of another run's checkpoint, restore, steps,
evaluation, checkpoints, signal/NaN/OOM stops, results. Methods supply hooks.

A method's hooks object (`jaxnas.methods.Method.hooks`) has

* ``desc`` (progress label), ``results_file`` (``genotype.json``, ``result.json``),
  ``memory_keys`` (the config keys an out-of-memory message suggests lowering);
* ``check(config, mesh)``: refuse what the mesh cannot run, before any work;
* ``check_resumable(config, meta)``: refuse a checkpoint of another run (the default
  is `common.check_resumable`); ``meta()``: what else a checkpoint records;
* ``build(config, mesh) -> Plan``: data, model, strategy, jitted step and feeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from jaxnas import checkpoint as ckpt_lib
from jaxnas import compilation
from jaxnas import config as config_lib
from jaxnas import parallel
from jaxnas import tensorboard
from jaxnas import workdir as wd
from jaxnas.runners import common

log = logging.getLogger("jaxnas")


@dataclasses.dataclass
class LoopResult:
    """What the step loop reports: the last step, the first step's wall time
    (compilation included), the wall times of the later steps (feeding the batches
    and the jitted step), the blocking time of each checkpoint save, and the
    evaluation record of the last step when this session evaluated it; `records`:
    metrics.jsonl as written (process 0; empty elsewhere); `mesh`: its shape."""

    step: int
    first_step_s: float | None
    step_times: list[float]
    save_seconds: list[float]
    last_eval: dict[str, Any] | None = None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mesh: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The run's fields of a search's results: steps, mesh, processes, timing."""
        return {"steps": self.step, "mesh": self.mesh,
                "processes": jax.process_count(), "timing": self.timing()}

    def timing(self) -> dict[str, Any]:
        saves = self.save_seconds
        return {"first_step_s": (None if self.first_step_s is None
                                 else round(self.first_step_s, 2)),
                "median_step_s": (round(float(np.median(self.step_times)), 4)
                                  if self.step_times else None),
                "checkpoint_saves": len(saves),
                "checkpoint_save_s": (round(float(np.mean(saves)), 4) if saves
                                      else None)}


@dataclasses.dataclass
class Plan:
    """What a method's `build` hands the loop.

    init: () -> the initial state (traced under jit, replicated over the mesh).
    step: jitted (state, *batches) -> (state, metrics with train_loss and
      train_accuracy). batches: () -> the next step's global batches (a tuple).
    feeds: the resumable iterators by name; checkpoints record each position as
      ``<name>_position``. evaluate(state, step): the fields of an evaluation
      record, taken when eval_due(step). finalize(state, loop): the results dict.
    started(state, start): called once the state is initialised or restored.
    report(results, workdir): plots and log lines (process 0 only).
    """

    init: Callable[[], Any]
    step: Callable[..., tuple[Any, Any]]
    batches: Callable[[], tuple]
    feeds: Mapping[str, Any]
    stop: int
    evaluate: Callable[[Any, int], dict[str, Any]]
    eval_due: Callable[[int], bool]
    finalize: Callable[[Any, LoopResult], dict[str, Any]]
    started: Callable[[Any, int], None] = lambda state, start: None
    report: Callable[[dict, str], None] = lambda results, workdir: None


def epochs_to_steps(config: ml_collections.ConfigDict, examples: int, per_step: int,
                    what: str) -> tuple[int, int, int]:
    """``(steps_per_epoch, total_steps, stop)`` of `examples` consumed `per_step` at a
    time: stop is `config.num_steps` when set (> 0), else every epoch."""
    steps_per_epoch = examples // per_step
    if steps_per_epoch == 0:
        raise ValueError(f"config.data.batch_size={config.data.batch_size} is too "
                         f"large: {what} has {examples} images, a step takes {per_step}")
    total = config.epochs * steps_per_epoch
    stop = min(config.num_steps, total) if config.num_steps > 0 else total
    return steps_per_epoch, total, stop


def bilevel_epochs_to_steps(config: ml_collections.ConfigDict, data: Any
                            ) -> tuple[int, int, int]:
    """`epochs_to_steps` of a bilevel method: each step takes one batch from each half
    of the split, so an epoch is the smaller half."""
    return epochs_to_steps(config, min(len(data.train), len(data.val)),
                           config.data.batch_size, "the smaller half of the bilevel split")


def run(config: ml_collections.ConfigDict, workdir: str, hooks: Any, *,
        overlap: bool = True) -> dict[str, Any]:
    """Runs or resumes `hooks`' method in `workdir`; returns (and, on process 0,
    writes to ``workdir/<hooks.results_file>``) its results. `overlap=False` waits for
    every step's metrics before the next step (the loop benchmark's baseline)."""
    mesh = parallel.make_mesh(config)
    hooks.check(config, mesh)
    workdir = wd.prepare_workdir(workdir)
    lead = jax.process_index() == 0
    saved = ckpt_lib.latest_meta(workdir)
    if saved is not None:  # refuse a different run before touching anything
        hooks.check_resumable(config, saved)
    common.record_config(config, workdir, enabled=lead)
    log.info("mesh: %s", parallel.describe(mesh))
    with common.out_of_memory_report(config, hooks.memory_keys):
        return _run(config, workdir, hooks, mesh, lead, overlap)


def _run(config: ml_collections.ConfigDict, workdir: str, hooks: Any, mesh, lead: bool,
         overlap: bool) -> dict[str, Any]:
    plan = hooks.build(config, mesh)
    t0 = time.time()
    state = common.init_state(plan.init, mesh)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    metrics_log = wd.MetricsWriter(workdir, enabled=lead)
    start = 0
    restored = checkpointer.restore(state)
    if restored is not None:
        state, meta, start = restored
        hooks.check_resumable(config, meta)
        for name, feed in plan.feeds.items():
            feed.restore(meta[f"{name}_position"])
        log.info("resumed from the checkpoint at step %d", start)
    metrics_log.truncate_after(start)  # nothing logged after the state we continue
    events = tensorboard.EventWriter(  # purges its own events after `start`
        workdir, start=start, enabled=lead and tensorboard.enabled(config),
        op_names=tensorboard.op_names_of(config))
    plan.started(state, start)

    def save(step: int, *, force: bool = False) -> None:
        common.check_state_finite(step, state)  # a bad state is never checkpointed
        meta = {f"{name}_position": feed.position() for name, feed in plan.feeds.items()}
        checkpointer.save(step, state, {**meta, "config": config.to_dict(),
                                        **hooks.meta()}, force=force)

    progress = wd.Progress(plan.stop, initial=start, desc=hooks.desc, enabled=lead,
                           log_every=config.log_every)
    stopper = common.GracefulStop()
    loop = LoopResult(start, None, [], [])

    evaluated: list[int] = []  # the steps this session evaluated

    def settle(step: int, device_metrics: Any, *, current: bool) -> None:
        """The host side of step `step`: its metrics fetched and checked, progress,
        and its log line with the evaluation record when one is due (only when the
        step's state is the `current` one; due steps are always settled at once)."""
        metrics = common.host_metrics(device_metrics)
        common.check_finite(step, metrics)
        progress.update(1, {k: metrics[k] for k in ("train_loss", "train_accuracy")
                            if k in metrics} or metrics)  # or a method's own
        record = {}
        if current and plan.eval_due(step):
            if not evaluated:  # say why the steps pause (its programs compile)
                log.info("step %d: first evaluation (its programs compile once; the "
                         "steps pause meanwhile)", step)
            evaluated.append(step)
            record = plan.evaluate(state, step)
        if record and step == plan.stop:
            loop.last_eval = record
        if step % config.log_every == 0 or record:
            metrics_log.write(step, {**metrics, **record})
            events.write(step, {**metrics, **record})

    # The host work of step k (fetching and logging its metrics, drawing step k + 1's
    # batches) runs while step k + 1 computes: step k + 1 is dispatched (JAX returns at
    # once) before step k's metrics are fetched. A step whose state is read (evaluated,
    # checkpointed, the last, or a stop requested) is settled before the next dispatch,
    # so checkpoints, feed positions and metrics.jsonl are those of the serial loop.
    pending: tuple[int, Any] | None = None
    try:
        while loop.step < plan.stop:
            t_step = time.time()
            first = loop.first_step_s is None
            announce = (compilation.announce(f"the {hooks.desc} step",
                                             _program_key(config, hooks, mesh),
                                             print_fn=log.info)
                        if first else contextlib.nullcontext())
            with announce:  # the first call compiles (or loads the cached program)
                state, device_metrics = plan.step(state, *plan.batches())
                if first:
                    jax.block_until_ready(device_metrics)
            loop.step += 1
            step = loop.step
            if pending is not None:
                settle(*pending, current=False)
                pending = None
            stop_requested = stopper.check()
            due_save = step % config.checkpoint_every == 0 or step == plan.stop
            if (first or not overlap or due_save or stop_requested
                    or plan.eval_due(step)):
                settle(step, device_metrics, current=True)
            else:
                pending = (step, device_metrics)
            if first:
                loop.first_step_s = time.time() - t0
                log.info("first step (compilation included) took %.1f s",
                         loop.first_step_s)
            else:
                loop.step_times.append(time.time() - t_step)
            if due_save:
                save(step)
            if stop_requested:
                save(step, force=True)
                checkpointer.wait()
                raise stopper.stop(step)
    except BaseException:
        if pending is not None:  # a step that finished before the failure is logged
            with contextlib.suppress(Exception):
                settle(*pending, current=False)
        raise
    finally:
        events.close()
        progress.close()
        stopper.restore()
        checkpointer.close()
    loop.save_seconds = list(checkpointer.save_seconds)
    if loop.save_seconds:
        log.info("checkpoints: %d saves, %.3f s blocking each on average",
                 len(loop.save_seconds), np.mean(loop.save_seconds))

    loop.records = metrics_log.read() if lead else []
    loop.mesh = dict(mesh.shape)
    results = plan.finalize(state, loop)
    if lead:
        wd.write_json(os.path.join(workdir, hooks.results_file), results)
        plan.report(results, workdir)
    return results


# Keys that change how long a run is or where it reads from, not its step program.
_SAME_PROGRAM_KEYS = ("seed", "num_steps", "log_every", "eval_every",
                      "checkpoint_every", "keep_checkpoints", "data.data_dir",
                      "tensorboard")


def _program_key(config: ml_collections.ConfigDict, hooks: Any, mesh) -> str:
    """A string that changes whenever the step program does (for the compile
    announcement's memory of how long the last compile took)."""
    flat = {k: v for k, v in config_lib.flatten(config.to_dict()).items()
            if k not in _SAME_PROGRAM_KEYS}
    return json.dumps({"config": flat, "method": hooks.desc, "mesh": dict(mesh.shape),
                       "backend": jax.default_backend(), "jax": jax.__version__},
                      sort_keys=True, default=str)


class Hooks:
    """Defaults for a method's hooks (see the module docstring)."""

    desc = "search"
    results_file = "genotype.json"
    memory_keys: tuple[str, ...] = ("data.batch_size",)

    def check(self, config: ml_collections.ConfigDict, mesh) -> None:
        parallel.check_divisible(mesh, {"data.batch_size": (config.data.batch_size,
                                                            "data")})

    def check_resumable(self, config: ml_collections.ConfigDict,
                        meta: Mapping[str, Any]) -> None:
        common.check_resumable(config, meta)

    def meta(self) -> dict[str, Any]:
        return {}
