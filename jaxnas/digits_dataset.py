"""The TFDS builder of the embedded `jaxnas_digits` data set (scikit-learn's digits).

Importing this module registers the builder `jaxnas_digits` with TFDS. Nothing is
downloaded: the images come from the copy of the UCI digits bundled with
scikit-learn (`sklearn.datasets.load_digits`, 1797 grey 8x8 images, 10 classes).

Stored form (version 1.0.0, array_record, written in a fixed order):

* `image`: uint8 [8, 8, 1], the 0..16 intensities scaled by `round(v * 255 / 16)`;
* `label`: ClassLabel(10), the digit.

Splits: the 1797 examples are put in the order `numpy.random.RandomState(0)
.permutation(1797)` (the legacy generator, whose stream numpy keeps fixed across
versions); `train` is the first 1500 of that order and `test` the last 297, each
stored in that permuted order. Use `jaxnas.data.prepare_digits` to build it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

NAME = "jaxnas_digits"
DATASET_VERSION = "1.0.0"
NUM_EXAMPLES = 1797
NUM_TRAIN = 1500
SPLIT_SEED = 0


def scaled_images() -> tuple[np.ndarray, np.ndarray]:
    """Returns sklearn's digits as (uint8 [1797, 8, 8, 1] images, int64 labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images[..., None], np.asarray(digits.target, np.int64)


def split_indices() -> dict[str, np.ndarray]:
    """Returns the sklearn indices of each split, in stored order."""
    order = np.random.RandomState(SPLIT_SEED).permutation(NUM_EXAMPLES)
    return {"train": order[:NUM_TRAIN], "test": order[NUM_TRAIN:]}


class JaxnasDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits as uint8 [8, 8, 1] images with 10 classes."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "sklearn load_digits, 1500 train / 297 test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):  # noqa: ARG002 - nothing to download
        images, labels = scaled_images()
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in split_indices().items()
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict[str, object]]]:
        for key, i in enumerate(indices):
            yield key, {"image": images[i], "label": int(labels[i])}
