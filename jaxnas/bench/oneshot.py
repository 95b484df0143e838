"""One-shot suite: a SPOS step and a FairNAS step on the chain supernet.

Records (names are a contract):
  oneshot/spos_step     `jaxnas.strategies.oneshot.spos(model).step`: one uniform path
  oneshot/fairnas_step  `jaxnas.strategies.oneshot.fairnas(model).step`: the m = 6
                        strictly fair paths on one shared batch, one update

The space is `jaxnas.spaces.chain.cifar_space()` (32x32x3, 16 searchable layers) by
default, `--space digits` for a tiny one (8x8x1).  Optimizer settings are the strategy
defaults (SGD 0.1, momentum 0.9, weight decay 4e-5, clipping at 5).
``images_per_s`` counts the images drawn from the data per second (``--batch`` a step);
``path_images_per_s`` counts image-path pairs (x6 for FairNAS, whose step trains every
one of its 6 paths on the batch).
"""

from __future__ import annotations

from typing import Any

import jax

from jaxnas.bench import common
from jaxnas.spaces import chain as space_lib
from jaxnas.strategies import oneshot as oneshot_lib
from jaxnas.supernet.chain import ChainSupernet

NAMES = ("oneshot/spos_step", "oneshot/fairnas_step")


def build_model(args: Any) -> tuple[space_lib.ChainSpace, ChainSupernet, int]:
    """``(space, model, image size)`` of `--space` (shared with the evolution suite)."""
    space = space_lib.SPACES[args.space]()
    image = args.image or (32 if args.space == "cifar" else 8)
    return space, ChainSupernet(space, args.num_classes), image


def space_config(args: Any, space: space_lib.ChainSpace, image: int) -> dict[str, Any]:
    return dict(space=args.space, image=[image, image, space.in_channels],
                num_layers=space.num_layers,
                num_choices=oneshot_lib.fair_paths(space),
                num_classes=args.num_classes, dispatch="gather", impl="auto",
                devices=args.devices, repeats=args.repeats, warmup=args.warmup)


def case(name: str, args: Any) -> common.Case:
    """The function and placed arguments of one record of this suite."""
    if name not in NAMES:
        raise ValueError(f"unknown oneshot record {name!r}")
    fair = name == "oneshot/fairnas_step"
    placement = common.Placement(args.devices)
    space, model, image = build_model(args)
    strat = (oneshot_lib.fairnas if fair else oneshot_lib.spos)(model)
    batch = common.synthetic_batch(0, args.batch, image, space.in_channels,
                                   args.num_classes)
    state = jax.jit(strat.init)(jax.random.key(0), batch["image"])
    n_params = common.param_count(state.params)
    state, batch = placement.replicated(state), placement.batch(batch)
    paths = oneshot_lib.fair_paths(space) if fair else 1
    config = space_config(args, space, image)
    config.update(batch=args.batch, paths_per_step=paths, supernet_params=n_params,
                  batch_shared_by_paths=True)

    def rates(r: dict) -> dict:
        return {"images_per_s": r["items_per_s"],
                "path_images_per_s": round(r["items_per_s"] * paths, 4)}

    return common.Case(strat.step, (state, batch), args.batch, placement.devices,
                       config, rates, "first")
