"""SNAS (Xie et al. 2019) over the bilevel core: a soft Gumbel-softmax sample per step,
weights and architecture updated together by one gradient of the *training* loss (the
core's `joint` step; no validation batch, no hypergradient), temperature annealed from
tau_max to tau_min. SNAS' resource constraint is not included.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxnas import relax
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


def snas(model: nn.Module, *, total_steps: int, tau_max: float = 1.0,
         tau_min: float = 0.03, **darts_settings: Any) -> BilevelStrategy:
    """The SNAS strategy; `darts_settings` are `darts`' keywords (the estimator is
    irrelevant: the single-level step reads none)."""
    if not 0 < tau_min <= tau_max:
        raise ValueError(f"tau_min={tau_min!r}, tau_max={tau_max!r}: expected "
                         "0 < tau_min <= tau_max")
    tau = relax.linear_schedule(tau_max, tau_min, total_steps)
    return darts(model, relax=relax.gumbel_relaxation(tau, hard=False), joint=True,
                 **darts_settings)
