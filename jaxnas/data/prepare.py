"""Where data sets live, which are prepared, and preparing the embedded digits (no TFDS
import until something is built or read)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Any

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
    already there. Safe against concurrent callers (see `build_once`).
    """
    root = resolve_data_dir(data_dir)
    final = os.path.join(root, DIGITS, DIGITS_VERSION)
    if os.path.isfile(os.path.join(final, "dataset_info.json")):
        return final

    return build_once(root, final, lambda tmp: _build_digits(tmp), name=DIGITS)


def _build_digits(data_dir: str) -> str:
    """Runs the digits' TFDS builder into `data_dir`; returns the version dir."""
    from jaxnas import digits_dataset

    return run_builder(digits_dataset.JaxnasDigits(data_dir=data_dir,
                                                   file_format="array_record"))


def build_once(root: str, final: str, build, *, name: str,
               exist_ok: bool = True) -> str:
    """Writes one prepared version directory `final` under `root` atomically.

    `build(tmp)` writes the data set into a fresh temp dir under `root` and returns
    the version dir it wrote; that is renamed to `final`. A caller that loses a
    race to another process discards its copy (or, with `exist_ok=False`, raises
    FileExistsError). A killed build can leave a `.NAME-*.tmp` directory behind,
    which may be deleted.
    """
    with _PREPARE_LOCK:
        if os.path.isfile(os.path.join(final, "dataset_info.json")):
            if exist_ok:
                return final
            raise FileExistsError(f"{final} already holds a prepared data set")
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{name}-", suffix=".tmp", dir=root)
        try:
            built = build(tmp)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            try:
                os.rename(built, final)
            except OSError:
                if not os.path.isfile(os.path.join(final, "dataset_info.json")):
                    raise
                if not exist_ok:
                    raise FileExistsError(f"{final} was prepared by another process "
                                          "meanwhile") from None
                log.debug("another process prepared %s first", final)
            else:
                log.info("prepared %s", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def run_builder(builder: Any) -> str:
    """Runs a TFDS builder (array_record, nothing downloaded), quietly; returns the
    version dir it wrote. Every data set jaxnas writes goes through here."""
    import tensorflow_datasets as tfds

    chatter = io.StringIO()  # TFDS prints banners and progress bars
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    log.debug("TFDS output while preparing %s:\n%s", builder.name, chatter.getvalue())
    return os.fspath(builder.data_dir)
