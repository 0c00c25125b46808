"""Import model: networks trained elsewhere (.keras, .h5, SavedModel) become model folders that
Apply model serves exactly like the network run once on the padded image.

References are computed here, independently of the engine: each source padded with ``np.pad``
(reflect) by the context the architecture needs (written out by hand from its layers), one call
of the original network (fixed-size networks: one call on every window, cut with numpy).
"""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.classes import ClassStyle, class_map_qml
from deepfield.engine.contract import ImportModelSpec
from deepfield.engine.device import tensorflow
from deepfield.engine.errors import EngineError, InvalidSpec
from deepfield.engine.importing import class_styles, import_network
from deepfield.engine.jobs import get_job
from deepfield.engine.modelfolder import load_model_folder
from deepfield.engine.protocol import Reporter

tf = tensorflow()
import keras  # noqa: E402  (after engine.device configured TensorFlow)

L = keras.layers
DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", "/work/shared/data")) / "nc_landsat7_landcover"
MEAN, STD = [60.0, 50.0, 40.0], [20.0, 15.0, 25.0]
TOLERANCE = 1e-5


# -- data and networks ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("importing")


@pytest.fixture(scope="module")
def crop(folder):
    """A 37 x 29 px crop of the NC Landsat image (bands 1-3) and band 4 as a second source."""
    source = str(DATA / "landsat_multiband.tif")
    rgb, nir = folder / "rgb.tif", folder / "nir.tif"
    gdal.Translate(str(rgb), source, srcWin=[120, 90, 37, 29], bandList=[1, 2, 3])
    gdal.Translate(str(nir), source, srcWin=[120, 90, 37, 29], bandList=[4])
    return rgb, nir


def read(path) -> np.ndarray:
    """A raster as (rows, cols, bands) float32."""
    dataset = gdal.Open(str(path))
    bands = [dataset.GetRasterBand(b + 1).ReadAsArray() for b in range(dataset.RasterCount)]
    return np.stack(bands, -1).astype(np.float32)


def normalised(image: np.ndarray) -> np.ndarray:
    return (image - np.float32(MEAN)) / np.float32(STD)


def pad(image: np.ndarray, before: int, after_rows: int, after_cols: int) -> np.ndarray:
    return np.pad(image, ((before, after_rows), (before, after_cols), (0, 0)), mode="reflect")


def conv_net():
    """valid 3x3 -> valid 3x3: RF 5 (2 context pixels each side), EF 1, SF 1."""
    x = keras.Input((None, None, 3), name="image")
    y = L.Conv2D(6, 3, activation="relu")(x)
    return keras.Model(x, L.Conv2D(2, 3, name="estimated")(y))


def strided_classifier():
    """5x5/2 -> 3x3/2 -> 2x2 (valid): RF 16, EF 1, SF 4, 6 context pixels before, 6 after."""
    x = keras.Input((None, None, 3))
    y = L.Conv2D(8, 5, strides=2, activation="relu")(x)
    y = L.Conv2D(8, 3, strides=2, activation="relu")(y)
    return keras.Model(x, L.Conv2D(3, 2, activation="softmax")(y))


def two_input_net():
    """Inputs ``nir`` (1 band), ``rgb`` (3 bands), both at one spacing: RF 5 on each."""
    nir, rgb = keras.Input((None, None, 1), name="nir"), keras.Input((None, None, 3), name="rgb")
    a = L.Conv2D(4, 3, activation="relu")(L.Conv2D(4, 3, activation="relu")(rgb))
    b = L.Cropping2D(1)(L.Conv2D(4, 3, activation="relu")(nir))
    return keras.Model([nir, rgb], L.Conv2D(2, 1)(L.Concatenate()([a, b])))


def otbtf_like_net():
    """Outputs ``estimated`` (RF 3) and ``estimated_crop2``, the same cropped by 2 pixels per side."""
    x = keras.Input((None, None, 3))
    estimated = L.Conv2D(2, 3, name="estimated")(x)
    return keras.Model(x, [estimated, L.Cropping2D(2, name="estimated_crop2")(estimated)])


def patch_classifier():
    """A fixed 8 x 8 input, Flatten and Dense: one class vector per window."""
    x = keras.Input((8, 8, 3))
    y = L.Flatten()(L.Conv2D(4, 3, activation="relu")(x))
    return keras.Model(x, L.Dense(2, activation="softmax")(y))


def seeded(build):
    keras.utils.set_random_seed(0)
    return build()


def save(model, path: Path, kind: str) -> str:
    if kind == "savedmodel":
        model.export(str(path))
    elif kind == "tf.saved_model":
        tf.saved_model.save(model, str(path))
    else:
        model.save(path)
    return str(path)


