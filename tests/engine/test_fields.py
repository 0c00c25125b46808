"""Deriving RF / EF / SF / crop from real Keras models, checked against tiled-vs-whole inference."""

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepfield.engine.device import tensorflow
from deepfield.engine.fields import (
    TOLERANCE, call_model, check_declared, conv_map, derive_geometry, tiling_error, window_sizes, with_ef)
from deepfield.engine.geometry import ModelGeometry
from deepfield.engine.protocol import EngineError

tensorflow()
import keras  # noqa: E402  (after engine.device configured TensorFlow)

L = keras.layers


@pytest.fixture(scope="module", autouse=True)
def seeded():
    """The same weights every run."""
    keras.utils.set_random_seed(0)


def chain(bands, *layers):
    x = keras.Input((None, None, bands), name="img")
    y = x
    for layer in layers:
        y = layer(y)
    return keras.Model(x, y)


def smaller_halo(geometry: ModelGeometry) -> ModelGeometry:
    """The same geometry with one period less of halo (crop and RF)."""
    sources = tuple(replace(s, rf=s.rf - 2 * geometry.footprint(i)) for i, s in enumerate(geometry.sources))
    return ModelGeometry(sources, geometry.ef, geometry.sf, geometry.crop - geometry.ef)


def unet(depth=3, kernel=3, upsampling="nearest"):
    x = keras.Input((None, None, 2), name="img")
    h, skips = x, []
    for _ in range(depth):
        h = L.Conv2D(3, kernel, padding="same", activation="relu")(h)
        skips.append(h)
        h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(3, kernel, padding="same")(h)
    for level in reversed(range(depth)):
        if upsampling == "transpose":
            h = L.Conv2DTranspose(3, 2, strides=2, padding="same")(h)
        else:
            h = L.UpSampling2D(2, interpolation=upsampling)(h)
        h = L.Conv2D(3, kernel, padding="same")(L.Concatenate()([h, skips[level]]))
    return keras.Model(x, L.Conv2D(4, 1, activation="softmax")(h))


@pytest.fixture(scope="module")
def talk_model():
    return chain(3, L.Conv2D(4, 5, strides=2), L.Conv2D(4, 3, strides=2), L.Conv2D(2, 2, activation="softmax"))


def test_talk_vector(talk_model):
    g = derive_geometry(talk_model)
    assert (g.sources[0].rf, g.ef, g.sf, g.crop) == (16, 1, Fraction(4), 0)
    assert (g.before(0), g.after(0)) == (6, 6)
    assert g.extra["regime"] == "valid"
    for n in (1, 5, 9):  # a tile of N output pixels reads 4N + 12 pixels and yields exactly N
        out = call_model(talk_model, [np.zeros((1, 4 * n + 12, 4 * n + 12, 3), "float32")])[0]
        assert out.shape[1:3] == (n, n)


@pytest.mark.parametrize("upsampling", ["nearest", "bilinear", "transpose"])
def test_same_unet_three_poolings(upsampling):
    model = unet(upsampling=upsampling)
    g = derive_geometry(model, check=False)
    assert g.ef == 8 and g.sf == 1 and g.extra["regime"] == "same"
    assert g.crop % 8 == 0 and g.crop > 0
    assert g.sources[0].rf == 8 + 2 * g.crop  # halo on both sides, rounded up to the period
    assert (g.before(0), g.after(0)) == (g.crop, g.crop)
    assert tiling_error(model, g) <= TOLERANCE
    assert tiling_error(model, g, tile=24, seed=3) <= TOLERANCE
    assert tiling_error(model, smaller_halo(g)) > 10 * TOLERANCE  # the halo is tight: a period less breaks it


def test_tiles_must_start_on_the_period():
    """Shifting the tiling by less than the period breaks a U-Net's exactness; by the period it does not."""
    model = unet(depth=2)
    g = derive_geometry(model)
    assert g.ef == 4
    rng = np.random.default_rng(0)
    n = 16 + g.sources[0].rf - g.ef
    image = rng.uniform(-1, 1, (1, n + 8, n + 8, 2)).astype("float32")
    whole = call_model(model, [image])[0]
    for shift, exact in ((g.ef, True), (1, False)):
        part = call_model(model, [image[:, shift:shift + n, shift:shift + n]])[0]
        diff = np.abs(part[0, g.crop:g.crop + 16, g.crop:g.crop + 16]
                      - whole[0, g.crop + shift:g.crop + shift + 16, g.crop + shift:g.crop + shift + 16]).max()
        assert (diff <= TOLERANCE) == exact


@pytest.fixture(scope="module")
def fusion_model():
    pan = keras.Input((None, None, 1), name="pan")
    ms = keras.Input((None, None, 4), name="ms")
    a = L.Conv2D(4, 3, padding="same", activation="relu")(pan)
    b = L.UpSampling2D(2)(L.Conv2D(4, 3, padding="same", activation="relu")(ms))
    out = L.Conv2D(3, 3, padding="same", activation="softmax")(L.Concatenate()([a, b]))
    return keras.Model([pan, ms], out)


