"""Tests of jaxnas.data: digits preparation, TFDS loading, bilevel split, batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxnas import data

# ----------------------------------------------------------------------------------
# Helpers.


def _sklearn_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The documented digits splits, rebuilt from sklearn (the independent truth)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.RandomState(0).permutation(1797)
    return {"train": (images[order[:1500]], d.target[order[:1500]]),
            "test": (images[order[1500:]], d.target[order[1500:]])}


def _stub_prepared(root, name: str, version: str, splits: dict[str, int],
                   file_format: str = "array_record") -> None:
    """Writes the dataset_info.json that marks `name` as prepared in `root`."""
    directory = os.path.join(root, *name.split("/"), version)
    os.makedirs(directory)
    info = {"name": name.split("/")[0], "version": version, "fileFormat": file_format,
            "splits": [{"name": s, "shardLengths": [str(n)]}
                       for s, n in splits.items()]}
    with open(os.path.join(directory, "dataset_info.json"), "w") as f:
        json.dump(info, f)


def _files(directory: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def _indexed(n: int = 50, size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is the example's index, labels index % 10."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                             (n, size, size, 1)).copy()
    return images, np.arange(n, dtype=np.int32) % 10


def _ids(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Recovers example indices from an `_indexed` batch normalised with 0/1."""
    return np.rint(batch["image"][:, 0, 0, 0] * 255).astype(int)


# ----------------------------------------------------------------------------------
# Digits.


def test_import_is_light():
    code = ("import sys, jaxnas.data; "
            "assert 'tensorflow_datasets' not in sys.modules; "
            "assert 'jax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_splits_shapes_and_labels(digits_data_dir):
    info = data.describe("digits", digits_data_dir)
    assert info["prepared"] and info["file_format"] == "array_record"
    assert info["splits"] == {"train": 1500, "test": 297}
    for split, n in info["splits"].items():
        arrays = data.load_split("digits", split, digits_data_dir)
        assert len(arrays) == n
        assert arrays.images.shape == (n, 8, 8, 1)
        assert arrays.images.dtype == np.uint8 and arrays.labels.dtype == np.int32
        assert set(np.unique(arrays.labels)) == set(range(10))


def test_digits_equal_sklearn_after_scaling(digits_data_dir):
    for split, (images, labels) in _sklearn_digits().items():
        arrays = data.load_split("digits", split, digits_data_dir)
        np.testing.assert_array_equal(arrays.images, images)
        np.testing.assert_array_equal(arrays.labels, labels)


def test_digits_stats_match_train_split(digits_data_dir):
    train = data.load_split("digits", "train", digits_data_dir)
    mean, std = data.DATASET_STATS["jaxnas_digits"]
    x = data.normalize(train.images, mean, std)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


def test_digits_preparation_is_deterministic(digits_data_dir, tmp_path):
    first = os.path.join(digits_data_dir, "jaxnas_digits", "1.0.0")
    second = data.prepare_digits(tmp_path)
    assert _files(first) == _files(second)


def test_preparing_twice_is_a_noop(digits_data_dir):
    path = os.path.join(digits_data_dir, "jaxnas_digits", "1.0.0")
    before = {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)}
    t0 = time.perf_counter()
    assert data.prepare_digits(digits_data_dir) == path
    assert time.perf_counter() - t0 < 0.1
    after = {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)}
    assert before == after
    assert sorted(os.listdir(digits_data_dir)) == ["jaxnas_digits"]


def test_env_var_sets_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXNAS_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir(None) == str(tmp_path)
    assert data.resolve_data_dir("") == str(tmp_path)
    assert data.resolve_data_dir(tmp_path / "x") == str(tmp_path / "x")


def test_losing_a_preparation_race_is_harmless(monkeypatch, tmp_path):
    build = data.prepare._build_digits
    raced = []

    def build_then_lose(directory):
        built = build(directory)
        if not raced:  # another "process" publishes its copy before our rename
            raced.append(None)
            raced[0] = data.prepare_digits(tmp_path)
        return built

    monkeypatch.setattr(data.prepare, "_build_digits", build_then_lose)
    path = data.prepare_digits(tmp_path)
    assert raced == [path]
    assert sorted(os.listdir(tmp_path)) == ["jaxnas_digits"]  # temp dirs removed
    assert len(data.load_split("digits", "test", tmp_path)) == 297


