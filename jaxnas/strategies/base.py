"""Strategy types: each search family a NamedTuple of pure functions with fixed signatures
(typed by `typing.Protocol`, as optax types its transformations)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Protocol

from jaxnas.types import Array, Batch, Metrics

State = Any  # a flax.struct.PyTreeNode of one strategy


class InitFn(Protocol):
    def __call__(self, key: Array, sample_images: Array) -> State: ...


class BilevelStepFn(Protocol):
    """One search iteration (or the architecture half) on a training and a validation
    batch."""

    def __call__(self, state: State, train_batch: Batch, val_batch: Batch
                 ) -> tuple[State, Metrics]: ...


class BatchStepFn(Protocol):
    """One step on one batch (a weight half, a one-shot supernet step)."""

    def __call__(self, state: State, batch: Batch) -> tuple[State, Metrics]: ...


class EvaluateFn(Protocol):
    """Per-batch sums {"loss_sum", "correct", "count"} (`jaxnas.losses.eval_sums`)."""

    def __call__(self, state: State, batch: Batch) -> Metrics: ...


class PathEvaluateFn(Protocol):
    """`EvaluateFn` of one path of a one-shot supernet."""

    def __call__(self, state: State, batch: Batch, path: Array) -> Metrics: ...


class DeriveFn(Protocol):
    """The discrete architecture a bilevel state stands for."""

    def __call__(self, state: State) -> Any: ...


class ArchWeightsFn(Protocol):
    """The op weights a bilevel state stands for (what evaluation and derivation use, and
    what a search records): a pytree shaped like the architecture parameters."""

    def __call__(self, state: State) -> Any: ...


class SearchDeriveFn(Protocol):
    """A search over a trained one-shot supernet (calibration images, validation data,
    key) -> a result with `.best_arch`, `.best_fitness`, `.history`."""

    def __call__(self, state: State, calib_images: Array, val: Batch, key: Array
                 ) -> Any: ...


class BilevelStrategy(NamedTuple):
    """A gradient-based (bilevel) search: `step` is `arch_step` then `weight_step`."""

    init: InitFn
    step: BilevelStepFn
    derive: DeriveFn
    evaluate: EvaluateFn
    arch_step: BilevelStepFn
    weight_step: BatchStepFn
    arch_weights: ArchWeightsFn

    @property
    def parts(self) -> Mapping[str, Callable[..., Any]]:
        """The two halves `step` runs in sequence (benchmarks time them apart)."""
        return {"arch_step": self.arch_step, "weight_step": self.weight_step}


class OneShotStrategy(NamedTuple):
    """Supernet training over sampled paths (SPOS, FairNAS), then a search over it."""

    init: InitFn
    step: BatchStepFn
    derive: SearchDeriveFn
    evaluate: PathEvaluateFn
    parts: Optional[Mapping[str, Callable[..., Any]]] = None
