"""The zero-cost proxy study in the search loop: random chain paths scored by each
proxy at initialisation, then all retrained from scratch side by side, and each
proxy's (and the parameter count's) Kendall tau with the retrained test accuracy.

Every path is its own network: a freshly initialised copy of the chain supernet
(`ChainSupernet`, gather dispatch) run at that path only.  A path of the supernet
computes exactly its discrete network (`ChainNet`; tested in test_chain_supernet:
padded taps and hidden channels start at zero and never receive a gradient, and
weights are He-initialised with each choice's real fan-in), so training it alone is
retraining the discrete network from scratch, with `jaxnas.runners.train.trainer`'s
recipe.  Stacking the P copies lets one jitted, vmapped step train all P paths (one
compile instead of P; every path computes its block at the padded size, 7x7 and
expansion 6).  The proxies are scored in the same initial weights that are trained,
by one vmapped call (`jaxnas.proxies.chain_path_score`).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from jaxnas import config as config_lib
from jaxnas import parallel
from jaxnas import proxies
from jaxnas.runners import common
from jaxnas.runners import loop as loop_lib
from jaxnas.runners import train as train_runner
from jaxnas.runners.oneshot import build_space
from jaxnas.spaces import chain as space_lib
from jaxnas.supernet.chain import ChainSupernet

log = logging.getLogger("jaxnas")


class PathModel(NamedTuple):
    """A supernet fixed to one (traced) path, with a discrete network's
    ``init``/``apply`` (what `jaxnas.runners.train.trainer` calls)."""

    supernet: ChainSupernet
    path: jax.Array

    def init(self, key, x, train=False):
        return self.supernet.init(key, x, self.path, train=train)

    def apply(self, variables, x, train=True, **kwargs):
        return self.supernet.apply(variables, x, self.path, train=train, **kwargs)


class StudyState(struct.PyTreeNode):
    """P training states stacked on a leading axis, their paths and proxy scores."""

    train: train_runner.TrainState   # every leaf [P, ...]
    paths: jax.Array                 # int32[P, L]
    scores: jax.Array                # float32[P, num_proxies], at initialisation


def kendall_taus(scores: dict[str, np.ndarray], accuracy: np.ndarray
                 ) -> dict[str, dict[str, float]]:
    """scipy's Kendall tau-b (and its p-value) of each score against accuracy."""
    from scipy import stats

    out = {}
    for name, s in scores.items():
        s = np.asarray(s, np.float64)
        ok = np.isfinite(s)
        tau, p = stats.kendalltau(s[ok], accuracy[ok])
        out[name] = {"tau": float(tau), "p_value": float(p), "n": int(ok.sum())}
    return out


