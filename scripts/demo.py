"""``make demo``: the whole DeepField chain on real data, headless, through ``qgis_process.bin``.

NC Landsat-7 (6 bands, 28.5 m) with the 1996 land-cover map ``strata.tif`` (7 classes):
co-register the image to the labels (they sit 1 px up and left of it) -> select samples on a grid
with a spatially disjoint split -> extract patches -> train a U-Net
(:data:`RECIPE`) -> apply it to the whole image -> evaluate the class map on the test split.
Prints the score table next to a per-pixel random forest's, trained on the same training pixels
and scored on the same test pixels (scripts/forest_baseline.py; skipped without scikit-learn),
and where the outputs are. ``--quick`` runs a small version (for tests).

``--app NAME`` (``make demo APP=NAME``) runs another application's demo instead: the module
``scripts/demo_NAME.py`` of each name in :data:`APPS` but ``landcover``, whose ``main(argv)`` takes
the same ``--quick`` and ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import NC_CLASSES, nc_landsat_folder
from qgis_headless import REPO, QgisProcess
from workflows.landcover import RECIPE

import forest_baseline as forest
from deepfield.engine.contract import CLASS_WEIGHTING  # on the path through forest_baseline

#: The applications ``make demo APP=...`` runs (``landcover``, this module, by default).
APPS = ("landcover", "buildings", "translation", "enhancement")

#: Indices of the algorithms' enum parameters (qgis_process 3.22 takes enum values as indices).
GRID_STRATEGY, SPATIAL_BLOCKS, SEGMENTATION_LABELS, UNET = 3, 1, 1, 3
CLASS_MAP, CONFIDENCE = 0, 1

SETTINGS = {
    "full": RECIPE,
    "quick": {"patch": 32, "step": 32, "crop": 0, "epochs": 2, "batch_size": 16, "learning_rate": 1e-3,
              "time_budget": 0.0, "class_weighting": "none", "ema_momentum": 0.0, "jit_compile": False,
              "patience": 0, "tta": False,
              "hyperparameters": {"depth": 2, "width": 4}},
}


def run_chain(out: Path, quick: bool = False, log=print) -> dict:
    """Run the six steps; return each step's results and the evaluation metrics."""
    settings = SETTINGS["quick" if quick else "full"]
    data = nc_landsat_folder()
    image, labels = data / "lsat7_2000_6band.vrt", data / "strata.tif"
    out.mkdir(parents=True, exist_ok=True)
    qgis = QgisProcess(out / "qgis-home")
    steps: dict = {}

    def step(name: str, algorithm: str, parameters: dict) -> dict:
        log(f"[{time.strftime('%H:%M:%S')}] {name} ({algorithm}) ...")
        started = time.monotonic()
        steps[name] = qgis.run(algorithm, parameters, timeout=3600)
        log(f"    done in {time.monotonic() - started:.0f} s")
        return steps[name]

    # the labels sit 1 px up and left of the image: every step uses the image moved onto them
    image = Path(step("co-register image to labels", "deepfield:coregisterimage", {
        "INPUT": image, "LABELS": labels, "OUTPUT": out / "landsat_on_labels.vrt"})["OUTPUT"])
    samples = step("select samples", "deepfield:selectsamples", {
        "INPUT": image, "STRATEGY": GRID_STRATEGY, "LABEL_RASTER": labels, "PATCH_SIZE": settings["patch"],
        "STEP": settings["step"], "SPLIT_MODE": SPATIAL_BLOCKS, "BLOCK_SIZE": 128 * 28.5,
        "TRAIN": 0.7, "VALID": 0.15, "TEST": 0.15, "SEED": 0,
        "OUTPUT": out / "positions.gpkg", "REPORT": out / "class_balance.csv", "BLOCKS": out / "blocks.gpkg"})
    step("extract patches", "deepfield:extractpatches", {
        "SOURCES": image, "PATCH_SIZES": str(settings["patch"]), "NAMES": "landsat", "POSITIONS": samples["OUTPUT"],
        "LABEL_KIND": SEGMENTATION_LABELS, "LABEL_RASTER": labels, "OUTPUT": out / "dataset",
        "CLASSES": ",".join(f"{value}={name}:{color}" for value, name, color in NC_CLASSES)})
    trained = step("train model", "deepfield:trainmodel", {
        "DATASET": out / "dataset", "ARCHITECTURE": UNET, "EPOCHS": settings["epochs"],
        "TIME_BUDGET": settings["time_budget"], "CROP_SIZE": settings["crop"],
        "BATCH_SIZE": settings["batch_size"], "LEARNING_RATE": settings["learning_rate"], "AUGMENT": True,
        "CLASS_WEIGHTING": CLASS_WEIGHTING.index(settings["class_weighting"]), "EMA_MOMENTUM": settings["ema_momentum"],
        "JIT_COMPILE": settings["jit_compile"], "EARLY_STOPPING": settings["patience"],
        "SEED": 0, "HYPERPARAMETERS": json.dumps(settings["hyperparameters"]), "OUTPUT": out / "model"})
    applied = step("apply model", "deepfield:applymodel", {
        "MODEL": trained["MODEL"], "SOURCES": image, "OUTPUTS": f"{CLASS_MAP},{CONFIDENCE}", "TTA": settings["tta"],
        "OUTPUT": out / "landcover.tif"})
    test_blocks = step("keep the test blocks", "native:extractbyattribute", {
        "INPUT": samples["BLOCKS"], "FIELD": "split", "OPERATOR": 0, "VALUE": "test",
        "OUTPUT": out / "test_blocks.gpkg"})
    step("evaluate map", "deepfield:evaluatemap", {
        "INPUT": applied["OUTPUT"], "REFERENCE_RASTER": labels, "MASK": test_blocks["OUTPUT"],
        "OUTPUT_FOLDER": out / "evaluation"})
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    return {"steps": steps, "metrics": metrics, "comparison": comparison(out, image, labels, applied["OUTPUT"], log)}


