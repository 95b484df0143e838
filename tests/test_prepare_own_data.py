"""`jaxnas prepare --from-folder/--from-npz`: what it writes the loader reads back equal
(labels in sorted folder order, the split stratified and deterministic), and every
refusal names the file and writes nothing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from jaxnas import cli, data
from jaxnas.data import own


def _png(path, pixels: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)


def _folder(root, counts: dict[str, int], *, channels=3, size=8, seed=0):
    """Writes distinct random images; returns {image bytes: class name}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for name, n in counts.items():  # written in the dict's (unsorted) order
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
            _png(os.path.join(root, name, f"img{i:02d}.png"), pixels)
            truth[pixels.tobytes()] = name
    return truth


def _prepare(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["prepare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _read(name, data_dir):
    return {s: data.load_split(name, s, data_dir) for s in ("train", "test")}


def _class_names(data_dir, name):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.path.join(data_dir, name, own.VERSION))
    return builder.info.features["label"].names


def test_folder_round_trip_labels_in_sorted_folder_order(capsys, tmp_path):
    counts = {"zebra": 5, "ant": 10, "moth": 3}
    truth = _folder(tmp_path / "pics", counts)
    out_dir = tmp_path / "tfds"
    code, out, err = _prepare(capsys, "--from-folder", tmp_path / "pics",
                              "--data-dir", out_dir, "--name", "tiny_pics")
    assert code == 0, err
    assert out.splitlines()[0] == os.path.join(out_dir, "tiny_pics", "1.0.0")
    assert "--config.data.dataset=tiny_pics" in out
    classes = ["ant", "moth", "zebra"]
    assert _class_names(out_dir, "tiny_pics") == classes
    splits = _read("tiny_pics", out_dir)
    seen = []
    for split in splits.values():
        assert split.images.shape[1:] == (8, 8, 3) and split.images.dtype == np.uint8
        for image, label in zip(split.images, split.labels):
            assert classes[label] == truth[image.tobytes()]  # pixels and label intact
            seen.append(image.tobytes())
    assert sorted(seen) == sorted(truth)  # every image exactly once
    # stratified: round(0.2 n) of each class in test, at least one, at most n - 1
    test_counts = np.bincount(splits["test"].labels, minlength=3).tolist()
    assert test_counts == [2, 1, 1]
    # the search loader reads it as any prepared data set
    search = data.load_search_data("tiny_pics", out_dir)
    assert search.num_classes == 3 and search.image_shape == (8, 8, 3)


def test_npz_round_trip_given_and_fraction_splits(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)  # grey [N, H, W]
    y = np.arange(12) % 3
    np.savez(tmp_path / "given.npz", train_images=x[:9], train_labels=y[:9],
             test_images=x[9:], test_labels=y[9:],
             class_names=np.array(["a", "b", "c"]))
    code, _, err = _prepare(capsys, "--from-npz", tmp_path / "given.npz",
                            "--data-dir", tmp_path / "d")
    assert code == 0, err
    got = _read("given", tmp_path / "d")  # name from the file name
    np.testing.assert_array_equal(got["train"].images, x[:9, :, :, None])
    np.testing.assert_array_equal(got["train"].labels, y[:9])
    np.testing.assert_array_equal(got["test"].images, x[9:, :, :, None])
    np.testing.assert_array_equal(got["test"].labels, y[9:])
    assert _class_names(tmp_path / "d", "given") == ["a", "b", "c"]

    # one pool split by --test-fraction: deterministic in the seed, each split in
    # array order, the same as own.split_by_fraction says
    np.savez(tmp_path / "pool.npz", images=x, labels=y)
    for name, seed in (("pool_a", 3), ("pool_b", 3)):
        code, _, err = _prepare(capsys, "--from-npz", tmp_path / "pool.npz", "--name",
                                name, "--data-dir", tmp_path / "d", "--test-fraction",
                                "0.5", "--split-seed", seed)
        assert code == 0, err
    a, b = _read("pool_a", tmp_path / "d"), _read("pool_b", tmp_path / "d")
    for split in ("train", "test"):
        np.testing.assert_array_equal(a[split].images, b[split].images)
    test_rows = [int(np.flatnonzero((x == img[..., 0]).all(axis=(1, 2)))[0])
                 for img in a["test"].images]
    assert test_rows == sorted(test_rows) and len(test_rows) == 6
    assert np.bincount(y[test_rows]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(a["test"].labels, y[test_rows])


def _refused(capsys, tmp_path, *args) -> str:
    code, out, err = _prepare(capsys, *args, "--data-dir", tmp_path / "out")
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any(
        f for f in os.listdir(tmp_path / "out") if not f.startswith(".")), \
        "nothing may be written before the data are checked"
    return err


def test_folder_refusals_name_the_file(capsys, tmp_path):
    mixed = tmp_path / "mixed"
    _folder(mixed, {"a": 2, "b": 2})
    _png(os.path.join(mixed, "b", "zz_big.png"), np.zeros((9, 8, 3), np.uint8))
    err = _refused(capsys, tmp_path, "--from-folder", mixed)
    assert "zz_big.png is 9x8" in err and "8x8" in err

    channels = tmp_path / "channels"
    _folder(channels, {"a": 2, "b": 1})
    _png(os.path.join(channels, "b", "grey.png"), np.zeros((8, 8, 1), np.uint8))
    assert "grey.png is 8x8 with 1 channel" in _refused(capsys, tmp_path,
                                                         "--from-folder", channels)

    empty = tmp_path / "empty"
    _folder(empty, {"a": 2, "b": 2})
    os.makedirs(empty / "c")
    assert f"class folder {empty / 'c'} is empty" in _refused(
        capsys, tmp_path, "--from-folder", empty)

    single = tmp_path / "single"
    _folder(single, {"only": 3})
    assert "at least two classes" in _refused(capsys, tmp_path, "--from-folder", single)

    text = tmp_path / "text"
    _folder(text, {"a": 2, "b": 2})
    (text / "a" / "notes.txt").write_text("not an image")
    assert "notes.txt is not an image" in _refused(capsys, tmp_path, "--from-folder",
                                                   text)

    loose = tmp_path / "loose"
    _folder(loose, {"a": 2, "b": 2})
    (loose / "README").write_text("x")
    assert "README is a file beside the class folders" in _refused(
        capsys, tmp_path, "--from-folder", loose)

    assert "is not a directory" in _refused(capsys, tmp_path, "--from-folder",
                                            tmp_path / "missing")


def test_npz_refusals_name_the_file_and_key(capsys, tmp_path):
    x = np.zeros((6, 8, 8, 3), np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    cases = {
        "range": (dict(images=x, labels=y, class_names=np.array(["a"])),
                  "labels[1] = 1 is out of range: labels must be in [0, 1)"),
        "negative": (dict(images=x, labels=np.array([0, 1, -1, 1, 0, 1])),
                     "labels[2] = -1 is out of range"),
        "lengths": (dict(images=x, labels=y[:5]),
                    "images has 6 images but labels has 5 labels"),
        "split_lengths": (dict(train_images=x, train_labels=y, test_images=x[:2],
                               test_labels=y[:3]),
                          "test_images has 2 images but test_labels has 3"),
        "one_class": (dict(images=x, labels=np.zeros(6, int)),
                      "1 class(es): at least two"),
        "floats": (dict(images=x.astype(np.float32), labels=y),
                   "images has dtype float32: jaxnas expects uint8"),
        "keys": (dict(pixels=x, labels=y), "expected images and labels"),
        "shapes": (dict(train_images=x, train_labels=y, test_images=x[:, :4],
                        test_labels=y), "the splits' images differ in shape"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        err = _refused(capsys, tmp_path, "--from-npz", path)
        assert str(path) in err and message in err, (name, err)


def test_bad_or_taken_names_are_refused_before_reading(capsys, tmp_path):
    np.savez(tmp_path / "ok.npz", images=np.zeros((4, 8, 8), np.uint8),
             labels=np.array([0, 1, 0, 1]))
    for name, message in (("Bad-Name", "--name 'Bad-Name' is not allowed"),
                          ("digits", "embedded digits"),
                          ("cifar10", "TFDS catalogue data set")):
        err = _refused(capsys, tmp_path, "--from-npz", tmp_path / "ok.npz", "--name",
                       name)
        assert message in err, err
    assert _prepare(capsys, "--from-npz", tmp_path / "ok.npz", "--data-dir",
                    tmp_path / "d")[0] == 0
    code, _, err = _prepare(capsys, "--from-npz", tmp_path / "ok.npz", "--data-dir",
                            tmp_path / "d")
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("fraction", ["0", "1", "-0.5"])
def test_test_fraction_out_of_range(capsys, tmp_path, fraction):
    _folder(tmp_path / "f", {"a": 2, "b": 2})
    assert "--test-fraction" in _refused(capsys, tmp_path, "--from-folder",
                                         tmp_path / "f", "--test-fraction", fraction)