def test_two_processes_preparing_at_once(tmp_path):
    code = ("import sys; from jaxnas import data; "
            "print(data.prepare_digits(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == os.path.join(tmp_path, "jaxnas_digits", "1.0.0")
    assert sorted(os.listdir(tmp_path)) == ["jaxnas_digits"]
    assert len(data.load_split("digits", "train", tmp_path)) == 1500


def test_load_search_data_digits(digits_data_dir):
    sd = data.load_search_data("digits", digits_data_dir, split_fraction=0.5, seed=3)
    assert (len(sd.train), len(sd.val), len(sd.test)) == (750, 750, 297)
    assert sd.num_classes == 10 and sd.image_shape == (8, 8, 1)
    assert sd.mean == (0.3055,) and sd.std == (0.3759,)


# ----------------------------------------------------------------------------------
# Other TFDS data sets.


def test_cifar10_through_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    # mock_data replaces the records and ignores data_dir; the stub metadata makes
    # jaxnas' own on-disk "is it prepared, in which format" check pass.
    _stub_prepared(tmp_path, "cifar10", "3.0.2", {"train": 50000, "test": 10000})
    with tfds.testing.mock_data(num_examples=12):
        arrays = data.load_split("cifar10", "train", tmp_path)
        sd = data.load_search_data("cifar10", tmp_path, seed=0)
    assert arrays.images.shape == (12, 32, 32, 3) and arrays.images.dtype == np.uint8
    assert arrays.labels.dtype == np.int32
    assert 0 <= arrays.labels.min() and arrays.labels.max() < 10
    assert (len(sd.train), len(sd.val), len(sd.test)) == (6, 6, 12)
    assert sd.num_classes == 10 and sd.image_shape == (32, 32, 3)
    assert sd.mean == (0.4914, 0.4822, 0.4465) and sd.std == (0.2470, 0.2435, 0.2616)


def test_variable_size_images_are_refused(tmp_path):
    import tensorflow_datasets as tfds

    _stub_prepared(tmp_path, "imagenet2012", "5.1.0", {"train": 5, "validation": 5})
    with tfds.testing.mock_data(num_examples=5):
        with pytest.raises(data.DatasetFormatError, match="fixed-size"):
            data.load_split("imagenet2012", "validation", tmp_path)


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(data.DatasetNotPreparedError) as info:
        data.load_split("cifar10", "train", data_dir=tmp_path)
    assert time.perf_counter() - t0 < 1.0
    message = str(info.value)
    assert "cifar10" in message and str(tmp_path) in message
    assert "download_and_prepare" in message
    assert isinstance(info.value, ValueError)
    assert os.listdir(tmp_path) == []


def test_tfrecord_without_tensorflow_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed")
    _stub_prepared(tmp_path, "cifar10", "3.0.2", {"train": 1, "test": 1}, "tfrecord")
    with pytest.raises(data.DatasetFormatError, match=r"jaxnas\[tf\]"):
        data.load_split("cifar10", "train", tmp_path)


def test_unknown_split_and_ambiguous_config(tmp_path):
    _stub_prepared(tmp_path, "cifar10", "3.0.2", {"train": 1, "test": 1})
    with pytest.raises(ValueError, match="no split 'valid'"):
        data.load_split("cifar10", "valid", tmp_path)
    _stub_prepared(tmp_path, "imagenet2012_subset/1pct", "5.0.0", {"train": 1})
    with pytest.raises(ValueError, match="imagenet2012_subset/1pct"):
        data.find_prepared("imagenet2012_subset", tmp_path)
    found = data.find_prepared("imagenet2012_subset/1pct", tmp_path)
    assert found.name == "imagenet2012_subset/1pct:5.0.0"


# ----------------------------------------------------------------------------------
# Bilevel split.


def test_bilevel_split():
    images, labels = _indexed(51)
    a, b = data.bilevel_split(images, labels, fraction=0.5, seed=0)
    ia, ib = a.images[:, 0, 0, 0].astype(int), b.images[:, 0, 0, 0].astype(int)
    assert (len(a), len(b)) == (25, 26)
    assert set(ia).isdisjoint(ib) and sorted([*ia, *ib]) == list(range(51))
    np.testing.assert_array_equal(a.labels, ia % 10)  # labels follow their images
    a2, _ = data.bilevel_split(images, labels, fraction=0.5, seed=0)
    np.testing.assert_array_equal(a.images, a2.images)
    a3, _ = data.bilevel_split(images, labels, fraction=0.5, seed=1)
    assert not np.array_equal(a.images, a3.images)
    first, second = data.bilevel_split(images, labels, fraction=0.6, shuffle=False)
    assert list(first.images[:, 0, 0, 0]) == list(range(30))
    assert list(second.images[:, 0, 0, 0]) == list(range(30, 51))
    with pytest.raises(ValueError):
        data.bilevel_split(images, labels, fraction=0.01)


# ----------------------------------------------------------------------------------
# Batching.


def _iterator(images, labels, **kwargs) -> data.BatchIterator:
    defaults = dict(batch_size=8, mean=(0.0,), std=(1.0,), seed=0,
                    process_index=0, process_count=1)
    return data.BatchIterator(images, labels, **{**defaults, **kwargs})


def test_batches_shapes_and_epoch_coverage():
    images, labels = _indexed(50)
    it = _iterator(images, labels)
    assert it.steps_per_epoch == 6
    seen = []
    for _ in range(6):
        batch = next(it)
        assert batch["image"].shape == (8, 4, 4, 1)
        assert batch["image"].dtype == np.float32
        assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
        np.testing.assert_array_equal(batch["label"], _ids(batch) % 10)
        seen.extend(_ids(batch))
    assert len(set(seen)) == len(seen) == 48
    assert it.position() == {"epoch": 1, "step": 0}


def test_batches_deterministic_per_seed_and_epoch():
    images, labels = _indexed(50)
    def ids(it, k):
        return np.concatenate([_ids(next(it)) for _ in range(k)])

    a = ids(_iterator(images, labels, seed=5), 12)
    b = ids(_iterator(images, labels, seed=5), 12)
    c = ids(_iterator(images, labels, seed=6), 12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[:48], a[48:])  # epoch 1 is reshuffled
    unshuffled = ids(_iterator(images, labels, shuffle=False), 6)
    np.testing.assert_array_equal(unshuffled, np.arange(48))


def test_process_slices_concatenate_to_the_global_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=40).astype(np.int32)
    kw = dict(batch_size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), seed=1,
              augment=data.Augment(crop_padding=2, flip=True, cutout=3))
    whole = _iterator(images, labels, **kw)
    parts = [_iterator(images, labels, process_index=p, process_count=2, **kw)
             for p in range(2)]
    for _ in range(7):
        g = next(whole)
        slices = [next(p) for p in parts]
        for key in ("image", "label"):
            assert slices[0][key].shape[0] == 4
            np.testing.assert_array_equal(
                np.concatenate([s[key] for s in slices]), g[key])
    with pytest.raises(ValueError, match="divisible"):
        _iterator(images, labels, **{**kw, "batch_size": 6}, process_index=0,
                  process_count=4)


