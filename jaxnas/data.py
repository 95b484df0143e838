"""Search data: prepared TFDS splits in memory, bilevel split, seeded host batches.

Everything here is numpy on the host; nothing is ever downloaded.

* Data sets live in a TFDS data directory: the `data_dir` argument, else
  `$JAXNAS_DATA_DIR`, else `~/.cache/jaxnas/tensorflow_datasets`
  (`resolve_data_dir`).
* `digits` (TFDS name `jaxnas_digits`, see `jaxnas.digits_dataset`) is embedded:
  `load_split`/`load_search_data` prepare it on first use (`prepare_digits`, the
  only function here that writes files; about 0.2 s).
* Any other data set (`cifar10`, `cifar100`, `imagenet_resized/32x32`, ...) must
  already be prepared in the data directory; otherwise `DatasetNotPreparedError`
  says how to prepare it. array_record (and parquet) data are read with
  `tfds.data_source`; tfrecord data need TensorFlow (`pip install 'jaxnas[tf]'`).
* Whole splits are loaded into memory as uint8 NHWC images and int32 labels. That
  suits the small image sets NAS searches on; ImageNet at full resolution (variable
  image sizes, ~150 GB) is out of scope and refused with a clear error: use a
  fixed-size variant or a streaming pipeline of your own.
* `bilevel_split` divides a training split into weight-training and
  architecture-validation parts; `load_search_data` returns both plus the test split.
* `BatchIterator` yields `{"image": float32[b, H, W, C], "label": int32[b]}` with
  seeded epoch shuffling, seeded augmentation (`Augment`: crop, flip, cutout) and
  per-process slicing of a global batch, and can resume from `position()`.

Randomness: every random draw uses `numpy.random.default_rng` on a
`SeedSequence([tag, seed, a, b])`: the bilevel split `(0, seed, 0, 0)`, epoch `e`'s
shuffle `(1, seed, e, 0)`, the augmentation of step `s` of epoch `e`
`(2, seed, e, s)`. Results are thus a pure function of (seed, epoch, step) for a
given numpy version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger("jaxnas")

ENV_DATA_DIR = "JAXNAS_DATA_DIR"
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "jaxnas", "tensorflow_datasets")
DIGITS = "jaxnas_digits"
DIGITS_VERSION = "1.0.0"
ALIASES = {"digits": DIGITS}
RANDOM_ACCESS_FORMATS = ("array_record", "parquet")
DEFAULT_MAX_BYTES = 8 * 2**30  # refuse to load a split whose images exceed 8 GiB

# Per-channel mean/std of images scaled to [0, 1], keyed by TFDS base name. Digits:
# computed over its 1500-image train split (all pixels). Data sets not listed here
# get statistics computed from their full train split.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    DIGITS: ((0.3055,), (0.3759,)),
}

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_PREPARE_LOCK = threading.RLock()  # one build at a time per process (stdout)
_TAG_SPLIT, _TAG_SHUFFLE, _TAG_AUGMENT = 0, 1, 2


class DatasetNotPreparedError(ValueError):
    """A data set is not in the data directory; the message says how to prepare it."""


class DatasetFormatError(ValueError):
    """A prepared data set cannot be read or held in memory as uint8 NHWC images."""


# ----------------------------------------------------------------------------------
# Data directory and prepared-data inspection (no TFDS import: fails in milliseconds).


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """Returns the absolute data directory: `data_dir`, `$JAXNAS_DATA_DIR`, default.

    An empty string counts as not given (configs use "" for the default).
    """
    chosen = os.fspath(data_dir) if data_dir else ""
    chosen = chosen or os.environ.get(ENV_DATA_DIR, "") or DEFAULT_DATA_DIR
    return os.path.abspath(os.path.expanduser(chosen))


def canonical_name(name: str) -> str:
    """Maps aliases (`digits`) to TFDS names, keeping any `/config` and `:version`."""
    base, sep, rest = name.partition(":")
    ds, slash, config = base.partition("/")
    return f"{ALIASES.get(ds, ds)}{slash}{config}{sep}{rest}"


def _parse_name(name: str) -> tuple[str, str | None, str | None]:
    """Splits `ds[/config][:version]` into its three parts."""
    base, _, version = name.partition(":")
    ds, _, config = base.partition("/")
    return ds, config or None, version or None


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A prepared TFDS variant found on disk, described by its dataset_info.json."""

    name: str  # canonical `ds[/config]:version`, what TFDS is asked to read
    path: str  # the version directory
    version: str
    file_format: str
    alternative_file_formats: tuple[str, ...]
    splits: dict[str, int]  # split name -> number of examples

    @property
    def random_access(self) -> bool:
        """Whether `tfds.data_source` can read it (no TensorFlow needed)."""
        formats = (self.file_format, *self.alternative_file_formats)
        return any(f in RANDOM_ACCESS_FORMATS for f in formats)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _prepared_versions(directory: str) -> list[str]:
    """Versions under `directory` that hold a dataset_info.json, newest first."""
    if not os.path.isdir(directory):
        return []
    found = [
        v for v in os.listdir(directory)
        if _VERSION_RE.match(v)
        and os.path.isfile(os.path.join(directory, v, "dataset_info.json"))
    ]
    return sorted(found, key=_version_key, reverse=True)


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares `name` in `data_dir` as array_record."""
    if _parse_name(name)[0] == DIGITS:
        return f"jaxnas prepare --data-dir {data_dir}"
    return (
        "python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', data_dir='{data_dir}', "
        "file_format='array_record').download_and_prepare()\""
    )


def _not_prepared(name: str, root: str) -> DatasetNotPreparedError:
    ds = _parse_name(name)[0]
    return DatasetNotPreparedError(
        f"data set {name!r} is not prepared in the data directory {root} (no "
        f"{os.path.join(root, ds)}/[CONFIG/]VERSION/dataset_info.json). jaxnas never "
        "downloads. On a machine with network access (and TensorFlow, which TFDS "
        f"needs to encode images), run:\n  {prepare_command(name, root)}\n"
        f"then copy the {ds}/ directory it writes into {root} on this machine, or "
        f"point data_dir / ${ENV_DATA_DIR} at a directory that holds it."
    )


def find_prepared(name: str, data_dir: str | os.PathLike | None = None
                  ) -> PreparedDataset:
    """Finds the prepared variant of `name` (newest version unless one is named).

    Raises DatasetNotPreparedError when there is none, and ValueError when `name`
    has configs on disk but names none.
    """
    root = resolve_data_dir(data_dir)
    name = canonical_name(name)
    ds, config, version = _parse_name(name)
    directory = os.path.join(root, ds, config) if config else os.path.join(root, ds)
    versions = _prepared_versions(directory)
    if version is not None:
        versions = [v for v in versions if v == version]
    if not versions:
        if config is None and version is None and os.path.isdir(directory):
            configs = sorted(
                f"{ds}/{c}" for c in os.listdir(directory)
                if _prepared_versions(os.path.join(directory, c))
            )
            if configs:
                raise ValueError(f"data set {ds!r} is prepared in {root} with configs "
                                 f"{', '.join(configs)}: name one of them")
        raise _not_prepared(name, root)
    version = versions[0]
    path = os.path.join(directory, version)
    with open(os.path.join(path, "dataset_info.json")) as f:
        info = json.load(f)
    splits = {
        s["name"]: sum(int(n) for n in s.get("shardLengths", []))
        for s in info.get("splits", [])
    }
    base = f"{ds}/{config}" if config else ds
    return PreparedDataset(
        name=f"{base}:{version}",
        path=path,
        version=version,
        file_format=info.get("fileFormat", "tfrecord"),
        alternative_file_formats=tuple(info.get("alternativeFileFormats", [])),
        splits=splits,
    )


def describe(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Describes `name` in the data directory without preparing or reading it.

    Returns a JSON-able dict: `name`, `data_dir`, `prepared`, and either the
    prepared variant's `path`, `version`, `file_format`, `readable_without_tf`,
    `splits` (name -> examples), or the `prepare_command` to run.
    """
    root = resolve_data_dir(data_dir)
    name = canonical_name(name)
    out: dict[str, Any] = {"name": name, "data_dir": root}
    try:
        prepared = find_prepared(name, root)
    except DatasetNotPreparedError:
        return {**out, "prepared": False,
                "prepare_command": prepare_command(name, root)}
    return {
        **out,
        "prepared": True,
        "path": prepared.path,
        "version": prepared.version,
        "file_format": prepared.file_format,
        "readable_without_tf": prepared.random_access,
        "splits": dict(prepared.splits),
    }


