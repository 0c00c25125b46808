"""The model zoo: every builder gives a fully convolutional model whose derived geometry serves
exactly (the tiled-vs-whole self-check), normalises inside when given statistics, and survives a
model folder round trip; custom builders load from a user's file."""

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from deepfield.engine.fields import TOLERANCE, call_model, derive_geometry, tiling_error, window_sizes
from deepfield.engine.modelfolder import ModelMetadata, load_model_folder, save_model_folder
from deepfield.engine.protocol import EngineError
from deepfield.models import DISCRIMINATORS, ZOO, ModelSpec, load_custom_builder
from deepfield.models.superres import build_discriminator

@pytest.fixture(scope="module", autouse=True)
def seeded():
    """The same weights every run."""
    import keras

    keras.utils.set_random_seed(0)


PAN_MS = [{"name": "pan", "bands": 1, "scale": "1"}, {"name": "ms", "bands": 4, "scale": "2"}]
CASES = {
    # name: (builder, spec, expected (rf per source, ef, sf, crop) or None)
    "classifier": ("patch_classifier", {"sources": [{"name": "img", "bands": 3}], "classes": 4, "width": 4},
                   ([16], 1, Fraction(4), 0)),
    "classifier_3_sources": ("patch_classifier", {"sources": PAN_MS + [{"name": "s", "bands": 2, "scale": "4"}],
                                                  "classes": 2, "width": 4}, ([16, 6, 2], 1, Fraction(4), 0)),
    "unet": ("unet", {"sources": [{"name": "img", "bands": 3}], "classes": 3, "width": 2}, None),
    "unet_two_sources": ("unet", {"sources": PAN_MS, "classes": 3, "width": 2, "depth": 2,
                                  "upsampling": "transpose", "batch_norm": True}, None),
    "unet_regression": ("unet", {"task": "image", "sources": [{"name": "img", "bands": 3}], "out_bands": 2,
                                 "width": 2, "depth": 1}, None),
    "fusion": ("fusion", {"sources": PAN_MS, "classes": 3, "width": 4}, None),
    "superres_x2": ("superres", {"sources": [{"name": "lr", "bands": 3}], "out_bands": 3, "factor": 2,
                                 "width": 4, "blocks": 1}, None),
    "superres_x4": ("superres", {"sources": [{"name": "lr", "bands": 4}], "out_bands": 3, "factor": 4,
                                 "width": 4, "blocks": 1}, None),
    "translation_regression": ("translation", {"task": "image", "sources": [{"name": "img", "bands": 6}],
                                               "out_bands": 3, "width": 4, "depth": 3}, None),
    "translation_regression_two_sources": ("translation", {"task": "image", "sources": PAN_MS, "out_bands": 3,
                                                           "width": 2, "depth": 2, "upsampling": "transpose"},
                                           None),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request):
    name, spec, expected = CASES[request.param]
    model = ZOO[name](spec)
    return request.param, model, derive_geometry(model), expected


def test_zoo_models_serve_exactly(built):
    case, model, geometry, expected = built  # derive_geometry ran the self-check
    assert all(t.shape[1:3] == (None, None) for t in model.inputs)
    assert tiling_error(model, geometry, tile=3 * geometry.ef, seed=2) <= TOLERANCE
    if expected:
        assert ([s.rf for s in geometry.sources], geometry.ef, geometry.sf, geometry.crop) == expected
    if case.startswith("unet"):
        depth = CASES[case][1].get("depth", 3)
        assert geometry.ef == 2 ** depth and geometry.crop % geometry.ef == 0 and geometry.sf == 1
    if case == "fusion":
        assert [s.scale for s in geometry.sources] == [1, 2] and geometry.sf == 1
    if case.startswith("translation"):
        depth = CASES[case][1]["depth"]
        assert geometry.ef == 2 ** depth and geometry.sf == 1 and geometry.sources[0].rf > 2 ** depth
    if case.startswith("superres"):
        factor = CASES[case][1]["factor"]
        assert geometry.sf == Fraction(1, factor) and geometry.ef == factor


def test_zoo_models_round_trip(built, tmp_path):
    case, model, geometry, _ = built
    task = "super_resolution" if case.startswith("superres") else "regression" if "regression" in case else \
        "classification" if "classifier" in case else "segmentation"
    metadata = ModelMetadata.for_model(model, task, geometry=geometry)
    loaded = load_model_folder(save_model_folder(tmp_path / case, model, metadata))
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(1, s, s, src.bands)).astype("float32")
              for s, src in zip(window_sizes(geometry, 2 * geometry.ef), geometry.sources)]
    np.testing.assert_allclose(call_model(loaded.model, arrays)[0], call_model(model, arrays)[0], atol=1e-5)


def test_talk_classifier_shapes():
    model = ZOO["patch_classifier"]({"sources": [{"name": "img", "bands": 3}], "classes": 5, "width": 4})
    out = call_model(model, [np.zeros((2, 16, 16, 3), "float32")])[0]
    assert out.shape == (2, 1, 1, 5)
    np.testing.assert_allclose(out.sum(axis=-1), 1, atol=1e-5)


def test_normalisation_inside_the_model():
    spec = {"sources": [{"name": "img", "bands": 2, "mean": [100.0, -5.0], "std": [10.0, 2.0]}], "classes": 2,
            "width": 2}
    model = ZOO["patch_classifier"](spec)
    plain = ZOO["patch_classifier"]({**spec, "sources": [{"name": "img", "bands": 2}]})
    plain.set_weights(model.get_weights()[len(model.get_weights()) - len(plain.get_weights()):])
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 2)).astype("float32")
    raw = x * np.array([10.0, 2.0], "float32") + np.array([100.0, -5.0], "float32")
    np.testing.assert_allclose(call_model(model, [raw])[0], call_model(plain, [x])[0], atol=1e-5)
    assert any(layer.name == "normalise_img" for layer in model.layers)
    assert not any(layer.name.startswith("normalise") for layer in plain.layers)


