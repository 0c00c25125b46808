"""Shared test fixtures: the real sample data in ../shared/data and scratch folders."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINPATH = REPO / ".build" / "plugins"
SHARED_DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder (sources and licences in its README)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.fail(f"real sample data not found at {SHARED_DATA}; set DEEPFIELD_SHARED_DATA")
    return SHARED_DATA
