"""TensorFlow start-up: import it once, use the GPUs it sees, report what it runs on.

Every engine module that needs TensorFlow gets it from :func:`tensorflow`, so
thread counts and GPU memory growth are set before TensorFlow does any work.
"""

from __future__ import annotations

import os
from functools import lru_cache

from .protocol import EngineError


@lru_cache(maxsize=None)
def tensorflow():
    """Import and configure TensorFlow; an :class:`EngineError` says how to install it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # GDAL first: TensorFlow bundles an SQLite without R-tree; loaded first, its symbols win and
    # GeoPackages written afterwards silently lose their spatial index.
    from osgeo import gdal  # noqa: F401

    try:
        import tensorflow as tf
    except ImportError as error:
        import sys

        raise EngineError(
            f"TensorFlow cannot be imported by the engine interpreter {sys.executable} ({error}). "
            "Install it there (pip install 'tensorflow-cpu==2.21.*' 'numpy<2', or "
            "'tensorflow[and-cuda]==2.21.*' for NVIDIA GPUs), or point DeepField's "
            "'Engine Python interpreter' setting at an interpreter that has it."
        ) from error
    threads = os.environ.get("DEEPFIELD_TF_THREADS")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, int(threads) // 2))
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):
            pass  # already initialised: growth cannot change any more
    return tf


def gpu_names() -> list[str]:
    """Names of the GPUs TensorFlow sees (empty on CPU-only machines)."""
    tf = tensorflow()
    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def compute_device() -> str:
    """``/GPU:0`` when TensorFlow sees a GPU, ``/CPU:0`` otherwise."""
    return "/GPU:0" if gpu_names() else "/CPU:0"
