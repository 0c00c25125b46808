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
    "apply_model": "jobs.apply_model:run",
    "select_samples": "sampling:select_samples_job",
    "extract_patches": "patches:extract_patches_job",
    "train_model": "jobs.train_model:run",
    "train_model_worker": "jobs.train_model:worker",
    "evaluate_map": "evaluation:evaluate_map_job",
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