def test_resume_continues_with_identical_batches():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(30, 6, 6, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=30).astype(np.int32)
    kw = dict(seed=3, augment=data.Augment(crop_padding=1, flip=True, cutout=2))
    uninterrupted = _iterator(images, labels, **kw)  # 3 steps per epoch
    expected = [next(uninterrupted) for _ in range(12)]
    stopped = _iterator(images, labels, **kw)
    for _ in range(7):
        next(stopped)
    saved = json.loads(json.dumps(stopped.position()))
    assert saved == {"epoch": 2, "step": 1}
    resumed = _iterator(images, labels, position=saved, **kw)
    restored = _iterator(images, labels, **kw)
    restored.restore(saved)
    for want in expected[7:]:
        for it in (resumed, restored):
            got = next(it)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError):
        restored.restore({"epoch": 0, "step": 3})


def test_finite_epochs_padding_and_eval_batches():
    images, labels = _indexed(20)
    it = _iterator(images, labels, num_epochs=2)
    assert len(list(it)) == 4
    split = data.ArraySplit(images, labels)
    batches = list(data.eval_batches(split, 8, (0.0,), (1.0,), process_index=0,
                                     process_count=1))
    assert len(batches) == 3 and all(b["image"].shape[0] == 8 for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    ids = np.concatenate([_ids(b) for b in batches])
    assert mask.sum() == 20 and not mask[20:].any()
    np.testing.assert_array_equal(ids[mask], np.arange(20))
    assert not batches[-1]["image"][~batches[-1]["mask"]].any()


def test_too_large_batch_is_refused():
    images, labels = _indexed(5)
    with pytest.raises(ValueError, match="larger"):
        _iterator(images, labels, batch_size=8)


# ----------------------------------------------------------------------------------
# Augmentation.


def test_flip_on_a_hand_made_image():
    image = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)[None, :, :, None]
    flipped = data.horizontal_flip(image, np.array([True]))
    np.testing.assert_array_equal(flipped[0, :, :, 0], [[3, 2, 1], [6, 5, 4]])
    kept = data.horizontal_flip(image, np.array([False]))
    np.testing.assert_array_equal(kept, image)


