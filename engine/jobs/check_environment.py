"""The ``check_environment`` job: versions of the engine's libraries and the visible GPUs."""

from __future__ import annotations

from ..contract import CheckEnvironmentSpec
from ..environment import versions
from ..protocol import Reporter


def run(spec: dict, reporter: Reporter) -> dict:
    CheckEnvironmentSpec.from_dict(spec)
    reporter.progress(10)
    info = versions()
    for key, value in info.items():
        reporter.log(f"{key}: {value}")
    if not info["gpus"]:
        reporter.log("No GPU visible to TensorFlow: models run on the CPU.")
    reporter.progress(100)
    return info
