"""Run an engine job in a worker process and relay its JSON lines to Processing feedback.

TensorFlow must never load inside QGIS (QGIS links libprotobuf; importing
TensorFlow in ``qgis_process`` aborts it), so every job runs as
``<engine python> -m deepfield.engine -`` with the job spec on standard input.
This module imports nothing from QGIS: ``feedback`` is anything with
``setProgress``, ``pushInfo``, ``pushWarning``, ``reportError`` and ``isCanceled``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..engine.outputs import remove_leftovers
from ..engine.protocol import PARENT_PID_ENV

PLUGIN_DIR = Path(__file__).parent.parent  # not resolved: a symlinked plugin folder keeps its name
PACKAGE = __name__.split(".")[0]
ENV_PYTHON = "DEEPFIELD_PYTHON"
TERMINATE_GRACE_S = 5.0


class EngineJobError(Exception):
    """The job failed; ``str()`` is the engine's message for the user."""

    def __init__(self, message: str, kind: str = "EngineError", details: str = ""):
        super().__init__(message)
        self.kind = kind
        self.details = details


class EngineJobCancelled(Exception):
    """The user cancelled the job; the worker was stopped."""


def default_python() -> str:
    """The plugin's ``.venv`` interpreter when present, else ``python3``; ``$DEEPFIELD_PYTHON`` wins."""
    if os.environ.get(ENV_PYTHON):
        return os.environ[ENV_PYTHON]
    venv_python = PLUGIN_DIR / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else "python3"


def worker_command(python: str) -> list[str]:
    return [python, "-m", f"{PACKAGE}.engine", "-"]


def worker_environment() -> dict[str, str]:
    """The worker sees the plugin's parent folder first on PYTHONPATH (to import ``deepfield``)."""
    env = dict(os.environ)
    parent = str(PLUGIN_DIR.parent)
    env["PYTHONPATH"] = os.pathsep.join([parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_PID_ENV] = str(os.getpid())  # the worker notices when this process died before it started
    env["PYTHONSAFEPATH"] = "1"  # Python >= 3.11: modules in the working folder cannot shadow the engine's
    return env


def run_job(spec: dict, feedback, python: str | None = None, outputs: list[str] = ()) -> dict:
    """Run ``spec`` in a worker; return its result dict.

    ``outputs`` are the paths the job writes; after a cancel or a crash their
    temporary ``.part`` forms are removed. Raises :class:`EngineJobError` or
    :class:`EngineJobCancelled`.
    """
    python = python or default_python()
    try:
        process = subprocess.Popen(
            worker_command(python),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=worker_environment(),  # the caller's working folder: relative paths in the spec stay valid
            start_new_session=True,  # its own process group: cancel kills it and its children
        )
    except OSError as error:
        raise EngineJobError(
            f"Cannot start the DeepField engine interpreter {python!r}: {error}. "
            "Set 'Engine Python interpreter' in Processing > Options > Providers > DeepField."
        ) from error
    lines: queue.Queue = queue.Queue()
    stderr_tail: list[str] = []
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, lines.put), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, lambda line: _keep_tail(stderr_tail, line)), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        process.stdin.write(json.dumps(spec))
        process.stdin.close()
    except BrokenPipeError:
        pass  # the worker died at start-up: its exit code and stderr tell why, below

    result, error, cancelled = None, None, False
    while True:
        if feedback is not None and feedback.isCanceled() and not cancelled:
            cancelled = True
            stop_process_group(process)
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None and not readers[0].is_alive() and lines.empty():
                break
            continue
        message = _parse(line)
        if message is None:
            if line.strip() and feedback is not None:
                feedback.pushInfo(line.rstrip())
            continue
        kind = message.get("type")
        if kind == "progress" and feedback is not None:
            feedback.setProgress(float(message.get("percent", 0)))
        elif kind == "log" and feedback is not None:
            _log(feedback, message)
        elif kind == "result":
            result = message.get("result", {})
        elif kind == "error":
            error = message
        elif kind == "cancelled":
            cancelled = True
    process.wait()
    for reader in readers:
        reader.join(timeout=1)
    if cancelled or (feedback is not None and feedback.isCanceled()):
        _remove_parts(outputs)
        raise EngineJobCancelled("Cancelled: the DeepField engine was stopped; no output was written.")
    if error is not None:
        _remove_parts(outputs)
        raise EngineJobError(error.get("message", "engine error"), error.get("kind", ""), error.get("traceback", ""))
    if process.returncode != 0 or result is None:
        _remove_parts(outputs)
        tail = "".join(stderr_tail).strip()
        raise EngineJobError(_diagnose(python, process.returncode, tail), "WorkerCrashed", tail)
    return result


def stop_process_group(process: subprocess.Popen, grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM the worker's process group (it stops at its next check), SIGKILL after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None:
                _kill_group_leftovers(process.pid)
                return
            time.sleep(0.05)


def _kill_group_leftovers(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(stream, put) -> None:
    for line in iter(stream.readline, ""):
        put(line)
    stream.close()


def _keep_tail(tail: list[str], line: str, keep: int = 40) -> None:
    tail.append(line)
    del tail[:-keep]


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "type" in message else None


def _log(feedback, message: dict) -> None:
    text = message.get("message", "")
    level = message.get("level", "info")
    if level == "warning":
        feedback.pushWarning(text)
    elif level == "error":
        feedback.reportError(text)
    else:
        feedback.pushInfo(text)


def _remove_parts(outputs) -> None:
    """Remove what a stopped worker left of each output (see :func:`..engine.outputs.remove_leftovers`)."""
    for output in outputs or ():
        if output:
            remove_leftovers(output)


def _diagnose(python: str, returncode: int, stderr_tail: str) -> str:
    if "No module named" in stderr_tail and f"{PACKAGE}" in stderr_tail:
        return f"The engine interpreter {python!r} cannot find the DeepField engine package: {stderr_tail.splitlines()[-1]}"
    if returncode and returncode < 0:
        return f"The DeepField engine ({python}) was killed by signal {-returncode}. Last messages:\n{stderr_tail[-2000:]}"
    return f"The DeepField engine ({python}) exited with code {returncode}. Last messages:\n{stderr_tail[-2000:]}"

