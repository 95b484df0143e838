"""FairDARTS (Chu et al. 2020): DARTS with independent sigmoid op weights and the
zero-one loss.

Sigmoids remove the competition of a softmax (an op's weight depends on its own alpha only,
so skip-connections no longer crowd the others out), and the zero-one loss
-w * mean((sigmoid(a) - 0.5)^2) pushes every weight towards 0 or 1, so that the discrete
architecture loses little. Everything else, estimators included, is DARTS' (`darts`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxnas import relax
from jaxnas.strategies.base import BilevelStrategy
from jaxnas.strategies.darts import darts


def fairdarts(model: nn.Module, *, zero_one_weight: float = 10.0,
              **darts_settings: Any) -> BilevelStrategy:
    """The FairDARTS strategy; `zero_one_weight` is the paper's w (10), `darts_settings`
    any of `darts`' keywords (estimator, schedules, optimizers, space)."""
    return darts(model, relax=relax.sigmoid_relaxation(zero_one_weight), **darts_settings)
