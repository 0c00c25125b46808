"""Vectorise class map benchmark (``run() -> dict``; ``make bench`` writes bench/results/vectorize.json).

On mosaics of the NC land-cover map ``strata.tif`` (2 copies wide: 978 px; 2, 4 and 8 copies
tall: 886 to 3544 px; uint8, nodata 0), each run in a fresh process:

- **speed vs limit**: vectorize_class_map (256-px tiles, merging, GeoPackage writing with its
  style) against one ``gdal.Polygonize`` of the whole map into an in-memory layer (no writing:
  the floor of any vectoriser built on GDAL).
- **peak memory**: peak RSS above the process's RSS before the work, as the map grows 4x taller,
  for both. Vectorize holds one row of tiles and the regions still open, so it grows only with
  the regions that span the whole map (a mosaic joins forest across copies: the output's largest
  polygon); one polygonize holds every polygon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PLUGINS = HERE.parent / ".build" / "plugins"
DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
STRATA = DATA / "nc_landsat7_landcover" / "strata.tif"
WIDE, TALL = 2, (2, 4, 8)  # copies of strata.tif across and down
TILE = 256

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {plugins!r})
from osgeo import gdal, ogr
from deepfield.engine.vectorize import vectorize_class_map
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if {mode!r} == "vectorize":
    polygons = sum(c["polygons"] for c in vectorize_class_map({path!r}, {output!r}, tile_size={tile}))
else:
    dataset = gdal.Open({path!r})
    band = dataset.GetRasterBand(1)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = memory.CreateLayer("all", None, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    polygons = layer.GetFeatureCount()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "memory_mb": (peak - before) / 1024, "polygons": polygons}}))
"""


def mosaic(folder: Path, tall: int) -> str:
    from osgeo import gdal

    source = gdal.Open(str(STRATA))
    values = source.ReadAsArray()
    values = np.tile(np.where(values < 0, 0, values).astype(np.uint8), (tall, WIDE))
    path = folder / f"strata_{WIDE}x{tall}.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), values.shape[1], values.shape[0], 1, gdal.GDT_Byte,
                                                   ["TILED=YES", "COMPRESS=DEFLATE"])
    dataset.SetGeoTransform(source.GetGeoTransform())
    dataset.SetProjection(source.GetProjection())
    dataset.GetRasterBand(1).SetNoDataValue(0)
    dataset.GetRasterBand(1).WriteArray(values)
    dataset = None
    return str(path)


def measure(mode: str, path: str, output: str) -> dict:
    code = CHILD.format(plugins=str(PLUGINS), mode=mode, path=path, output=output, tile=TILE)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> dict:
    details = {}
    with tempfile.TemporaryDirectory() as folder:
        for tall in TALL:
            path = mosaic(Path(folder), tall)
            details[f"{WIDE}x{tall}"] = {mode: measure(mode, path, str(Path(folder) / f"{tall}.gpkg"))
                                         for mode in ("vectorize", "polygonize")}
    first, last = details[f"{WIDE}x{TALL[0]}"], details[f"{WIDE}x{TALL[-1]}"]
    assert all(d["vectorize"]["polygons"] == d["polygonize"]["polygons"] for d in details.values())
    return {
        "ratios": {
            "speed vs one whole-map polygonize (tallest)": last["polygonize"]["seconds"] / last["vectorize"]["seconds"],
            f"vectorize memory, {TALL[-1] // TALL[0]}x taller map": last["vectorize"]["memory_mb"]
            / max(first["vectorize"]["memory_mb"], 1.0),
            f"polygonize memory, {TALL[-1] // TALL[0]}x taller map": last["polygonize"]["memory_mb"]
            / max(first["polygonize"]["memory_mb"], 1.0),
            "vectorize / polygonize memory (tallest)": last["vectorize"]["memory_mb"]
            / max(last["polygonize"]["memory_mb"], 1.0),
        },
        "details": details,
    }
