"""Builds the supernet and search space that `config.model` describes, for every
bilevel method (rules in `jaxnas.methods.supernets`)."""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxnas.methods.supernets import space_name


def build(model_config: ml_collections.ConfigDict, num_classes: int) -> tuple[Any, Any]:
    """(supernet, space) for `model_config` (a validated `config.model`)."""
    m = model_config
    name = space_name(ml_collections.ConfigDict({"model": m}))
    if name == "darts":
        from jaxnas.spaces.darts import DartsSpace
        from jaxnas.supernet.darts import DartsSupernet
        model = DartsSupernet(channels=m.channels, num_classes=num_classes,
                              layers=m.layers, steps=m.steps, multiplier=m.multiplier,
                              stem_multiplier=m.stem_multiplier, mixed_op=m.mixed_op,
                              impl=m.impl, scan_cells=m.get("scan_cells", False),
                              remat_edges=(m.get("remat_edges", False)
                                           and m.mixed_op == "edges"))
        space = DartsSpace(primitives=tuple(model.primitives), steps=model.steps,
                           multiplier=model.multiplier)
        return model, space
    if name == "nb201":
        from jaxnas.spaces.nb201 import NB201Space
        from jaxnas.supernet.nb201 import NB201Supernet
        model = NB201Supernet(C=m.channels, N=m.layers, num_classes=num_classes,
                              mixed_op=m.mixed_op, affine=m.affine)
        return model, NB201Space(num_classes=num_classes)
    if name == "chain":
        from jaxnas.spaces.chain import ChainSearchSpace, ChainSpace
        from jaxnas.supernet.chain_mixed import ChainMixedSupernet
        space = ChainSpace(stem_channels=m.stem_channels, widths=tuple(m.widths),
                           depths=tuple(m.depths), strides=tuple(m.strides),
                           head_channels=m.head_channels, stem_stride=m.stem_stride,
                           in_channels=m.in_channels)
        return (ChainMixedSupernet(space, num_classes),
                ChainSearchSpace(space, num_classes))
    raise AssertionError(f"no builder for space {name!r}")  # space_name checked it
