"""Engine jobs: one module per job, each parsing its spec and calling the library.

A job module ``engine/jobs/<name>.py`` defines ``run(spec: dict, reporter: Reporter) -> dict``
(see :mod:`..protocol`): it parses ``spec`` with its :mod:`..contract` dataclass, calls the
engine's library modules and returns the result dict. Library modules never import a job.
``algorithms/<name>.py`` is the QGIS side of ``engine/jobs/<name>.py``.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..errors import InvalidSpec

#: Job name -> ``module:function`` under the engine package (imported on demand).
JOBS: dict[str, str] = {
    "check_environment": "jobs.check_environment:run",
    "describe_model": "modelfolder:describe_model_job",
    "apply_model": "serving:apply_model_job",
    "select_samples": "jobs.select_samples:run",
    "extract_patches": "jobs.extract_patches:run",
    "train_model": "jobs.train_model:run",
    "evaluate_map": "jobs.evaluate_map:run",
}


def get_job(name: str) -> Callable:
    """Return the job function called ``name``; an :class:`InvalidSpec` names the known ones."""
    try:
        target = JOBS[name]
    except KeyError:
        raise InvalidSpec(f"unknown engine job {name!r}; known jobs: {', '.join(sorted(JOBS))}") from None
    module_name, function_name = target.split(":")
    module = importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.{module_name}")
    return getattr(module, function_name)
