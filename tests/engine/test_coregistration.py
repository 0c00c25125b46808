"""Co-register image to labels: the image moved by whole pixels onto labels that sit off it.

References: labels made from the NC image itself (NIR and red thresholds, registered by
construction) and moved by known shifts; the moved image must reproduce the moved labels with
the same thresholds, pixel for pixel."""

import io

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.errors import EngineError
from deepfield.engine.jobs.coregister_image import run as coregister_job
from deepfield.engine.protocol import Reporter

NC = "nc_landsat7_landcover"


def image_path(data_dir) -> str:
    return str(data_dir / NC / "lsat7_2000_6band.vrt")


def thresholds(bands: np.ndarray) -> np.ndarray:
    """Three classes from red (band 3) and NIR (band 4), ``bands`` as GDAL reads them."""
    red, nir = bands[2].astype(np.float64), bands[3].astype(np.float64)
    return np.select([nir < 30, nir > 1.3 * red + 20], [1, 2], 3)


def write_labels(path, values: np.ndarray, like: str, window=None) -> str:
    """``values`` as an Int16 label raster on the grid of ``like`` (or its ``window``: col, row,
    width, height), nodata -1."""
    col, row, width, height = window or (0, 0, values.shape[1], values.shape[0])
    source = gdal.Open(like)
    gt = list(source.GetGeoTransform())
    gt[0], gt[3] = gt[0] + col * gt[1], gt[3] + row * gt[5]
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 1, gdal.GDT_Int16)
    dataset.SetGeoTransform(gt)
    dataset.SetProjection(source.GetProjection())
    dataset.GetRasterBand(1).SetNoDataValue(-1)
    dataset.GetRasterBand(1).WriteArray(values[row:row + height, col:col + width].astype(np.int16))
    dataset = None
    return str(path)


def coregister(image: str, labels: str, output) -> dict:
    return coregister_job({"image": image, "labels": labels, "output": str(output)}, Reporter(io.StringIO()))


@pytest.mark.parametrize("moved, window", [((1, -2), None), ((-1, 0), (40, 30, 380, 350))])
def test_the_moved_image_reproduces_labels_moved_by_a_known_shift(data_dir, tmp_path, moved, window):
    """Labels = thresholds of the image, moved by ``moved`` (rows down, cols right), on the
    image's grid or on a window of it: the output is the image moved the same way, so the same
    thresholds on it give the moved labels, pixel for pixel, except on the strip it no longer
    covers, which is nodata."""
    image = image_path(data_dir)
    bands = gdal.Open(image).ReadAsArray()
    labels = np.roll(thresholds(bands), moved, axis=(0, 1))
    result = coregister(image, write_labels(tmp_path / "labels.tif", labels, image, window), tmp_path / "moved.vrt")
    assert (result["rows"], result["cols"]) == (-moved[0], -moved[1]) and result["moved"] and result["clear"]

    output = gdal.Open(str(tmp_path / "moved.vrt"))
    assert output.GetGeoTransform() == gdal.Open(image).GetGeoTransform()
    out = output.ReadAsArray()
    assert out.shape == bands.shape
    (dy, dx), (height, width) = moved, bands.shape[1:]
    covered = np.zeros((height, width), dtype=bool)
    covered[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = True
    np.testing.assert_array_equal(thresholds(out)[covered], labels[covered])
    nodata = [output.GetRasterBand(b + 1).GetNoDataValue() for b in range(output.RasterCount)]
    assert all((out[b][~covered] == nodata[b]).all() for b in range(len(nodata)))


def test_registered_labels_leave_the_image_unmoved_and_geotiff_matches_vrt(data_dir, tmp_path):
    image = image_path(data_dir)
    bands = gdal.Open(image).ReadAsArray()
    labels = write_labels(tmp_path / "labels.tif", thresholds(bands), image)
    result = coregister(image, labels, tmp_path / "same.tif")
    assert (result["rows"], result["cols"], result["moved"], result["clear"]) == (0, 0, False, False)
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "same.tif")).ReadAsArray(), bands)


def test_max_shift_0_leaves_the_image_unmoved(data_dir, tmp_path):
    image = image_path(data_dir)
    result = coregister_job({"image": image, "labels": str(data_dir / NC / "strata.tif"),
                             "output": str(tmp_path / "same.vrt"), "max_shift": 0}, Reporter(io.StringIO()))
    assert (result["rows"], result["cols"], result["moved"]) == (0, 0, False)
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "same.vrt")).ReadAsArray(), gdal.Open(image).ReadAsArray())


def test_nc_strata_move_the_image_one_pixel_up_and_left(data_dir, tmp_path):
    """NC's labels (Extract patches warns: 1 px down, 1 px right): the VRT and the GeoTIFF copy
    hold the image's pixel (r + 1, c + 1) at (r, c), and nothing is written beside the inputs."""
    image, strata = image_path(data_dir), str(data_dir / NC / "strata.tif")
    bands = gdal.Open(image).ReadAsArray()
    for name in ("moved.vrt", "moved.tif"):
        result = coregister(image, strata, tmp_path / name)
        assert (result["rows"], result["cols"], result["moved"]) == (1, 1, True)
        assert result["score"] > 1.1 * result["unshifted"]
        out = gdal.Open(str(tmp_path / name)).ReadAsArray()
        np.testing.assert_array_equal(out[:, :-1, :-1], bands[:, 1:, 1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved.tif", "moved.tif.aux.xml", "moved.vrt"]


def test_bad_inputs_are_refused_before_any_output(data_dir, tmp_path):
    image = image_path(data_dir)
    with pytest.raises(EngineError, match="max_shift must be a whole number of pixels >= 0"):
        coregister_job({"image": image, "labels": image, "output": str(tmp_path / "x.vrt"), "max_shift": -1},
                       Reporter(io.StringIO()))
    with pytest.raises(EngineError, match="input"):
        coregister(image, str(data_dir / NC / "strata.tif"), image)
    flat = write_labels(tmp_path / "flat.tif", np.ones((443, 489)), image)
    with pytest.raises(EngineError, match="no class boundary"):
        coregister(image, flat, tmp_path / "x.vrt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.tif"]
