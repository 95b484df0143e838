"""Host-side batching: seeded, resumable, per-process batch iterators and eval batches."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxnas.data.augment import apply_augment, Augment, normalize, sample_augment
from jaxnas.data.splits import _rng, _TAG_AUGMENT, _TAG_SHUFFLE, ArraySplit


def _process_info(process_index: int | None,
                  process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return int(process_index), int(process_count)


class BatchIterator:
    """Seeded, resumable batches of a fixed global size, sliced for this process.

    Epoch `e` visits the examples in the order of a permutation drawn from
    (seed, e) (or in stored order with `shuffle=False`); its step `s` takes global
    batch rows `[s * B, (s + 1) * B)` of that order. With `drop_remainder=True`
    there are `N // B` steps and the leftover examples are skipped that epoch;
    with `drop_remainder=False` there are `ceil(N / B)` steps and the last batch
    is padded to B rows with zeros; every batch then carries `"mask"` (bool, False
    on padding) so shapes stay fixed under jit.

    Process p of n (defaults from jax) receives rows `[p * B / n, (p + 1) * B / n)`
    of every global batch: `{"image": float32[B / n, H, W, C], "label":
    int32[B / n]}`. Augmentation parameters are drawn for the whole global batch
    from (seed, e, s) and sliced, so the processes' slices together equal the
    single-process batch. A batch is a pure function of (epoch, step):
    `position()` returns the next one as `{"epoch": e, "step": s}` and `restore()`
    (or the `position` argument) continues from it exactly. `num_epochs=None`
    iterates forever.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        shuffle: bool = True,
        augment: Augment | None = None,
        drop_remainder: bool = True,
        num_epochs: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        position: Mapping[str, int] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} "
                             f"{images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be [{len(images)}], got {labels.shape}")
        if len(mean) != images.shape[-1] or len(std) != images.shape[-1]:
            raise ValueError(f"mean/std need {images.shape[-1]} channels, got "
                             f"{len(mean)} and {len(std)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        index, count = _process_info(process_index, process_count)
        if count <= 0 or not 0 <= index < count:
            raise ValueError(f"process_index={index} is not in [0, {count})")
        if batch_size % count:
            raise ValueError(f"the global batch size {batch_size} is not divisible "
                             f"by the number of processes {count}")
        n = len(labels)
        steps = n // batch_size if drop_remainder else -(-n // batch_size)
        if steps == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the {n} "
                             "examples and drop_remainder=True: no batch to yield")
        _rng(_TAG_SHUFFLE, seed)  # validates the seed early
        self.images, self.labels = images, np.asarray(labels, np.int32)
        self.batch_size, self.seed, self.shuffle = batch_size, int(seed), shuffle
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment
        self.drop_remainder, self.num_epochs = drop_remainder, num_epochs
        self.process_index, self.process_count = index, count
        self.steps_per_epoch = steps
        local = batch_size // count
        self._rows = slice(index * local, (index + 1) * local)
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._epoch, self._step = 0, 0
        if position is not None:
            self.restore(position)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_epochs is not None and self._epoch >= self.num_epochs:
            raise StopIteration
        batch = self.batch_at(self._epoch, self._step)
        self._step += 1
        if self._step == self.steps_per_epoch:
            self._epoch, self._step = self._epoch + 1, 0
        return batch

    def position(self) -> dict[str, int]:
        """The next batch's place, `{"epoch": e, "step": s}` (JSON-serialisable)."""
        return {"epoch": self._epoch, "step": self._step}

    def restore(self, position: Mapping[str, int]) -> None:
        """Continues from a `position()`: the next batch is step s of epoch e."""
        epoch, step = int(position["epoch"]), int(position["step"])
        if epoch < 0 or not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"position {dict(position)} is outside epochs >= 0 and "
                             f"steps [0, {self.steps_per_epoch})")
        self._epoch, self._step = epoch, step

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example order of `epoch` (a permutation of range(N))."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.labels)
            order = (_rng(_TAG_SHUFFLE, self.seed, epoch).permutation(n)
                     if self.shuffle else np.arange(n))
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def batch_at(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """This process's slice of global batch `step` of `epoch`."""
        b = self.batch_size
        chosen = self.epoch_order(epoch)[step * b:(step + 1) * b]
        indices = np.full((b,), -1, np.int64)
        indices[:len(chosen)] = chosen
        local = indices[self._rows]
        valid = local >= 0
        safe = np.where(valid, local, 0)
        images = self.images[safe]
        if self.augment is not None:
            _, h, w, _ = self.images.shape
            params = sample_augment(_rng(_TAG_AUGMENT, self.seed, epoch, step), b, h,
                                    w, self.augment)
            params = {k: v[self._rows] for k, v in params.items()}
            out = apply_augment(images, params, self.augment, self.mean, self.std)
        else:
            out = normalize(images, self.mean, self.std)
        batch = {"image": out, "label": self.labels[safe]}
        if not self.drop_remainder:
            batch["image"][~valid] = 0.0
            batch["label"] = np.where(valid, batch["label"], 0).astype(np.int32)
            batch["mask"] = valid
        return batch


def eval_batches(
    split: ArraySplit,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchIterator:
    """One ordered, unaugmented pass over `split`, padded with a `"mask"` key.

    Weight per-example results by `mask` (the last batch is padded to
    `batch_size`); the mask sums to `len(split)` over the pass.
    """
    return BatchIterator(
        split.images, split.labels, batch_size=batch_size, mean=mean, std=std,
        shuffle=False, augment=None, drop_remainder=False, num_epochs=1,
        process_index=process_index, process_count=process_count)
