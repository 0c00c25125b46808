"""QGIS fixtures: Processing in-process, and ``qgis_process.bin`` driven as a user would.

Never import TensorFlow here: jobs run in the engine worker process.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from ..conftest import REPO, SHARED_DATA

sys.path.insert(0, str(REPO / "scripts"))
from qgis_headless import ENGINE_PYTHON, QgisProcess, QgisProcessError, qgis_env, run_qgis_process  # noqa: F401

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
    """The QGIS tests and the demo read the shared data: not one file of it may change or appear
    (statistics saved into a .vrt, .aux.xml beside a .tif), whether the folder is writable or not."""
    before = folder_digest(SHARED_DATA)
    yield
    different = changes(before, folder_digest(SHARED_DATA))
    assert not different, f"the tests changed the input data in {SHARED_DATA}:\n" + "\n".join(different)


@pytest.fixture(scope="session")
def qgis_process(tmp_path_factory) -> QgisProcess:
    return QgisProcess(tmp_path_factory.mktemp("qgis-home"))


@pytest.fixture(scope="session")
def qgis_app():
    """Processing in this process, with the DeepField provider registered."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["DEEPFIELD_PYTHON"] = ENGINE_PYTHON
    from qgis.core import QgsApplication
    from qgis.testing import start_app

    app = start_app()
    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))  # Processing plugin
    from processing.core.Processing import Processing

    Processing.initialize()
    from deepfield.algorithms.provider import DeepFieldProvider

    provider = DeepFieldProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield app
    QgsApplication.processingRegistry().removeProvider(provider)
