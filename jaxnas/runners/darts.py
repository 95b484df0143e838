"""DARTS in the search loop: the supernet and strategy a config describes, the
jitted bilevel step, its two batch feeds, and the derived genotype with plots."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnas import config as config_lib
from jaxnas import parallel
from jaxnas import plots
from jaxnas import spaces
from jaxnas import workdir as wd
from jaxnas.runners import common
from jaxnas.runners import loop as loop_lib
from jaxnas.runners import supernets
from jaxnas.strategies import darts as darts_lib

log = logging.getLogger("jaxnas")


def build(config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int):
    """The supernet and the DARTS strategy a config describes."""
    o, d = config.optim, config.darts
    model, space = supernets.build(config.model, num_classes)
    schedule = darts_lib.cosine_epoch_schedule(o.w_lr, o.w_lr_min, config.epochs,
                                               steps_per_epoch)
    strategy = darts_lib.darts(
        model, estimator=d.estimator, w_schedule=schedule, w_momentum=o.w_momentum,
        w_weight_decay=o.w_weight_decay, grad_clip=o.grad_clip,
        a_tx=darts_lib.arch_optimizer(o.a_lr, o.a_b1, o.a_b2, o.a_weight_decay),
        unroll_momentum=d.unroll_momentum, fd_eps=d.fd_eps,
        implicit_iters=d.implicit_iters, implicit_damping=d.implicit_damping,
        neumann_alpha=d.neumann_alpha,
        warmup_steps=d.warmup_epochs * steps_per_epoch, space=space)
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


def arch_record(strategy, state) -> dict[str, Any]:
    """The strategy's op weights of `state` (its relaxation's expected weights) on the
    host, rounded for metrics.jsonl."""
    state = state.replace(alphas=parallel.host(state.alphas))
    return jax.tree.map(lambda a: np.round(np.asarray(a), 6),
                        jax.device_get(strategy.arch_weights(state)))


class Hooks(loop_lib.Hooks):
    """DARTS: train and validation halves of the bilevel split, one step on both."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.desc = f"darts/{config.darts.estimator}"

    def check(self, config, mesh) -> None:
        check_mesh(config, mesh)

    def build(self, config, mesh) -> loop_lib.Plan:
        data = common.load_data(config)
        b = config.data.batch_size
        steps_per_epoch, _, stop = loop_lib.epochs_to_steps(
            config, min(len(data.train), len(data.val)), b,
            "the smaller half of the bilevel split")
        model, strategy = build(config, data.num_classes, steps_per_epoch)
        shape = (b,) + data.image_shape
        train_it, to_global = common.sharded_batches(
            data.train, data, config, mesh, seed=config.seed, augment=True)
        val_it, _ = common.sharded_batches(data.val, data, config, mesh,
                                           seed=config.seed + 1, augment=False)
        eval_fn = common.eval_function(strategy.evaluate, mesh)
        eval_every = config.eval_every or steps_per_epoch

        def evaluate(state, step: int) -> dict[str, Any]:
            out = common.evaluate(eval_fn, state, data.val, data, b, mesh=mesh)
            return {**{f"val_{k}": v for k, v in out.items()},
                    "arch_weights": arch_record(strategy, state),
                    "epoch": step / steps_per_epoch}

        def finalize(state, loop: loop_lib.LoopResult) -> dict[str, Any]:
            alphas = parallel.host(state.alphas)
            state = state.replace(alphas=alphas)
            genotype = strategy.derive(state)
            space = spaces.space_of(genotype)
            last = loop.records[-1] if loop.records else {}
            return {"method": "darts", "estimator": config.darts.estimator,
                    "genotype": space.to_json(genotype),
                    "genotype_str": space.describe(genotype),
                    "arch": jax.tree.map(lambda a: np.asarray(a).tolist(), alphas),
                    "arch_weights": arch_record(strategy, state),
                    **loop.summary(),
                    "final": {k: v for k, v in last.items() if k.startswith("val_")}}

        def report(results, workdir: str) -> None:
            history = [r for r in wd.MetricsWriter(workdir).read()
                       if "arch_weights" in r]
            prims = list(model.primitives)
            plots.arch_heatmap(results["arch_weights"], prims,
                               os.path.join(workdir, "arch_weights.png"))
            plots.arch_evolution([r["step"] for r in history],
                                 [r["arch_weights"] for r in history], prims,
                                 os.path.join(workdir, "arch_evolution.png"))
            log.info("genotype: %s", results["genotype_str"])
            log.info("results in %s (genotype.json, metrics.jsonl, checkpoints/, "
                     "*.png)", workdir)

        return loop_lib.Plan(
            init=lambda: strategy.init(jax.random.key(config.seed),
                                       jnp.zeros(shape, jnp.float32)),
            step=step_function(strategy, mesh),
            batches=lambda: (to_global(next(train_it)), to_global(next(val_it))),
            feeds={"train": train_it, "val": val_it}, stop=stop, evaluate=evaluate,
            eval_due=lambda step: step % eval_every == 0 or step == stop,
            finalize=finalize, report=report)


def hooks(config: ml_collections.ConfigDict) -> Hooks:
    return Hooks(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a DARTS search in `workdir` (`jaxnas.search.run` validates
    the config first); returns the results dict."""
    return loop_lib.run(config, workdir, Hooks(config))
