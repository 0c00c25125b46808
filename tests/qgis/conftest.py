"""QGIS fixtures: Processing in-process, and ``qgis_process.bin`` driven as a user would.

Never import TensorFlow here: jobs run in the engine worker process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from qgis_headless import ENGINE_PYTHON, QgisProcess, QgisProcessError, qgis_env, run_qgis_process  # noqa: F401

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
