"""`jaxnas study`: probe the hypergradient estimators along a bilevel search (run here,
or read from an earlier search's checkpoints with `--from`), write ``study.json`` and
the plots."""

from __future__ import annotations

import logging
import os
import types
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxnas import config as config_lib
from jaxnas import methods
from jaxnas import workdir as wd
from jaxnas.errors import ConfigError
from jaxnas.losses import cross_entropy

log = logging.getLogger("jaxnas")

STUDY_FILE = "study.json"
BILEVEL_LOOP = "jaxnas.runners.darts"


def _estimator_list() -> config_lib.Rule:
    from jaxnas.study.probe import ESTIMATORS
    return config_lib.Rule(
        lambda v: isinstance(v, (tuple, list)) and len(v) > 0
        and all(e in ESTIMATORS for e in v),
        f"a non-empty list of {', '.join(repr(e) for e in ESTIMATORS)}")


def _positive_floats() -> config_lib.Rule:
    return config_lib.Rule(
        lambda v: isinstance(v, (tuple, list))
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
                for x in v), "a (possibly empty) list of positive numbers")


RULES: dict[str, config_lib.Rule] = {
    "study.every": config_lib.positive(int),
    "study.estimators": _estimator_list(),
    "study.unrolled_steps": config_lib.positive(int),
    "study.implicit_tol": config_lib.in_range(0.0, 1.0, lo_open=True, hi_open=True),
    "study.implicit_max_iters": config_lib.positive(int),
    "study.trace_iters": config_lib.positive(int),
    "study.hessian_iters": config_lib.positive(int),
    "study.hessian_method": config_lib.choice("lanczos", "power"),
    "study.arch_hessian": methods.BOOL,
    "study.extra_fd_eps": _positive_floats(),
    "study.seed": config_lib.non_negative(int),
}


def default_study() -> ml_collections.ConfigDict:
    """The `config.study` section's defaults (all six estimators)."""
    from jaxnas.study.probe import ESTIMATORS
    return ml_collections.ConfigDict({
        "every": 20, "estimators": ESTIMATORS, "unrolled_steps": 1,
        "implicit_tol": 1e-6, "implicit_max_iters": 200, "trace_iters": 10,
        "hessian_iters": 20, "hessian_method": "lanczos", "arch_hessian": True,
        "extra_fd_eps": (1e-3,), "seed": 0})


def validate(config: ml_collections.ConfigDict) -> None:
    """The search config's own rules (a bilevel method), then config.study's."""
    method = methods.validate(config)
    if method.loop != BILEVEL_LOOP:
        raise ConfigError(f"config.method={config.method!r} is not allowed for jaxnas "
                          "study: expected a bilevel method (one with an architecture "
                          "gradient), e.g. 'darts'")
    if "study" not in config:
        raise ConfigError("config.study is missing: see experiments/study_digits.py "
                          "for its keys")
    config_lib.validate(config, RULES, required=list(RULES))


def _settings(config: ml_collections.ConfigDict):
    from jaxnas.study.probe import Settings
    s, d = config.study, config.darts
    return Settings(estimators=tuple(s.estimators), unrolled_steps=s.unrolled_steps,
                    implicit_tol=s.implicit_tol, implicit_max_iters=s.implicit_max_iters,
                    trace_iters=s.trace_iters, hessian_iters=s.hessian_iters,
                    hessian_method=s.hessian_method, arch_hessian=s.arch_hessian,
                    extra_fd_eps=tuple(s.extra_fd_eps), fd_eps=d.fd_eps,
                    implicit_iters=d.implicit_iters,
                    implicit_damping=d.implicit_damping, neumann_alpha=d.neumann_alpha)


