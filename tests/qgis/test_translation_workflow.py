"""`make demo APP=translation` (scripts/demo.py --app translation --quick): the shipped translation
workflow (processing_models/translation_workflow.model3, from scripts/workflows/translation.py) run
headless by qgis_process twice, with the conditional GAN and L1 only, on NC Landsat-7 and an RGB
rendering of its land-cover map; the scores printed are those of the translated images."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal

from demo_translation import RUNS, SETTINGS, held_out_mask, read, scores

from ..conftest import REPO

NC = "nc_landsat7_landcover"


def test_quick_translation_demo_runs_the_workflow_with_and_without_the_gan(tmp_path, data_dir):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--app", "translation", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    nc = data_dir / NC
    image = gdal.Open(str(nc / "lsat7_2000_6band.vrt"))
    target, _ = read(out / "strata_rendered.tif")
    labels, no_class = read(nc / "strata.tif")
    mask = held_out_mask(out / "gan" / "blocks.gpkg", nc / "lsat7_2000_6band.vrt")
    assert 0 < mask.mean() < 0.5
    for name, adversarial in RUNS.items():
        folder = out / name
        manifest = json.loads((folder / "dataset" / "manifest.json").read_text())
        assert manifest["label"]["kind"] == "image" and manifest["label"]["bands"] == 3
        assert all(manifest["splits"][split] > 0 for split in ("train", "valid", "test"))
        config = json.loads((folder / "model" / "deepfield.json").read_text())["training"]["config"]
        # the workflow's inputs reached Train model
        assert (config["architecture"], config["gan"], config["epochs"], config["hyperparameters"]) == (
            "translation", adversarial, 2, SETTINGS["quick"]["hyperparameters"])
        assert config["adversarial_weight"] == SETTINGS["quick"]["adversarial_weight"]
        with open(folder / "model" / "history.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 2 and ("adversarial" in rows[0]) == adversarial

        translated = gdal.Open(str(folder / "translated.tif"))
        assert translated.GetGeoTransform() == image.GetGeoTransform()
        assert (translated.RasterXSize, translated.RasterYSize, translated.RasterCount) == (489, 443, 3)
        values, nodata = read(folder / "translated.tif")
        valid = (values != nodata).all(axis=0)
        assert valid.mean() > 0.5 and np.isfinite(values[:, valid]).all()
        # the printed row repeats the scores, recomputed here on the test blocks
        expected = scores(folder / "translated.tif", out / "strata_rendered.tif", nc / "strata.tif", mask)
        keep = valid & mask & (labels != no_class)
        assert expected["l1"] == pytest.approx(np.abs(values[:, keep] - target[:, keep]).mean())
        assert expected["pixels"] == keep.sum()
        line = re.search(rf"^{name}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)$", done.stdout, re.M)
        assert line, done.stdout
        assert (float(line.group(1)), float(line.group(2)), int(line.group(5))) == (
            round(expected["l1"], 2), round(expected["psnr_db"], 2), expected["pixels"])
    assert (out / "quicklook.png").read_bytes().startswith(b"\x89PNG")
