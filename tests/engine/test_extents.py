"""Extents and masks only select output pixels: a clipped run equals the full-image map cropped,
bit for bit, for any start column and row (odd and even), at SF 1 and SF 4 and over two
sources at two resolutions (issue 10)."""

import json

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.serving import MaskSpec

from .test_serving import grid_of, pan_ms, rasters, serve, talk, unet  # noqa: F401 (rasters: fixture)

keras = pytest.importorskip("keras")

#: (start col, start row, width, height) in reference pixels: odd and even starts, both parities
#: of the network's period (U-Net 4, the pan/MS lattice 2, the classifier's 4-pixel output)
EXTENTS = [(33, 7, 41, 50), (32, 8, 40, 40), (1, 2, 37, 29), (13, 22, 70, 19), (50, 51, 33, 66),
           (6, 3, 24, 24), (79, 0, 21, 58)]


def extent_of(path, col, row, width, height):
    """Map bounds of reference pixels ``[col, col + width) x [row, row + height)``."""
    gt, _, _ = grid_of(path)
    return [gt[0] + col * gt[1], gt[3] + (row + height) * gt[5], gt[0] + (col + width) * gt[1], gt[3] + row * gt[5]]


def check_clipped_runs(model, geometry, sources, tmp_path, sf: int, tile: int):
    """Each extent's output is a window of the full output grid holding the full map's values."""
    full_result, full = serve(model, geometry, sources, tmp_path / "full.tif", tile=tile)
    full_gt = full_result["grid"]["geotransform"]
    for k, (col, row, width, height) in enumerate(EXTENTS):
        bounds = extent_of(sources[0], col, row, width, height)
        result, clipped = serve(model, geometry, sources, tmp_path / f"clip{k}.tif", tile=tile, extent=bounds)
        gt = result["grid"]["geotransform"]
        # the first output pixel that starts inside the extent, on the full grid
        first_col, first_row = -(-col // sf), -(-row // sf)
        assert gt[0] == pytest.approx(full_gt[0] + first_col * full_gt[1], abs=1e-6)
        assert gt[3] == pytest.approx(full_gt[3] + first_row * full_gt[5], abs=1e-6)
        assert gt[1] == full_gt[1] and gt[5] == full_gt[5]
        assert clipped.shape[:2] == (-(-(row + height) // sf) - first_row, -(-(col + width) // sf) - first_col)
        expected = full[first_row:first_row + clipped.shape[0], first_col:first_col + clipped.shape[1]]
        np.testing.assert_array_equal(clipped, expected, err_msg=f"extent {k} starting at ({col}, {row})")


def test_unet_extents_equal_the_full_map(rasters, tmp_path):  # noqa: F811 (the imported fixture)
    """Same-padded U-Net, period 4: extents starting at any column equal the full map."""
    model, geometry = unet(6)
    check_clipped_runs(model, geometry, [rasters["nc"]], tmp_path, 1, 12)


def test_strided_classifier_extents_equal_the_full_map(rasters, tmp_path):  # noqa: F811 (the imported fixture)
    """SF 4: the clipped grid is the full grid's pixels that start inside the extent."""
    model, geometry = talk(6)
    check_clipped_runs(model, geometry, [rasters["nc"]], tmp_path, 4, 5)


def test_two_source_extents_equal_the_full_map(rasters, tmp_path):  # noqa: F811 (the imported fixture)
    """Pan 0.5 m + MS 1 m: an extent starting on an odd pan column (mid MS pixel) too."""
    model, geometry = pan_ms()
    check_clipped_runs(model, geometry, [rasters["pan"], rasters["ms_nested"]], tmp_path, 1, 10)


def test_a_mosaic_of_extents_is_the_full_map(rasters, tmp_path):  # noqa: F811 (the imported fixture)
    """Four extents split at odd columns and rows tile the image; their mosaic is the full map."""
    model, geometry = unet(6)
    path = rasters["nc"]
    _, full = serve(model, geometry, [path], tmp_path / "full.tif", tile=16)
    mosaic = np.full_like(full, np.nan)
    for k, (col, row, width, height) in enumerate([(0, 0, 77, 61), (77, 0, 73, 61), (0, 61, 77, 89),
                                                   (77, 61, 73, 89)]):
        _, part = serve(model, geometry, [path], tmp_path / f"part{k}.tif", tile=16,
                        extent=extent_of(path, col, row, width, height))
        mosaic[row:row + height, col:col + width] = part
    np.testing.assert_array_equal(mosaic, full)


def test_a_mask_selects_pixels_of_the_full_map(rasters, tmp_path):  # noqa: F811 (the imported fixture)
    """Pixels inside a mask polygon starting at an odd column hold the full map's values."""
    model, geometry = unet(6)
    path = rasters["nc"]
    gt, _, _ = grid_of(path)
    x0, y1 = gt[0] + 37 * gt[1], gt[3] + 21 * gt[5]
    ring = [[x0, y1], [x0 + 53 * gt[1], y1], [x0 + 53 * gt[1], y1 + 45 * gt[5]], [x0, y1]]
    polygon = tmp_path / "mask.geojson"
    polygon.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    projection = gdal.Open(path).GetProjection()
    gdal.VectorTranslate(str(tmp_path / "mask.gpkg"), str(polygon), dstSRS=projection, srcSRS=projection)
    _, full = serve(model, geometry, [path], tmp_path / "full.tif", tile=16)
    result, masked = serve(model, geometry, [path], tmp_path / "masked.tif", tile=16,
                           mask=MaskSpec(str(tmp_path / "mask.gpkg")))
    assert result["grid"]["geotransform"][0] == x0
    inside = masked[..., 0] != -9999
    assert 0.3 < inside.mean() < 0.7
    expected = full[21:21 + masked.shape[0], 37:37 + masked.shape[1]]
    np.testing.assert_array_equal(masked[inside], expected[inside])
