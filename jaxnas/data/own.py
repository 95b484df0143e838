"""Your own data: a folder of class sub-folders or an .npz of arrays, checked whole, then
written as an array_record TFDS data set by the same writer as the digits.

Rules a data set must meet (checked before anything is written; each refusal is a
`OwnDataError` naming the file):

* images are uint8, all of one size and one channel count (grey [H, W] counts as
  [H, W, 1]); labels are integers in [0, classes), at least two classes;
* a folder `DIR` has one sub-folder per class (class names = sub-folder names,
  labels = their index in sorted order) holding PNG/JPEG (anything pillow reads)
  images; files starting with "." are skipped, anything else that is not an image
  is refused, as are empty class folders, nested folders and files beside them;
* an .npz holds `images` (uint8 [N, H, W(, C)]) and `labels` (int [N]), which are
  split into train/test by `test_fraction`, or `train_images`, `train_labels`,
  `test_images`, `test_labels` (the split given), and optionally `class_names`
  (str [K]; else K = the largest label + 1).

The split by `test_fraction` is stratified and deterministic: within every class,
the examples (folder: sorted file names; npz: array order) are permuted by
`numpy.random.default_rng(SeedSequence([seed, class]))` and the first
`round(test_fraction * n)` (at least one, at most n - 1) go to `test`; each split
keeps the original order. The written data set has features `image`
(Tensor uint8 [H, W, C]) and `label` (ClassLabel with the class names), splits
`train` and `test`, version 1.0.0, in `DATA_DIR/NAME/1.0.0/`, and is read by
`jaxnas.data.load_split` / `config.data.dataset=NAME` exactly like the digits.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

import numpy as np

from jaxnas.data.prepare import (ALIASES, DIGITS, build_once, resolve_data_dir,
                                 run_builder)

VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class OwnDataError(ValueError):
    """A data set to prepare breaks a rule; the message names the file and the rule."""


@dataclasses.dataclass(frozen=True)
class OwnData:
    """Checked arrays ready to write: uint8 NHWC images and int labels per split."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images, labels)
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.splits.values()))[0].shape[1:])


# ----------------------------------------------------------------------------------
# Reading and checking.


