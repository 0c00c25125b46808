"""Drive ``qgis_process.bin`` as a user would: offscreen, DeepField enabled in a private profile.

Used by ``make demo`` (scripts/demo.py) and the QGIS tests. It imports nothing from QGIS or
TensorFlow: every call is a ``qgis_process.bin`` subprocess, whose engine jobs run in the
interpreter named by ``DEEPFIELD_PYTHON``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINPATH = REPO / ".build" / "plugins"
#: The engine interpreter: $DEEPFIELD_PYTHON (the Debian 13 chroot's venv), else the checkout's .venv.
ENGINE_PYTHON = os.environ.get("DEEPFIELD_PYTHON") or str(REPO / ".venv" / "bin" / "python")


class QgisProcessError(RuntimeError):
    """qgis_process.bin failed; the message holds the end of its output."""


def qgis_env(home: Path, pluginpath: Path = PLUGINPATH) -> dict[str, str]:
    """Environment for qgis_process.bin: offscreen, our plugin path, a private profile (HOME)."""
    env = dict(os.environ)
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)  # set by qgis.testing.start_app(); it would override HOME
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(pluginpath),
        HOME=str(home),
        XDG_RUNTIME_DIR=str(home / "run"),
        DEEPFIELD_PYTHON=env.get("DEEPFIELD_PYTHON", ENGINE_PYTHON),
    )
    (home / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
    return env


def run_qgis_process(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["qgis_process.bin", *args], env=env, capture_output=True, text=True, timeout=timeout)


def parameter_args(parameters: dict) -> list[str]:
    """``KEY=VALUE`` arguments; a list value repeats its key (multiple layers)."""
    args = []
    for key, value in parameters.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        args += [f"{key}={v}" for v in values]
    return args


class QgisProcess:
    """``qgis_process.bin`` with the DeepField plugin enabled in a private profile under ``home``."""

    def __init__(self, home: Path, pluginpath: Path = PLUGINPATH):
        self.env = qgis_env(Path(home), pluginpath)
        enabled = run_qgis_process(self.env, "plugins", "enable", "deepfield")
        if enabled.returncode != 0 and "already enabled" not in enabled.stdout + enabled.stderr:
            raise QgisProcessError(f"cannot enable the plugin:\n{enabled.stdout}{enabled.stderr}")

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return run_qgis_process(self.env, *args, timeout=timeout)

    def run(self, algorithm: str, parameters: dict, timeout: float = 600) -> dict:
        """Run an algorithm (an id or a .model3 path) with ``--json``; return its ``results``."""
        done = self("--json", "run", str(algorithm), "--", *parameter_args(parameters), timeout=timeout)
        if done.returncode != 0:
            raise QgisProcessError(f"qgis_process failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return json.loads(done.stdout)["results"]