def test_two_source_fusion(fusion_model):
    g = derive_geometry(fusion_model, scales=["1", "2"], names=["pan", "ms"])
    assert [s.scale for s in g.sources] == [1, 2] and [s.name for s in g.sources] == ["pan", "ms"]
    assert g.sf == 1 and g.ratio(1) == Fraction(1, 2) and g.ef == 2
    assert g.footprint(1) == 1
    assert derive_geometry(fusion_model) == g  # scales inferred from the network
    assert tiling_error(fusion_model, smaller_halo(g)) > 10 * TOLERANCE
    with pytest.raises(EngineError, match="'ms' has spacing scale 1 but the model expects 2"):
        derive_geometry(fusion_model, scales=[1, 1], names=["pan", "ms"])


def test_dict_inputs_keep_source_order():
    inputs = {"pan": keras.Input((None, None, 1), name="pan"), "ms": keras.Input((None, None, 4), name="ms")}
    merged = L.Concatenate()([inputs["pan"], L.UpSampling2D(2)(inputs["ms"])])
    g = derive_geometry(keras.Model(inputs, L.Conv2D(2, 1)(merged)))
    assert [(s.name, s.bands, s.scale) for s in g.sources] == [("pan", 1, 1), ("ms", 4, 2)]


@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolution(factor):
    model = chain(3, L.Conv2D(4, 3, padding="same", activation="relu"),
                  L.Conv2DTranspose(4, 3, strides=factor, padding="same"), L.Conv2D(3, 3, padding="same"))
    g = derive_geometry(model)
    assert g.sf == Fraction(1, factor) and g.ef == factor and g.footprint(0) == 1
    assert g.sf * 20 == 20 / factor  # a 20 m source gives a 20/factor m output
    assert tiling_error(model, smaller_halo(g)) > 10 * TOLERANCE


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_valid_kernels(kernel):
    g = derive_geometry(chain(1, L.Conv2D(1, kernel)))
    assert (g.sources[0].rf, g.ef, g.sf, g.crop) == (kernel, 1, 1, 0)
    assert (g.before(0), g.after(0)) == (kernel // 2, kernel - 1 - kernel // 2)


@pytest.mark.parametrize("kernel", [2, 3, 4, 5])
def test_same_kernels(kernel):
    model = chain(1, L.Conv2D(2, kernel, padding="same"), L.Conv2D(1, kernel, padding="same"))
    g = derive_geometry(model)
    halo = 2 * (kernel // 2)  # TF pads (k - 1) // 2 before and k // 2 after; two layers
    assert g.crop == halo and g.sources[0].rf == 1 + 2 * halo
    assert tiling_error(model, smaller_halo(g)) > 10 * TOLERANCE


def test_strided_same_padding_is_asymmetric():
    """TensorFlow pads a strided "same" convolution by (k - s) // 2 before: the derivation follows it."""
    model = chain(1, L.Conv2D(2, 4, strides=2, padding="same"), L.Conv2D(1, 3, strides=2, padding="same"))
    g = derive_geometry(model, check=False)
    assert g.sf == 4 and g.ef == 1
    assert tiling_error(model, g) <= TOLERANCE
    assert tiling_error(model, smaller_halo(g)) > 10 * TOLERANCE


def test_unknown_layers_are_probed():
    """A Lambda layer (no rule) is measured; it gives the fields of the equivalent known layer."""
    probed = chain(2, L.Conv2D(2, 3, padding="same"),
                   L.Lambda(lambda t: keras.ops.average_pool(t, 3, 2, "valid")), L.Conv2D(2, 1))
    known = chain(2, L.Conv2D(2, 3, padding="same"), L.AveragePooling2D(3, strides=2), L.Conv2D(2, 1))
    assert derive_geometry(probed) == derive_geometry(known)


def test_nested_models_and_merges():
    inner = keras.Sequential([keras.Input((None, None, 4)), L.Conv2D(4, 3, padding="same"),
                              L.BatchNormalization(), L.ReLU()])
    x = keras.Input((None, None, 4))
    y = L.Add()([x, inner(x)])
    y = L.Cropping2D(1)(L.ZeroPadding2D(2)(y))
    model = keras.Model(x, L.Conv2D(2, 3)(y))
    g = derive_geometry(model)
    assert g.sf == 1 and g.ef == 1
    # By hand: two 3 x 3 convolutions in a row see 1 + 2 + 2 pixels (the Add and the 1-pixel
    # pad-then-crop add none); the network keeps its input size (pad 2, crop 1, valid 3 x 3: +2 - 2),
    # so a window of N + RF - 1 pixels yields as many, the kept N starting (RF - 1) / 2 in.
    rf = 1 + (3 - 1) + (3 - 1)
    assert g.sources[0].rf == rf and g.crop == (rf - 1) // 2 == 2
    assert call_model(model, [np.zeros((1, 7 + rf - 1, 7 + rf - 1, 4), "float32")])[0].shape[1:3] == (7 + rf - 1,) * 2


def test_not_fully_convolutional():
    x = keras.Input((None, None, 3))
    pooled = L.GlobalAveragePooling2D()(L.Conv2D(2, 3)(x))
    with pytest.raises(EngineError, match="GlobalAveragePooling2D"):
        derive_geometry(keras.Model(x, pooled))
    with pytest.raises(EngineError, match=r"\(None, None, bands\)"):
        fixed = keras.Input((32, 32, 3))
        derive_geometry(keras.Model(fixed, L.Conv2D(2, 3)(fixed)))


def test_self_check_catches_a_wrong_geometry(talk_model):
    g = derive_geometry(talk_model)
    too_small = ModelGeometry((replace(g.sources[0], rf=12),), g.ef, g.sf, g.crop)
    assert tiling_error(talk_model, too_small) == float("inf")  # the model emits too few pixels
    model = unet(depth=2)
    u = derive_geometry(model)
    off_period = ModelGeometry((replace(u.sources[0], rf=u.sources[0].rf - 3),), 1, u.sf, u.crop)
    assert tiling_error(model, off_period, tile=6) > 10 * TOLERANCE  # tiles not on the period of 4


def test_check_declared(talk_model):
    g = derive_geometry(talk_model)
    assert check_declared(g, g) == []
    assert check_declared(g, with_ef(g, 4)) == []  # a multiple of the period, with RFs to match
    assert with_ef(g, 4).sources[0].rf == 16 + 12
    declared = ModelGeometry((replace(g.sources[0], rf=15),), 1, Fraction(2))
    assert check_declared(g, declared) == ["SF 2 declared, the model's is 4",
                                           "input 'img': RF 15 declared, the model's is 16"]
    assert check_declared(g, replace(g, crop=2)) == ["crop 2 declared, the model's is 0"]
    u = derive_geometry(unet(depth=2), check=False)
    assert check_declared(u, replace(u, ef=6)) == ["EF 6 declared, the model's is 4 (or a multiple)"]


def test_conv_map_same_padding():
    assert (conv_map(3, 2, 1, "same").lo, conv_map(3, 2, 1, "same").hi) == ((0,), (2,))  # TF: 0 before, 1 after
    assert (conv_map(4, 1, 1, "same").lo, conv_map(4, 1, 1, "same").hi) == ((-1,), (2,))
    assert (conv_map(3, 1, 2, "valid").c_lo, conv_map(3, 1, 2, "valid").c_hi) == (4, 4)


layer_strategy = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 5), st.integers(1, 2), st.integers(1, 2),
              st.sampled_from(["valid", "same"])),
    st.tuples(st.just("pool"), st.integers(2, 3), st.integers(1, 2), st.just(1), st.sampled_from(["valid", "same"])),
    st.tuples(st.just("up"), st.integers(2, 2), st.just(1), st.just(1), st.sampled_from(["nearest", "bilinear"])),
    st.tuples(st.just("transpose"), st.integers(2, 4), st.integers(2, 2), st.just(1),
              st.sampled_from(["valid", "same"])),
    st.tuples(st.sampled_from(["pad", "crop"]), st.integers(0, 2), st.integers(0, 2), st.just(1), st.just("")),
)


