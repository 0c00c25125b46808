"""What an engine environment holds and where it lives: the pure logic behind "Set up engine".

An *engine environment* is a virtual environment made with the interpreter QGIS runs
(``--system-site-packages``, so it sees the GDAL bindings and numpy QGIS uses) holding the
pinned engine requirements: ``requirements.txt``, the numpy the system's GDAL bindings were built
for, and a TensorFlow package that exists for the interpreter (the CUDA build for NVIDIA GPUs).

No QGIS import: the "Set up engine" algorithm, ``make setup`` and ``make test-qgis340`` share it
(``python3 algorithms/engine_setup.py tensorflow|numpy|requirements [--gpu]`` prints the choice for
the interpreter that runs it), and tests import it without QGIS.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

TENSORFLOW_VERSION = "2.21.*"
#: The newest Python for which ``tensorflow-cpu`` publishes wheels (``tensorflow`` has cp313 and runs on CPU).
TENSORFLOW_CPU_NEWEST_PYTHON = (3, 12)
#: Platforms with ``tensorflow-cpu`` wheels (``sys.platform`` values); elsewhere ``tensorflow``.
TENSORFLOW_CPU_PLATFORMS = ("linux", "win32")
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "requirements.txt"
#: Marker file in a finished environment: the requirements it was built with, one per line.
SETUP_MARKER = "deepfield-requirements.txt"
#: Messages of pip (and of the libraries under it) that mean the package index cannot be reached.
OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                 "Name or service not known", "No route to host", "ConnectTimeoutError", "ProxyError",
                 "Connection refused", "Failed to establish a new connection")


def tensorflow_requirement(python: tuple[int, int], gpu: bool, platform: str = "linux") -> str:
    """The TensorFlow package for an interpreter ``python`` = (major, minor) on ``platform``.

    The CUDA build when ``gpu``; else ``tensorflow-cpu`` where it has wheels (Linux and Windows,
    up to Python 3.12), otherwise ``tensorflow``, which runs on CPU as well.
    """
    if gpu:
        return f"tensorflow[and-cuda]=={TENSORFLOW_VERSION}"
    if platform in TENSORFLOW_CPU_PLATFORMS and tuple(python) <= TENSORFLOW_CPU_NEWEST_PYTHON:
        return f"tensorflow-cpu=={TENSORFLOW_VERSION}"
    return f"tensorflow=={TENSORFLOW_VERSION}"


def numpy_requirement(system_numpy: str | None) -> str:
    """The numpy to install next to the system's GDAL bindings, built with ``system_numpy``.

    Bindings built with numpy 1.x need numpy < 2 (Debian 12: system numpy 1.24, TensorFlow wants
    >= 1.26); with numpy 2.x, that major version from the system one up (Debian 13: numpy 2.2, kept
    as it is). ``None`` (no system numpy) leaves the choice to pip.
    """
    if system_numpy is None:
        return "numpy>=1.26"
    major = int(system_numpy.split(".")[0])
    if major < 2:
        return "numpy>=1.26,<2"
    release = ".".join(re.findall(r"\d+", system_numpy)[:3])
    return f"numpy>={release},<{major + 1}"


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def engine_requirements(python: tuple[int, int], system_numpy: str | None, gpu: bool,
                        platform: str = "linux", requirements_file: Path = REQUIREMENTS_FILE) -> list[str]:
    """Everything pip installs into an engine environment, TensorFlow first."""
    return [tensorflow_requirement(python, gpu, platform), numpy_requirement(system_numpy),
            *read_requirements(requirements_file)]


def system_numpy_version() -> str | None:
    """The version of the numpy the running interpreter imports (the one its GDAL bindings load), else None."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def nvidia_gpu_present() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU (the NVIDIA driver is installed and sees one)."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return False
    try:
        done = subprocess.run([executable, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def environment_folder(profile_folder: str | Path, python: tuple[int, int]) -> Path:
    """Where the engine environment of a QGIS profile lives: ``<profile>/deepfield/engine-py3XX``.

    One per Python version: a QGIS upgraded to a newer Python gets a new environment.
    """
    return Path(profile_folder) / "deepfield" / f"engine-py{python[0]}{python[1]}"


def environment_python(folder: str | Path, windows: bool = sys.platform == "win32") -> Path:
    """The interpreter of a virtual environment ``folder``."""
    return Path(folder) / ("Scripts/python.exe" if windows else "bin/python")


def base_interpreter_candidates(base_prefix: str, python: tuple[int, int],
                                windows: bool = sys.platform == "win32") -> list[Path]:
    """Interpreters that may be the Python QGIS embeds, most likely first.

    Inside QGIS ``sys.executable`` is not that interpreter: it is the QGIS binary, or whatever
    ``python3`` comes first on PATH (a pyenv shim, another Python without QGIS's GDAL). The embedded
    interpreter lives under ``sys.base_prefix``: ``/usr/bin/python3.11`` on Debian,
    ``apps/Python312/python.exe`` in OSGeo4W. The caller keeps the first that exists.
    """
    base = Path(base_prefix)
    if windows:
        return [base / "python.exe", base / "python3.exe"]
    return [base / "bin" / f"python{python[0]}.{python[1]}", base / "bin" / f"python{python[0]}"]


class PipProgress:
    """Follow pip's output: a progress estimate and the package pip is busy with.

    pip prints ``Collecting <requirement>`` (or ``Processing <wheel file>`` for a local or cached
    one) per package it resolves, ``Downloading <file> (<size>)``,
    ``Progress <done> of <total>`` (``--progress-bar raw``, bytes of the current download),
    ``Installing collected packages: ...`` and ``Successfully installed ...``. ``expected`` is the
    number of packages an engine environment usually collects (TensorFlow brings about 40).
    """

    def __init__(self, expected: int = 45):
        self.expected = expected
        self.collected = 0
        self.package = ""

    def feed(self, line: str) -> float | None:
        """Update from one output line; the new progress in percent, or None when it did not move."""
        line = line.strip()
        if line.startswith(("Collecting ", "Processing ")):
            self.collected += 1
            self.package = line.split()[1]
            return min(80.0, 80.0 * self.collected / self.expected)
        if line.startswith("Installing collected packages"):
            self.package = line.partition(":")[2].strip()
            return 85.0
        if line.startswith("Successfully installed"):
            return 100.0
        return None


def pip_failure_message(output: list[str], requirements: list[str]) -> str:
    """A user's message for a failed ``pip install``: offline, or the package pip could not install.

    ``output`` is pip's output (stdout and stderr lines); ``requirements`` what was asked for.
    """
    text = "\n".join(output)
    asked = ", ".join(requirements)
    missing = re.findall(r"No matching distribution found for (\S+)", text)
    if any(sign in text for sign in OFFLINE_SIGNS):
        package = f" (while fetching {missing[0]})" if missing else ""
        return ("pip cannot reach the package index" + package + ": this computer looks offline or "
                "behind a proxy. Connect to the internet (or set pip's proxy / index in pip.conf) "
                "and run Set up engine again; what was installed so far is kept.")
    if missing:
        return (f"pip found no {missing[0]} for Python {'.'.join(map(str, sys.version_info[:2]))} on this "
                f"platform (asked for: {asked}). Check the package index pip uses (pip.conf), or install "
                "that package by hand and choose the interpreter in Processing > Options > DeepField.")
    failed = re.findall(r"(?:Failed to build|Failed building wheel for|Could not install packages due to an "
                        r"\w+:?)\s*(.+)", text)
    errors = [line.strip() for line in output if line.strip().startswith("ERROR:")]
    detail = failed[0].strip() if failed else (errors[-1] if errors else (output[-1].strip() if output else ""))
    return f"pip could not install the engine requirements ({asked}): {detail}"


def main(argv: list[str]) -> int:
    """``engine_setup.py tensorflow|numpy|requirements [--gpu]``: print the choice for this interpreter."""
    what = argv[0] if argv else "requirements"
    gpu = "--gpu" in argv
    python = sys.version_info[:2]
    choices = {
        "tensorflow": [tensorflow_requirement(python, gpu, sys.platform)],
        "numpy": [numpy_requirement(system_numpy_version())],
        "requirements": engine_requirements(python, system_numpy_version(), gpu, sys.platform),
    }
    if what not in choices:
        print(f"usage: engine_setup.py {'|'.join(choices)} [--gpu]", file=sys.stderr)
        return 2
    print("\n".join(choices[what]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
