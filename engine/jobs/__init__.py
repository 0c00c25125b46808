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

#: The engine's jobs: each is the module ``engine/jobs/<name>.py`` (imported on demand).
JOBS = ("check_environment", "describe_model", "apply_model", "select_samples", "extract_patches",
        "train_model", "train_model_worker", "evaluate_map", "import_model", "vectorize_class_map",
        "coregister_image")


def get_job(name: str) -> Callable:
    """Return the ``run`` function of the job called ``name``; an :class:`InvalidSpec` names the known ones."""
    if name not in JOBS:
        raise InvalidSpec(f"unknown engine job {name!r}; known jobs: {', '.join(sorted(JOBS))}")
    return importlib.import_module(f"{__name__}.{name}").run