def test_crop_is_a_window_of_the_zero_padded_image():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(16, 8, 8, 2), dtype=np.uint8)
    p = 3
    aug = data.Augment(crop_padding=p)
    out = data.augment_batch(images, np.random.default_rng(7), aug, (0, 0), (1, 1))
    out = np.rint(out * 255).astype(np.uint8)
    assert out.shape == images.shape
    offsets = set()
    for image, crop in zip(images, out):
        padded = np.pad(image, ((p, p), (p, p), (0, 0)))
        matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if np.array_equal(padded[dy:dy + 8, dx:dx + 8], crop)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1
    same = data.random_crop(images, np.full((16, 2), p), p)
    np.testing.assert_array_equal(same, images)


def test_cutout_zeroes_a_square():
    ones = np.ones((1, 10, 10, 2), np.float32)
    out = data.cutout(ones, np.array([[5, 6]]), 4)
    expected = np.ones_like(ones)
    expected[0, 3:7, 4:8] = 0
    np.testing.assert_array_equal(out, expected)
    clipped = data.cutout(ones, np.array([[0, 0]]), 4)
    assert (clipped == 0).sum() == 2 * 2 * 2
    images = np.full((64, 12, 12, 1), 255, np.uint8)
    aug = data.Augment(cutout=4)
    out = data.augment_batch(images, np.random.default_rng(3), aug, (0.0,), (1.0,))
    inside = 0
    for image in out[..., 0]:
        rows, cols = np.nonzero(image == 0)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w and h <= 4 and w <= 4  # a clipped rectangle
        if 0 < rows.min() and rows.max() < 11 and 0 < cols.min() and cols.max() < 11:
            assert (h, w) == (4, 4)  # not touching an edge: not clipped
            inside += 1
    assert inside > 0


def test_augmentation_is_reproducible():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 8, 8, 3), dtype=np.uint8)
    aug = data.Augment(crop_padding=2, flip=True, cutout=3)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    def run(seed):
        return data.augment_batch(images, np.random.default_rng(seed), aug, mean, std)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 3, 3, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = data.normalize(images, mean, std)
    assert out.dtype == np.float32
    for c in range(3):
        want = (images[..., c] / 255.0 - mean[c]) / std[c]
        np.testing.assert_allclose(out[..., c], want, rtol=1e-5, atol=1e-6)


def test_package_keeps_every_name_of_the_former_module():
    """`jaxnas.data` was one module; every public name it had is still `data.X`, the
    same object as in the submodule that now owns it."""
    names = ["ENV_DATA_DIR", "DEFAULT_DATA_DIR", "DIGITS", "DIGITS_VERSION", "ALIASES",
             "RANDOM_ACCESS_FORMATS", "DEFAULT_MAX_BYTES", "DATASET_STATS",
             "DatasetNotPreparedError", "DatasetFormatError", "resolve_data_dir",
             "canonical_name", "PreparedDataset", "prepare_command", "find_prepared",
             "describe", "prepare_digits", "ArraySplit", "load_split", "bilevel_split",
             "channel_stats", "SearchData", "load_search_data", "Augment",
             "sample_augment", "random_crop", "horizontal_flip", "normalize", "cutout",
             "apply_augment", "augment_batch", "BatchIterator", "eval_batches"]
    assert sorted(names) == sorted(data.__all__)
    owners = (data.prepare, data.splits, data.augment, data.iterator)
    for name in names:
        assert sum(getattr(m, name, None) is getattr(data, name) for m in owners) >= 1
    assert data._load is data.splits._load and data._parse_name is data.prepare._parse_name
