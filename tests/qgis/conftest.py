"""QGIS fixtures: Processing in-process, and ``qgis_process.bin`` driven as a user would.

Never import TensorFlow here: jobs run in the engine worker process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import PLUGINPATH, REPO

ENGINE_PYTHON = str(REPO / ".venv" / "bin" / "python")


def qgis_env(home: Path, pluginpath: Path = PLUGINPATH) -> dict[str, str]:
    """Environment for qgis_process.bin: offscreen, our plugin path, a private profile (HOME)."""
    env = dict(os.environ)
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)  # set by qgis_app's start_app(); it would override HOME
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(pluginpath),
        HOME=str(home),
        XDG_RUNTIME_DIR=str(home / "run"),
        DEEPFIELD_PYTHON=ENGINE_PYTHON,
    )
    (home / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    return env


def run_qgis_process(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["qgis_process.bin", *args], env=env, capture_output=True, text=True, timeout=timeout)


class QgisProcess:
    """``qgis_process.bin`` with the DeepField plugin enabled in a private profile."""

    def __init__(self, home: Path, pluginpath: Path = PLUGINPATH):
        self.env = qgis_env(home, pluginpath)
        enabled = run_qgis_process(self.env, "plugins", "enable", "deepfield")
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return run_qgis_process(self.env, *args, timeout=timeout)

    def run(self, algorithm: str, parameters: dict, timeout: float = 600) -> dict:
        """Run an algorithm with ``--json``; return the parsed ``results`` (fails with the log)."""
        args = ["--json", "run", algorithm, "--"]
        for key, value in parameters.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            args += [f"{key}={v}" for v in values]
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, f"qgis_process failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return json.loads(done.stdout)["results"]


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