# ----------------------------------------------------------------------------------
# The embedded digits data set.


def prepare_digits(data_dir: str | os.PathLike | None = None) -> str:
    """Prepares `jaxnas_digits` in the data directory once; returns its version dir.

    Writes `DATA_DIR/jaxnas_digits/1.0.0/` (about 0.2 MB). A no-op when it is
    already there. Safe against concurrent callers: each builds in its own temp dir
    under DATA_DIR and renames the finished version directory into place
    atomically; a caller that loses the race discards its copy. A killed build can
    leave a `.jaxnas_digits-*.tmp` directory behind, which may be deleted.
    """
    root = resolve_data_dir(data_dir)
    final = os.path.join(root, DIGITS, DIGITS_VERSION)
    if os.path.isfile(os.path.join(final, "dataset_info.json")):
        return final
    with _PREPARE_LOCK:
        return _prepare_digits_locked(root, final)


def _prepare_digits_locked(root: str, final: str) -> str:
    if os.path.isfile(os.path.join(final, "dataset_info.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{DIGITS}-", suffix=".tmp", dir=root)
    try:
        built = _build_digits(tmp)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.rename(built, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "dataset_info.json")):
                raise
            log.debug("another process prepared %s first", final)
        else:
            log.info("prepared %s", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build_digits(data_dir: str) -> str:
    """Runs the TFDS builder into `data_dir`, quietly; returns the version dir."""
    import tensorflow_datasets as tfds

    from jaxnas import digits_dataset

    builder = digits_dataset.JaxnasDigits(data_dir=data_dir, file_format="array_record")
    chatter = io.StringIO()  # TFDS prints banners and progress bars
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    log.debug("TFDS output while preparing digits:\n%s", chatter.getvalue())
    return os.fspath(builder.data_dir)


# ----------------------------------------------------------------------------------
# Whole splits in memory.


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


# ----------------------------------------------------------------------------------
# Augmentation (numpy, on uint8 images, then normalisation).


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation, applied in DARTS' order.

    1. random crop: zero-pad by `crop_padding` pixels on every side, then take a
       window of the original size at a uniformly random offset (0 = off);
    2. horizontal flip with probability 1/2 (`flip`);
    3. normalisation `(x / 255 - mean) / std`;
    4. cutout (`cutout` = side length L, 0 = off): a centre (y, x) uniform over the
       image, rows `[y - L // 2, y - L // 2 + L)` and columns likewise, clipped to
       the image, set to 0 after normalisation, as DARTS' Cutout (which zeroes the
       normalised tensor; same square as DARTS for even L).
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(f"crop_padding and cutout must be >= 0, got {self}")


