"""TensorFlow start-up in the engine process."""

import subprocess
import sys

from ..conftest import PLUGINPATH

PROBE = """
from deepfield.engine.device import compute_device, tensorflow
tf = tensorflow()
from osgeo import gdal, ogr, osr
gdal.UseExceptions()
path = {path!r}
source = ogr.GetDriverByName("GPKG").CreateDataSource(path)
srs = osr.SpatialReference()
srs.ImportFromEPSG(32617)
layer = source.CreateLayer("points", srs, ogr.wkbPoint)
feature = ogr.Feature(layer.GetLayerDefn())
feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (1 2)"))
layer.CreateFeature(feature)
source = None
source = ogr.Open(path)
indexed = source.ExecuteSQL("SELECT HasSpatialIndex('points', 'geom')").GetNextFeature().GetField(0)
print(compute_device(), len(tf.config.list_physical_devices("GPU")), indexed)
"""


def test_geopackages_written_after_tensorflow_keep_their_spatial_index(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE.format(path=str(tmp_path / "p.gpkg"))], cwd=PLUGINPATH,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    device, gpus, indexed = done.stdout.split()
    assert device == ("/GPU:0" if int(gpus) else "/CPU:0")
    assert indexed == "1"