def comparison(out: Path, image: Path, labels: Path, class_map: str, log=print) -> dict | None:
    """DeepField's map and a per-pixel random forest on the same test pixels (None without scikit-learn)."""
    if not forest.forest_available():
        return None
    log(f"[{time.strftime('%H:%M:%S')}] random forest ({forest.TREES} trees) on the same pixels ...")
    values = [value for value, _, _ in NC_CLASSES]
    stack, reference = forest.scene(str(image), str(labels), values)
    splits = forest.rasterized_splits(str(out / "blocks.gpkg"), str(image))
    return {"deepfield": forest.map_scores(class_map, reference, splits, values),
            "random_forest": forest.forest_scores(stack, reference, splits, values)}


def score_table(metrics: dict, baseline: dict | None = None) -> str:
    """Per-class precision / recall / F-score (percent) and the overall scores, as text; with
    ``baseline`` (the forest's scores), its F-scores and overall scores side by side."""
    head = f"{'class':<14}{'precision':>10}{'recall':>10}{'F-score':>10}{'pixels':>10}"
    lines = [head + (f"{'forest F':>10}" if baseline else "")]
    for row in metrics["classes"]:
        line = (f"{row['name']:<14}{100 * row['precision']:>10.1f}{100 * row['recall']:>10.1f}"
                f"{100 * row['f1']:>10.1f}{row['support']:>10}")
        if baseline and row["value"] in baseline["classes"]:
            line += f"{100 * baseline['per_class']['f1'][baseline['classes'].index(row['value'])]:>10.1f}"
        lines.append(line)
    for name, scores in (("DeepField", metrics), ("random forest", baseline)):
        if scores:
            lines.append(f"{name + ':':<15}overall accuracy {100 * scores['overall_accuracy']:.1f} %, "
                         f"kappa {scores['kappa']:.3f}, macro F-score {100 * scores['macro_f1']:.1f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast settings (tests)")
    parser.add_argument("--out", type=Path, default=REPO / ".build" / "demo", help="output folder")
    parser.add_argument("--app", choices=APPS, default="landcover", help="the application to run")
    args, rest = parser.parse_known_args(argv)
    if args.app != "landcover":
        return importlib.import_module(f"demo_{args.app}").main(
            [*rest, *(["--quick"] if args.quick else []), "--out", str(args.out)])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    started = time.monotonic()
    result = run_chain(args.out, quick=args.quick)
    print("\nLand-cover map scores on the test split (reference: strata.tif, 1996 land cover):")
    compared = result["comparison"]
    if compared is None:
        print(score_table(result["metrics"]))
        print("random forest baseline skipped: scikit-learn is not installed (pip install -r requirements-dev.txt)")
    else:
        print(score_table(result["metrics"], compared["random_forest"]))
        print(f"(random forest: {compared['random_forest']['training_pixels']} training pixels of the train blocks, "
              f"{compared['random_forest']['samples']} test pixels, the ones DeepField is scored on)")
    print(f"\nOutputs in {args.out}:")
    for name in ("landsat_on_labels.vrt", "positions.gpkg", "dataset", "model", "landcover.tif",
                 "landcover_confidence.tif", "evaluation/report.html"):
        print(f"  {args.out / name}")
    print(f"Finished in {(time.monotonic() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
