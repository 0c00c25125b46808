"""Labels misregistered with their image: the shift found from real data, and Extract patches'
warning (NC's landclass96 labels sit one pixel up and left of the 2000 Landsat image's edges)."""

import io
import json

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.protocol import Reporter
from deepfield.engine.registration import ShiftScores

NC = "nc_landsat7_landcover"


def nc_image(data_dir):
    bands = gdal.Open(str(data_dir / NC / "lsat7_2000_6band.vrt")).ReadAsArray().astype(np.float64)
    return np.moveaxis(bands, 0, -1), (bands < -1000).any(axis=0)


@pytest.mark.parametrize("moved", [(0, 0), (2, 0), (-1, 2), (1, -1)])
def test_shift_of_labels_made_from_the_image(data_dir, moved):
    """Labels made from the image itself (NIR and red thresholds: registered by construction),
    moved by a known whole-pixel shift: the shift back is found."""
    image, invalid = nc_image(data_dir)
    red, nir = image[..., 2], image[..., 3]
    labels = np.select([nir < 30, nir > 1.3 * red + 20], [1, 2], 3)
    moved_labels = np.roll(labels, moved, axis=(0, 1))
    scores = ShiftScores(max_shift=2)
    for r in range(0, 489 - 64, 64):
        for c in range(0, 443 - 64, 64):
            window = np.s_[r:r + 64, c:c + 64]
            scores.add(image[window], invalid[window], moved_labels[window], ~invalid[window])
    best = scores.best()
    assert (best.rows, best.cols) == (-moved[0], -moved[1])
    assert best.clear == (moved != (0, 0))


def extract(data_dir, tmp_path, labels):
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    select_samples_job({"raster": image, "strategy": "grid", "patch_size": 64, "step": 32,
                        "split": {"train": 1.0}, "output": str(tmp_path / "grid.gpkg")}, Reporter(io.StringIO()))
    stream = io.StringIO()
    result = extract_patches_job({"sources": [{"path": image, "patch_size": 64, "name": "landsat"}],
                                  "label": {"kind": "segmentation", "path": labels},
                                  "positions": str(tmp_path / "grid.gpkg"), "output": str(tmp_path / "dataset")},
                                 Reporter(stream))
    warnings = [m["message"] for m in map(json.loads, stream.getvalue().splitlines())
                if m.get("level") == "warning"]
    return result, warnings


def test_extract_patches_warns_of_misregistered_labels(data_dir, tmp_path):
    strata = str(data_dir / NC / "strata.tif")
    result, warnings = extract(data_dir, tmp_path, strata)
    assert (result["label_shift"]["rows"], result["label_shift"]["cols"]) == (1, 1)
    shifted = [w for w in warnings if "line up best" in w]
    assert len(shifted) == 1 and strata in shifted[0]
    assert "1 px down and 1 px right (+28.5 map units east, -28.5 north)" in shifted[0]

    # the same labels one pixel down and right (a shifted copy): no warning
    copy = gdal.Translate(str(tmp_path / "moved.tif"), strata)
    values = copy.GetRasterBand(1).ReadAsArray()
    copy.GetRasterBand(1).WriteArray(np.roll(values, (1, 1), axis=(0, 1)))
    copy = None
    result, warnings = extract(data_dir, tmp_path / "moved", str(tmp_path / "moved.tif"))
    assert (result["label_shift"]["rows"], result["label_shift"]["cols"]) == (0, 0)
    assert not [w for w in warnings if "line up best" in w]
