"""Shared test fixtures: the real sample data in ../shared/data and scratch folders."""

import hashlib
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


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) -> its SHA-256."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What differs between two :func:`folder_digest` results, one line per file."""
    return ([f"changed: {name}" for name in before if name in after and after[name] != before[name]]
            + [f"removed: {name}" for name in before if name not in after]
            + [f"new: {name}" for name in after if name not in before])


@pytest.fixture(scope="session", autouse=True)
def inputs_untouched():
    """The tests (engine, QGIS, the demo) read the shared data: not one file of it may change or
    appear (statistics saved into a .vrt, .aux.xml beside a .tif), whether the folder is writable or not."""
    before = folder_digest(SHARED_DATA)
    yield
    different = changes(before, folder_digest(SHARED_DATA))
    assert not different, f"the tests changed the input data in {SHARED_DATA}:\n" + "\n".join(different)
