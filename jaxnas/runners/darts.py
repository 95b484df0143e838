"""The DARTS search loop: data, jitted bilevel steps, logging, checkpoints, results."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnas import checkpoint as ckpt_lib
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
        neumann_alpha=d.neumann_alpha)
    return model, strategy


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a DARTS search in `workdir`; returns the final results dict."""
    workdir = wd.prepare_workdir(workdir)
    lead = jax.process_index() == 0
    saved = ckpt_lib.latest_meta(workdir)
    if saved is not None:  # refuse a different search before touching anything
        common.check_resumable(config, saved)
    common.record_config(config, workdir, enabled=lead)
    data = common.load_data(config)
    b = config.data.batch_size
    steps_per_epoch = min(len(data.train), len(data.val)) // b
    if steps_per_epoch == 0:
        raise ValueError(f"config.data.batch_size={b} is larger than the smaller half of "
                         f"the bilevel split ({min(len(data.train), len(data.val))} images)")
    total_steps = config.epochs * steps_per_epoch
    stop = min(config.num_steps, total_steps) if config.num_steps > 0 else total_steps

    model, strategy = build(config, data.num_classes, steps_per_epoch)
    key = jax.random.key(config.seed)
    sample = jnp.zeros((b,) + data.image_shape, jnp.float32)
    t0 = time.time()
    state = jax.jit(strategy.init)(key, sample)
    train_it = common.batches(data.train, data, config, seed=config.seed, augment=True)
    val_it = common.batches(data.val, data, config, seed=config.seed + 1, augment=False)

    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    metrics_log = wd.MetricsWriter(workdir, enabled=lead)
    start = 0
    restored = checkpointer.restore(state)
    if restored is not None:
        state, meta, start = restored
        common.check_resumable(config, meta)
        train_it.restore(meta["train_position"])
        val_it.restore(meta["val_position"])
        metrics_log.truncate_after(start)
        log.info("resumed from the checkpoint at step %d", start)
    # Fresh and restored states must look alike to jit (same committed placement), or
    # a resumed run would compile the step again instead of hitting the XLA cache.
    state = jax.device_put(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))

    step_fn = jax.jit(strategy.step, donate_argnums=0)
    eval_fn = jax.jit(strategy.evaluate)

    def meta() -> dict[str, Any]:
        return {"train_position": train_it.position(), "val_position": val_it.position(),
                "config": config.to_dict()}

    def evaluate() -> dict[str, float]:
        out = common.evaluate(eval_fn, state, data.val, data, b)
        return {f"val_{k}": v for k, v in out.items()}

    def arch_record() -> dict[str, Any]:
        return jax.tree.map(lambda a: np.round(np.asarray(a), 6),
                            jax.device_get(darts_lib.arch_weights(state.alphas)))

    progress = wd.Progress(stop, initial=start, desc=f"darts/{config.darts.estimator}",
                           enabled=lead, log_every=config.log_every)
    stopper = common.GracefulStop()
    eval_every = config.eval_every or steps_per_epoch
    compiled_at = None
    step = start
    try:
        while step < stop:
            train_batch, val_batch = next(train_it), next(val_it)
            state, metrics = step_fn(state, train_batch, val_batch)
            step += 1
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if compiled_at is None:
                compiled_at = time.time() - t0
                log.info("first step (compilation included) took %.1f s", compiled_at)
            common.check_finite(step, metrics)
            progress.update(1, {k: metrics[k] for k in ("train_loss", "train_accuracy")})
            record = {}
            if step % eval_every == 0 or step == stop:
                record.update(evaluate())
                record["arch_weights"] = arch_record()
                record["epoch"] = step / steps_per_epoch
            if step % config.log_every == 0 or record:
                metrics_log.write(step, {**metrics, **record})
            if step % config.checkpoint_every == 0 or step == stop:
                checkpointer.save(step, state, meta())
            if stopper.requested:
                checkpointer.save(step, state, meta(), force=True)
                checkpointer.wait()
                log.warning("stopped by signal at step %d; checkpoint saved, re-run the "
                            "same command to resume", step)
                raise KeyboardInterrupt
    finally:
        progress.close()
        stopper.restore()
        checkpointer.close()

    genotype = strategy.derive(state)
    weights = arch_record()
    results = {
        "method": "darts",
        "estimator": config.darts.estimator,
        "genotype": genotypes.to_json(genotype),
        "genotype_str": genotypes.to_str(genotype),
        "arch": jax.tree.map(lambda a: np.asarray(a).tolist(), jax.device_get(state.alphas)),
        "arch_weights": weights,
        "steps": step,
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
