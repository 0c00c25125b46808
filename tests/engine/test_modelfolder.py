"""The model folder: metadata schema, atomic save, load with validation, describe_model job."""

import io
import json
import shutil
from fractions import Fraction

import numpy as np
import pytest

from deepfield.engine.device import tensorflow
from deepfield.engine.fields import call_model, derive_geometry
from deepfield.engine.jobs import get_job
from deepfield.engine.modelfolder import (
    METADATA, MODEL, ModelMetadata, load_model_folder, read_metadata, save_model_folder)
from deepfield.engine.errors import InvalidSpec, NotAModelFolder
from deepfield.engine.outputs import MARKER
from deepfield.engine.protocol import EngineError, Reporter

tensorflow()
import keras  # noqa: E402  (after engine.device configured TensorFlow)

L = keras.layers
CLASSES = [{"index": 0, "value": 1, "name": "water", "color": "#1F78B4"},
           {"index": 1, "value": 4, "name": "forest", "color": "#33a02c"},
           {"index": 2, "value": 7, "name": "urban", "color": "#e31a1c"}]
SOURCES = [{"name": "pan", "bands": 1, "scale": "1", "nodata": [0], "mean": [10.0], "std": [2.0], "spacing": [1.5, 1.5]},
           {"name": "ms", "bands": 4, "scale": "2", "mean": [1, 2, 3, 4], "std": [1, 1, 2, 2]}]


def fusion_network():
    inputs = {s["name"]: keras.Input((None, None, s["bands"]), name=s["name"]) for s in SOURCES}
    pan = L.Conv2D(4, 3, padding="same", activation="relu")(inputs["pan"])
    ms = L.UpSampling2D(2)(L.Conv2D(4, 3, padding="same", activation="relu")(inputs["ms"]))
    out = L.Conv2D(3, 1, activation="softmax", name="probabilities")(L.Concatenate()([pan, ms]))
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def network():
    return fusion_network()


@pytest.fixture(scope="module")
def metadata(network):
    return ModelMetadata.for_model(network, "segmentation", classes=CLASSES, sources=SOURCES,
                                   training={"epochs": 2, "note": "test"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory, network, metadata):
    return save_model_folder(tmp_path_factory.mktemp("models") / "fusion", network, metadata)


def broken_copy(folder, tmp_path, edit=None, remove=None):
    """A copy of the model folder with its metadata edited (``edit(doc)``) or a file removed."""
    copy = tmp_path / "broken"
    shutil.copytree(folder, copy)
    if remove:
        (copy / remove).unlink()
    if edit:
        doc = json.loads((copy / METADATA).read_text())
        edit(doc)
        (copy / METADATA).write_text(json.dumps(doc))
    return copy


def test_metadata_from_the_network(network, metadata):
    geometry = derive_geometry(network, [1, 2])
    assert metadata.geometry == geometry
    assert metadata.task == "segmentation"
    assert [(i.name, i.bands, i.scale, i.nodata) for i in metadata.inputs] == [
        ("pan", 1, 1, (0.0,)), ("ms", 4, 2, None)]
    assert [(o.name, o.kind, o.bands) for o in metadata.outputs] == [("probabilities", "probabilities", 3)]
    assert [(c.value, c.color) for c in metadata.classes] == [(1, "#1f78b4"), (4, "#33a02c"), (7, "#e31a1c")]
    assert metadata.normalisation["ms"] == {"mean": [1.0, 2.0, 3.0, 4.0], "std": [1.0, 1.0, 2.0, 2.0]}


def test_round_trip(folder, network, metadata):
    doc = json.loads((folder / METADATA).read_text())
    assert doc["format"] == "deepfield-model" and doc["version"] == 1
    assert doc["sf"] == "1" and doc["inputs"][1]["scale"] == "2" and doc["inputs"][0]["nodata"] == [0.0]
    assert doc["inputs"][0]["spacing"] == [1.5, 1.5] and "spacing" not in doc["inputs"][1]  # as trained / unknown
    assert read_metadata(folder) == metadata
    loaded = load_model_folder(folder)
    assert loaded.metadata == metadata
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(1, 12, 12, 1)).astype("float32"), rng.normal(size=(1, 6, 6, 4)).astype("float32")]
    np.testing.assert_allclose(call_model(loaded.model, arrays)[0], call_model(network, arrays)[0], atol=1e-6)
    assert not (folder.parent / "fusion.part").exists()


def test_save_replaces_atomically_and_refuses_inconsistent_metadata(tmp_path, network, metadata):
    target = tmp_path / "model"
    save_model_folder(target, network, metadata)
    (target / "stale.txt").write_text("old")
    save_model_folder(target, network, metadata)
    assert sorted(p.name for p in target.iterdir()) == [MARKER, METADATA, MODEL]  # DeepField's folder
    wrong = ModelMetadata(metadata.task, metadata.inputs[:1], metadata.ef, metadata.sf, metadata.crop,
                          metadata.outputs, metadata.classes)
    with pytest.raises(EngineError, match="lists 1 inputs, the model has 2"):
        save_model_folder(tmp_path / "other", network, wrong)
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.part").exists()