def read_folder(directory: str, *, test_fraction: float = 0.2, seed: int = 0
                ) -> OwnData:
    """Reads `directory`/<class>/<image> (see the module docstring for the rules)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(directory):
        raise OwnDataError(f"{directory} is not a directory")
    classes, files = [], []
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry.startswith("."):
            continue
        if not os.path.isdir(path):
            raise OwnDataError(f"{path} is a file beside the class folders: {directory} "
                               "must hold only one sub-folder per class")
        classes.append(entry)
    if len(classes) < 2:
        raise OwnDataError(f"{directory} has {len(classes)} class folder(s) "
                           f"({', '.join(classes) or 'none'}): at least two classes "
                           "are needed, one sub-folder each")
    for label, name in enumerate(classes):
        folder = os.path.join(directory, name)
        names = sorted(f for f in os.listdir(folder) if not f.startswith("."))
        if not names:
            raise OwnDataError(f"class folder {folder} is empty: every class needs "
                               "at least one image")
        files.extend((os.path.join(folder, f), label) for f in names)
    images, first = [], None
    for path, _ in files:
        if os.path.isdir(path):
            raise OwnDataError(f"{path} is a folder inside a class folder: images must "
                               "sit directly in DIR/<class>/")
        try:
            with Image.open(path) as image:
                image.load()
                array = _pixels(image, path)
        except (UnidentifiedImageError, OSError) as e:
            raise OwnDataError(f"{path} is not an image pillow can read ({e}); only "
                               "images may sit in class folders") from None
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise OwnDataError(
                f"{path} is {_describe(array.shape)} but {first[0]} is "
                f"{_describe(first[1])}: all images must have one size and channel "
                "count (resize them first)")
        images.append(array)
    x = np.stack(images)
    y = np.array([label for _, label in files], np.int64)
    return _check(split_by_fraction(x, y, len(classes), test_fraction, seed),
                  tuple(classes), directory)


def _pixels(image, path: str) -> np.ndarray:
    """uint8 [H, W, C] of a pillow image: grey (1) or RGB (3) channels."""
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L"), np.uint8)[..., None]
    if image.mode in ("RGB", "P", "CMYK", "YCbCr"):
        return np.asarray(image.convert("RGB"), np.uint8)
    raise OwnDataError(f"{path} has pillow mode {image.mode!r}: jaxnas reads 8-bit grey "
                       "(L) or colour (RGB, palette) images; remove the alpha channel "
                       "or convert 16-bit images to 8 bits first")


def _describe(shape: Sequence[int]) -> str:
    h, w, c = shape
    return f"{h}x{w} with {c} channel{'s' if c != 1 else ''}"


def read_npz(path: str, *, test_fraction: float = 0.2, seed: int = 0) -> OwnData:
    """Reads an .npz of arrays (see the module docstring for keys and rules)."""
    if not os.path.isfile(path):
        raise OwnDataError(f"{path} is not a file")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise OwnDataError(f"{path} is not an .npz numpy archive ({e})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise OwnDataError(f"{path} is a single .npy array, not an .npz archive of "
                           "named arrays (np.savez(path, images=..., labels=...))")
    with arrays:
        keys = set(arrays.files)
        given = {"train_images", "train_labels", "test_images", "test_labels"}
        if given <= keys:
            splits = {s: (_images(arrays, f"{s}_images", path),
                          _labels(arrays, f"{s}_labels", path)) for s in ("train", "test")}
        elif {"images", "labels"} <= keys:
            splits = {"all": (_images(arrays, "images", path),
                              _labels(arrays, "labels", path))}
        else:
            raise OwnDataError(f"{path} has arrays {', '.join(sorted(keys)) or 'none'}: "
                               "expected images and labels, or train_images, "
                               "train_labels, test_images and test_labels")
        names = None
        if "class_names" in keys:
            names = tuple(str(n) for n in np.asarray(arrays["class_names"]).reshape(-1))
    for split, (x, y) in splits.items():
        key = "" if split == "all" else f"{split}_"
        if len(x) != len(y):
            raise OwnDataError(f"{path}: {key}images has {len(x)} images but "
                               f"{key}labels has {len(y)} labels")
        if len(y) == 0:
            raise OwnDataError(f"{path}: {key}images is empty")
    if names is None:
        top = max(int(y.max()) for _, y in splits.values())
        names = tuple(str(i) for i in range(max(top, 0) + 1))
    for split, (_, y) in splits.items():
        bad = (y < 0) | (y >= len(names))
        if bad.any():
            key = "labels" if split == "all" else f"{split}_labels"
            i = int(np.argmax(bad))
            raise OwnDataError(f"{path}: {key}[{i}] = {int(y[i])} is out of range: labels "
                               f"must be in [0, {len(names)}) ({len(names)} classes"
                               f"{' from class_names' if 'class_names' in keys else ''})")
    if "all" in splits:
        x, y = splits["all"]
        if len(names) >= 2:  # else _check refuses with the clearer message
            splits = split_by_fraction(x, y, len(names), test_fraction, seed)
    return _check(splits, names, path)


def _images(arrays, key: str, path: str) -> np.ndarray:
    x = np.asarray(arrays[key])
    if x.dtype != np.uint8:
        raise OwnDataError(f"{path}: {key} has dtype {x.dtype}: jaxnas expects uint8 "
                           "pixels 0..255 (e.g. np.round(x * 255).astype(np.uint8) for "
                           "floats in [0, 1])")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise OwnDataError(f"{path}: {key} has shape {x.shape}: expected [N, H, W] or "
                           "[N, H, W, C]")
    return x


def _labels(arrays, key: str, path: str) -> np.ndarray:
    y = np.asarray(arrays[key])
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise OwnDataError(f"{path}: {key} has shape {y.shape} and dtype {y.dtype}: "
                           "expected integer class indices [N]")
    return y.astype(np.int64)


def split_by_fraction(images: np.ndarray, labels: np.ndarray, num_classes: int,
                      test_fraction: float, seed: int
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified deterministic train/test split (see the module docstring)."""
    if not 0.0 < test_fraction < 1.0:
        raise OwnDataError(f"--test-fraction={test_fraction} is not allowed: expected a "
                           "number in (0, 1)")
    test = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue  # a class with one example stays in train
        k = min(max(int(round(test_fraction * len(members))), 1), len(members) - 1)
        order = np.random.default_rng(np.random.SeedSequence([seed, c])).permutation(
            len(members))
        test.extend(members[order[:k]].tolist())
    is_test = np.zeros(len(labels), bool)
    is_test[test] = True
    return {"train": (images[~is_test], labels[~is_test]),
            "test": (images[is_test], labels[is_test])}


