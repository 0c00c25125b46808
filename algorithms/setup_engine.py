"""Set up engine: build the engine's Python environment under the QGIS profile and select it.

The choices (which packages, where, how to read pip) are in :mod:`.engine_setup`; this adapter
runs ``venv`` and ``pip`` with their output in the log (cancel kills them), verifies the result
with the ``check_environment`` job and stores it as the engine interpreter setting.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
)

from . import engine_setup
from .base import ENGINE_PYTHON_SETTING, EngineAlgorithm
from .check_environment import add_environment_outputs, environment_outputs
from .runner import EngineJobCancelled, EngineJobError, run_job, stop_process_group

BUILDS = ("Automatic (the GPU build when nvidia-smi finds an NVIDIA GPU)", "CPU", "GPU (NVIDIA, CUDA)")


class SetupEngine(EngineAlgorithm):
    ALG_ID = "setupengine"
    DISPLAY_NAME = "Set up engine"
    GROUP_ID = "tools"
    HELP = (
        "Builds the Python environment the DeepField engine runs in and selects it: a virtual "
        "environment under your QGIS profile (deepfield/engine-py3XX), made with the Python QGIS "
        "uses so that it sees the same GDAL, with TensorFlow 2.21, pyproj, matplotlib and the numpy "
        "your GDAL was built for, installed by pip from the package index pip is configured with "
        "(about 1 GB to download). The GPU build of TensorFlow is installed when an NVIDIA GPU is "
        "present (or when asked). The environment is then checked as 'Check environment' does and "
        "stored as 'Engine Python interpreter' (Processing > Options > Providers > DeepField). "
        "Running it again checks the environment and reuses it when it is complete."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(
            "TENSORFLOW", "TensorFlow build", options=list(BUILDS), defaultValue=0))
        self.add_advanced(QgsProcessingParameterFile(
            "FOLDER", "Environment folder (default: deepfield/engine-py3XX in the QGIS profile)",
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addOutput(QgsProcessingOutputFolder("FOLDER", "Environment folder"))
        add_environment_outputs(self)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        version = sys.version_info[:2]
        build = self.parameterAsEnum(parameters, "TENSORFLOW", context)
        gpu = engine_setup.nvidia_gpu_present() if build == 0 else build == 2
        requirements = engine_setup.engine_requirements(
            version, engine_setup.system_numpy_version(), gpu, sys.platform)
        folder = Path(self.parameterAsFile(parameters, "FOLDER", context)
                      or engine_setup.environment_folder(QgsApplication.qgisSettingsDirPath(), version))
        python = engine_setup.environment_python(folder)
        marker = folder / engine_setup.SETUP_MARKER
        wanted = "\n".join(requirements) + "\n"

        if folder.exists() and any(folder.iterdir()) and not (folder / "pyvenv.cfg").is_file():
            raise QgsProcessingException(
                f"Environment folder {folder} holds files but is not a virtual environment: Set up engine "
                "never writes into such a folder. Choose a new or empty folder (or leave it empty for the default).")
        feedback.pushInfo(f"Engine environment: {folder}\nRequirements: {', '.join(requirements)}")
        if python.exists() and marker.is_file() and marker.read_text() == wanted:
            feedback.pushInfo("This environment is already set up with these requirements: checking it.")
            try:
                return self.select(python, folder, check(python, feedback))
            except EngineJobError as error:
                feedback.pushWarning(f"The existing environment does not work ({error}): installing again.")
        if not python.exists():
            base = base_interpreter()
            feedback.pushInfo(f"Creating the virtual environment with {base}")
            self.run_step([str(base), "-m", "venv", "--system-site-packages", str(folder)], feedback,
                          f"Creating the virtual environment {folder} with {base} failed")
        marker.unlink(missing_ok=True)
        feedback.pushInfo("Installing with pip (progress below; Cancel stops pip):")
        progress = engine_setup.PipProgress()
        output = self.run_step(
            [str(python), "-m", "pip", "install", "--progress-bar", "off", *requirements], feedback, None,
            on_line=lambda line: follow_pip(progress, line, feedback))
        if output is not None:
            raise QgsProcessingException(engine_setup.pip_failure_message(output, requirements))
        feedback.pushInfo("Checking the new environment (as Check environment does)")
        try:
            result = check(python, feedback)
        except EngineJobError as error:
            raise QgsProcessingException(f"The environment {folder} was installed but does not work: {error}") from None
        marker.write_text(wanted)
        return self.select(python, folder, result)

    def select(self, python: Path, folder: Path, report: dict) -> dict:
        """Store ``python`` as the engine interpreter setting; the outputs of the algorithm
        (``report`` is the check_environment job's result)."""
        from processing.core.ProcessingConfig import ProcessingConfig

        ProcessingConfig.setSettingValue(ENGINE_PYTHON_SETTING, str(python))
        return {**environment_outputs(report), "FOLDER": str(folder)}

    def run_step(self, command: list[str], feedback, failure: str | None, on_line=None) -> list[str] | None:
        """Run ``command`` with its output lines in the log; cancel stops it.

        Returns None on success, else the output lines (or raises with ``failure`` when given).
        """
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
        except OSError as error:
            raise QgsProcessingException(f"{failure or 'Running pip failed'}: {error}") from None
        lines: queue.Queue = queue.Queue()

        def pump():
            with process.stdout:
                for line in process.stdout:
                    lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        output: list[str] = []
        while reader.is_alive() or not lines.empty():
            if feedback.isCanceled():
                stop_process_group(process)
                raise QgsProcessingException(f"Cancelled: {Path(command[0]).name} was stopped "
                                             "(run Set up engine again to finish).")
            try:
                line = lines.get(timeout=0.1).rstrip()
            except queue.Empty:
                continue
            output.append(line)
            (on_line or feedback.pushInfo)(line)
        if process.wait() == 0:
            return None
        if failure:
            raise QgsProcessingException(f"{failure}:\n" + "\n".join(output[-20:]))
        return output


def check(python: Path, feedback) -> dict:
    """The ``check_environment`` job's report with ``python``; raises EngineJobError when it fails."""
    try:
        return run_job({"job": "check_environment"}, feedback, python=str(python))
    except EngineJobCancelled as cancelled:
        raise QgsProcessingException(str(cancelled)) from None


def follow_pip(progress: engine_setup.PipProgress, line: str, feedback) -> None:
    """Log one line of pip's output and move the progress bar."""
    feedback.pushInfo(line)
    percent = progress.feed(line)
    if percent is not None:
        feedback.setProgress(percent)


def base_interpreter() -> Path:
    """The Python interpreter QGIS embeds (not ``sys.executable``: see engine_setup.base_interpreter_candidates)."""
    for candidate in engine_setup.base_interpreter_candidates(sys.base_prefix, sys.version_info[:2]):
        if candidate.is_file():
            return candidate
    raise QgsProcessingException(
        f"Cannot find the Python interpreter QGIS uses (Python {sys.version.split()[0]} under {sys.base_prefix}); "
        "make a virtual environment with TensorFlow by hand and set it in Processing > Options > DeepField.")