#: The broken folders below that are not model folders at all (the rest are inconsistent ones).
NOT_A_MODEL_FOLDER = {"deepfield.json is missing", "model file model.keras is missing", "version 2 is not supported",
                      "not a DeepField model description"}


@pytest.mark.parametrize("edit, remove, message", [
    (None, METADATA, "deepfield.json is missing"),
    (None, MODEL, "model file model.keras is missing"),
    (lambda d: d.update(version=2), None, "version 2 is not supported"),
    (lambda d: d.update(format="something"), None, "not a DeepField model description"),
    (lambda d: d.pop("ef"), None, "missing field 'ef'"),
    (lambda d: d["inputs"][0].pop("rf"), None, r"inputs\[0\]: missing field 'rf'"),
    (lambda d: d.update(tiles_size=256), None, "unknown field"),
    (lambda d: (d["inputs"][1].update(bands=3), d["normalisation"].pop("ms")), None,
     "input 'ms' has 3 bands in the metadata, 4 in the model"),
    (lambda d: (d["inputs"].pop(), d["normalisation"].pop("ms")), None, "lists 1 inputs, the model has 2"),
    (lambda d: (d["outputs"][0].update(bands=5), d.update(classes=[])), None,
     "'probabilities' has 5 bands in the metadata"),
    (lambda d: d["inputs"][0].update(rf=9), None, "RF 9 declared, the model's is"),
    (lambda d: d.update(sf="2"), None, "SF 2 declared, the model's is 1"),
    (lambda d: d.update(sf="1/0"), None, "'sf' must be a fraction"),
    (lambda d: d["classes"][0].update(color="blue"), None, "must be \"#rrggbb\""),
    (lambda d: d["classes"].pop(), None, "2 classes for output 'probabilities' of 3 channels"),
    (lambda d: d.update(task="detection"), None, "task 'detection' is not one of"),
    (lambda d: d["normalisation"]["ms"].update(mean=[0]), None, "normalisation.ms.mean must list 4 values"),
])
def test_broken_folders(folder, tmp_path, edit, remove, message):
    with pytest.raises(EngineError, match=message) as caught:
        load_model_folder(broken_copy(folder, tmp_path, edit, remove))
    assert isinstance(caught.value, NotAModelFolder) == (message in NOT_A_MODEL_FOLDER)


def test_not_json(folder, tmp_path):
    copy = broken_copy(folder, tmp_path)
    (copy / METADATA).write_text("{not json")
    with pytest.raises(NotAModelFolder, match="not valid JSON"):
        read_metadata(copy)
    with pytest.raises(NotAModelFolder, match="model folder not found"):
        read_metadata(tmp_path / "nowhere")


def test_custom_code_is_imported_before_loading(tmp_path):
    code = tmp_path / "layers.py"
    code.write_text(
        "import keras\n"
        "@keras.saving.register_keras_serializable(package='deepfield_test')\n"
        "class Double(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2 * x\n")
    namespace = {}
    exec(code.read_text(), namespace)  # the training process has the layer registered
    x = keras.Input((None, None, 2), name="img")
    model = keras.Model(x, namespace["Double"]()(L.Conv2D(2, 3)(x)))
    metadata = ModelMetadata.for_model(model, "regression")
    save_model_folder(tmp_path / "custom", model, metadata, custom_code=code)
    del keras.saving.get_custom_objects()["deepfield_test>Double"]  # a fresh serving process
    loaded = load_model_folder(tmp_path / "custom")
    assert loaded.metadata.geometry.sources[0].rf == 3
    assert loaded.metadata.outputs[0].kind == "regression"


def test_describe_model_job(folder, tmp_path):
    stream = io.StringIO()
    text_file = tmp_path / "description.txt"
    result = get_job("describe_model")({"model": str(folder), "tile_size": 64, "output": str(text_file)},
                                       Reporter(stream, min_interval_s=0))
    assert result["derived"]["ef"] == 2 and result["derived"]["rf"] == [s.rf for s in
                                                                       read_metadata(folder).geometry.sources]
    assert "pan: reads" in result["text"] and "ms: reads" in result["text"] and "Task: segmentation" in result["text"]
    geometry = read_metadata(folder).geometry
    assert f"reads {64 + geometry.sources[0].rf - 2} x" in result["text"]  # N + RF - EF reference pixels
    assert text_file.read_text().strip() == result["text"]
    assert '"type": "log"' in stream.getvalue()
    with pytest.raises(InvalidSpec, match="tile_size must be a positive integer"):
        get_job("describe_model")({"model": str(folder), "tile_size": -3}, Reporter(io.StringIO()))
    with pytest.raises(InvalidSpec, match="describe_model: unknown spec key\\(s\\) tile; known keys: model, tile_size"):
        get_job("describe_model")({"model": str(folder), "tile": 64}, Reporter(io.StringIO()))
    with pytest.raises(InvalidSpec, match="describe_model: memory_mb must be a positive number, not 'lots'"):
        get_job("describe_model")({"model": str(folder), "memory_mb": "lots"}, Reporter(io.StringIO()))