def make_layer(kind, kernel, stride, dilation, mode):
    if kind == "conv":
        return L.Conv2D(2, kernel, strides=stride, dilation_rate=dilation if stride == 1 else 1, padding=mode)
    if kind == "pool":
        return L.AveragePooling2D(kernel, strides=stride, padding=mode)
    if kind == "up":
        return L.UpSampling2D(kernel, interpolation=mode)
    if kind in ("pad", "crop"):
        return (L.ZeroPadding2D if kind == "pad" else L.Cropping2D)(((kernel, stride), (kernel, stride)))
    return L.Conv2DTranspose(2, kernel, strides=stride, padding=mode)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layer_strategy, min_size=1, max_size=4))
def test_random_stacks_serve_exactly(layers):
    """Random stacks of convolutions, poolings, up-samplings, paddings and croppings: the derived geometry is exact
    (no halo growth needed) and tight (one period less of halo, when there is one, breaks it)."""
    model = chain(1, L.Conv2D(2, 1), *[make_layer(*spec) for spec in layers])
    g = derive_geometry(model, check=False)
    assert all((g.ef * g.ratio(i)).denominator == 1 for i in range(len(g.sources)))
    assert tiling_error(model, g) <= TOLERANCE
    assert tiling_error(model, g, tile=3 * g.ef, seed=1) <= TOLERANCE
    smaller = smaller_halo(g) if g.crop else None
    if smaller and min(window_sizes(smaller, 4 * g.ef)) > 0:
        assert tiling_error(model, smaller, tile=4 * g.ef) > TOLERANCE
