"""Whole splits in memory, the bilevel train/validation split and the search data."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from typing import Any, Sequence

import numpy as np

from jaxnas.data.prepare import (_parse_name, canonical_name, DATASET_STATS,
                                 DatasetFormatError, DEFAULT_MAX_BYTES, DIGITS,
                                 find_prepared, prepare_digits, PreparedDataset,
                                 resolve_data_dir)

# the first word of every random stream's seed (see `jaxnas.data`)
_TAG_SPLIT, _TAG_SHUFFLE, _TAG_AUGMENT = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """Images (uint8 [N, H, W, C]) and labels (int32 [N]); `len` is N."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"expected images [N, H, W, C] and labels [N], got "
                             f"{self.images.shape} and {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ArraySplit:
    """Loads a whole split of a prepared data set into memory.

    Args:
      name: `digits`, or a TFDS name with optional `/config` and `:version`.
      split: a split name, optionally with a TFDS slice (`train[:10%]`).
      data_dir: the data directory (see `resolve_data_dir`).
      max_bytes: refuse (DatasetFormatError) splits whose images need more memory.

    Returns:
      ArraySplit of uint8 NHWC images and int32 labels in stored order.

    Raises:
      DatasetNotPreparedError: not prepared (raised before TFDS is even imported).
      DatasetFormatError: tfrecord data without TensorFlow, non-uint8 or
        variable-size images, or too large for memory.
      ValueError: no such split.
    """
    return _load(name, split, data_dir, max_bytes)[0]


def _load(name: str, split: str, data_dir: str | os.PathLike | None,
          max_bytes: int) -> tuple[ArraySplit, int]:
    """Returns (the split, the number of classes)."""
    root = resolve_data_dir(data_dir)
    name = canonical_name(name)
    if _parse_name(name)[0] == DIGITS:
        prepare_digits(root)
    prepared = find_prepared(name, root)
    split_name = split.split("[", 1)[0]
    if split_name not in prepared.splits:
        raise ValueError(f"data set {prepared.name} in {root} has no split "
                         f"{split_name!r}; it has {', '.join(prepared.splits)}")
    if prepared.random_access:
        return _read_random_access(prepared, split, root, max_bytes)
    if importlib.util.find_spec("tensorflow") is not None:
        return _read_with_tensorflow(prepared, split, root, max_bytes)
    raise DatasetFormatError(
        f"data set {prepared.name} in {prepared.path} is stored as "
        f"{prepared.file_format}, which only TensorFlow can read: "
        "pip install 'jaxnas[tf]', or prepare it again with "
        "file_format='array_record'.")