class Hooks(loop_lib.Hooks):
    """Score P random paths by the proxies, retrain them all, correlate."""

    desc = "zero_cost"
    results_file = "zero_cost.json"
    memory_keys = ("data.batch_size", "zero_cost.num_archs", "data.eval_batch_size")

    def __init__(self, config: ml_collections.ConfigDict):
        self.names = proxies.check_names(tuple(config.zero_cost.proxies),
                                         "zero_cost.proxies")

    def build(self, config, mesh) -> loop_lib.Plan:
        data = train_runner.load_data(config)
        space = build_space(config, data.image_shape[-1])
        num = config.zero_cost.num_archs
        pb = config.zero_cost.proxy_batch
        if pb > len(data.train):
            raise config_lib.ConfigError(
                f"config.zero_cost.proxy_batch={pb} is not allowed: expected at most "
                f"the {len(data.train)} training images")
        b = config.data.batch_size
        steps_per_epoch, total_steps, stop = loop_lib.epochs_to_steps(
            config, len(data.train), b, "the training split")
        m, o = config.model, config.optim
        supernet = ChainSupernet(space, data.num_classes, dispatch="gather",
                                 impl=m.impl, bn_momentum=m.bn_momentum)

        def trainer(path):
            return train_runner.trainer(
                PathModel(supernet, path), epochs=config.epochs,
                steps_per_epoch=steps_per_epoch, lr=o.lr, lr_min=o.lr_min,
                momentum=o.momentum, weight_decay=o.weight_decay,
                grad_clip=o.grad_clip)

        from jaxnas import data as data_lib
        first = next(iter(data_lib.eval_batches(data.train, pb, data.mean, data.std)))
        proxy_images = jnp.asarray(first["image"])
        proxy_labels = jnp.asarray(first["label"], jnp.int32)
        # the paths: uniform over the space, from the seed (same on every resume)
        rng = np.random.default_rng(config.seed)
        paths = rng.integers(len(space_lib.CHOICES), size=(num, space.num_layers)
                             ).astype(np.int32)
        sample = jnp.zeros((1,) + data.image_shape, jnp.float32)
        names = self.names

        def init() -> StudyState:
            keys = jax.random.split(jax.random.key(config.seed, impl=train_runner.KEY_IMPL),
                                    num)
            p = jnp.asarray(paths)
            train = jax.vmap(lambda k, path: trainer(path).init(k, sample))(keys, p)

            def score(state, path):
                v = {"params": state.params, "batch_stats": state.batch_stats}
                return jnp.stack([proxies.chain_path_score(
                    n, supernet, v, proxy_images, proxy_labels, path).astype(jnp.float32)
                    for n in names])

            return StudyState(train=train, paths=p, scores=jax.vmap(score)(train, p))

        def step(state: StudyState, batch):
            new, metrics = jax.vmap(lambda s, path: trainer(path).step(s, batch))(
                state.train, state.paths)
            out = {"train_loss": jnp.mean(metrics["train_loss"]),
                   "train_accuracy": jnp.mean(metrics["train_accuracy"]),
                   "train_accuracy_min": jnp.min(metrics["train_accuracy"]),
                   "lr": metrics["lr"][0]}
            return state.replace(train=new), out

        def eval_sums(state: StudyState, batch):
            return jax.vmap(lambda s, path: trainer(path).evaluate(s, batch))(
                state.train, state.paths)

        train_it, to_global = common.sharded_batches(
            data.train, data, config, mesh, seed=config.seed, augment=True)
        eval_fn = common.eval_function(eval_sums, mesh)
        eval_b = common.round_to_axis(config.data.eval_batch_size, mesh,
                                      "config.data.eval_batch_size")
        eval_every = config.eval_every * steps_per_epoch

        def accuracies(state) -> np.ndarray:
            sharding = parallel.batch_sharding(mesh)
            index, count = parallel.process_rows(sharding, (eval_b,))
            correct, total = np.zeros(num), np.zeros(num)
            for batch in data_lib.eval_batches(data.test, eval_b, data.mean, data.std,
                                               process_index=index,
                                               process_count=count):
                batch = parallel.global_batch(batch, sharding,
                                              parallel.scale_axis(0, count))
                out = parallel.host(eval_fn(state, batch))
                correct += np.asarray(out["correct"])
                total += np.asarray(out["count"])
            return correct / np.maximum(total, 1)

        def evaluate(state, step: int) -> dict[str, Any]:
            acc = accuracies(state)
            log.info("step %d (epoch %.2f): test accuracy of the %d paths: mean %.4f, "
                     "min %.4f, max %.4f", step, step / steps_per_epoch, num,
                     acc.mean(), acc.min(), acc.max())
            return {"test_accuracy_mean": float(acc.mean()),
                    "test_accuracy_min": float(acc.min()),
                    "test_accuracy_max": float(acc.max()),
                    "epoch": step / steps_per_epoch}

        def finalize(state, loop: loop_lib.LoopResult) -> dict[str, Any]:
            acc = accuracies(state)
            scores = np.asarray(parallel.host(state.scores), np.float64)
            paths_np = np.asarray(parallel.host(state.paths))
            params = np.array([space_lib.count_params(space, p, data.num_classes)
                               for p in paths_np], np.float64)
            by_name = {n: scores[:, i] for i, n in enumerate(names)}
            by_name["params"] = params
            taus = kendall_taus(by_name, acc)
            archs = [{"path": [int(c) for c in p], "names": space_lib.path_names(p),
                      "params": int(n), "test_accuracy": float(a),
                      "scores": {k: float(s[i]) for k, s in by_name.items()
                                 if k != "params"}}
                     for i, (p, n, a) in enumerate(zip(paths_np, params, acc))]
            return {"method": "zero_cost", "dataset": data.name,
                    "space": space.to_dict(), "num_archs": num,
                    "proxies": list(names), "proxy_batch": pb,
                    "kendall_tau": taus,
                    "test_accuracy": {"mean": float(acc.mean()),
                                      "min": float(acc.min()),
                                      "max": float(acc.max())},
                    "retraining": {"epochs": loop.step / steps_per_epoch,
                                   "steps": loop.step, "batch_size": b,
                                   "total_steps": total_steps},
                    "archs": archs, **loop.summary()}

        def report(results, workdir: str) -> None:
            for name, t in results["kendall_tau"].items():
                log.info("Kendall tau of %-9s with test accuracy: %+.3f (p = %.3f)",
                         name, t["tau"], t["p_value"])
            log.info("results in %s (zero_cost.json, metrics.jsonl, checkpoints/)",
                     workdir)

        return loop_lib.Plan(
            init=init,
            step=common.jit_step(step, mesh, (parallel.batch_sharding(mesh),)),
            batches=lambda: (to_global(next(train_it)),), feeds={"train": train_it},
            stop=stop, evaluate=evaluate,
            eval_due=lambda s: bool(eval_every and s % eval_every == 0) or s == stop,
            finalize=finalize, report=report)


def hooks(config: ml_collections.ConfigDict) -> Hooks:
    return Hooks(config)
