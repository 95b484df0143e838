"""Discrete networks built from an architecture, and the one parameter count."""

from __future__ import annotations

import math
from typing import Any


def param_count(params: Any) -> int:
    """Entries of a (concrete or abstract) pytree of arrays: what every parameter
    count of jaxnas sums (BatchNorm scale and bias count when passed, statistics not)."""
    import jax

    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
