"""The SPOS / FairNAS search loop: supernet training, then evolution over it."""

from __future__ import annotations

import hashlib
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
from jaxnas import plots
from jaxnas import workdir as wd
from jaxnas.runners import common
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import oneshot as oneshot_lib
from jaxnas.supernet.chain import ChainSupernet

log = logging.getLogger("jaxnas")

METHODS = ("spos", "fairnas")


def cosine_schedule(lr: float, lr_min: float, total_steps: int):
    """Cosine decay from ``lr`` to ``lr_min`` over ``total_steps`` (per step)."""

    def schedule(step: jax.Array) -> jax.Array:
        frac = jnp.minimum(step, total_steps) / max(total_steps, 1)
        return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * frac))

    return schedule


def evolution_settings(config: ml_collections.ConfigDict
                       ) -> oneshot_lib.EvolutionSettings:
    """The evolution settings of a config; ConfigError when they do not fit."""
    e = config.evolution
    settings = oneshot_lib.EvolutionSettings(
        method=e.method, population_size=e.population_size, sample_size=e.sample_size,
        num_cycles=e.num_cycles, batch_size=e.batch_size, max_params=e.max_params)
    if settings.sample_size > settings.population_size:
        raise config_lib.ConfigError(
            f"config.evolution.sample_size={settings.sample_size} is not allowed: "
            f"expected at most evolution.population_size={settings.population_size}")
    if (settings.method == "evolution"
            and settings.batch_size > settings.population_size):
        raise config_lib.ConfigError(
            f"config.evolution.batch_size={settings.batch_size} is not allowed: "
            f"expected at most evolution.population_size={settings.population_size}")
    return settings


def build_space(config: ml_collections.ConfigDict, in_channels: int
                ) -> space_lib.ChainSpace:
    """The chain space a config describes; ConfigError naming the keys if invalid."""
    m = config.model
    try:
        return space_lib.ChainSpace(
            stem_channels=m.stem_channels, widths=tuple(m.widths),
            depths=tuple(m.depths), strides=tuple(m.strides),
            head_channels=m.head_channels, stem_stride=m.stem_stride,
            in_channels=in_channels)
    except (TypeError, ValueError) as e:
        raise config_lib.ConfigError(
            f"config.model.widths={tuple(m.widths)!r}, model.depths="
            f"{tuple(m.depths)!r}, model.strides={tuple(m.strides)!r} do not describe "
            f"a chain space: {e}") from None


def build(config: ml_collections.ConfigDict, num_classes: int, in_channels: int,
          total_steps: int):
    """``(space, model, strategy)`` of a SPOS / FairNAS config."""
    if config.method not in METHODS:
        raise config_lib.ConfigError(f"config.method={config.method!r} is not allowed: "
                                     f"expected one of {', '.join(METHODS)}")
    space = build_space(config, in_channels)
    m, o = config.model, config.optim
    model = ChainSupernet(space, num_classes, dispatch=m.dispatch, impl=m.impl,
                          bn_momentum=m.bn_momentum)
    factory = oneshot_lib.fairnas if config.method == "fairnas" else oneshot_lib.spos
    strategy = factory(model, learning_rate=cosine_schedule(o.lr, o.lr_min,
                                                            total_steps),
                       momentum=o.momentum, weight_decay=o.weight_decay,
                       grad_clip=o.grad_clip, evolution=evolution_settings(config))
    return space, model, strategy


def stack_eval(split, batch_size: int, mean, std) -> dict[str, np.ndarray]:
    """A whole split as padded batches: image [B, N, H, W, C], label, mask [B, N]."""
    from jaxnas import data as data_lib

    batches = list(data_lib.eval_batches(split, batch_size, mean, std))
    return {k: np.stack([b[k] for b in batches]) for k in ("image", "label", "mask")}


