"""Type aliases shared across jaxnas (pytrees, batches, metrics)."""

from typing import Any, Mapping

import jax

PyTree = Any
Array = jax.Array
Batch = Mapping[str, Any]  # {"image": float32[N, H, W, C], "label": int32[N]}
Metrics = Mapping[str, Any]