def run_job(name: str, spec: dict) -> dict:
    return get_job(name)({"job": name, **spec}, Reporter(io.StringIO()))


def imported(network: str, output: Path, sources: list, task: str, **extra) -> Path:
    run_job("import_model", {"network": network, "output": str(output), "task": task, "sources": sources, **extra})
    return output


def applied(model: Path, sources: list, output: Path, **extra) -> np.ndarray:
    run_job("apply_model", {"model": str(model), "sources": [str(s) for s in sources], "output": str(output),
                            "tile_size": 4, **extra})
    return read(output)


def close(served: np.ndarray, reference: np.ndarray) -> float:
    assert served.shape == reference.shape
    return float(np.abs(served - reference).max() / max(1.0, np.abs(reference).max()))


# -- served imported folders equal the network on the padded image ------------------------------------

@pytest.mark.parametrize("kind, suffix", [("keras", ".keras"), ("h5", ".h5"), ("savedmodel", "")])
def test_conv_net_in_every_format_serves_like_the_network(folder, crop, kind, suffix):
    network = seeded(conv_net)
    path = save(network, folder / f"conv_{kind}{suffix}", kind)
    model = imported(path, folder / f"conv_{kind}_model", [{"name": "rgb", "bands": 3, "mean": MEAN, "std": STD}],
                     "regression")
    loaded = load_model_folder(model)
    assert (loaded.metadata.inputs[0].rf, loaded.metadata.ef, loaded.metadata.sf) == (5, 1, 1)
    if kind == "savedmodel":  # the folder holds its SavedModel: it still serves once moved
        model = model.rename(folder / "moved_savedmodel_model")
    served = applied(model, [crop[0]], folder / f"conv_{kind}.tif")
    reference = network(pad(normalised(read(crop[0])), 2, 2, 2)[None]).numpy()[0]
    assert close(served, reference) <= TOLERANCE


@pytest.mark.parametrize("kind", ["keras", "savedmodel"])
def test_strided_classifier_serves_like_the_network(folder, crop, kind):
    network = seeded(strided_classifier)
    path = save(network, folder / ("strided.keras" if kind == "keras" else "strided_sm"), kind)
    classes = [{"value": 10, "name": "water"}, {"value": 20, "name": "forest", "color": "#00FF00"},
               {"value": 30, "name": "urban"}]
    model = imported(path, folder / f"strided_{kind}_model", [{"name": "rgb", "rf": 16}], "classification",
                     classes=classes, expression_field=1, spacing_scale="4")
    loaded = load_model_folder(model)
    assert [c.color for c in loaded.metadata.classes][1] == "#00ff00"
    served = applied(model, [crop[0]], folder / f"strided_{kind}.tif", outputs=["probabilities", "class_map"])
    # 37 x 29 px at SF 4: 10 x 8 output px; pixel j reads [4j - 6, 4j + 10): 6 before, 4n + 6 - size after
    reference = network(pad(read(crop[0]), 6, 4 * 8 + 6 - 29, 4 * 10 + 6 - 37)[None]).numpy()[0]
    assert close(served, reference) <= TOLERANCE
    class_map = read(folder / f"strided_{kind}_class_map.tif")[..., 0]
    assert np.array_equal(class_map, np.array([10, 20, 30])[reference.argmax(-1)])


def test_two_input_net_maps_sources_by_name(folder, crop):
    network = seeded(two_input_net)
    path = save(network, folder / "two.keras", "keras")
    # sources in another order than the network's inputs: matched by name, rgb is the reference
    model = imported(path, folder / "two_model", [{"name": "rgb", "mean": MEAN, "std": STD},
                                                 {"name": "nir", "bands": 1, "scale": "1"}], "regression")
    assert [i.name for i in load_model_folder(model).metadata.inputs] == ["rgb", "nir"]
    served = applied(model, list(crop), folder / "two.tif")
    reference = network([pad(read(crop[1]), 2, 2, 2)[None], pad(normalised(read(crop[0])), 2, 2, 2)[None]])
    assert close(served, reference.numpy()[0]) <= TOLERANCE