def _feature_info(name: str, features: Any) -> tuple[tuple[int, int, int], int]:
    """Checks the `image`/`label` features; returns (image shape HWC, classes)."""
    keys = set(features.keys())
    if not {"image", "label"} <= keys:
        raise DatasetFormatError(f"data set {name} needs features 'image' and "
                                 f"'label'; it has {', '.join(sorted(keys))}")
    image, label = features["image"], features["label"]
    shape = tuple(image.shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or any(d is None for d in shape):
        raise DatasetFormatError(
            f"data set {name} has images of shape {tuple(image.shape)}; jaxnas holds "
            "whole splits in memory and needs fixed-size [H, W, C] images. For "
            "ImageNet use a fixed-size variant (imagenet_resized/32x32, "
            "downsampled_imagenet/64x64) or your own streaming pipeline.")
    if np.dtype(image.np_dtype) != np.uint8:
        raise DatasetFormatError(f"data set {name} has {np.dtype(image.np_dtype)} "
                                 "images; jaxnas expects uint8")
    num_classes = getattr(label, "num_classes", None)
    if not num_classes:
        raise DatasetFormatError(f"data set {name}: 'label' is not a ClassLabel")
    return shape, int(num_classes)


def _check_memory(name: str, split: str, n: int, shape: Sequence[int],
                  max_bytes: int) -> None:
    size = n * math.prod(shape)
    if size > max_bytes:
        raise DatasetFormatError(
            f"{name} split {split!r} needs {size / 2**30:.1f} GiB as uint8 images, "
            f"more than max_bytes={max_bytes / 2**30:.1f} GiB: use a smaller variant "
            "or split, or raise max_bytes if the host has the memory.")


def _read_random_access(prepared: PreparedDataset, split: str, root: str,
                        max_bytes: int) -> tuple[ArraySplit, int]:
    import tensorflow_datasets as tfds

    if _parse_name(prepared.name)[0] == DIGITS:
        from jaxnas import digits_dataset  # noqa: F401 - registers the builder

    source = tfds.data_source(prepared.name, split=split, data_dir=root,
                              download=False)
    shape, num_classes = _feature_info(prepared.name, source.dataset_info.features)
    n = len(source)
    _check_memory(prepared.name, split, n, shape, max_bytes)
    images = np.empty((n, *shape), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        example = source[i]
        images[i] = np.asarray(example["image"]).reshape(shape)
        labels[i] = example["label"]
    return ArraySplit(images, labels), num_classes


def _read_with_tensorflow(prepared: PreparedDataset, split: str, root: str,
                          max_bytes: int) -> tuple[ArraySplit, int]:
    import tensorflow_datasets as tfds

    builder = tfds.builder(prepared.name, data_dir=root)
    shape, num_classes = _feature_info(prepared.name, builder.info.features)
    n = builder.info.splits[split].num_examples
    _check_memory(prepared.name, split, n, shape, max_bytes)
    dataset = tfds.load(prepared.name, split=split, data_dir=root, download=False,
                        batch_size=-1)
    arrays = tfds.as_numpy(dataset)
    images = np.asarray(arrays["image"], np.uint8).reshape((-1, *shape))
    return ArraySplit(images, np.asarray(arrays["label"], np.int32)), num_classes


# ----------------------------------------------------------------------------------
# Bilevel split and the search data bundle.


def _rng(tag: int, seed: int, a: int = 0, b: int = 0) -> np.random.Generator:
    """The generator for one purpose (tag) and position; all entries must be >= 0."""
    words = [int(tag), int(seed), int(a), int(b)]
    if min(words) < 0:
        raise ValueError(f"seeds, epochs and steps must be >= 0, got {words[1:]}")
    return np.random.default_rng(np.random.SeedSequence(words))


def bilevel_split(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    fraction: float = 0.5,
    seed: int = 0,
    shuffle: bool = True,
) -> tuple[ArraySplit, ArraySplit]:
    """Divides a training split into (weight-training, architecture-validation).

    The first part gets `floor(fraction * N)` examples, the second the rest, as in
    DARTS (`split = int(np.floor(portion * num_train))`). With `shuffle=False` the
    parts are the first and last indices, exactly DARTS' choice; with
    `shuffle=True` (default) the indices are permuted with `seed` first. Each part
    keeps the original order of its examples, so the parts are disjoint, cover the
    input, and depend only on (N, fraction, seed, shuffle).
    """
    n = len(labels)
    if len(images) != n:
        raise ValueError(f"{len(images)} images but {n} labels")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    k = int(math.floor(fraction * n))
    if k == 0 or k == n:
        raise ValueError(f"fraction={fraction} of {n} examples leaves a part empty")
    order = _rng(_TAG_SPLIT, seed).permutation(n) if shuffle else np.arange(n)
    first, second = np.sort(order[:k]), np.sort(order[k:])
    return (ArraySplit(images[first], labels[first]),
            ArraySplit(images[second], labels[second]))


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NHWC images scaled to [0, 1]."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


@dataclasses.dataclass(frozen=True)
class SearchData:
    """Arrays for a search: weight-training, architecture-validation and test."""

    name: str
    train: ArraySplit  # trains the weights
    val: ArraySplit  # trains the architecture (and reports search accuracy)
    test: ArraySplit  # held out for the final evaluation
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C
    mean: tuple[float, ...]  # per channel, images scaled to [0, 1]
    std: tuple[float, ...]


def load_search_data(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split_fraction: float = 0.5,
    seed: int = 0,
    shuffle_split: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SearchData:
    """Loads `dataset`'s train split, splits it bilevel, and loads its test split.

    The test split is `test`, or `validation` when there is no `test` (ImageNet).
    mean/std come from `DATASET_STATS`, else from the full train split. Digits is
    prepared on first use (see `prepare_digits`).
    """
    name = canonical_name(dataset)
    full, num_classes = _load(name, "train", data_dir, max_bytes)
    splits = find_prepared(name, data_dir).splits
    test_split = "test" if "test" in splits else "validation"
    test, _ = _load(name, test_split, data_dir, max_bytes)
    train, val = bilevel_split(full.images, full.labels, fraction=split_fraction,
                               seed=seed, shuffle=shuffle_split)
    base = _parse_name(name)[0]
    mean, std = DATASET_STATS.get(base) or channel_stats(full.images)
    return SearchData(name=name, train=train, val=val, test=test,
                      num_classes=num_classes,
                      image_shape=tuple(int(d) for d in full.images.shape[1:]),
                      mean=tuple(mean), std=tuple(std))
