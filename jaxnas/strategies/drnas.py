"""DrNAS (Chen et al. 2021) over the bilevel core: op weights a reparameterised sample of
Dirichlet(elu(alphas) + 1) per step (pathwise gradient), plus kl_weight times the KL
divergence to an anchor Dirichlet(anchor, ..., anchor) in the architecture objective;
evaluation and derivation by the Dirichlet mean. DrNAS' progressive channel and op
pruning is not included.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxnas import relax
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


def drnas(model: nn.Module, *, kl_weight: float = 1e-3, anchor: float = 1.0,
          **darts_settings: Any) -> BilevelStrategy:
    """The DrNAS strategy (the paper's code: anchor 1, kl_weight 1e-3); `darts_settings`
    are `darts`' keywords."""
    if not kl_weight >= 0:
        raise ValueError(f"kl_weight={kl_weight!r}: expected a number >= 0")
    return darts(model, relax=relax.dirichlet_relaxation(kl_weight, anchor),
                 **darts_settings)
