"""The versions of everything the engine relies on (Python, numpy, GDAL, PROJ, TensorFlow, GPUs)."""

from __future__ import annotations

import platform
import sys

from .errors import EngineError


def versions() -> dict:
    """Interpreter, numpy, GDAL, PROJ/pyproj and TensorFlow versions, and visible GPUs.

    Raises :class:`EngineError` naming what cannot be imported.
    """
    info: dict = {"python": sys.version.split()[0], "engine_interpreter": sys.executable,
                  "platform": platform.platform()}
    missing = []
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError as error:
        missing.append(f"numpy ({error})")
    try:
        from osgeo import gdal

        info["gdal"] = gdal.__version__
    except ImportError as error:
        missing.append(f"GDAL Python bindings, osgeo.gdal ({error})")
    try:
        import pyproj

        info["pyproj"] = pyproj.__version__
        info["proj"] = pyproj.proj_version_str
    except ImportError as error:
        missing.append(f"pyproj ({error})")
    if missing:
        raise EngineError(f"the engine interpreter {sys.executable} cannot import: " + "; ".join(missing))
    from .device import gpu_names, tensorflow

    tf = tensorflow()
    info["tensorflow"] = tf.__version__
    info["keras"] = getattr(tf.keras, "__version__", "") or _keras_version()
    info["tensorflow_built_with_cuda"] = bool(tf.test.is_built_with_cuda())
    info["gpus"] = gpu_names()
    return info


def _keras_version() -> str:
    try:
        import keras

        return keras.__version__
    except ImportError:
        return ""
