"""DARTS and the gradient-based family in the search loop: the supernet and the strategy
`config.method` names (`BUILDERS`), the jitted bilevel step, its two batch feeds, the
optional early stop (`config.early_stop`, DARTS+ / RobustDARTS) at each evaluation, and
the derived genotype with plots."""

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


def _gdas(model, config, total_steps, **kw):
    from jaxnas.strategies.gdas import gdas
    return gdas(model, total_steps=total_steps, tau_max=config.gdas.tau_max,
                tau_min=config.gdas.tau_min, **kw)


def _snas(model, config, total_steps, **kw):
    from jaxnas.strategies.snas import snas
    return snas(model, total_steps=total_steps, tau_max=config.snas.tau_max,
                tau_min=config.snas.tau_min, **kw)


def _fairdarts(model, config, total_steps, **kw):
    from jaxnas.strategies.fairdarts import fairdarts
    return fairdarts(model, zero_one_weight=config.fairdarts.zero_one_weight, **kw)


def _drnas(model, config, total_steps, **kw):
    from jaxnas.strategies.drnas import drnas
    return drnas(model, kl_weight=config.drnas.kl_weight, anchor=config.drnas.anchor, **kw)


def _darts_minus(model, config, total_steps, **kw):
    from jaxnas.strategies.darts_minus import darts_minus
    return darts_minus(model, total_steps=total_steps, beta_max=config.darts_minus.beta_max,
                       beta_min=config.darts_minus.beta_min, **kw)


def _pcdarts(model, config, total_steps, **kw):
    from jaxnas.strategies.pcdarts import pcdarts
    return pcdarts(model, **kw)


def _proxyless(model, config, total_steps, **kw):
    from jaxnas.strategies.proxyless import proxyless
    weight = config.proxyless.cost_weight if config.proxyless.cost != "none" else 0.0
    return proxyless(model, cost_weight=weight,
                     paths=config.proxyless.get("paths", "all"), **kw)


