"""The registry of engine jobs: job name -> ``module:function`` (imported on demand).

Each job is ``function(spec: dict, reporter: Reporter) -> dict`` (see :mod:`.protocol`).
"""

from __future__ import annotations

import importlib
from typing import Callable

from .protocol import EngineError

JOBS: dict[str, str] = {
    "check_environment": "environment:check_environment",
    "describe_model": "modelfolder:describe_model_job",
    "apply_model": "serving:apply_model_job",
    "select_samples": "sampling:select_samples_job",
    "extract_patches": "patches:extract_patches_job",
    "train_model": "training:train_model_job",
    "evaluate_map": "evaluation:evaluate_map_job",
}


def get_job(name: str) -> Callable:
    """Return the job function called ``name``; an :class:`EngineError` names the known ones."""
    try:
        target = JOBS[name]
    except KeyError:
        raise EngineError(f"unknown engine job {name!r}; known jobs: {', '.join(sorted(JOBS))}") from None
    module_name, function_name = target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, function_name)
