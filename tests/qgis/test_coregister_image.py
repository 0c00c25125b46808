"""Co-register image to labels through qgis_process and in-process Processing (NC's labels sit
one pixel up and left of the image: the moved image holds pixel (r + 1, c + 1) at (r, c))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from osgeo import gdal

ALG = "deepfield:coregisterimage"
IMAGE = "nc_landsat7_landcover/lsat7_2000_6band.vrt"
STRATA = "nc_landsat7_landcover/strata.tif"


def test_qgis_process_moves_the_nc_image_onto_its_labels(qgis_process, data_dir, tmp_path):
    output = tmp_path / "landsat_on_labels.vrt"
    results = qgis_process.run(ALG, {"INPUT": data_dir / IMAGE, "LABELS": data_dir / STRATA, "OUTPUT": output})
    assert (results["ROWS"], results["COLS"]) == (1, 1) and results["MOVED"] in (True, "true")
    assert Path(results["OUTPUT"]) == output and sorted(p.name for p in tmp_path.iterdir()) == [output.name]
    moved, image = gdal.Open(str(output)), gdal.Open(str(data_dir / IMAGE))
    assert moved.GetGeoTransform() == image.GetGeoTransform()
    np.testing.assert_array_equal(moved.ReadAsArray()[:, :-1, :-1], image.ReadAsArray()[:, 1:, 1:])


def test_a_temporary_output_in_process_is_a_geotiff(qgis_app, data_dir):
    import processing

    results = processing.run(ALG, {"INPUT": str(data_dir / IMAGE), "LABELS": str(data_dir / STRATA),
                                   "MAX_SHIFT": 1, "OUTPUT": "TEMPORARY_OUTPUT"})
    assert results["OUTPUT"].endswith(".tif") and results["MOVED"] is True
    assert (results["ROWS"], results["COLS"]) == (1, 1)
    assert gdal.Open(results["OUTPUT"]).RasterXSize == 489
