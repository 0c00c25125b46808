"""algorithms/engine_setup.py: which packages an engine environment gets, where it lives, pip's output.

No QGIS needed: the module is shared by "Set up engine", ``make setup`` and ``make test-qgis340``.
pip's messages are real pip output (a local empty wheel folder, a closed port), not typed in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deepfield.algorithms import engine_setup

from ..conftest import REPO

SYSTEM_PYTHON = "/usr/bin/python3"


def test_tensorflow_package_exists_for_the_interpreter():
    assert engine_setup.tensorflow_requirement((3, 11), gpu=False) == "tensorflow-cpu==2.21.*"
    assert engine_setup.tensorflow_requirement((3, 12), gpu=False, platform="win32") == "tensorflow-cpu==2.21.*"
    # tensorflow-cpu 2.21 has no cp313 wheel; tensorflow has and runs on CPU (Debian 13)
    assert engine_setup.tensorflow_requirement((3, 13), gpu=False) == "tensorflow==2.21.*"
    assert engine_setup.tensorflow_requirement((3, 11), gpu=False, platform="darwin") == "tensorflow==2.21.*"
    assert engine_setup.tensorflow_requirement((3, 13), gpu=True) == "tensorflow[and-cuda]==2.21.*"


def test_numpy_follows_the_system_numpy_the_gdal_bindings_were_built_with():
    assert engine_setup.numpy_requirement("1.24.2") == "numpy>=1.26,<2"  # Debian 12
    assert engine_setup.numpy_requirement("2.2.4") == "numpy>=2.2.4,<3"  # Debian 13: the system one is kept
    assert engine_setup.numpy_requirement("2.3.0rc1") == "numpy>=2.3.0,<3"
    assert engine_setup.numpy_requirement(None) == "numpy>=1.26"


def test_requirements_hold_one_tensorflow_and_one_numpy_then_requirements_txt():
    requirements = engine_setup.engine_requirements((3, 13), "2.2.4", gpu=False)
    assert requirements[:2] == ["tensorflow==2.21.*", "numpy>=2.2.4,<3"]
    names = [r.split("=")[0].split(">")[0].split("<")[0].split("[")[0] for r in requirements]
    assert names.count("numpy") == 1 and names.count("tensorflow") == 1
    assert {"pyproj", "matplotlib"} <= set(names)


def test_the_command_line_prints_the_choice_for_the_interpreter_running_it():
    """``make setup`` and the Debian 13 chroot call it with the system Python."""
    facts = subprocess.run([SYSTEM_PYTHON, "-c", "import sys, numpy; print(*sys.version_info[:2], numpy.__version__)"],
                           capture_output=True, text=True, check=True).stdout.split()
    major, minor, numpy_version = int(facts[0]), int(facts[1]), facts[2]
    printed = subprocess.run([SYSTEM_PYTHON, str(REPO / "algorithms" / "engine_setup.py"), "requirements"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert printed[0] == ("tensorflow-cpu==2.21.*" if (major, minor) <= (3, 12) else "tensorflow==2.21.*")
    assert printed[1].startswith("numpy>=") and (numpy_version.startswith("1.")) == printed[1].endswith("<2")
    gpu = subprocess.run([SYSTEM_PYTHON, str(REPO / "algorithms" / "engine_setup.py"), "tensorflow", "--gpu"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert gpu == "tensorflow[and-cuda]==2.21.*"


def test_environment_paths(tmp_path):
    folder = engine_setup.environment_folder(tmp_path / "profiles" / "default", (3, 13))
    assert folder == tmp_path / "profiles" / "default" / "deepfield" / "engine-py313"
    assert engine_setup.environment_python(folder, windows=False) == folder / "bin" / "python"
    assert engine_setup.environment_python(folder, windows=True) == folder / "Scripts" / "python.exe"


def test_the_base_interpreter_is_found_under_base_prefix_not_on_path():
    assert engine_setup.base_interpreter_candidates("/usr", (3, 11), windows=False)[0] == Path("/usr/bin/python3.11")
    assert engine_setup.base_interpreter_candidates("C:/OSGeo4W/apps/Python312", (3, 12), windows=True)[0] == \
        Path("C:/OSGeo4W/apps/Python312/python.exe")
    # this interpreter's own base is among the candidates and reports the same version
    found = next(c for c in engine_setup.base_interpreter_candidates(sys.base_prefix, sys.version_info[:2])
                 if c.is_file())
    version = subprocess.run([str(found), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == str(tuple(sys.version_info[:2]))


def pip(*args: str) -> list[str]:
    """Real pip output of a failing ``pip install --dry-run`` (installs nothing), ignoring this machine's
    pip configuration (``--isolated``) and what is installed."""
    done = subprocess.run([sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install",
                           "--dry-run", "--ignore-installed", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    return (done.stdout + done.stderr).splitlines()


def test_a_missing_package_is_named(tmp_path):
    output = pip("--no-index", "--find-links", str(tmp_path), "tensorflow-cpu==2.21.*")
    message = engine_setup.pip_failure_message(output, ["tensorflow-cpu==2.21.*", "pyproj>=3.4"])
    assert message.startswith("pip found no tensorflow-cpu==2.21.* for Python")
    assert "offline" not in message


def test_offline_is_said_so():
    output = pip("--no-cache-dir", "--retries", "1", "--timeout", "5",
                 "--index-url", "http://127.0.0.1:9/simple", "tensorflow-cpu==2.21.*")
    message = engine_setup.pip_failure_message(output, ["tensorflow-cpu==2.21.*"])
    assert "cannot reach the package index" in message and "offline" in message
    assert "tensorflow-cpu==2.21.*" in message


def test_pip_progress_moves_forward_to_100():
    lines = ["Collecting tensorflow-cpu==2.21.*", "  Downloading tensorflow_cpu-2.21.0-cp311-manylinux.whl (250 MB)",
             "Processing /opt/pypi/files/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
             "Requirement already satisfied: six in /usr/lib/python3/dist-packages",
             "Installing collected packages: numpy, tensorflow-cpu",
             "Successfully installed numpy-1.26.4 tensorflow-cpu-2.21.0"]
    progress = engine_setup.PipProgress(expected=2)
    percents = [progress.feed(line) for line in lines]
    assert percents == [40.0, None, 80.0, None, 85.0, 100.0]
    assert progress.collected == 2 and progress.package == "numpy, tensorflow-cpu"
    assert engine_setup.PipProgress(expected=2).feed("Requirement already satisfied: pyproj") is None
