"""The shipped translation workflow (processing_models/translation_workflow.model3, from
scripts/workflows/translation.py) run headless by qgis_process: NC Landsat-7 to an RGB rendering of
its land-cover map, with the conditional GAN, tiny settings."""

from __future__ import annotations

import csv
import json

import numpy as np
from osgeo import gdal

from demo_data import render_classes

from ..conftest import REPO

MODEL_FILE = REPO / "processing_models" / "translation_workflow.model3"
NC = "nc_landsat7_landcover"


def test_the_translation_workflow_trains_with_the_gan_and_renders_the_whole_image(qgis_process, data_dir,
                                                                                tmp_path):
    nc = data_dir / NC
    target = render_classes(nc / "strata.tif", tmp_path / "rendering" / "strata_rgb.tif")
    folder = tmp_path / "out"
    folder.mkdir()
    qgis_process.run(str(MODEL_FILE), {
        "image": nc / "lsat7_2000_6band.vrt", "target": target, "output_folder": folder, "patch_size": 32,
        "grid_step": 32, "epochs": 2, "time_budget": 0, "adversarial_weight": 0.5,
        "hyperparameters": '{"depth": 2, "width": 8, "discriminator_width": 8}'})
    manifest = json.loads((folder / "dataset" / "manifest.json").read_text())
    assert manifest["label"]["kind"] == "image" and manifest["label"]["bands"] == 3
    assert all(manifest["splits"][split] > 0 for split in ("train", "valid", "test"))
    metadata = json.loads((folder / "model" / "deepfield.json").read_text())
    config = metadata["training"]["config"]  # the workflow's inputs reached Train model
    assert (config["architecture"], config["gan"], config["adversarial_weight"], config["epochs"]) == (
        "translation", True, 0.5, 2)
    with open(folder / "model" / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(np.isfinite(float(row["adversarial"])) for row in rows)

    image, translated = gdal.Open(str(nc / "lsat7_2000_6band.vrt")), gdal.Open(str(folder / "translated.tif"))
    assert translated.GetGeoTransform() == image.GetGeoTransform()
    assert (translated.RasterXSize, translated.RasterYSize, translated.RasterCount) == (489, 443, 3)
    values = translated.ReadAsArray()
    nodata = translated.GetRasterBand(1).GetNoDataValue()
    valid = values[0] != nodata
    assert valid.mean() > 0.5 and np.isfinite(values[:, valid]).all()
    assert 0 < values[:, valid].mean() < 255  # colours, in the target's units
