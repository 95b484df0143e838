"""DARTS- (Chu et al. 2021) over the bilevel core: an auxiliary skip connection on every
edge, edge = mixed(x) + beta * x, beta decayed linearly from beta_max (1) to 0 over the
search, so that skip_connect need not win the softmax to keep the gradient flowing.

A mixed op is linear in its op weights and skip_connect is the identity at stride 1, so
the auxiliary skip is the softmax weights plus beta on the skip_connect column
(`relax.auxiliary_skip_relaxation`): no supernet change. On the stride-2 edges of a
reduction cell skip_connect is a FactorizedReduce, so there the auxiliary path is
beta * FactorizedReduce(x) sharing that op's parameters (DARTS-' code gives it its own).
Evaluation and derivation use the plain softmax (beta is 0 at the end).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxnas import relax
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


def darts_minus(model: nn.Module, *, total_steps: int, beta_max: float = 1.0,
                beta_min: float = 0.0, **darts_settings: Any) -> BilevelStrategy:
    """The DARTS- strategy; `darts_settings` are `darts`' keywords."""
    if not 0 <= beta_min <= beta_max:
        raise ValueError(f"beta_min={beta_min!r}, beta_max={beta_max!r}: expected "
                         "0 <= beta_min <= beta_max")
    primitives = tuple(model.primitives)
    if "skip_connect" not in primitives:
        raise ValueError(f"DARTS- needs skip_connect among the primitives {primitives}")
    beta = relax.linear_schedule(beta_max, beta_min, total_steps)
    return darts(model, relax=relax.auxiliary_skip_relaxation(
        relax.softmax_relaxation(), primitives.index("skip_connect"), beta),
        **darts_settings)
