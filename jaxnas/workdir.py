"""The run directory: resolved config, metrics.jsonl, JSON results and progress output,
and the one path layer every workdir file goes through (local or ``gs://``)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any, Iterable, Mapping

import numpy as np

log = logging.getLogger("jaxnas")


def _jsonable(value: Any) -> Any:
    """Converts numpy/jax scalars and arrays into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ----------------------------------------------------------------------------------
# Paths. A workdir is a local directory or an object-store URI (gs://bucket/run, also
# s3://, az://): every file jaxnas writes in it goes through these functions, which
# use etils.epath (the path library orbax and TFDS use) for URIs. Object stores have
# no append and no atomic rename, but a whole-object write is atomic: that is what a
# remote write does. Local paths keep plain OS calls (appends, atomic renames).


def is_remote(path: str) -> bool:
    """Whether `path` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(path)


def path(p: str):
    """`p` as an ``etils.epath.Path`` (a pathlib.Path for local paths)."""
    from etils import epath

    return epath.Path(p)


def resolve(workdir: str) -> str:
    """A workdir's canonical form: local paths absolute (``~`` expanded); URIs as
    given, without a trailing slash."""
    workdir = str(workdir)
    if is_remote(workdir):
        return workdir.rstrip("/")
    return os.path.abspath(os.path.expanduser(workdir))


def exists(p: str) -> bool:
    return path(p).exists() if is_remote(p) else os.path.exists(p)


def isdir(p: str) -> bool:
    return path(p).is_dir() if is_remote(p) else os.path.isdir(p)


def isfile(p: str) -> bool:
    return path(p).is_file() if is_remote(p) else os.path.isfile(p)


def makedirs(p: str) -> None:
    if is_remote(p):
        path(p).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(p, exist_ok=True)


def glob(directory: str, pattern: str) -> list[str]:
    """The paths in `directory` whose names match `pattern`, sorted."""
    if is_remote(directory):
        return sorted(str(q) for q in path(directory).glob(pattern))
    import glob as glob_lib

    return sorted(glob_lib.glob(os.path.join(directory, pattern)))


def write_text(p: str, text: str) -> None:
    """Writes `text` (UTF-8) to `p` whole (see `write_bytes`)."""
    write_bytes(p, text.encode("utf-8"))


def write_bytes(p: str, data: bytes) -> None:
    """Writes `data` to `p` whole: locally through a temp file and a rename, so a
    reader never sees half a file; remotely as one object write."""
    if is_remote(p):
        path(p).write_bytes(data)
        return
    tmp = f"{p}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, p)


def read_text(p: str) -> str:
    if is_remote(p):
        return path(p).read_text()
    with open(p) as f:
        return f.read()


def open_binary(p: str, mode: str = "wb"):
    """A binary file object for `p` (for writers that take one, e.g. matplotlib)."""
    return path(p).open(mode) if is_remote(p) else open(p, mode)


def move(source: str, target: str) -> None:
    """Moves a file or directory to `target` (which must not exist). On an object
    store, each file is copied, then the source deleted: a store has no rename, and
    its "directories" exist only while they hold objects."""
    if not (is_remote(source) or is_remote(target)):
        import shutil

        shutil.move(source, target)
        return
    src = path(source)
    files = ([(f, path(target).joinpath(*parts)) for f, parts in _files_under(src)]
             if src.is_dir() else [(src, path(target))])
    for f, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        f.copy(dst)
    if src.is_dir():
        src.rmtree()
    else:
        src.unlink()


def _files_under(directory) -> Iterable[tuple[Any, tuple[str, ...]]]:
    """(file, its path parts below `directory`) of every file under an epath dir."""
    for child in directory.iterdir():
        if child.is_dir():
            yield from ((f, (child.name, *parts)) for f, parts in _files_under(child))
        else:
            yield child, (child.name,)


def write_json(path: str, payload: Any) -> None:
    """Writes `payload` as JSON whole (see `write_text`)."""
    write_text(path, json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


class MetricsWriter:
    """Appends one JSON object per logged step to `metrics.jsonl` (flushed each write;
    on an object store, which cannot append, the file is rewritten whole)."""

    def __init__(self, workdir: str, *, enabled: bool = True, filename: str = "metrics.jsonl"):
        self.path = os.path.join(workdir, filename)
        self.enabled = enabled
        self._remote = is_remote(workdir)
        self._lines: list[str] | None = None  # remote: the file's lines, read once

    def write(self, step: int, metrics: Mapping[str, Any], **extra: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update(_jsonable(dict(extra)))
        record.update(_jsonable(dict(metrics)))
        line = json.dumps(record) + "\n"
        if self._remote:
            if self._lines is None:
                self._lines = (read_text(self.path).splitlines(keepends=True)
                               if exists(self.path) else [])
            self._lines.append(line)
            write_text(self.path, "".join(self._lines))
            return
        with open(self.path, "a") as f:
            f.write(line)

    def read(self) -> list[dict[str, Any]]:
        if not exists(self.path):
            return []
        return [json.loads(line) for line in read_text(self.path).splitlines()
                if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops records with step > `step` (used on resume so that no step is logged twice)."""
        if not self.enabled or not exists(self.path):
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._lines = None


class Progress:
    """A progress bar with live metrics on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "search",
                 enabled: bool = True, log_every: int = 10):
        self.total, self.n, self.desc = total, initial, desc
        self.enabled, self.log_every = enabled, max(1, log_every)
        self._bar = None
        self._first: tuple[int, float] | None = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def update(self, n: int = 1, metrics: Mapping[str, Any] | None = None) -> None:
        self.n += n
        if not self.enabled:
            return
        text = _format_metrics(metrics or {})
        if self._bar is not None:
            self._bar.update(n)
            if text:
                self._bar.set_postfix_str(text, refresh=False)
        elif self.n % self.log_every == 0 or self.n == self.total:
            print(f"[{self.desc}] step {self.n}/{self.total} {text}{self._rate()}",
                  flush=True)
        if self._first is None:  # the first step compiles: the rate starts after it
            self._first = (self.n, time.time())

    def _rate(self) -> str:
        """" (R steps/s, ETA)" over this session's steps after its first (the
        compile); steps done before a resume do not count."""
        if self._first is None or self.n <= self._first[0]:
            return ""
        n0, t0 = self._first
        rate = (self.n - n0) / max(time.time() - t0, 1e-9)
        left = (self.total - self.n) / rate
        eta = f", {left / 60:.1f} min left" if self.n < self.total else ""
        return f" ({rate:.2f} steps/s{eta})"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _format_metrics(metrics: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    parts = []
    for key, value in metrics.items():
        if keys is not None and key not in keys:
            continue
        try:
            parts.append(f"{key}={float(value):.4g}")
        except (TypeError, ValueError):
            continue
    return " ".join(parts)


def prepare_workdir(workdir: str) -> str:
    """Creates `workdir` (and parents) and returns its canonical form (`resolve`)."""
    resolved = resolve(workdir)
    if exists(resolved) and not isdir(resolved):
        raise ValueError(f"--workdir {workdir} is a file, not a directory: give a "
                         "directory (it is created if missing)")
    try:
        makedirs(resolved)
    except (FileExistsError, NotADirectoryError) as e:
        raise ValueError(f"--workdir {workdir} cannot be created: {e.strerror} "
                         f"({e.filename})") from None
    return resolved
