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

Modules: `prepare` (data directory, prepared data sets, the embedded digits),
`splits` (whole splits in memory, bilevel split, search data), `augment`
(augmentation, normalisation), `iterator` (`BatchIterator`, `eval_batches`), `own`
(your own image folder or .npz checked and written as a data set, `jaxnas prepare
--from-folder/--from-npz`; use `jaxnas.data.own`). The first four's names are
re-exported here, so ``from jaxnas import data; data.X`` works for them.
"""

# Re-exports: callers use data.X.  Of the private names only the two the training
# runner reaches (_load, _parse_name) are re-exported.
from jaxnas.data.augment import (Augment, apply_augment, augment_batch, cutout,
                                 horizontal_flip, normalize, random_crop, sample_augment)
from jaxnas.data.iterator import BatchIterator, eval_batches
from jaxnas.data.prepare import (ALIASES, DATASET_STATS, DEFAULT_DATA_DIR,
                                 DEFAULT_MAX_BYTES, DIGITS, DIGITS_VERSION, ENV_DATA_DIR,
                                 RANDOM_ACCESS_FORMATS, DatasetFormatError,
                                 DatasetNotPreparedError, PreparedDataset, _parse_name,
                                 canonical_name, describe, find_prepared, prepare_command,
                                 prepare_digits, resolve_data_dir)
from jaxnas.data.splits import (ArraySplit, SearchData, _load, bilevel_split,
                                channel_stats, load_search_data, load_split)

__all__ = [
    "ALIASES", "DATASET_STATS", "DEFAULT_DATA_DIR", "DEFAULT_MAX_BYTES", "DIGITS",
    "DIGITS_VERSION", "ENV_DATA_DIR", "RANDOM_ACCESS_FORMATS", "ArraySplit", "Augment",
    "BatchIterator", "DatasetFormatError", "DatasetNotPreparedError", "PreparedDataset",
    "SearchData", "apply_augment", "augment_batch", "bilevel_split", "canonical_name",
    "channel_stats", "cutout", "describe", "eval_batches", "find_prepared",
    "horizontal_flip", "load_search_data", "load_split", "normalize", "prepare_command",
    "prepare_digits", "random_crop", "resolve_data_dir", "sample_augment",
]
