"""GDAS (Dong & Yang 2019) over the bilevel core: one hard Gumbel-softmax sample per edge
(one-hot in value, the soft sample's gradient: straight-through), temperature annealed
linearly from tau_max to tau_min over the search as a schedule of the step.

The sample comes from the state's PRNG key, so a run is a pure function of its seed and
resumes bitwise. Which ops run is the supernet's choice: the all-ops formulations weight
every candidate but the sampled one by exactly 0; `DartsSupernet(single_path=True)`
(loop mixed op; `config.gdas.single_path`) runs only the sampled op of each edge, GDAS'
own forward, whose gradient to the unsampled ops' weights is sum(dL/dy) instead of
<dL/dy, op_k(x)> (`supernet.darts.LoopMixedOp`). Derivation uses the softmax of the
alphas, as GDAS does; evaluation feeds that softmax too, so a single-path supernet
evaluates each edge's op of largest weight.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxnas import relax
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


def gdas(model: nn.Module, *, total_steps: int, tau_max: float = 10.0,
         tau_min: float = 0.1, hard: bool = True, **darts_settings: Any) -> BilevelStrategy:
    """The GDAS strategy: tau = `relax.linear_schedule(tau_max, tau_min, total_steps)`;
    `darts_settings` are `darts`' keywords (estimator, schedules, optimizers, space)."""
    if not 0 < tau_min <= tau_max:
        raise ValueError(f"tau_min={tau_min!r}, tau_max={tau_max!r}: expected "
                         "0 < tau_min <= tau_max")
    tau = relax.linear_schedule(tau_max, tau_min, total_steps)
    return darts(model, relax=relax.gumbel_relaxation(tau, hard=hard), **darts_settings)
