"""ENAS in the search loop (`jaxnas.strategies.enas`): the bilevel split's training half
trains the shared weights on controller-sampled paths, its validation half rewards the
controller; evaluations report the controller's most likely path's validation
accuracy (running statistics) and its probability; genotype.json holds that path.

Two spaces (`config.model.space`): "chain" (default; the gather chain supernet, one
block a layer) and "darts" (ENAS' cells: two inputs and two ops a node, on the DARTS
search supernet; genotype.json holds a DARTS genotype that `jaxnas train` retrains)."""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxnas import parallel, spaces
from jaxnas.losses import eval_sums
from jaxnas.runners import common
from jaxnas.runners import loop as loop_lib
from jaxnas.runners import supernets
from jaxnas.runners.oneshot import build_space
from jaxnas.spaces import chain as space_lib
from jaxnas.spaces.enas_cells import EnasCellSpace
from jaxnas.strategies import reinforce
from jaxnas.strategies.enas import enas
from jaxnas.supernet.chain import ChainSupernet
from jaxnas.supernet.enas_cells import EnasCellSupernet

log = logging.getLogger("jaxnas")


class Hooks(loop_lib.Hooks):
    desc = "enas"

    def __init__(self, config: ml_collections.ConfigDict):
        pass

    def build(self, config, mesh) -> loop_lib.Plan:
        data = common.load_data(config)
        b = config.data.batch_size
        steps_per_epoch, _, stop = loop_lib.bilevel_epochs_to_steps(config, data)
        m, o, e = config.model, config.optim, config.enas
        cells = m.get("space", "chain") == "darts"
        if cells:
            space = EnasCellSpace(m.steps)
            model = EnasCellSupernet(supernets.build(m, data.num_classes)[0], space)
        else:
            space = build_space(config, data.image_shape[-1])
            model = ChainSupernet(space, data.num_classes, dispatch="gather",
                                  impl=m.impl, bn_momentum=m.bn_momentum)
        strategy = enas(model, learning_rate=o.lr, momentum=o.momentum,
                        weight_decay=o.weight_decay, grad_clip=o.grad_clip,
                        controller_batch=e.controller_batch,
                        controller_lr=e.controller_lr, entropy_weight=e.entropy_weight,
                        baseline_decay=e.baseline_decay, controller=e.controller)
        train_it, to_global = common.sharded_batches(
            data.train, data, config, mesh, seed=config.seed, augment=True)
        val_it, _ = common.sharded_batches(data.val, data, config, mesh,
                                           seed=config.seed + 1, augment=False)

        def eval_derived(state, batch):
            logits = model.apply({"params": state.params,
                                  "batch_stats": state.batch_stats}, batch["image"],
                                 strategy.derive(state), train=False)
            return eval_sums(logits, batch)

        eval_fn = common.eval_function(eval_derived, mesh)
        eval_every = config.eval_every or steps_per_epoch

        def probability(state) -> float:
            path = strategy.derive(state)
            c = state.controller
            logp = (reinforce.LSTMController(space.num_choices).log_prob(
                c.logits, path[None]) if config.enas.controller == "lstm"
                else reinforce.log_prob(c.logits, space.num_choices, path[None]))
            return float(jnp.exp(logp[0]))

        def evaluate(state, step: int) -> dict[str, Any]:
            out = common.evaluate(eval_fn, state, data.val, data, b, mesh=mesh)
            host = parallel.host(state)
            path = np.asarray(strategy.derive(host))
            return {**{f"val_{k}": v for k, v in out.items()},
                    "path": [int(c) for c in path],
                    "path_probability": probability(host),
                    "epoch": step / steps_per_epoch}

        def finalize(state, loop: loop_lib.LoopResult) -> dict[str, Any]:
            host = parallel.host(state)
            path = np.asarray(strategy.derive(host))
            last = loop.records[-1] if loop.records else {}
            if cells:
                genotype = space.genotype(path)
                described = spaces.space_of(genotype)
                found = {"genotype": described.to_json(genotype),
                         "genotype_str": described.describe(genotype),
                         "path": [int(c) for c in path]}
            else:
                found = {"genotype": space_lib.genotype_to_json(space, path,
                                                                data.num_classes)}
            return {"method": "enas", "controller": config.enas.controller, **found,
                    "path_probability": probability(host),
                    "counts": np.asarray(host.counts).tolist(), **loop.summary(),
                    "final": {k: v for k, v in last.items() if k.startswith("val_")}}

        def report(results, workdir: str) -> None:
            log.info("genotype: %s (controller probability %.3g)",
                     results.get("genotype_str")
                     or " ".join(results["genotype"]["names"]),
                     results["path_probability"])
            log.info("results in %s (genotype.json, metrics.jsonl, checkpoints/)",
                     workdir)

        shape = (b,) + data.image_shape
        return loop_lib.Plan(
            init=lambda: strategy.init(jax.random.key(config.seed),
                                       jnp.zeros(shape, jnp.float32)),
            step=common.jit_step(strategy.step, mesh,
                                 (parallel.batch_sharding(mesh),) * 2),
            batches=lambda: (to_global(next(train_it)), to_global(next(val_it))),
            feeds={"train": train_it, "val": val_it}, stop=stop, evaluate=evaluate,
            eval_due=lambda step: step % eval_every == 0 or step == stop,
            finalize=finalize, report=report)


def hooks(config: ml_collections.ConfigDict) -> Hooks:
    return Hooks(config)