class _Study:
    """What the probes need of a search: its supernet loss, learning rate and fixed
    probe batches (the first batch of each half of the bilevel split, unaugmented)."""

    def __init__(self, config: ml_collections.ConfigDict):
        from jaxnas.runners import common
        from jaxnas.runners import darts as darts_runner
        from jaxnas.runners import loop as loop_lib
        from jaxnas.strategies import darts as darts_lib
        from jaxnas.study.probe import Prober

        self.config = config
        data = common.load_data(config)
        b = config.data.batch_size
        self.steps_per_epoch, _, self.stop = loop_lib.bilevel_epochs_to_steps(config, data)
        # the image size sizes a config.hardware cost table (macs, latency)
        self.model, self.strategy = darts_runner.build(config, data.num_classes,
                                                       self.steps_per_epoch,
                                                       data.image_shape[0])
        o = config.optim
        self.lr = darts_lib.cosine_epoch_schedule(o.w_lr, o.w_lr_min, config.epochs,
                                                  self.steps_per_epoch)
        self.sample_shape = (b,) + data.image_shape

        def first(split, seed):
            batch = next(common.batches(split, data, config, seed=seed, augment=False))
            return {k: jnp.asarray(batch[k]) for k in ("image", "label")}

        seed = config.study.seed
        self.train_batch = first(data.train, 10_000 + seed)
        self.val_batch = first(data.val, 20_000 + seed)
        apply_train = jax.jit(lambda variables, images, weights: self.model.apply(
            variables, images, weights, train=True, mutable=["batch_stats"]))
        arch_weights = self.strategy.arch_weights

        def make_loss(batch_stats):
            def loss(params, alphas, batch):
                weights = arch_weights(types.SimpleNamespace(alphas=alphas))
                logits, _ = apply_train({"params": params, "batch_stats": batch_stats},
                                        batch["image"], weights)
                return cross_entropy(logits, batch["label"])
            return loss

        self.prober = Prober(make_loss, _settings(config),
                             key=jax.random.key(config.study.seed))

    def probe(self, state: Any, step: int) -> dict[str, Any]:
        from jaxnas import parallel
        from jaxnas.study.probe import Point

        host = jax.device_get
        alphas = host(parallel.host(state.alphas))
        point = Point(params=host(state.params), batch_stats=host(state.batch_stats),
                      arch=alphas, w_opt=host(state.w_opt), lr=self.lr(step),
                      train_batch=self.train_batch, val_batch=self.val_batch)
        record = {"step": int(step), **self.prober(point),
                  "arch_weights": jax.tree.map(
                      lambda a: jax.device_get(a).tolist(),
                      self.strategy.arch_weights(types.SimpleNamespace(alphas=alphas)))}
        first = record["estimators"]
        log.info("study at step %d: cosine to unrolled %s", step, ", ".join(
            f"{k} {v['unrolled']['cosine']:.3f}" for k, v in first.items()))
        return record


def write(workdir: str, config: ml_collections.ConfigDict, records: list[dict],
          costs: dict[str, Any], source: str, primitives: list[str]) -> dict[str, Any]:
    """Writes DIR/study.json (settings, summary, per-program compile costs and memory,
    per-probe records) and the plots; returns the payload."""
    from jaxnas.study import plots
    from jaxnas.study.probe import summarize

    payload = {"source": source, "method": config.method,
               "search_estimator": config.darts.estimator,
               "settings": config.study.to_dict(), "summary": summarize(records),
               "programs": costs, "primitives": list(primitives), "records": records}
    wd.write_json(os.path.join(workdir, STUDY_FILE), payload)
    plots.write_all(payload, workdir)
    log.info("study results in %s (%s, study_*.png)", workdir, STUDY_FILE)
    return payload


class _StudyHooks:
    """A bilevel method's loop hooks with a probe every `study.every` steps (and at
    the last); probes go to metrics.jsonl under "study", so a resumed study keeps its
    earlier probes, and the report gathers them into study.json."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def build(self, config: ml_collections.ConfigDict, mesh: Any) -> Any:
        import dataclasses

        plan = self._inner.build(config, mesh)
        study = _Study(config)
        every = config.study.every

        def due(step: int) -> bool:
            return step % every == 0 or step == plan.stop

        def evaluate(state: Any, step: int) -> dict[str, Any]:
            record = plan.evaluate(state, step) if plan.eval_due(step) else {}
            if due(step):
                record["study"] = study.probe(state, step)
            return record

        def report(results: dict, workdir: str) -> None:
            plan.report(results, workdir)
            records = [r["study"] for r in wd.MetricsWriter(workdir).read()
                       if "study" in r]
            write(workdir, config, records, study.prober.cost, "search",
                  list(study.model.primitives))

        return dataclasses.replace(plan, evaluate=evaluate,
                                   eval_due=lambda step: plan.eval_due(step) or due(step),
                                   report=report)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) the search `config` describes in `workdir`, probing the
    estimators every `config.study.every` steps; returns study.json's payload."""
    from jaxnas.runners import loop

    validate(config)
    loop.run(config, workdir, _StudyHooks(methods.get(config.method).hooks(config)))
    return wd.read_json(os.path.join(workdir, STUDY_FILE))


def run_from(source: str, workdir: str,
             study: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
    """Probes every checkpoint an earlier search left in `source` (its config.json
    says what it searched), with `study` settings (default: `source`'s own
    config.study, else `default_study()`); writes study.json and plots to `workdir`."""
    from jaxnas import checkpoint as ckpt_lib

    path = os.path.join(source, "config.json")
    if not wd.isfile(path):
        raise FileNotFoundError(f"--from {source}: no config.json there (expected the "
                                "workdir of a jaxnas search)")
    config = ml_collections.ConfigDict(wd.read_json(path))
    if study is not None:
        config.study = study
    elif "study" not in config:
        config.study = default_study()
    validate(config)
    checkpointer = ckpt_lib.Checkpointer(source, max_to_keep=None)
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(f"--from {source}: no checkpoints in "
                                f"{checkpointer.directory}")
    workdir = wd.prepare_workdir(workdir)
    s = _Study(config)
    target = jax.jit(s.strategy.init)(jax.random.key(config.seed),
                                      jnp.zeros(s.sample_shape, jnp.float32))
    records = []
    for step in steps:
        state = checkpointer.restore_at(step, target)
        records.append(s.probe(state, step))
    checkpointer.close()
    return write(workdir, config, records, s.prober.cost, source,
                 list(s.model.primitives))
