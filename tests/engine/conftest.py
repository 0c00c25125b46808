"""Engine tests run with the plugin importable as ``deepfield`` (see Makefile: PYTHONPATH).

GDAL is imported before any test module imports TensorFlow, as engine.device does (TensorFlow's
bundled SQLite would otherwise leave GeoPackages without their spatial index).
"""

from osgeo import gdal  # noqa: F401
