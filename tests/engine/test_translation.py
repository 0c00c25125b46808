"""Image translation (the ``translation`` zoo entry, pix2pix): NC Landsat-7 to a rendering of its
land-cover map in class colours, trained with the conditional PatchGAN critic and served exactly
(tiny tiles == one tile == one call of the network on the padded image)."""

import io
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.dataset import open_dataset
from deepfield.engine.jobs.apply_model import run as apply_model_job
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.jobs.train_model import run as train_model_job
from deepfield.engine.modelfolder import load_model_folder
from deepfield.engine.protocol import Reporter
from deepfield.engine.training import Task, TrainConfig
from deepfield.engine.training.loop import build_models

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from demo_data import render_classes

NC = "nc_landsat7_landcover"
TINY = {"depth": 2, "width": 8, "discriminator_width": 8, "discriminator_levels": 2}


def quiet() -> Reporter:
    return Reporter(io.StringIO(), min_interval_s=0.0)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("translation")


@pytest.fixture(scope="module")
def dataset(work, data_dir):
    """32-px grid patches of the NC image (6 bands) with their 32-px RGB rendering of strata.tif,
    split by 64-px blocks."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    target = render_classes(data_dir / NC / "strata.tif", work / "strata_rgb.tif")
    select_samples_job({"raster": image, "strategy": "grid", "patch_size": 32, "step": 32, "seed": 1,
                        "split": {"train": 0.6, "valid": 0.2, "test": 0.2}, "split_mode": "blocks",
                        "block_size": 64 * 28.5, "output": str(work / "grid.gpkg")}, quiet())
    extract_patches_job({"sources": [{"path": image, "patch_size": 32, "name": "landsat"}],
                         "label": {"kind": "image", "path": str(target), "patch_size": 32},
                         "positions": str(work / "grid.gpkg"), "output": str(work / "patches")}, quiet())
    return work / "patches"


@pytest.fixture(scope="module")
def gan_model(work, dataset):
    output = work / "translation_gan"
    result = train_model_job({"dataset": str(dataset), "architecture": "translation", "gan": True, "epochs": 2,
                              "batch_size": 8, "seed": 3, "adversarial_weight": 1.0, "hyperparameters": TINY,
                              "output": str(output)}, quiet())
    return output, result


def test_the_critic_is_conditional_it_sees_the_image_and_the_rendering(dataset, work):
    config = TrainConfig.from_dict({"dataset": str(dataset), "architecture": "translation", "gan": True,
                                    "hyperparameters": TINY, "output": str(work / "unused")})
    models = build_models(config, Task.from_manifest(open_dataset(dataset).manifest), quiet())
    trainer = models.view.model
    assert trainer.conditional
    assert [tuple(t.shape[1:]) for t in trainer.critic.inputs] == [(None, None, 6), (None, None, 3)]
    assert models.saved == [models.network, trainer.critic]


def test_translation_with_the_adversarial_loss_writes_an_image_model(gan_model):
    import csv

    output, result = gan_model
    with open(output / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for column in ("loss", "adversarial", "discriminator_loss", "val_psnr"):
        assert np.isfinite(float(rows[-1][column])), column
    assert "val_psnr_bicubic" not in rows[-1]  # no bicubic baseline: 6 bands in, 3 out
    assert result["best"]["val_psnr"] > 5
    metadata = load_model_folder(output).metadata
    assert metadata.task == "regression" and metadata.sf == Fraction(1) and metadata.geometry.ef == 4


def test_translation_is_served_exactly(gan_model, work, data_dir):
    """Tiny tiles == one tile == the network called once on the reflect-padded image."""
    folder = gan_model[0]
    crop = work / "crop.tif"
    gdal.Translate(str(crop), str(data_dir / NC / "lsat7_2000_6band.vrt"), srcWin=[100, 120, 72, 56])
    maps = []
    for tile in (8, 512):
        output = work / f"served_{tile}.tif"
        apply_model_job({"model": str(folder), "sources": [str(crop)], "output": str(output), "tile_size": tile},
                        quiet())
        maps.append(gdal.Open(str(output)).ReadAsArray())
    assert maps[0].shape == (3, 56, 72)
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-4)
    network = load_model_folder(folder).model
    image = gdal.Open(str(crop)).ReadAsArray().transpose(1, 2, 0).astype(np.float32)
    pad = 128  # > the receptive field, a multiple of the network's period
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    whole = np.asarray(network(padded[None], training=False))[0, pad:pad + 56, pad:pad + 72]
    np.testing.assert_allclose(maps[0].transpose(1, 2, 0), whole, atol=1e-4)