def write_raster(path, bands, size, spacing, seed):
    from osgeo import gdal, osr

    raster = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, gdal.GDT_Float32)
    raster.SetGeoTransform((500000.0, spacing, 0.0, 4000000.0, 0.0, -spacing))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    raster.SetProjection(srs.ExportToWkt())
    data = np.random.default_rng(seed).uniform(1, 100, (bands, size, size)).astype("float32")
    for band in range(bands):
        raster.GetRasterBand(band + 1).WriteArray(data[band])
    raster.FlushCache()
    return str(path)


def test_describe_with_tile_size_0_reports_the_tile_apply_model_picks(folder, tmp_path):
    sources = [write_raster(tmp_path / "pan.tif", 1, 128, 10.0, 1), write_raster(tmp_path / "ms.tif", 4, 64, 20.0, 2)]
    budget = {"memory_mb": 0.25}  # small enough that the automatic tile is smaller than the image
    described = get_job("describe_model")({"model": str(folder), "tile_size": 0, **budget}, Reporter(io.StringIO()))
    applied = get_job("apply_model")({"model": str(folder), "sources": sources, "output": str(tmp_path / "out.tif"),
                                      "tile_size": 0, **budget}, Reporter(io.StringIO()))
    # Apply model fits the tile to the image: never larger than the large-image tile Describe reports
    assert applied["tile_size"] <= described["tile"] < 128
    assert f"Tile of {described['tile']} x {described['tile']} output pixels" in described["text"]
    assert "as Apply model picks it for a 0.25 MB memory budget and a large image" in described["text"]
    default = get_job("describe_model")({"model": str(folder)}, Reporter(io.StringIO()))
    assert default["tile"] > described["tile"]  # half the memory available allows a larger tile


def test_broken_custom_code_names_the_file(folder, tmp_path):
    copy = broken_copy(folder, tmp_path)
    (copy / "custom.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(EngineError, match=r"custom.py: importing the model's custom code failed \(ModuleNotFound"):
        load_model_folder(copy)


def test_dataset_kinds_map_to_tasks():
    x = keras.Input((None, None, 3), name="lr")
    sr = keras.Model(x, L.Conv2DTranspose(3, 2, strides=2)(x))
    meta = ModelMetadata.for_model(sr, "image")
    assert meta.task == "super_resolution" and meta.sf == Fraction(1, 2) and meta.outputs[0].kind == "image"
    assert ModelMetadata.for_model(keras.Model(x, L.Conv2D(1, 1)(x)), "image").task == "regression"


def test_a_folder_without_training_spacing_still_loads(folder, tmp_path):
    """Folders written before the spacing was recorded: no spacing, no warning, same model."""
    old = broken_copy(folder, tmp_path, edit=lambda d: d["inputs"][0].pop("spacing"))
    assert [i.spacing for i in read_metadata(old).inputs] == [None, None]


@pytest.mark.parametrize("spacing", [[0, 1], [1.5], "28.5", [True, 1.0]])
def test_a_wrong_training_spacing_is_refused(folder, tmp_path, spacing):
    def edit(doc):
        doc["inputs"][0]["spacing"] = spacing

    with pytest.raises(EngineError, match=r"inputs\[0\]: \"spacing\" must be null or two positive numbers"):
        read_metadata(broken_copy(folder, tmp_path, edit=edit))


@pytest.mark.parametrize("spacing, warned", [((1.5, 1.5), False), ((1.55, 1.5), False), ((3.56, 3.56), True),
                                             ((0.0003, 0.0003), True)])
def test_apply_model_warns_when_a_source_spacing_differs_from_training(metadata, spacing, warned):
    from deepfield.engine.rasters import RasterInfo
    from deepfield.engine.serving import warn_spacing

    info = RasterInfo("scene.tif", 10, 10, 1, "float32", (0, spacing[0], 0, 0, 0, -spacing[1]), "", (None,))
    warnings = []
    warn_spacing(metadata.inputs, [info], warnings.append)
    assert bool(warnings) == warned
    if warned:
        assert "scene.tif has pixels of" in warnings[0] and "trained on pixels of 1.5 x 1.5" in warnings[0]
