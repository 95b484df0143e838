"""The DARTS search loop: data, jitted bilevel steps, logging, checkpoints, results."""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnas import checkpoint as ckpt_lib
from jaxnas import config as config_lib
from jaxnas import parallel
from jaxnas import plots
from jaxnas import workdir as wd
from jaxnas.runners import common
from jaxnas.spaces import genotypes
from jaxnas.strategies import darts as darts_lib
from jaxnas.supernet.darts import DartsSupernet

log = logging.getLogger("jaxnas")


def build(config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int):
    """The supernet and the DARTS strategy a config describes."""
    m, o, d = config.model, config.optim, config.darts
    model = DartsSupernet(channels=m.channels, num_classes=num_classes, layers=m.layers,
                          steps=m.steps, multiplier=m.multiplier,
                          stem_multiplier=m.stem_multiplier, mixed_op=m.mixed_op,
                          impl=m.impl)
    schedule = darts_lib.cosine_epoch_schedule(o.w_lr, o.w_lr_min, config.epochs,
                                               steps_per_epoch)
    strategy = darts_lib.darts(
        model, estimator=d.estimator, w_schedule=schedule, w_momentum=o.w_momentum,
        w_weight_decay=o.w_weight_decay, grad_clip=o.grad_clip,
        a_tx=darts_lib.arch_optimizer(o.a_lr, o.a_b1, o.a_b2, o.a_weight_decay),
        unroll_momentum=d.unroll_momentum, fd_eps=d.fd_eps,
        implicit_iters=d.implicit_iters, implicit_damping=d.implicit_damping,
        neumann_alpha=d.neumann_alpha,
        warmup_steps=d.warmup_epochs * steps_per_epoch)
    return model, strategy


def step_function(strategy, mesh):
    """The jitted DARTS step on `mesh`: state replicated, both batches split on
    `data` (every estimator, second order included: GSPMD partitions the
    Hessian-vector products like the rest)."""
    batch = parallel.batch_sharding(mesh)
    return common.jit_step(strategy.step, mesh, (batch, batch))