def sample_augment(rng: np.random.Generator, n: int, height: int, width: int,
                   augment: Augment) -> dict[str, np.ndarray]:
    """Draws the random parameters for `n` images: `offset`, `flip`, `centre`."""
    params = {}
    if augment.crop_padding:
        params["offset"] = rng.integers(0, 2 * augment.crop_padding + 1, size=(n, 2))
    if augment.flip:
        params["flip"] = rng.random(n) < 0.5
    if augment.cutout:
        params["centre"] = np.stack(
            [rng.integers(0, height, size=n), rng.integers(0, width, size=n)], 1)
    return params


def random_crop(images: np.ndarray, offsets: np.ndarray, padding: int) -> np.ndarray:
    """Crops image i of the zero-padded batch at `offsets[i] = (dy, dx)`."""
    n, h, w, _ = images.shape
    p = padding
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    rows = offsets[:, 0, None] + np.arange(h)  # [n, h]
    cols = offsets[:, 1, None] + np.arange(w)  # [n, w]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def horizontal_flip(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirrors left-right the images where `flip` is true."""
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def normalize(images: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
    """`(images / 255 - mean) / std` per channel, as float32."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return (images.astype(np.float32) / np.float32(255.0) - mean) / std


def cutout(images: np.ndarray, centres: np.ndarray, length: int) -> np.ndarray:
    """Returns a copy with an L x L square (clipped) around each centre set to 0."""
    _, h, w, _ = images.shape
    top = centres[:, 0, None] - length // 2
    left = centres[:, 1, None] - length // 2
    ys, xs = np.arange(h), np.arange(w)
    in_rows = (ys >= top) & (ys < top + length)  # [n, h]
    in_cols = (xs >= left) & (xs < left + length)  # [n, w]
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return np.where(hole[..., None], np.zeros((), images.dtype), images)


def apply_augment(images: np.ndarray, params: Mapping[str, np.ndarray],
                  augment: Augment, mean: Sequence[float],
                  std: Sequence[float]) -> np.ndarray:
    """Augments uint8 images with drawn `params` and normalises them (float32)."""
    if "offset" in params:
        images = random_crop(images, params["offset"], augment.crop_padding)
    if "flip" in params:
        images = horizontal_flip(images, params["flip"])
    out = normalize(images, mean, std)
    if "centre" in params:
        out = cutout(out, params["centre"], augment.cutout)
    return out


def augment_batch(images: np.ndarray, rng: np.random.Generator, augment: Augment,
                  mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Samples parameters from `rng` and applies them: uint8 in, float32 out."""
    n, h, w, _ = images.shape
    return apply_augment(images, sample_augment(rng, n, h, w, augment), augment,
                         mean, std)


# ----------------------------------------------------------------------------------
# Host-side batching.


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