@pytest.mark.parametrize("kind, sf", [("keras", 1), ("tf.saved_model", 2)])
def test_fixed_size_network_is_served_window_by_window(folder, crop, kind, sf):
    network = seeded(patch_classifier)
    path = save(network, folder / ("patch.keras" if kind == "keras" else "patch_sm"), kind)
    model = imported(path, folder / f"patch_{kind}_model", [{"name": "rgb", "mean": MEAN, "std": STD, "rf": 8}],
                     "classification", spacing_scale=str(sf))
    loaded = load_model_folder(model)
    assert (loaded.metadata.inputs[0].rf, loaded.metadata.ef, loaded.metadata.sf) == (8, 1, sf)
    served = applied(model, [crop[0]], folder / f"patch_{kind}.tif", outputs=["probabilities"])
    # output pixel j covers reference pixels [sf j, sf j + sf); its window is the 8 px centred there,
    # [sf j + sf // 2 - 4, sf j + sf // 2 + 4): windows every sf px from the padded image's pixel 0
    before = 4 - sf // 2
    rows, cols = -(-29 // sf), -(-37 // sf)
    padded = pad(normalised(read(crop[0])), before, sf * (rows - 1) + 8 - before - 29,
                 sf * (cols - 1) + 8 - before - 37)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (8, 8), axis=(0, 1))[::sf, ::sf]
    assert windows.shape[:2] == (rows, cols)
    batch = np.moveaxis(windows, 2, -1).reshape(-1, 8, 8, 3)
    reference = network(batch).numpy().reshape(rows, cols, 2)
    assert close(served, reference) <= TOLERANCE


def test_one_output_of_several_is_chosen(folder, crop):
    network = seeded(otbtf_like_net)
    path = save(network, folder / "otbtf.keras", "keras")
    with pytest.raises(EngineError, match="choose the one to serve with outputs"):
        import_network(path, [{"name": "rgb"}], "regression")
    with pytest.raises(InvalidSpec, match="has no output 'predictions'; its outputs: estimated, estimated_crop2"):
        import_network(path, [{"name": "rgb"}], "regression", outputs=["predictions"])
    model = imported(path, folder / "otbtf_model", [{"name": "rgb"}], "regression", outputs=["estimated"])
    assert [o.name for o in load_model_folder(model).metadata.outputs] == ["estimated"]
    served = applied(model, [crop[0]], folder / "otbtf.tif")
    assert close(served, network(pad(read(crop[0]), 1, 1, 1)[None])[0].numpy()[0]) <= TOLERANCE


def test_sources_at_two_spacings_keep_their_scales(folder):
    pan, ms = keras.Input((None, None, 1), name="pan"), keras.Input((None, None, 4), name="ms")
    up = L.UpSampling2D(2)(L.Conv2D(4, 3, padding="same")(ms))
    merged = L.Concatenate()([L.Conv2D(4, 3, padding="same")(pan), up])
    network = keras.Model([pan, ms], L.Conv2D(3, 1, activation="softmax")(merged))
    path = save(network, folder / "fusion.h5", "h5")
    model = imported(path, folder / "fusion_model", [{"name": "pan", "bands": 1, "scale": 1},
                                                    {"name": "ms", "bands": 4, "scale": "2"}], "segmentation")
    meta = load_model_folder(model).metadata
    assert [(i.name, i.bands, str(i.scale)) for i in meta.inputs] == [("pan", 1, "1"), ("ms", 4, "2")]
    assert (meta.sf, meta.ef) == (1, 2)
    with pytest.raises(InvalidSpec, match="source 'ms': scale 1/2 declared, the network's is 2"):
        import_network(path, [{"name": "pan"}, {"name": "ms", "scale": "1/2"}], "segmentation")


def test_imported_folder_is_described(folder, crop):
    path = save(seeded(conv_net), folder / "described.keras", "keras")
    model = imported(path, folder / "described_model", [{"name": "rgb"}], "regression")
    text = run_job("describe_model", {"model": str(model), "tile_size": 16})["text"]
    assert "rgb: 3 band(s), scale 1, RF 5 px" in text


# -- refusals ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conv_file(folder):
    return save(seeded(conv_net), folder / "refused.keras", "keras")


def test_a_file_that_is_not_a_model_is_refused(folder):
    fake = folder / "notes.keras"
    fake.write_text("not a network")
    with pytest.raises(InvalidSpec, match="notes.keras: not a Keras model"):
        import_network(fake, [{"name": "rgb"}], "regression")
    (folder / "empty_savedmodel").mkdir()
    with pytest.raises(InvalidSpec, match="not a TensorFlow SavedModel"):
        import_network(folder / "empty_savedmodel", [{"name": "rgb"}], "regression")
    with pytest.raises(InvalidSpec, match="not a Keras model file"):
        import_network(DATA / "README.txt", [{"name": "rgb"}], "regression")


def test_a_savedmodel_whose_fields_cannot_be_probed_is_refused_with_the_fix(folder):
    x = keras.Input((None, None, 3))
    y = x
    for _ in range(4):  # accepts only sizes that are multiples of 16
        y = L.MaxPooling2D(2)(L.Conv2D(2, 3, padding="same")(y))
    for _ in range(4):
        y = L.UpSampling2D(2)(y)
    path = save(keras.Model(x, L.Conv2D(2, 1)(y)), folder / "deep_sm", "savedmodel")
    with pytest.raises(EngineError, match="SavedModel is probed as one layer.*save the network as .keras"):
        import_network(path, [{"name": "rgb"}], "regression")