def check_mesh(config: ml_collections.ConfigDict, mesh) -> None:
    """ConfigError unless the batch splits over the mesh (before any compile)."""
    if mesh.shape["path"] > 1 or mesh.shape["pop"] > 1:
        raise config_lib.ConfigError(
            f"config.mesh.path={mesh.shape['path']}, mesh.pop={mesh.shape['pop']}: "
            "DARTS has no paths or population to spread; put every device on "
            "mesh.data")
    parallel.check_divisible(mesh, {"data.batch_size": (config.data.batch_size,
                                                        "data")})


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a DARTS search in `workdir`; returns the final results dict."""
    mesh = parallel.make_mesh(config)
    check_mesh(config, mesh)
    workdir = wd.prepare_workdir(workdir)
    lead = jax.process_index() == 0
    saved = ckpt_lib.latest_meta(workdir)
    if saved is not None:  # refuse a different search before touching anything
        common.check_resumable(config, saved)
    common.record_config(config, workdir, enabled=lead)
    log.info("mesh: %s", parallel.describe(mesh))
    with common.out_of_memory_report(config):
        return _run(config, workdir, mesh, lead)


def _run(config: ml_collections.ConfigDict, workdir: str, mesh, lead: bool
         ) -> dict[str, Any]:
    data = common.load_data(config)
    b = config.data.batch_size
    steps_per_epoch = min(len(data.train), len(data.val)) // b
    if steps_per_epoch == 0:
        raise ValueError(f"config.data.batch_size={b} is larger than the smaller half of "
                         f"the bilevel split ({min(len(data.train), len(data.val))} images)")
    total_steps = config.epochs * steps_per_epoch
    stop = min(config.num_steps, total_steps) if config.num_steps > 0 else total_steps

    model, strategy = build(config, data.num_classes, steps_per_epoch)
    shape = (b,) + data.image_shape
    t0 = time.time()
    state = common.init_state(
        lambda: strategy.init(jax.random.key(config.seed), jnp.zeros(shape, jnp.float32)),
        mesh)
    batch_sharding = parallel.batch_sharding(mesh)
    rows = parallel.process_rows(batch_sharding, (b,))
    to_global = functools.partial(parallel.global_batch, sharding=batch_sharding,
                                  global_shape_of=parallel.scale_axis(0, rows[1]))
    train_it = common.batches(data.train, data, config, seed=config.seed, augment=True,
                              rows=rows)
    val_it = common.batches(data.val, data, config, seed=config.seed + 1, augment=False,
                            rows=rows)

    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    metrics_log = wd.MetricsWriter(workdir, enabled=lead)
    start = 0
    restored = checkpointer.restore(state)
    if restored is not None:
        state, meta, start = restored
        common.check_resumable(config, meta)
        train_it.restore(meta["train_position"])
        val_it.restore(meta["val_position"])
        log.info("resumed from the checkpoint at step %d", start)
    metrics_log.truncate_after(start)  # nothing logged after the state we continue

    step_fn = step_function(strategy, mesh)
    eval_fn = jax.jit(strategy.evaluate,
                      in_shardings=(parallel.replicated(mesh), batch_sharding),
                      out_shardings=parallel.replicated(mesh))

    def meta() -> dict[str, Any]:
        return {"train_position": train_it.position(), "val_position": val_it.position(),
                "config": config.to_dict()}

    def save(step: int, *, force: bool = False) -> None:
        common.check_state_finite(step, state)
        checkpointer.save(step, state, meta(), force=force)

    def evaluate() -> dict[str, float]:
        out = common.evaluate(eval_fn, state, data.val, data, b, mesh=mesh)
        return {f"val_{k}": v for k, v in out.items()}

    def arch_record() -> dict[str, Any]:
        return jax.tree.map(lambda a: np.round(np.asarray(a), 6),
                            jax.device_get(darts_lib.arch_weights(
                                parallel.host(state.alphas))))

    def run_step() -> dict[str, float]:
        nonlocal state
        train_batch, val_batch = to_global(next(train_it)), to_global(next(val_it))
        state, metrics = step_fn(state, train_batch, val_batch)
        return common.host_metrics(metrics)

    def eval_record(step: int) -> dict[str, Any]:
        return {**evaluate(), "arch_weights": arch_record(), "epoch": step / steps_per_epoch}

    eval_every = config.eval_every or steps_per_epoch
    loop = common.step_loop(
        start=start, stop=stop, run_step=run_step,
        eval_due=lambda step: step % eval_every == 0 or step == stop,
        evaluate=eval_record, save=save, checkpointer=checkpointer, config=config,
        metrics_log=metrics_log, desc=f"darts/{config.darts.estimator}", lead=lead, t0=t0)
    step, compiled_at, saves = loop.step, loop.first_step_s, loop.save_seconds

    alphas = parallel.host(state.alphas)
    genotype = strategy.derive(state.replace(alphas=alphas))
    weights = arch_record()
    results = {
        "method": "darts",
        "estimator": config.darts.estimator,
        "genotype": genotypes.to_json(genotype),
        "genotype_str": genotypes.to_str(genotype),
        "arch": jax.tree.map(lambda a: np.asarray(a).tolist(), alphas),
        "arch_weights": weights,
        "steps": step,
        "mesh": dict(mesh.shape),
        "processes": jax.process_count(),
        "timing": {"first_step_s": (None if compiled_at is None
                                    else round(compiled_at, 2)),
                   "checkpoint_saves": len(saves),
                   "checkpoint_save_s": (round(float(np.mean(saves)), 4)
                                         if saves else None)},
        "final": {k: v for k, v in (metrics_log.read()[-1] if lead and metrics_log.read()
                                    else {}).items() if k.startswith("val_")},
    }
    if lead:
        wd.write_json(os.path.join(workdir, "genotype.json"), results)
        history = [r for r in metrics_log.read() if "arch_weights" in r]
        prims = list(model.primitives)
        plots.arch_heatmap(weights, prims, os.path.join(workdir, "arch_weights.png"))
        plots.arch_evolution([r["step"] for r in history],
                             [r["arch_weights"] for r in history], prims,
                             os.path.join(workdir, "arch_evolution.png"))
        log.info("genotype: %s", results["genotype_str"])
        log.info("results in %s (genotype.json, metrics.jsonl, checkpoints/, *.png)",
                 workdir)
    return results
