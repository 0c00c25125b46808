"""Set up engine builds a working engine in a fresh QGIS profile, as a desktop user would.

Through ``qgis_process.bin`` with a new HOME (so a new QGIS profile): pip installs from the package
index this machine's pip is configured with, as ``make setup`` does (about 2 minutes here). Check
environment then runs with the stored interpreter, although ``DEEPFIELD_PYTHON`` names another;
a second run checks and reuses the environment without pip.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from osgeo import gdal

from .conftest import ENGINE_PYTHON, QgisProcess


@pytest.mark.slow
def test_set_up_engine_in_a_fresh_profile_then_check_environment(tmp_path):
    home = tmp_path / "home"
    qgis_process = QgisProcess(home)
    assert qgis_process.env["DEEPFIELD_PYTHON"] == ENGINE_PYTHON  # the default the stored setting must beat
    profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"

    first = qgis_process("run", "deepfield:setupengine", timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Successfully installed" in first.stdout and "tensorflow" in first.stdout
    folder = next((profile / "deepfield").glob("engine-py3*"))
    python = folder / "bin" / "python"
    assert python.exists() and (folder / "pyvenv.cfg").read_text().count("include-system-site-packages = true")

    checked = qgis_process.run("deepfield:checkenvironment", {})
    assert checked["ENGINE_INTERPRETER"] == str(python)
    assert checked["TENSORFLOW"].startswith("2.21")
    assert checked["GDAL"] == gdal.__version__  # the GDAL bindings QGIS uses, seen through the venv
    assert checked["PROJ"]

    marker = folder / "deepfield-requirements.txt"
    built = marker.stat().st_mtime_ns
    start = time.monotonic()
    second = qgis_process("--json", "run", "deepfield:setupengine", timeout=300)
    elapsed = time.monotonic() - start
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "already set up" in second.stdout and "Installing" not in second.stdout
    assert marker.stat().st_mtime_ns == built
    assert elapsed < 120, f"a second Set up engine took {elapsed:.0f} s"


def test_set_up_engine_help_lists_its_defaults(qgis_process):
    described = qgis_process("help", "deepfield:setupengine")
    assert described.returncode == 0, described.stderr
    assert "TensorFlow build (TENSORFLOW): Automatic" in described.stdout
    assert "Environment folder" in described.stdout and "(FOLDER): not set" in described.stdout


def test_help_strings_show_every_default_and_the_zoo(qgis_app):
    from deepfield.models import WHEN_TO_USE, ZOO
    from qgis.core import QgsApplication

    train = QgsApplication.processingRegistry().algorithmById("deepfield:trainmodel")
    text = train.shortHelpString()
    for name in ZOO:
        assert f"- {name}: {WHEN_TO_USE[name]}" in text
    for parameter in train.parameterDefinitions():
        assert f"({parameter.name()}): " in text
    assert "Epochs (at most) (EPOCHS): 100" in text and "Augment (random flips and 90-degree rotations) (AUGMENT): yes" in text
    apply = QgsApplication.processingRegistry().algorithmById("deepfield:applymodel")
    assert "(BORDER): Reflect" in apply.shortHelpString()


def processes_running(text: str) -> list[int]:
    """Ids of the processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_cancel_stops_pip_and_selects_nothing(qgis_app, tmp_path):
    """Cancel while pip collects packages: pip is killed, the environment is not marked complete
    and the engine interpreter setting is unchanged."""
    import processing
    from deepfield.algorithms.base import ENGINE_PYTHON_SETTING
    from processing.core.ProcessingConfig import ProcessingConfig
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    folder = tmp_path / "engine"

    class CancelWhenPipCollects(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 (QGIS API name)
            super().pushInfo(info)
            if info.startswith(("Collecting ", "Processing ")):  # pip resolves a package or a local wheel
                self.pip_running = processes_running(f"{folder}/bin/python -m pip")
                self.cancel()

    feedback = CancelWhenPipCollects()
    before = ProcessingConfig.getSetting(ENGINE_PYTHON_SETTING)
    with pytest.raises(QgsProcessingException, match="Cancelled: python was stopped"):
        processing.run("deepfield:setupengine", {"FOLDER": str(folder)}, feedback=feedback)
    assert feedback.pip_running, "pip was not running when cancelled"
    assert not processes_running(f"{folder}/bin/python -m pip")
    assert not (folder / "deepfield-requirements.txt").exists()
    assert ProcessingConfig.getSetting(ENGINE_PYTHON_SETTING) == before


def test_a_folder_of_user_files_is_refused_untouched(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "notes.txt").write_text("mine")
    with pytest.raises(QgsProcessingException, match="holds files but is not a virtual environment"):
        processing.run("deepfield:setupengine", {"FOLDER": str(documents)})
    assert [p.name for p in documents.iterdir()] == ["notes.txt"]
    assert (documents / "notes.txt").read_text() == "mine"
