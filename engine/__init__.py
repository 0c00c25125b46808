"""The DeepField engine: pure Python (numpy, GDAL, pyproj, TensorFlow), never QGIS.

Run a job spec from the command line with ``python -m deepfield.engine spec.json``
(or ``-`` for standard input). Progress, log lines, the result and errors come out
as JSON lines on standard output (see :mod:`.protocol`).
"""

from .protocol import EngineError, JobCancelled

__all__ = ["EngineError", "JobCancelled"]
