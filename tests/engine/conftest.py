"""Engine tests run with the plugin importable as ``deepfield`` (see Makefile: PYTHONPATH).

GDAL is imported before any test module imports TensorFlow, as engine.device does (TensorFlow's
bundled SQLite would otherwise leave GeoPackages without their spatial index).
"""

from hypothesis import settings
from osgeo import gdal  # noqa: F401

# Speed is measured by `make bench`, not by tests: no per-example deadline (CI machines are busy).
settings.register_profile("deepfield", deadline=None)
settings.load_profile("deepfield")
