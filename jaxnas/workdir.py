"""The run directory: resolved config, metrics.jsonl, JSON results and progress output."""

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


def write_json(path: str, payload: Any) -> None:
    """Writes `payload` as JSON atomically (temp file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_jsonable(payload), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


class MetricsWriter:
    """Appends one JSON object per logged step to `metrics.jsonl` (flushed each write)."""

    def __init__(self, workdir: str, *, enabled: bool = True, filename: str = "metrics.jsonl"):
        self.path = os.path.join(workdir, filename)
        self.enabled = enabled

    def write(self, step: int, metrics: Mapping[str, Any], **extra: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update(_jsonable(dict(extra)))
        record.update(_jsonable(dict(metrics)))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops records with step > `step` (used on resume so that no step is logged twice)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for record in kept:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)


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
    """Creates `workdir` (and parents) and returns its absolute path."""
    path = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--workdir {workdir} is a file, not a directory: give a "
                         "directory (it is created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise ValueError(f"--workdir {workdir} cannot be created: {e.strerror} "
                         f"({e.filename})") from None
    return path