def calibration_images(data, config: ml_collections.ConfigDict) -> np.ndarray:
    """float32[K, N, H, W, C]: the fixed, unaugmented recalibration batches."""
    from jaxnas import data as data_lib

    it = data_lib.BatchIterator(data.train.images, data.train.labels,
                                batch_size=config.data.batch_size, mean=data.mean,
                                std=data.std, seed=config.seed + 2, augment=None)
    return np.stack([next(it)["image"] for _ in range(config.oneshot.calib_batches)])


def _subset(split, n: int):
    from jaxnas import data as data_lib

    if n <= 0 or n >= len(split):
        return split
    return data_lib.ArraySplit(split.images[:n], split.labels[:n])


def weights_checksum(tree: Any) -> str:
    """SHA-256 of the bytes of every array in a pytree (in tree order)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        leaf = np.ascontiguousarray(leaf)
        digest.update(str((leaf.dtype, leaf.shape)).encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a SPOS / FairNAS search in `workdir`; returns the results."""
    evolution_settings(config)  # cross-key checks before any data or compile
    workdir = wd.prepare_workdir(workdir)
    lead = jax.process_index() == 0
    common.record_config(config, workdir, enabled=lead)
    data = common.load_data(config)
    b = config.data.batch_size
    fair = config.method == "fairnas"
    per_path = fair and not config.fairnas.shared_batch
    batches_per_step = space_lib.NUM_CHOICES if per_path else 1
    steps_per_epoch = len(data.train) // (b * batches_per_step)
    if steps_per_epoch == 0:
        raise ValueError(f"config.data.batch_size={b} x {batches_per_step} batches a "
                         f"step is larger than the {len(data.train)} training images")
    total_steps = config.epochs * steps_per_epoch
    stop = min(config.num_steps, total_steps) if config.num_steps > 0 else total_steps

    space, model, strategy = build(config, data.num_classes, data.image_shape[-1],
                                   total_steps)
    key = jax.random.key(config.seed)
    k_init, k_eval, k_search = jax.random.split(key, 3)
    sample = jnp.zeros((b,) + data.image_shape, jnp.float32)
    t0 = time.time()
    state = jax.jit(strategy.init)(k_init, sample)
    train_it = common.batches(data.train, data, config, seed=config.seed, augment=True)

    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    metrics_log = wd.MetricsWriter(workdir, enabled=lead)
    start = 0
    restored = checkpointer.restore(state)
    if restored is not None:
        state, meta, start = restored
        common.check_resumable(config, meta)
        train_it.restore(meta["train_position"])
        metrics_log.truncate_after(start)
        log.info("resumed from the checkpoint at step %d", start)
    # Fresh and restored states must look alike to jit (same committed placement), or
    # a resumed run would compile the step again instead of hitting the XLA cache.
    state = jax.device_put(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))

    calib = jnp.asarray(calibration_images(data, config))
    ev = config.oneshot.eval_batch_size
    val_split = _subset(data.val, config.oneshot.val_examples)
    val = jax.tree.map(jnp.asarray, stack_eval(val_split, ev, data.mean, data.std))
    eval_paths = jax.random.randint(
        k_eval, (config.oneshot.eval_paths, space.num_layers), 0,
        space_lib.NUM_CHOICES, jnp.int32)
    step_fn = jax.jit(strategy.step, donate_argnums=0)
    accuracy_fn = jax.jit(lambda variables, paths, calib, val:
                          oneshot_lib.population_accuracy(model, variables, paths,
                                                          calib, val))

    def next_batch() -> dict[str, np.ndarray]:
        if not per_path:
            return next(train_it)
        parts = [next(train_it) for _ in range(batches_per_step)]
        return {k: np.stack([p[k] for p in parts]) for k in parts[0]}

    def meta() -> dict[str, Any]:
        return {"train_position": train_it.position(), "config": config.to_dict()}

    def variables() -> dict[str, Any]:
        return {"params": state.params, "batch_stats": state.batch_stats}

    def evaluate() -> dict[str, Any]:
        acc = np.asarray(jax.device_get(accuracy_fn(variables(), eval_paths, calib,
                                                    val)))
        return {"val_accuracy": float(acc.mean()), "val_accuracy_max": float(acc.max()),
                "val_accuracy_min": float(acc.min())}

    progress = wd.Progress(stop, initial=start, desc=config.method, enabled=lead,
                           log_every=config.log_every)
    stopper = common.GracefulStop()
    eval_every = config.eval_every or steps_per_epoch
    compiled_at = None
    step = start
    step_times = []
    try:
        while step < stop:
            batch = next_batch()
            t_step = time.time()
            state, metrics = step_fn(state, batch)
            step += 1
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if compiled_at is None:
                compiled_at = time.time() - t0
                log.info("first step (compilation included) took %.1f s", compiled_at)
            else:
                step_times.append(time.time() - t_step)
            common.check_finite(step, metrics)
            progress.update(1, {k: metrics[k]
                                for k in ("train_loss", "train_accuracy")})
            record = {}
            if config.oneshot.eval_paths and (step % eval_every == 0 or step == stop):
                record.update(evaluate())
                record["epoch"] = step / steps_per_epoch
            if step % config.log_every == 0 or record:
                metrics_log.write(step, {**metrics, **record})
            if step % config.checkpoint_every == 0 or step == stop:
                checkpointer.save(step, state, meta())
            if stopper.requested:
                checkpointer.save(step, state, meta(), force=True)
                checkpointer.wait()
                log.warning("stopped by signal at step %d; checkpoint saved, re-run "
                            "the same command to resume", step)
                raise KeyboardInterrupt
    finally:
        progress.close()
        stopper.restore()
        checkpointer.close()

    settings = evolution_settings(config)
    t_search = time.time()
    result = jax.device_get(strategy.derive(state, calib, val, k_search))
    search_seconds = time.time() - t_search
    path = [int(c) for c in result.best_arch]
    history = np.asarray(result.history.fitness, np.float64)
    test = jax.tree.map(jnp.asarray, stack_eval(data.test, ev, data.mean, data.std))
    test_acc = float(accuracy_fn(variables(), jnp.asarray([path], jnp.int32), calib,
                                 test)[0])
    curve = oneshot_lib.round_stats(history, settings)
    initial = history[:min(settings.population_size, len(history))]
    initial = initial[np.isfinite(initial)]
    results = {
        "method": config.method,
        "genotype": space_lib.genotype_to_json(space, path, data.num_classes),
        "path": path,
        "path_names": space_lib.path_names(path),
        "fitness": float(result.best_fitness),
        "params": space_lib.count_params(space, path, data.num_classes),
        "supernet_test_accuracy": test_acc,
        "random_fitness_mean": float(initial.mean()) if initial.size else None,
        "search": {"method": settings.method, "evaluations": int(len(history)),
                   "seconds": round(search_seconds, 2), **settings._asdict()},
        "evolution": curve,
        "training_counts": np.asarray(jax.device_get(state.counts)).tolist(),
        "steps": step,
        "weights_sha256": weights_checksum(variables()),
        "timing": {"first_step_s": (None if compiled_at is None
                                    else round(compiled_at, 2)),
                   "median_step_s": (round(float(np.median(step_times)), 4)
                                     if step_times else None),
                   "search_s": round(search_seconds, 2)},
    }
    if lead:
        wd.write_json(os.path.join(workdir, "genotype.json"), results)
        plots.fitness_curve(curve["round"], curve["best"], curve["median"],
                            os.path.join(workdir, "evolution.png"))
        log.info("path %s (%s), fitness %.4f, %d parameters", path,
                 " ".join(results["path_names"]), results["fitness"], results["params"])
        log.info("results in %s (genotype.json, metrics.jsonl, checkpoints/, "
                 "evolution.png)", workdir)
    return results
