"""The plugin as QGIS sees it: metadata, loading, the provider, Check environment."""

import configparser
import json
import subprocess
import sys
import zipfile

from ..conftest import PLUGINPATH, REPO
from .conftest import QgisProcess

REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
            "repository", "tracker", "tags", "icon", "hasProcessingProvider")


def test_metadata_has_every_field_plugins_qgis_org_requires():
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt")
    general = parser["general"]
    missing = [key for key in REQUIRED if not general.get(key, "").strip()]
    assert not missing
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO / general["icon"]).exists()
    assert "tensorflow" in general["about"].lower()


def test_qgis_process_lists_the_provider_and_its_algorithms(qgis_process):
    listed = qgis_process("list")
    assert listed.returncode == 0, listed.stderr
    assert "DeepField" in listed.stdout
    assert "deepfield:checkenvironment" in listed.stdout


def test_check_environment_through_qgis_process(qgis_process):
    results = qgis_process.run("deepfield:checkenvironment", {})
    assert results["TENSORFLOW"].startswith("2.21")
    assert results["GDAL"].startswith("3.")
    assert results["NUMPY"].startswith("1.")
    assert results["PROJ"]
    assert results["GPUS"]  # a list or "none (CPU only)"
    # What it means: the GPUs the engine itself sees (asked here without QGIS), named one by one.
    probe = subprocess.run([sys.executable, "-c", "import json; from deepfield.engine.device import gpu_names; "
                            "print(json.dumps(gpu_names()))"], cwd=PLUGINPATH, capture_output=True, text=True,
                           timeout=300, check=True)
    gpus = json.loads(probe.stdout.splitlines()[-1])
    assert isinstance(results["GPUS"], str)
    if gpus:
        assert results["GPUS"].split(", ") == gpus
    else:
        assert results["GPUS"] == "none (CPU only)"


def test_check_environment_in_process(qgis_app):
    import processing

    results = processing.run("deepfield:checkenvironment", {})
    assert results["TENSORFLOW"].startswith("2.21")
    assert results["ENGINE_INTERPRETER"].endswith("python")


def test_a_broken_engine_interpreter_is_a_clear_processing_error(qgis_app, tmp_path):
    """The interpreter set in Processing options cannot run: the error says what to set."""
    import processing
    import pytest
    from processing.core.ProcessingConfig import ProcessingConfig
    from qgis.core import QgsProcessingException

    from deepfield.algorithms.base import ENGINE_PYTHON_SETTING

    previous = ProcessingConfig.getSetting(ENGINE_PYTHON_SETTING)
    not_executable = tmp_path / "python3"
    not_executable.write_text("")
    ProcessingConfig.setSettingValue(ENGINE_PYTHON_SETTING, str(not_executable))
    try:
        with pytest.raises(QgsProcessingException, match="Cannot start the DeepField engine interpreter.*Options"):
            processing.run("deepfield:checkenvironment", {})
    finally:
        ProcessingConfig.setSettingValue(ENGINE_PYTHON_SETTING, previous)


def test_package_zip_installs_into_an_empty_plugin_folder(tmp_path):
    import subprocess

    built = subprocess.run(["make", "-s", "package"], cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    archive = REPO / ".build" / "deepfield.zip"
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert all(name.startswith("deepfield/") for name in names)
        assert "deepfield/metadata.txt" in names and "deepfield/engine/__main__.py" in names
        assert not [n for n in names if n.startswith(("deepfield/tests/", "deepfield/.venv/")) or "__pycache__" in n]
        plugins = tmp_path / "plugins"
        zipped.extractall(plugins)
    fresh = QgisProcess(tmp_path / "home", pluginpath=plugins)
    listed = fresh("list")
    assert "deepfield:checkenvironment" in listed.stdout
    results = fresh.run("deepfield:checkenvironment", {})
    assert results["TENSORFLOW"].startswith("2.21")


def test_loading_every_algorithm_imports_no_tensorflow():
    """TensorFlow in the QGIS process aborts qgis_process (libprotobuf clash): never import it."""
    import subprocess
    import sys

    probe = (
        "import sys; from qgis.testing import start_app; start_app();"
        "from deepfield.algorithms.provider import DeepFieldProvider, ALGORITHMS;"
        "[cls().initAlgorithm() for cls in ALGORITHMS];"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
