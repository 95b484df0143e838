"""The `Strategy` interface: a search method as a tuple of pure functions."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional


class Strategy(NamedTuple):
    """A search strategy, shaped like an optax GradientTransformation.

    init(key, ...) -> state; step(state, *batches) -> (state, metrics);
    derive(state) -> genotype; evaluate(state, batch) -> metrics (optional);
    parts: named pieces that `step` runs in sequence, each
    ``(state, *batches) -> (state, metrics)`` (optional; benchmarks time them apart).
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    derive: Callable[..., Any]
    evaluate: Optional[Callable[..., Any]] = None
    parts: Optional[Mapping[str, Callable[..., Any]]] = None
