"""The DeepField engine: pure Python (numpy, GDAL, pyproj, TensorFlow), never QGIS.

Run a job spec from the command line with ``python -m deepfield.engine spec.json``
(or ``-`` for standard input). Progress, log lines, the result and errors come out
as JSON lines on standard output (see :mod:`.protocol`).

The public API below is imported on first use, so ``import deepfield.engine.contract``
(from QGIS) loads neither GDAL nor TensorFlow.
"""

from __future__ import annotations

import importlib

from .errors import EngineError, InvalidSpec, JobCancelled, MissingCRS, NoOverlap, NotAModelFolder

#: Public name -> the module that defines it.
_LAZY = {
    "Grid": "geometry",
    "Window": "geometry",
    "ModelGeometry": "geometry",
    "derive_geometry": "fields",
    "ModelMetadata": "modelfolder",
    "load_model_folder": "modelfolder",
    "save_model_folder": "modelfolder",
    "serve_model": "serving",
    "open_dataset": "dataset",
    "raster_info": "rasters",
}

__all__ = ["EngineError", "InvalidSpec", "JobCancelled", "MissingCRS", "NoOverlap", "NotAModelFolder",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