def _check(splits: dict[str, tuple[np.ndarray, np.ndarray]],
           names: tuple[str, ...], source: str) -> OwnData:
    if len(names) < 2:
        raise OwnDataError(f"{source} has {len(names)} class(es): at least two are needed")
    if len(set(names)) != len(names):
        raise OwnDataError(f"{source}: class_names has duplicates: {list(names)}")
    shapes = {s: x.shape[1:] for s, (x, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        raise OwnDataError(f"{source}: the splits' images differ in shape "
                           f"({', '.join(f'{s} {v}' for s, v in shapes.items())})")
    for split in ("train", "test"):
        if len(splits[split][1]) == 0:
            raise OwnDataError(f"{source}: the {split} split is empty (too few images "
                               "for the test fraction)")
    return OwnData({s: (x, y) for s, (x, y) in splits.items()}, names)


# ----------------------------------------------------------------------------------
# Writing.


def check_name(name: str) -> str:
    """Refuses a data set name TFDS cannot hold or that would shadow another set."""
    if not _NAME_RE.match(name or ""):
        raise OwnDataError(f"--name {name!r} is not allowed: expected lower-case letters, "
                           "digits and _, starting with a letter (e.g. my_flowers)")
    if name == DIGITS or name in ALIASES:
        raise OwnDataError(f"--name {name!r} is jaxnas' embedded digits: choose another")
    import tensorflow_datasets as tfds

    if name in tfds.list_builders(with_community_datasets=False):
        raise OwnDataError(f"--name {name!r} is a TFDS catalogue data set, whose builder "
                           "would be used to read it: choose another name")
    return name


def default_name(source: str) -> str:
    """A data set name from a folder or file name: lower case, other characters `_`."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    name = re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_")
    return name if name[:1].isalpha() else f"data_{name}"


def target(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The version directory `name` would be written to; refuses (FileExistsError)
    a name already prepared there, and a name `check_name` refuses."""
    check_name(name)
    final = os.path.join(resolve_data_dir(data_dir), name, VERSION)
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists: delete it to prepare {name} "
                              "again, or choose another --name")
    return final


def write(own: OwnData, name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Writes `own` as `DATA_DIR/NAME/1.0.0/` (array_record); returns that directory.

    Refuses (FileExistsError) when that version is already prepared: delete it, or
    choose another name.
    """
    root, final = resolve_data_dir(data_dir), target(name, data_dir)
    builder_cls = _builder_class(name, own)
    return build_once(root, final, lambda tmp: run_builder(
        builder_cls(data_dir=tmp, file_format="array_record")), name=name,
        exist_ok=False)


def _builder_class(name: str, own: OwnData):
    """A TFDS builder of `own`, not registered (the written files describe it)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered

    shape, names = own.image_shape, list(own.class_names)
    with registered.skip_registration():
        class OwnDataset(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version(VERSION)

            def _info(self) -> tfds.core.DatasetInfo:
                return tfds.core.DatasetInfo(
                    builder=self,
                    description=f"{name}: prepared by jaxnas prepare",
                    features=tfds.features.FeaturesDict({
                        "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
                        "label": tfds.features.ClassLabel(names=names),
                    }),
                    supervised_keys=("image", "label"),
                    disable_shuffling=True,  # stored in the order read
                )

            def _split_generators(self, dl_manager):  # noqa: ARG002 - no download
                return {split: self._generate_examples(x, y)
                        for split, (x, y) in own.splits.items()}

            def _generate_examples(self, images, labels):
                for i in range(len(labels)):
                    yield i, {"image": images[i], "label": int(labels[i])}

        OwnDataset.name = name
    return OwnDataset
