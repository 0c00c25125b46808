"""``make demo APP=buildings``: a building map from two resolutions on SpaceNet Atlanta, headless,
through ``qgis_process.bin``, scored against the single-source chain and a random forest.

Data (``spacenet_solaris``): the Atlanta pan image (0.5 m, 900 x 900) and its 43 building
footprints, given a text class field ``class`` = ``building`` (:func:`demo_data.building_inputs`).
Atlanta has no multispectral image and the Rotterdam pan + MS pairs have no building labels, so the
second, coarser source is derived from the pan itself: its mean over 4 x 4 pixels (2 m), written into
the output folder. It adds coarse context at scale 4, not new spectral information.

Maps, all on the same spatial split (Select samples' grid and blocks at their defaults, so both
chains make the very same split; checked):

- **two sources**: the building workflow (processing_models/building_workflow.model3) at its
  defaults: pan + pan 2 m, a U-Net fed by both, footprints by Vectorise class map;
- **pan only**: the default chain (Select samples grid, Extract patches with the polygons and a
  background class, Train model, Apply model at their defaults), vectorised the same way;
- **random forest** (scripts/forest_baseline.py) on the pan value, and on the value with its 3 x 3
  and 7 x 7 neighbourhood means, trained on the train blocks' pixels, applied to the whole image and
  vectorised the same way.

Scores on the test blocks (scripts/building_scores.py): per-class pixel precision / recall / F and
the footprints' object F1 (IoU >= 0.5). ``--quick`` runs a small version; ``--minutes`` sets the
training time budget of both networks (default: Train model's, 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import building_scores as scoring
import forest_baseline as forest
from demo_data import building_inputs
from qgis_headless import REPO, QgisProcess

WORKFLOW = REPO / "processing_models" / "building_workflow.model3"
GRID, SEGMENTATION = 3, 1  # Select samples strategy, Extract patches label kind (enum indices)
#: The workflow's defaults (scripts/workflows/buildings.py) and a small version for a quick run.
SETTINGS = {"full": {"time_budget": 10.0, "epochs": 100, "grid_step": 0, "hyperparameters": ""},
            "quick": {"time_budget": 0.0, "epochs": 1, "grid_step": 64, "hyperparameters": '{"depth": 2, "width": 4}'}}
QUICK_TREES = 10  # the forests' trees in a quick run (forest_baseline.TREES otherwise)
MIN_AREA = 10.0  # m², the workflow's default
MAPS = ("two sources (pan + pan 2 m)", "pan only", "forest (value)", "forest (value + 3x3, 7x7 means)")


def run_chains(out: Path, quick: bool = False, minutes: float | None = None, log=print) -> dict:
    """Both chains and the forests; returns the scores of each map (:data:`MAPS`) and the settings."""
    settings = dict(SETTINGS["quick" if quick else "full"])
    if minutes is not None:
        settings["time_budget"] = minutes
    data = building_inputs(out / "inputs")
    qgis = QgisProcess(out / "qgis-home")
    seconds = {}

    def step(name: str, algorithm, parameters: dict) -> dict:
        log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        started = time.monotonic()
        result = qgis.run(algorithm, parameters, timeout=7200)
        seconds[name] = round(time.monotonic() - started, 1)
        log(f"    done in {seconds[name]:.0f} s")
        return result

    fusion = out / "two_sources"
    step("building workflow (pan + pan 2 m)", WORKFLOW, {
        "pan": data["pan"], "ms": data["coarse"], "buildings": data["buildings"], "output_folder": fusion,
        "min_area": MIN_AREA, **settings})
    pan = out / "pan_only"
    samples = step("select samples", "deepfield:selectsamples", {
        "INPUT": data["pan"], "STRATEGY": GRID, "STEP": settings["grid_step"], "OUTPUT": pan / "samples.gpkg",
        "BLOCKS": pan / "blocks.gpkg"})
    if _blocks(fusion / "blocks.gpkg") != _blocks(pan / "blocks.gpkg"):
        raise SystemExit("the two chains' Select samples made different splits: the maps cannot be compared")
    step("extract patches (pan)", "deepfield:extractpatches", {
        "SOURCES": data["pan"], "POSITIONS": samples["OUTPUT"], "LABEL_KIND": SEGMENTATION,
        "LABEL_POLYGONS": data["buildings"], "LABEL_POLYGON_FIELD": "class", "LABEL_BACKGROUND": "background",
        "OUTPUT": pan / "dataset"})
    step("train model (pan)", "deepfield:trainmodel", {
        "DATASET": pan / "dataset", "TIME_BUDGET": settings["time_budget"], "EPOCHS": settings["epochs"],
        "HYPERPARAMETERS": settings["hyperparameters"], "OUTPUT": pan / "model"})
    step("apply model (pan)", "deepfield:applymodel", {"MODEL": pan / "model", "SOURCES": data["pan"],
                                                       "OUTPUT": pan / "building_map.tif"})
    maps = {MAPS[0]: fusion / "building_map.tif", MAPS[1]: pan / "building_map.tif"}
    forests = {}
    if forest.forest_available():
        trees = QUICK_TREES if quick else forest.TREES
        log(f"[{time.strftime('%H:%M:%S')}] random forests ({trees} trees) ...")
        forests = forest_maps(out / "forest", data, pan / "blocks.gpkg", trees)
        maps.update({MAPS[2]: forests["value"]["map"], MAPS[3]: forests["means"]["map"]})
    scores = {}
    for name, class_map in maps.items():
        footprints = Path(class_map).with_name(Path(class_map).stem + "_footprints.gpkg")
        if name == MAPS[0]:
            footprints = fusion / "footprints.gpkg"
        else:
            step(f"vectorise class map ({name})", "deepfield:vectorizeclassmap", {
                "INPUT": class_map, "MIN_AREA": MIN_AREA, "SKIP_VALUES": str(scoring.BACKGROUND), "OUTPUT": footprints})
        scores[name] = {**scoring.score_map(class_map, footprints, data["buildings"], pan / "blocks.gpkg"),
                        "map": str(class_map), "footprints": str(footprints)}
    trained = {name: json.loads((folder / "model" / "deepfield.json").read_text())["training"]
               for name, folder in ((MAPS[0], fusion), (MAPS[1], pan))}
    for name, training in trained.items():
        scores[name]["training"] = {k: training[k] for k in ("epochs_done", "best_epoch")}
        scores[name]["architecture"] = training["config"]["architecture"]
    for key, name in (("value", MAPS[2]), ("means", MAPS[3])):
        if key in forests:
            scores[name]["training_pixels"] = forests[key]["training_pixels"]
    return {"settings": settings, "scores": scores, "seconds": seconds}


def _blocks(path: Path) -> list:
    return sorted((g.ExportToWkt(), split) for g, split in
                  zip(scoring.polygons(path), _field(path, "split")))


def _field(path: Path, name: str) -> list:
    from osgeo import ogr

    source = ogr.Open(str(path))
    return [feature.GetField(name) for feature in source.GetLayer(0)]


def forest_maps(work: Path, data: dict, blocks: Path, trees: int) -> dict:
    """The two forests' (``trees`` trees each) class maps of the whole image (GeoTIFFs in ``work``, 1 building, 0 background)."""
    from osgeo import gdal

    work.mkdir(parents=True, exist_ok=True)
    pan = gdal.Open(data["pan"])
    stack = pan.ReadAsArray().astype(np.float32)[..., None]
    # the forest helpers count labels > 0: background 1, building 2 while training
    labels = scoring.burn(data["pan"], scoring.polygons(data["buildings"]), scoring.BUILDING).astype(np.int64) + 1
    splits = forest.rasterized_splits(str(blocks), data["pan"])
    maps = {}
    for key, features in (("value", stack), ("means", forest.neighbourhood_means(stack))):
        fitted, pixels = forest.train_forest(features, labels, splits, trees=trees)
        predicted = fitted.predict(features.reshape(-1, features.shape[-1])).reshape(labels.shape) - 1
        path = work / f"forest_{key}.tif"
        written = gdal.Translate(str(path), pan, outputType=gdal.GDT_Byte, noData=255)
        written.GetRasterBand(1).WriteArray(predicted.astype(np.uint8))
        del written
        maps[key] = {"map": str(path), "training_pixels": pixels}
    return maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast settings (tests)")
    parser.add_argument("--out", type=Path, default=REPO / ".build" / "demo-buildings", help="output folder")
    parser.add_argument("--minutes", type=float, default=None, help="training time budget of each network")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run_chains(args.out, quick=args.quick, minutes=args.minutes)
    print("\nBuilding map scores on the test blocks (reference: the SpaceNet footprints; outside: background):")
    print(scoring.table(result["scores"]))
    if not forest.forest_available():
        print("random forest baselines skipped: scikit-learn is not installed (pip install -r requirements-dev.txt)")
    print("(the second source is the pan image averaged to 2 m: Atlanta has no multispectral image)")
    print(f"\nOutputs in {args.out}:")
    for scores in result["scores"].values():
        print(f"  {scores['map']}\n  {scores['footprints']}")
    print(f"Finished in {(time.monotonic() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