def test_superres_starts_as_bilinear_interpolation():
    model = ZOO["superres"]({"sources": [{"name": "lr", "bands": 2}], "out_bands": 2, "factor": 2, "width": 4})
    x = np.ones((1, 8, 8, 2), "float32") * np.array([3.0, -1.0], "float32")
    out = call_model(model, [x])[0]
    assert out.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(out, np.ones_like(out) * np.array([3.0, -1.0]), atol=1e-5)


def test_discriminator_gives_a_logit_per_cell():
    model = build_discriminator({"sources": [{"name": "lr", "bands": 3}], "out_bands": 3})
    assert call_model(model, [np.zeros((1, 32, 32, 3), "float32")])[0].shape == (1, 4, 4, 1)


def test_conditional_discriminator_sees_the_sources_and_the_image():
    spec = {"sources": PAN_MS, "out_bands": 3, "discriminator_width": 4}
    model = DISCRIMINATORS["translation"](spec)
    assert [tuple(t.shape[1:]) for t in model.inputs] == [(None, None, 1), (None, None, 4), (None, None, 3)]
    pan, ms, image = (np.zeros((1, 64, 64, 1), "float32"), np.zeros((1, 32, 32, 4), "float32"),
                      np.zeros((1, 64, 64, 3), "float32"))
    assert call_model(model, [pan, ms, image])[0].shape == (1, 8, 8, 1)
    rng = np.random.default_rng(3)
    changed = call_model(model, [rng.normal(size=pan.shape).astype("float32"), ms, image])[0]
    assert not np.allclose(changed, call_model(model, [pan, ms, image])[0])  # it judges the image given its input


@pytest.mark.parametrize("name, spec, message", [
    ("fusion", {"sources": PAN_MS[:1], "classes": 2}, "needs two sources"),
    ("fusion", {"sources": [PAN_MS[0], {**PAN_MS[1], "scale": "1/2"}], "classes": 2}, "whole-number scale"),
    ("patch_classifier", {"sources": [PAN_MS[0], {**PAN_MS[1], "scale": "3"}], "classes": 2}, "scale 1, 2 or 4"),
    ("superres", {"sources": PAN_MS[:1], "out_bands": 1, "factor": 3}, "factor 3 is not one of 2, 4"),
    ("unet", {"sources": PAN_MS[:1]}, "needs 'classes'"),
    ("translation", {"sources": PAN_MS[:1], "out_bands": 3, "depth": 0}, "depth and width must be >= 1"),
    ("translation", {"sources": PAN_MS[:1], "out_bands": 3, "upsampling": "bicubic"}, "upsampling one of"),
    ("unet", {"sources": PAN_MS[:1], "classes": 2, "depth": "deep"}, "'depth' must be of type int"),
])
def test_builder_errors(name, spec, message):
    with pytest.raises(EngineError, match=message):
        ZOO[name](spec)


def test_model_spec_from_the_training_dict():
    spec = ModelSpec.coerce({"task": "segmentation", "classes": 3, "width": 8,
                             "sources": [{"name": "pan", "bands": 1, "patch_size": 64, "scale": "1"},
                                         {"name": "ms", "bands": 4, "patch_size": 32, "scale": "2"}]})
    assert [(s.name, s.bands, s.scale, s.patch_size) for s in spec.sources] == [
        ("pan", 1, 1, 64), ("ms", 4, 2, 32)]
    assert spec.n_classes == 3 and spec.params == {"width": 8} and spec.param("width", 16) == 8
    assert ModelSpec.coerce(spec) is spec


@pytest.mark.parametrize("case", ["classifier", "unet", "fusion"])
def test_softmax_heads_compute_in_float32_under_mixed_precision(case):
    import keras

    name, spec, _ = CASES[case]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = ZOO[name](spec)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("output_logits").compute_dtype == "float16"
    assert model.get_layer("output").compute_dtype == "float32" and model.output.dtype == "float32"


def test_custom_builder(tmp_path):
    good = tmp_path / "mine.py"
    good.write_text(
        "from deepfield.models.spec import ModelSpec, keras, model, source_inputs\n"
        "def build(spec):\n"
        "    spec = ModelSpec.coerce(spec)\n"
        "    inputs, (x,) = source_inputs(spec)\n"
        "    y = keras().layers.Conv2D(spec.n_classes, 5, activation='softmax')(x)\n"
        "    return model(inputs, y, 'mine')\n")
    model = load_custom_builder(good)({"sources": [{"name": "img", "bands": 2}], "classes": 3})
    assert derive_geometry(model).sources[0].rf == 5
    (tmp_path / "nobuild.py").write_text("x = 1\n")
    with pytest.raises(EngineError, match="defines no function build"):
        load_custom_builder(tmp_path / "nobuild.py")
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(EngineError, match="importing the custom model failed.*not_a_module_anywhere"):
        load_custom_builder(tmp_path / "broken.py")
    with pytest.raises(EngineError, match="custom model file not found"):
        load_custom_builder(tmp_path / "missing.py")


def test_importing_the_zoo_does_not_import_tensorflow():
    """algorithms/ (QGIS side) imports the zoo's names: that must not load TensorFlow."""
    code = "import sys, deepfield.models as m; print(sorted(m.ZOO)); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['fusion', 'patch_classifier', 'superres', 'translation', 'unet']" and out[1] == "False False"
