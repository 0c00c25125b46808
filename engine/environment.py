"""The "check environment" job: versions of everything the engine relies on."""

from __future__ import annotations

import platform
import sys

from .protocol import EngineError, Reporter


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


def check_environment(spec: dict, reporter: Reporter) -> dict:
    reporter.progress(10)
    info = versions()
    for key, value in info.items():
        reporter.log(f"{key}: {value}")
    if not info["gpus"]:
        reporter.log("No GPU visible to TensorFlow: models run on the CPU.")
    reporter.progress(100)
    return info
