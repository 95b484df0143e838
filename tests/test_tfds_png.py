"""The read path of a real TFDS data set whose images are stored PNG-encoded (as
cifar10, mnist, ... are: `tfds.features.Image`), not mock data: a small array_record set
written by TFDS' own writer from PNG bytes (no TensorFlow), read by `jaxnas.data`."""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from jaxnas import data
from jaxnas.data import prepare


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
        buffer, format="PNG")
    return buffer.getvalue()


def _write_png_dataset(data_dir, name: str, splits, shape, num_classes) -> str:
    """An array_record TFDS data set with `Image` features fed PNG bytes: TFDS stores
    bytes as given (encoding arrays would need TensorFlow), which is its PNG form."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered

    with registered.skip_registration():
        class PngSet(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict({
                        "image": tfds.features.Image(shape=shape, encoding_format="png"),
                        "label": tfds.features.ClassLabel(num_classes=num_classes)}),
                    disable_shuffling=True)

            def _split_generators(self, dl_manager):
                return {s: self._generate_examples(x, y) for s, (x, y) in splits.items()}

            def _generate_examples(self, images, labels):
                for i, (x, y) in enumerate(zip(images, labels)):
                    yield i, {"image": _png_bytes(x), "label": int(y)}

        PngSet.name = name
    return prepare.run_builder(PngSet(data_dir=os.fspath(data_dir),
                                      file_format="array_record"))


@pytest.mark.parametrize("channels", [3, 1])
def test_png_encoded_images_decode_to_the_written_pixels(tmp_path, channels):
    rng = np.random.default_rng(channels)
    shape = (8, 6, channels)  # not square: H and W must not be swapped
    splits = {s: (rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                  rng.integers(0, 4, n)) for s, n in (("train", 7), ("test", 3))}
    path = _write_png_dataset(tmp_path, f"png_set{channels}", splits, shape, 4)

    # the records hold PNG streams, not raw tensors (what makes this the PNG path)
    from array_record.python import array_record_module

    files = glob.glob(os.path.join(path, f"png_set{channels}-train.array_record-*"))
    reader = array_record_module.ArrayRecordReader(files[0])
    records = reader.read_all()
    reader.close()
    assert len(records) == 7
    assert all(b"\x89PNG\r\n\x1a\n" in r for r in records)
    assert splits["train"][0][0].tobytes() not in records[0]
    features = open(os.path.join(path, "features.json")).read()
    assert "image_feature.Image" in features and '"png"' in features

    for split, (images, labels) in splits.items():
        got = data.load_split(f"png_set{channels}", split, tmp_path)
        assert got.images.dtype == np.uint8 and got.images.shape == images.shape
        np.testing.assert_array_equal(got.images, images)
        np.testing.assert_array_equal(got.labels, labels)
    search = data.load_search_data(f"png_set{channels}", tmp_path)
    assert search.num_classes == 4 and search.image_shape == shape
    # statistics computed from the decoded train split (not in DATASET_STATS)
    np.testing.assert_allclose(
        search.mean, (splits["train"][0] / 255.0).reshape(-1, channels).mean(0),
        rtol=1e-6)
