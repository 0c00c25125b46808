"""Import model as a user runs it: Processing in-process and ``qgis_process.bin``.

The networks and the reference output are made in the engine interpreter (TensorFlow never loads
in this process): a small conv net, saved as ``.keras`` and as a SavedModel, and its response on
the crop padded with ``np.pad`` (reflect), computed there with one network call.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from ..conftest import PLUGINPATH
from .conftest import ENGINE_PYTHON

MEAN, STD = [60.0, 50.0, 40.0], [20.0, 15.0, 25.0]
BUILD_NETWORKS = """
import sys
import numpy as np
from osgeo import gdal
from deepfield.engine.device import tensorflow
tensorflow()
import keras
folder = sys.argv[1]
keras.utils.set_random_seed(0)
x = keras.Input((None, None, 3), name="image")
y = keras.layers.Conv2D(6, 3, activation="relu")(x)  # valid 3x3 twice: 2 context pixels each side
model = keras.Model(x, keras.layers.Conv2D(2, 3, activation="softmax")(y))
model.save(folder + "/net.keras")
model.export(folder + "/savedmodel")
dataset = gdal.Open(folder + "/crop.tif")
image = np.stack([dataset.GetRasterBand(b + 1).ReadAsArray() for b in range(3)], -1).astype("float32")
image = (image - np.float32(%r)) / np.float32(%r)
padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="reflect")
np.save(folder + "/reference.npy", model(padded[None]).numpy()[0])
""" % (MEAN, STD)


@pytest.fixture(scope="module")
def networks(data_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("import")
    source = str(data_dir / "nc_landsat7_landcover" / "landsat_multiband.tif")
    assert gdal.Translate(str(folder / "crop.tif"), source, srcWin=[200, 150, 41, 33], bandList=[1, 2, 3])
    env = {**os.environ, "PYTHONPATH": str(PLUGINPATH), "TF_CPP_MIN_LOG_LEVEL": "3"}
    built = subprocess.run([ENGINE_PYTHON, "-c", BUILD_NETWORKS, str(folder)], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    return folder


def read(path) -> np.ndarray:
    dataset = gdal.Open(str(path))
    return np.stack([dataset.GetRasterBand(b + 1).ReadAsArray() for b in range(dataset.RasterCount)], -1)


def test_imported_keras_network_is_applied_like_the_network(qgis_app, networks, tmp_path):
    import processing

    model = tmp_path / "model"
    result = processing.run("deepfield:importmodel", {
        "NETWORK": str(networks / "net.keras"), "TASK": 1, "SOURCES": "landsat:3",
        "CLASSES": "1=water:#1f78b4, 2=forest", "RECEPTIVE_FIELDS": "5",
        "NORMALISATION": json.dumps({"landsat": {"mean": MEAN, "std": STD}}), "OUTPUT": str(model)})
    assert result["MODEL"] == str(model)
    meta = json.loads((model / "deepfield.json").read_text())
    assert [(i["name"], i["bands"], i["rf"]) for i in meta["inputs"]] == [("landsat", 3, 5)]
    assert [c["name"] for c in meta["classes"]] == ["water", "forest"]
    assert meta["normalisation"]["landsat"]["std"] == STD
    applied = processing.run("deepfield:applymodel", {
        "MODEL": str(model), "SOURCES": [str(networks / "crop.tif")], "OUTPUTS": [2], "TILE_SIZE": 8,
        "OUTPUT": str(tmp_path / "probabilities.tif")})
    reference = np.load(networks / "reference.npy")
    assert np.abs(read(applied["OUTPUT"]) - reference).max() <= 1e-5


def test_a_savedmodel_is_imported_with_qgis_process(qgis_app, qgis_process, networks, tmp_path):
    import processing

    model = tmp_path / "from_savedmodel"
    result = qgis_process.run("deepfield:importmodel", {
        "SAVED_MODEL": str(networks / "savedmodel"), "TASK": 1, "SOURCES": "landsat:3:1",
        "CLASSES": "1=water, 2=forest", "OUTPUT": str(model)})
    assert result["MODEL"] == str(model)
    assert sorted(p.name for p in model.iterdir()) == ["custom.py", "deepfield.json", "model.keras", "savedmodel"]
    meta = json.loads((model / "deepfield.json").read_text())
    assert (meta["ef"], meta["sf"], meta["inputs"][0]["rf"], meta["training"]["format"]) == (1, "1", 5, "savedmodel")
    described = processing.run("deepfield:describemodel", {"MODEL": str(model), "TILE_SIZE": 16})
    assert "landsat: 3 band(s), scale 1, RF 5 px" in described["TEXT"]


def test_errors_are_clear_and_write_nothing(qgis_app, networks, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="source 'landsat' has 4 band\\(s\\) but network input "
                                                     "'image' takes 3"):
        processing.run("deepfield:importmodel", {"NETWORK": str(networks / "net.keras"), "TASK": 2,
                                                 "SOURCES": "landsat:4", "OUTPUT": str(tmp_path / "m1")})
    with pytest.raises(QgsProcessingException, match="either a Keras network file or a SavedModel folder"):
        processing.run("deepfield:importmodel", {"NETWORK": str(networks / "net.keras"), "TASK": 2,
                                                 "SAVED_MODEL": str(networks / "savedmodel"),
                                                 "SOURCES": "landsat", "OUTPUT": str(tmp_path / "m2")})
    with pytest.raises(QgsProcessingException, match="Source 'landsat:three': the band count 'three'"):
        processing.run("deepfield:importmodel", {"NETWORK": str(networks / "net.keras"), "TASK": 2,
                                                 "SOURCES": "landsat:three", "OUTPUT": str(tmp_path / "m4")})
    with pytest.raises(QgsProcessingException, match="SF 2 declared, the model's is 1") as caught:
        processing.run("deepfield:importmodel", {"NETWORK": str(networks / "net.keras"), "TASK": 2,
                                                 "SOURCES": "landsat", "EXPRESSION_FIELD": 1, "SPACING_SCALE": "2",
                                                 "OUTPUT": str(tmp_path / "m3")})
    assert "Traceback" not in str(caught.value)
    assert not list(tmp_path.iterdir())
