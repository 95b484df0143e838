"""Shared pytest fixtures and session-wide JAX settings for fast, cached compiles."""

from __future__ import annotations

import os
import tempfile

import pytest

# One persistent XLA cache for the whole session, shared with the subprocesses that
# tests start (CLI runs), so that a computation compiled once is not compiled again.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               tempfile.mkdtemp(prefix="jaxnas-test-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Tests use tiny shapes, where XLA's optimisation passes cost far more than they save
# (measured: the supernet tests 85 s -> 57 s). Same numerics up to float rounding.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data directory with the embedded digits prepared once per session."""
    from jaxnas import data

    root = str(tmp_path_factory.mktemp("tfds_data"))
    data.prepare_digits(root)
    return root