def _pdarts(model, config, total_steps, **kw):
    from jaxnas.runners import pdarts as stages
    from jaxnas.strategies.pdarts import dropout_schedule, pdarts_stage
    stage, ops = stages.stage_of(config, model)
    p = config.pdarts
    rate = p.skip_dropout[stage]
    skip_rate = (dropout_schedule(rate, config.epochs, config.darts.warmup_epochs,
                                  total_steps // config.epochs) if rate > 0 else None)
    last = stage == len(p.num_ops) - 1
    return pdarts_stage(model, ops=ops, skip_rate=skip_rate,
                        max_skips=p.max_skips if last else None, **kw)


# config.method -> (model, config, total search steps, darts' keywords) -> strategy;
# every method shares DARTS' estimator, optimizers, warm-up and space settings.
BUILDERS = {
    "darts": lambda model, config, total_steps, **kw: darts_lib.darts(model, **kw),
    "gdas": _gdas,
    "snas": _snas,
    "fairdarts": _fairdarts,
    "drnas": _drnas,
    "darts_minus": _darts_minus,
    "pcdarts": _pcdarts,
    "proxyless": _proxyless,
    "pdarts": _pdarts,
}

# config.method -> (supernet, config) -> the supernet that method searches
MODEL_OPTIONS = {
    "pcdarts": lambda model, config: model.clone(
        partial_channels=config.pcdarts.partial_channels),
    "pdarts": lambda model, config: model.clone(
        edge_ops=_pdarts_stage_ops(config, model)),
    "gdas": lambda model, config: (model.clone(single_path=True)
                                   if config.gdas.get("single_path", False) else model),
}


def _pdarts_stage_ops(config, model):
    from jaxnas.runners import pdarts as stages
    return stages.stage_of(config, model)[1]


def build(config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int,
          image_size: int | None = None):
    """The supernet and the strategy of `config.method` a config describes (with
    `config.hardware`: the expected-cost loss of the chain space's table for
    ``image_size`` inputs)."""
    o, d = config.optim, config.darts
    model, space = supernets.build(config.model, num_classes)
    cost = None
    if "hardware" in config:
        from jaxnas import hardware
        table = hardware.config_table(config.hardware, space.space, num_classes,
                                      image_size)[1]
        cost = (table, config.hardware.weight)
    method = config.get("method", "darts")
    if method in MODEL_OPTIONS:
        model = MODEL_OPTIONS[method](model, config)
    schedule = darts_lib.cosine_epoch_schedule(o.w_lr, o.w_lr_min, config.epochs,
                                               steps_per_epoch)
    strategy = BUILDERS[method](
        model, config, config.epochs * steps_per_epoch,
        estimator=d.estimator, w_schedule=schedule, w_momentum=o.w_momentum,
        w_weight_decay=o.w_weight_decay, grad_clip=o.grad_clip,
        a_tx=darts_lib.arch_optimizer(o.a_lr, o.a_b1, o.a_b2, o.a_weight_decay),
        unroll_momentum=d.unroll_momentum, fd_eps=d.fd_eps,
        implicit_iters=d.implicit_iters, implicit_damping=d.implicit_damping,
        neumann_alpha=d.neumann_alpha,
        warmup_steps=d.warmup_epochs * steps_per_epoch, space=space,
        hardware_cost=cost)
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
        self.stopper: EarlyStopper | None = None
        self.stopped: dict[str, Any] = {}
        self._saved_early_stop: dict[str, Any] | None = None
        method = config.get("method", "darts")
        self.desc = (f"{method}/{config.darts.estimator}" if method != "snas"
                     else "snas/single_level")

    def check(self, config, mesh) -> None:
        check_mesh(config, mesh)

    def check_resumable(self, config, meta) -> None:
        super().check_resumable(config, meta)
        self._saved_early_stop = meta.get("early_stop")

    def meta(self) -> dict[str, Any]:
        """What a checkpoint records besides the state: the early stop's history."""
        if self.stopper is None:
            return {}
        return {"early_stop": {"criteria": self.stopper.criteria.to_json(),
                               "stopped": dict(self.stopped)}}

    def build(self, config, mesh) -> loop_lib.Plan:
        data = common.load_data(config)
        b = config.data.batch_size
        steps_per_epoch, _, stop = loop_lib.bilevel_epochs_to_steps(config, data)
        model, strategy = build(config, data.num_classes, steps_per_epoch,
                                image_size=data.image_shape[0])
        shape = (b,) + data.image_shape
        train_it, to_global = common.sharded_batches(
            data.train, data, config, mesh, seed=config.seed, augment=True)
        val_it, _ = common.sharded_batches(data.val, data, config, mesh,
                                           seed=config.seed + 1, augment=False)
        eval_fn = common.eval_function(strategy.evaluate, mesh)
        eval_every = config.eval_every or steps_per_epoch
        stopper = self.stopper = early_stopper(config, model, strategy, data)
        stopped = self.stopped

        def evaluate(state, step: int) -> dict[str, Any]:
            out = common.evaluate(eval_fn, state, data.val, data, b, mesh=mesh)
            record = {**{f"val_{k}": v for k, v in out.items()},
                      "arch_weights": arch_record(strategy, state),
                      "epoch": step / steps_per_epoch}
            if stopper is not None:
                record.update(stopper.check(state, record["arch_weights"]))
                if stopper.reason is not None and step < plan.stop:
                    # the loop reads plan.stop every step: this ends the search here,
                    # and `step == plan.stop` makes it checkpoint this last state
                    log.info("early stop at step %d: %s", step, stopper.reason)
                    stopped.update(step=step, reason=stopper.reason)
                    plan.stop = step
            return record

        def started(state, start: int) -> None:
            # resumed: the criteria's history and any stop come from the checkpoint's
            # meta (`meta`, read back by `check_resumable`), so a resumed run stops
            # where an uninterrupted one does, and a stopped one stays stopped
            saved = self._saved_early_stop
            if stopper is None or not start or not saved:
                return
            stopper.criteria.load(saved["criteria"])
            if saved.get("stopped"):
                stopped.update(saved["stopped"])
                log.info("early stop at step %d (restored): %s", stopped["step"],
                         stopped["reason"])
                plan.stop = min(plan.stop, start)

        def finalize(state, loop: loop_lib.LoopResult) -> dict[str, Any]:
            alphas = parallel.host(state.alphas)
            state = state.replace(alphas=alphas)
            genotype = strategy.derive(state)
            space = spaces.space_of(genotype)
            last = loop.records[-1] if loop.records else {}
            return {"method": config.get("method", "darts"),
                    "estimator": config.darts.estimator,
                    **({"early_stop": dict(stopped)} if stopped else {}),
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

            def by_cell(w):  # one cell type (NB201: w[6, 5]) plots as "cell"
                return w if isinstance(w, dict) else {"cell": w}

            plots.arch_heatmap(by_cell(results["arch_weights"]), prims,
                               os.path.join(workdir, "arch_weights.png"))
            plots.arch_evolution([r["step"] for r in history],
                                 [by_cell(r["arch_weights"]) for r in history], prims,
                                 os.path.join(workdir, "arch_evolution.png"),
                                 warmup_step=config.darts.warmup_epochs * steps_per_epoch)
            log.info("genotype: %s", results["genotype_str"])
            log.info("results in %s (genotype.json, metrics.jsonl, checkpoints/, "
                     "*.png)", workdir)

        plan = loop_lib.Plan(
            init=lambda: strategy.init(jax.random.key(config.seed),
                                       jnp.zeros(shape, jnp.float32)),
            step=step_function(strategy, mesh),
            batches=lambda: (to_global(next(train_it)), to_global(next(val_it))),
            feeds={"train": train_it, "val": val_it}, stop=stop, evaluate=evaluate,
            eval_due=lambda step: step % eval_every == 0 or step == stop,
            finalize=finalize, report=report, started=started)
        return plan


class EarlyStopper:
    """`jaxnas.strategies.early_stop.EarlyStop` fed from a search's evaluations: op
    weights, the derived normal cell and, when that criterion is on, the dominant
    eigenvalue of the alpha Hessian of the validation loss on a fixed batch (the first
    `early_stop.eigen_batch` validation images, running BatchNorm statistics)."""

    def __init__(self, settings: ml_collections.ConfigDict, model, strategy, data):
        from jaxnas.strategies.early_stop import EarlyStop
        self.criteria = EarlyStop(settings.max_skips, settings.stable_epochs,
                                  settings.eigen_ratio, settings.eigen_epochs)
        self.strategy, self.reason = strategy, None
        self.eigen = None
        if self.criteria.needs_eigenvalue:
            from jaxnas import data as data_lib
            from jaxnas.losses import cross_entropy
            from jaxnas.study import arch_hessian_eigenvalues
            batch = next(iter(data_lib.eval_batches(data.val, settings.eigen_batch,
                                                    data.mean, data.std)))

            def dominant(state):
                def val_loss(params, alphas, batch):
                    logits = model.apply(
                        {"params": params, "batch_stats": state.batch_stats},
                        batch["image"], strategy.arch_weights(state.replace(alphas=alphas)),
                        train=False)
                    return cross_entropy(logits, batch["label"])
                return arch_hessian_eigenvalues(val_loss, state.params, state.alphas,
                                                batch)[-1]

            self.eigen = lambda state: float(jax.jit(dominant)(parallel.host(state)))

    def _normal(self, state):
        return self.strategy.derive(state.replace(alphas=parallel.host(state.alphas))).normal

    def check(self, state, weights) -> dict[str, Any]:
        """Feeds one evaluation; the record's extra fields (the eigenvalue)."""
        ev = self.eigen(state) if self.eigen is not None else None
        self.reason = self.criteria.update(weights, self._normal(state), ev)
        return {} if ev is None else {"arch_hessian_max_eigenvalue": ev}


def early_stopper(config: ml_collections.ConfigDict, model, strategy, data
                  ) -> EarlyStopper | None:
    """The early stop `config.early_stop` asks for, or None (no section, or all off)."""
    s = config.get("early_stop")
    if s is None or not (s.max_skips or s.stable_epochs or s.eigen_ratio):
        return None
    return EarlyStopper(s, model, strategy, data)


def hooks(config: ml_collections.ConfigDict) -> Hooks:
    return Hooks(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs or resumes a DARTS search in `workdir` (`jaxnas.search.run` validates
    the config first); returns the results dict."""
    return loop_lib.run(config, workdir, Hooks(config))
