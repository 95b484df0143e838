"""jaxnas.compilation: cache directory resolution, set-up in a fresh process, quieting,
and the one-line compile announcement (cold, timed, then served from the cache)."""

import json
import logging
import os
import subprocess
import sys

import pytest

from jaxnas import compilation


@pytest.fixture
def env(monkeypatch):
    for name in ("JAX_COMPILATION_CACHE_DIR", compilation.ENV_DIR, compilation.ENV_SWITCH,
                 "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cache_directory_resolution(env, tmp_path):
    env.setenv("HOME", str(tmp_path / "home"))
    assert compilation.resolve_dir() == str(tmp_path / "home" / ".cache" / "jaxnas" / "xla")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation.resolve_dir() == str(tmp_path / "xdg" / "jaxnas" / "xla")
    env.setenv(compilation.ENV_DIR, str(tmp_path / "mine"))
    assert compilation.resolve_dir() == str(tmp_path / "mine")
    env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))  # explicit jax wins
    assert compilation.resolve_dir() == str(tmp_path / "jax")
    for off in ("0", "off", "False", "no"):
        env.setenv(compilation.ENV_SWITCH, off)
        assert compilation.resolve_dir() is None and not compilation.enabled()
    env.setenv(compilation.ENV_SWITCH, "1")
    assert compilation.enabled()


_CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from jaxnas import compilation
d = compilation.setup()
lines = []
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + x.sum())
lowered = f.lower(jnp.ones((64, 64)))
with compilation.announce("the test step", lowered, print_fn=lines.append):
    lowered.compile()
print(json.dumps({"dir": d, "lines": lines,
                  "config_dir": jax.config.values.get("jax_compilation_cache_dir"),
                  "enabled": jax.config.values.get("jax_enable_compilation_cache")}))
"""


def _child(env_vars):
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", compilation.ENV_DIR, compilation.ENV_SWITCH)}
    env.update(env_vars)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # store even a tiny program
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_setup_caches_and_announce_says_so_on_the_second_run(tmp_path):
    cache = tmp_path / "xdg" / "jaxnas" / "xla"
    first = _child({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert first["dir"] == first["config_dir"] == str(cache) and first["enabled"]
    assert first["lines"] == ["compiling the test step (first time; this can take minutes)"]
    entries = [n for n in os.listdir(cache) if n != compilation.TIMES_FILE]
    assert entries, "the compiled program was not written to the cache"
    times = json.loads((cache / compilation.TIMES_FILE).read_text())
    (record,) = times.values()
    assert record["name"] == "the test step" and record["entries"]
    second = _child({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert len(second["lines"]) == 1
    assert second["lines"][0].startswith("using a cached program for the test step")
    # the cache entries gone: the program compiles again, with last time's figure
    for name in record["entries"]:
        os.remove(cache / name)
    third = _child({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert third["lines"][0].startswith("compiling the test step (took ")


def test_switch_off_and_explicit_jax_directory(tmp_path):
    off = _child({"XDG_CACHE_HOME": str(tmp_path / "xdg"), compilation.ENV_SWITCH: "0"})
    assert off["dir"] is None and off["enabled"] is False
    assert not (tmp_path / "xdg").exists()
    assert off["lines"] == ["compiling the test step (first time; this can take minutes)"]
    mine = _child({"XDG_CACHE_HOME": str(tmp_path / "xdg"),
                   "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jaxdir")})
    assert mine["dir"] == str(tmp_path / "jaxdir") and os.listdir(tmp_path / "jaxdir")
    assert not (tmp_path / "xdg").exists()


def test_announce_with_a_string_key_and_without_a_cache(monkeypatch):
    monkeypatch.setattr(compilation, "cache_dir", lambda: None)
    lines = []
    c = compilation.announce("x", "key-1", print_fn=lines.append)
    assert lines == ["compiling x (first time; this can take minutes)"]
    assert c.done() >= 0.0  # nothing to record without a directory, no error


def test_orbax_type_handler_warning_is_dropped():
    compilation.quiet()
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("absl")
    logger.addHandler(handler)
    try:
        from absl import logging as absl_logging

        absl_logging.warning('Type handler registry type "%s" overriding %s', "x", "y")
        absl_logging.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert seen == ["something else"]
