"""Evolution suite: supernet fitness of a population of paths, in paths per second.

Records (names are a contract): ``evolution/population_eval/P=<n>`` for each n of
``--population-sizes`` (default 1, 8, 64).  One record times one call of
`jaxnas.strategies.oneshot.population_accuracy` (what `supernet_fitness` and the
search loop's evaluation call): for each of the P paths, by one `vmap`, BatchNorm
recalibration on ``--calib-batches`` batches of ``--batch`` images, then accuracy on
``--val-batches`` batches.  The supernet is the chain supernet of ``--space`` at its
initial weights (the cost does not depend on their values).
``paths_per_s`` = P / step; ``images_per_s`` counts the forward passes of images
through a path, P x (calib + val batches) x batch per call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnas.bench import common
from jaxnas.bench.oneshot import build_model, space_config
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import oneshot as oneshot_lib
from jaxnas.supernet.chain import init_key

PREFIX = "evolution/population_eval/P="


def case(name: str, args: Any) -> common.Case:
    """The function and placed arguments of one record of this suite."""
    if not name.startswith(PREFIX):
        raise ValueError(f"unknown evolution record {name!r}")
    population = int(name[len(PREFIX):])
    placement = common.Placement(args.devices)
    space, model, image = build_model(args)
    calib = common.synthetic_batch(0, args.batch, image, space.in_channels,
                                   args.num_classes, lead=(args.calib_batches,))["image"]
    val = common.synthetic_batch(1, args.batch, image, space.in_channels,
                                 args.num_classes, lead=(args.val_batches,))
    val["mask"] = jnp.ones(val["label"].shape, bool)
    path0 = jnp.zeros((space.num_layers,), jnp.int32)
    variables = jax.jit(lambda k, x: model.init(k, x, path0))(
        init_key(jax.random.key(0)), calib[0])
    rng = np.random.default_rng(0)
    paths = jnp.asarray(rng.integers(0, oneshot_lib.fair_paths(space),
                                     (population, space.num_layers), np.int32))

    def evaluate(variables, paths, calib, val):
        return oneshot_lib.population_accuracy(model, variables, paths, calib, val)

    fn_args = (placement.replicated(variables), placement.replicated(paths),
               placement.batch(calib, axis=1), placement.batch(val, axis=1))
    per_path = (args.calib_batches + args.val_batches) * args.batch
    config = space_config(args, space, image)
    config.update(population=population, batch=args.batch,
                  calib_batches=args.calib_batches, val_batches=args.val_batches,
                  images_per_path=per_path,
                  supernet_params=common.param_count(variables["params"]))

    def rates(r: dict) -> dict:
        return {"paths_per_s": r["items_per_s"],
                "images_per_s": round(population * per_path / r["step_s"], 4)}

    return common.Case(evaluate, fn_args, population, placement.devices, config, rates)
