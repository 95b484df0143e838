"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data directory with the embedded digits prepared once per session."""
    from jaxnas import data

    root = str(tmp_path_factory.mktemp("tfds_data"))
    data.prepare_digits(root)
    return root
