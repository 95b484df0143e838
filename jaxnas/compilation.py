"""Compilation set-up: the persistent XLA cache, quiet compiles, a one-line announcement.

`setup()` (called once at the start of the command line's `main`) turns JAX's
persistent compilation cache on, so that re-running, resuming, `compare` and `study`
load a compiled search step instead of compiling it again:

- directory: ``$JAXNAS_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxnas/xla``,
  else ``~/.cache/jaxnas/xla``; an explicit ``JAX_COMPILATION_CACHE_DIR`` (or
  ``jax_compilation_cache_dir`` already configured) is used as it is;
- ``JAXNAS_COMPILATION_CACHE=0`` (or off/false/no) leaves the cache off.

It also silences two messages that say nothing useful to a user: XLA's
``Very slow compile? ... file a bug`` banner (a C++ error-level log after 2 minutes of
compiling: C++ logs below FATAL are dropped unless ``TF_CPP_MIN_LOG_LEVEL`` is set
explicitly) and orbax's ``Type handler registry ... overriding`` warning.

`announce(name, what)` prints one line before a first compile and, used as a context
manager around the compile (or the first call), remembers how long it took::

    with compilation.announce("the search step", lowered):   # or a string key
        compiled = lowered.compile()

prints ``compiling the search step (took 41 s last time)``, ``compiling the search step
(first time; this can take minutes)`` or ``using a cached program for the search step
(compiled in 41 s before)``. The cache is judged used when the cache entries written by
the last timed compile of the same key are still on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any, Callable

ENV_SWITCH = "JAXNAS_COMPILATION_CACHE"
ENV_DIR = "JAXNAS_COMPILATION_CACHE_DIR"
TIMES_FILE = "jaxnas-compile-times.json"
_OFF = ("0", "off", "false", "no")
# XLA stores a program only if it took at least this long to compile; cheaper
# programs are not worth a disk read and would crowd the directory.
MIN_COMPILE_SECS = 1.0


def default_dir() -> str:
    """Where the cache goes unless told otherwise (the user's cache directory)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxnas", "xla")


def enabled() -> bool:
    """False when ``JAXNAS_COMPILATION_CACHE`` switches the cache off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF


def resolve_dir() -> str | None:
    """The cache directory `setup` uses: None when switched off; an explicit
    ``JAX_COMPILATION_CACHE_DIR`` first, then ``JAXNAS_COMPILATION_CACHE_DIR``, then
    `default_dir()`."""
    if not enabled():
        return None
    return (os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get(ENV_DIR)
            or default_dir())


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_ORBAX_FILTER = _DropMessages(("Type handler registry",))


def quiet() -> None:
    """Silences XLA's slow-compile banner and orbax's type-handler warning."""
    for name in ("absl", "orbax"):
        logger = logging.getLogger(name)
        if _ORBAX_FILTER not in logger.filters:
            logger.addFilter(_ORBAX_FILTER)
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return  # the user chose the C++ log level
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # read where jaxlib is not loaded yet
    try:  # already loaded: set it in place (what jax's own logging config does)
        from jax._src.lib import utils

        utils.absl_set_min_log_level(3)
    except Exception:  # noqa: BLE001 - older/newer jaxlib without it: keep the banner
        pass


_state: dict[str, Any] = {"dir": None, "done": False}


def setup(*, silence: bool = True) -> str | None:
    """Turns the persistent compilation cache on (see the module docstring) and, with
    `silence`, quiets compiles. Idempotent. Returns the cache directory or None."""
    if silence:  # before jaxlib loads: its C++ logging reads the level from the env
        quiet()
    import jax

    if _state["done"]:
        return _state["dir"]
    _state["done"] = True
    configured = jax.config.values.get("jax_compilation_cache_dir")
    if not enabled():
        if configured is None:
            jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = configured or resolve_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # an unwritable cache directory must not stop a run
    if not configured:
        jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    jax.config.update("jax_enable_compilation_cache", True)
    _state["dir"] = path
    return path


def cache_dir() -> str | None:
    """The persistent cache directory in use in this process, or None."""
    import jax

    if not jax.config.values.get("jax_enable_compilation_cache", True):
        return None
    return jax.config.values.get("jax_compilation_cache_dir") or None


def program_key(what: Any) -> str:
    """A stable key for a program: a string as it is, else the hash of the lowered text
    (`jax.stages.Lowered`) with the backend and jax version."""
    if isinstance(what, str):
        return what
    import jax

    text = what.as_text() if hasattr(what, "as_text") else repr(what)
    h = hashlib.sha256(text.encode())
    h.update(f"{jax.__version__}|{jax.default_backend()}".encode())
    return h.hexdigest()[:32]


def _times_path(directory: str) -> str:
    return os.path.join(directory, TIMES_FILE)


def _read_times(directory: str | None) -> dict[str, Any]:
    if not directory:
        return {}
    try:
        with open(_times_path(directory)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _entries(directory: str | None) -> set[str]:
    if not directory:
        return set()
    try:
        return {n for n in os.listdir(directory) if n != TIMES_FILE and not n.endswith(".tmp")}
    except OSError:
        return set()


class Compile:
    """What `announce` returns: a context manager that times the compile it wraps and
    remembers it for next time (`done()` does the same without a `with`)."""

    def __init__(self, name: str, key: str, message: str, directory: str | None):
        self.name, self.key, self.message, self.directory = name, key, message, directory
        self.start = time.perf_counter()
        self.before = _entries(directory)
        self.seconds: float | None = None

    def __enter__(self) -> "Compile":
        self.start = time.perf_counter()
        self.before = _entries(self.directory)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.done()

    def done(self) -> float:
        """Records the time since the announcement (or `with`) and the cache entries
        the compile wrote; returns the seconds."""
        self.seconds = time.perf_counter() - self.start
        if self.directory is None:
            return self.seconds
        new = sorted(_entries(self.directory) - self.before)
        times = _read_times(self.directory)
        old = times.get(self.key, {})
        if new or not old.get("entries"):
            entry = {"name": self.name, "seconds": round(self.seconds, 2), "entries": new}
        else:  # a cache hit: keep the cold compile's time and entries
            entry = dict(old, loaded_seconds=round(self.seconds, 2))
        times[self.key] = entry
        tmp = _times_path(self.directory) + f".{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(times, f, indent=1, sort_keys=True)
            os.replace(tmp, _times_path(self.directory))
        except OSError:
            pass
        return self.seconds


def message(name: str, what: Any) -> tuple[str, str, str | None]:
    """(line to print, key, cache directory) for a compile of `name`."""
    directory = cache_dir()
    key = program_key(what)
    last = _read_times(directory).get(key)
    if last and last.get("entries") and directory and all(
            os.path.exists(os.path.join(directory, e)) for e in last["entries"]):
        return (f"using a cached program for {name} (compiled in {last['seconds']:.0f} s "
                "before)", key, directory)
    if last and last.get("seconds") is not None:
        return f"compiling {name} (took {last['seconds']:.0f} s last time)", key, directory
    return f"compiling {name} (first time; this can take minutes)", key, directory


def announce(name: str, what: Any, *, print_fn: Callable[[str], Any] = print) -> Compile:
    """Prints one line saying what compiles next (or that a cached program is used).

    Args:
      name: what compiles, as the user should read it ("the search step").
      what: the `jax.stages.Lowered` program, or a string key that changes whenever the
        program does (config, shapes, jax version).
      print_fn: where the line goes (default `print`; a logger's `info` works too).
    Returns:
      a `Compile`: use it as a context manager around the compile or first call (or
      call `.done()` after it) so the next run can say how long it took.
    """
    line, key, directory = message(name, what)
    print_fn(line)
    return Compile(name, key, line, directory)
