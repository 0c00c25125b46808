"""`make demo`'s chains (scripts/demo.py --quick, and --app for each other application), through qgis_process.bin."""

import json
import re
import subprocess
import sys

import pytest
from osgeo import gdal

from ..conftest import REPO


def run_demo(out, *arguments) -> str:
    """``scripts/demo.py --quick --out <out> <arguments>``: what it printed (it must succeed)."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--quick", "--out", str(out),
                           *arguments], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_quick_demo_runs_the_chain_and_prints_the_scores(tmp_path, data_dir):
    out = tmp_path / "demo"
    printed = run_demo(out)
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    # the table names every class and repeats the JSON's numbers
    for row in metrics["classes"]:
        line = re.search(rf"^{row['name']}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)(\s+[\d.]+)?$", printed, re.M)
        assert line, f"no row for {row['name']} in:\n{printed}"
        assert float(line.group(3)) == round(100 * row["f1"], 1) and int(line.group(4)) == row["support"]
    assert [row["name"] for row in metrics["classes"]] == [
        "developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"]
    assert f"overall accuracy {100 * metrics['overall_accuracy']:.1f} %" in printed
    # the random forest's scores on the same test pixels, side by side (scikit-learn is a dev dependency)
    forest = re.search(r"^random forest:\s+overall accuracy ([\d.]+) %, kappa [-\d.]+, macro F-score ([\d.]+) %$",
                       printed, re.M)
    assert forest and 0 < float(forest.group(1)) <= 100, printed
    assert re.search(r"^forest\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+\s+[\d.]+$", printed, re.M)  # its F column
    # the class map lies on the image's grid, styled with the class names
    image = gdal.Open(str(data_dir / "nc_landsat7_landcover/lsat7_2000_6band.vrt"))
    class_map = gdal.Open(str(out / "landcover.tif"))
    assert class_map.GetGeoTransform() == image.GetGeoTransform()
    assert gdal.Open(str(out / "landsat_on_labels.vrt")).GetGeoTransform() == image.GetGeoTransform()  # the moved image
    assert (class_map.RasterXSize, class_map.RasterYSize) == (image.RasterXSize, image.RasterYSize)
    assert class_map.GetRasterBand(1).GetCategoryNames()[5] == "forest"
    assert (out / "landcover.qml").exists() and (out / "landcover_confidence.tif").exists()
    assert (out / "model" / "training_curves.png").exists() and (out / "evaluation" / "report.html").exists()


#: Per application of ``make demo APP=...``: a line its score table prints, and files it writes.
APP_DEMOS = {
    "buildings": (r"^pan only\s+building\s+[\d.]+\s+[\d.]+\s+[\d.]+$",
                  ["two_sources/building_map.tif", "two_sources/footprints.gpkg", "pan_only/building_map.tif",
                   "forest/forest_value.tif"]),
    "translation": (r"^gan\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+\s+\d+$",
                    ["strata_rendered.tif", "gan/translated.tif", "l1_only/translated.tif", "quicklook.png"]),
    "enhancement": (r"^L1 \+ GAN\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$",
                    ["gan/enhanced.tif", "l1_enhanced.tif", "scores.json", "quicklook.png"]),
}


@pytest.mark.parametrize("app", sorted(APP_DEMOS))
def test_each_application_demo_runs_quick(app, tmp_path, data_dir):
    """``make demo APP=<app>`` (``--quick``): the chain runs, prints its scores and writes its products."""
    out = tmp_path / app
    printed = run_demo(out, "--app", app)
    score_line, products = APP_DEMOS[app]
    assert re.search(score_line, printed, re.M), printed
    for product in products:
        assert (out / product).stat().st_size > 0, product
        assert str(out / product) in printed, f"{product} is not in the printed list of outputs"