def test_declared_fields_that_contradict_the_network_are_refused(conv_file):
    with pytest.raises(InvalidSpec, match="RF 7 declared, the model's is 5"):
        import_network(conv_file, [{"name": "rgb", "rf": 7}], "regression")
    with pytest.raises(InvalidSpec, match="SF 2 declared, the model's is 1"):
        import_network(conv_file, [{"name": "rgb"}], "regression", spacing_scale="2")
    # a declared EF is served when it is a multiple of the network's period, with the RF it needs
    accepted = import_network(conv_file, [{"name": "rgb", "rf": 7}], "regression", expression_field=3)
    assert (accepted.metadata.ef, accepted.metadata.inputs[0].rf) == (3, 7)


def test_a_band_count_that_does_not_match_is_refused(conv_file):
    with pytest.raises(InvalidSpec, match="source 'rgb' has 4 band\\(s\\) but network input 'image' takes 3"):
        import_network(conv_file, [{"name": "rgb", "bands": 4}], "regression")
    with pytest.raises(InvalidSpec, match="mean \\[1, 2\\] is not a list of 3 value"):
        import_network(conv_file, [{"name": "rgb", "mean": [1, 2], "std": [1, 1]}], "regression")


def test_more_sources_than_inputs_are_refused(conv_file):
    with pytest.raises(InvalidSpec, match="2 source\\(s\\) given \\(rgb, nir\\), more than the 1 input"):
        import_network(conv_file, [{"name": "rgb"}, {"name": "nir"}], "regression")


def test_a_scale_that_contradicts_the_network_is_refused(folder):
    path = save(seeded(two_input_net), folder / "two_refused.keras", "keras")
    with pytest.raises(InvalidSpec, match="source 'nir': scale 2 declared, the network's is 1"):
        import_network(path, [{"name": "rgb"}, {"name": "nir", "scale": "2"}], "regression")


def test_classes_must_match_the_output_channels(conv_file):
    with pytest.raises(EngineError, match="3 classes for output"):
        import_network(conv_file, [{"name": "rgb"}], "segmentation",
                       classes=[{"value": v, "name": f"c{v}"} for v in (1, 2, 3)])


def test_spec_rejects_unknown_keys_and_output_inside_the_network(folder):
    with pytest.raises(InvalidSpec, match="unknown spec key\\(s\\) tile_size"):
        ImportModelSpec.from_dict({"network": "n.keras", "output": "m", "task": "regression",
                                   "sources": [{"name": "a"}], "tile_size": 3})
    with pytest.raises(InvalidSpec, match="task must be one of"):
        ImportModelSpec.from_dict({"network": "n.keras", "output": "m", "task": "detection", "sources": [{"name": "a"}]})
    with pytest.raises(InvalidSpec, match="invalid import_model: sources\\[0\\] name 'band 1'"):
        ImportModelSpec.from_dict({"network": "n.keras", "output": "m", "task": "regression",
                                   "sources": [{"name": "band 1"}]})
    with pytest.raises(InvalidSpec, match="outputs a list of output names"):
        ImportModelSpec.from_dict({"network": "n.keras", "output": "m", "task": "regression",
                                   "sources": [{"name": "a"}], "outputs": "estimated"})
    saved = folder / "inside_sm"
    save(seeded(conv_net), saved, "savedmodel")
    with pytest.raises(InvalidSpec, match="would be written into the network"):
        run_job("import_model", {"network": str(saved), "output": str(saved / "model"), "task": "regression",
                                 "sources": [{"name": "rgb"}]})
    assert not (saved / "model").exists()


# -- classes from a QML style or a CSV table -----------------------------------------------------------

def test_classes_from_qml_and_csv(folder):
    styles = (ClassStyle(3, "urban", "#e31a1c"), ClassStyle(1, "water", "#1f78b4"))
    qml = folder / "classes.qml"
    qml.write_text(class_map_qml(styles))
    table = folder / "classes.csv"
    table.write_text("value,name,color\n3,urban,#E31A1C\n1,water\n")
    assert [(c.value, c.name, c.color) for c in class_styles((), qml)] == [(1, "water", "#1f78b4"),
                                                                           (3, "urban", "#e31a1c")]
    from_csv = class_styles((), table)
    assert [(c.value, c.name) for c in from_csv] == [(1, "water"), (3, "urban")]
    assert from_csv[1].color == "#e31a1c" and from_csv[0].color.startswith("#")
    bad = folder / "bad.csv"
    bad.write_text("value,name\n1,water\nforest,2\n")
    with pytest.raises(InvalidSpec, match="row 3"):
        class_styles((), bad)
