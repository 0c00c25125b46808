"""Nodata handled the same way in training and serving, on the NC Landsat-7 scene (band 6,
lsat7_2000_70.tif, has a nodata frame over 38 % of the scene; bands 1-5 declare -99999, band 6
-32768): partly nodata patches kept and read as NaN, the map independent of the nodata value,
no class on nodata pixels, and no rim of one class along the nodata frame."""

import io

import numpy as np
import pytest
from osgeo import gdal, ogr
from scipy import ndimage

from deepfield.engine.dataset import open_dataset
from deepfield.engine.fields import call_model
from deepfield.engine.jobs.apply_model import run as apply_model_job
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.jobs.train_model import run as train_model_job
from deepfield.engine.modelfolder import load_model_folder
from deepfield.engine.nodata import nodata_fill, to_nan
from deepfield.engine.protocol import Reporter

NC = "nc_landsat7_landcover"
NAMES = ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment")
CLASSES = [{"value": v, "name": n} for v, n in enumerate(NAMES, start=1)]
PATCH = 32


def quiet() -> Reporter:
    return Reporter(io.StringIO(), min_interval_s=0.0)


def read_stack(path):
    """Bands ``[rows, cols, bands]`` (float64), each band's nodata pixels, and the dataset."""
    dataset = gdal.Open(str(path))
    stack = np.moveaxis(dataset.ReadAsArray().astype(np.float64), 0, -1)
    masks = [stack[..., b] == dataset.GetRasterBand(b + 1).GetNoDataValue() for b in range(dataset.RasterCount)]
    return stack, masks, dataset


@pytest.fixture(scope="module")
def nc(data_dir, tmp_path_factory):
    """32-px patches every 16 px over the whole scene, labelled by strata.tif (default max_nodata)."""
    work = tmp_path_factory.mktemp("nodata")
    image = data_dir / NC / "lsat7_2000_6band.vrt"
    select_samples_job({"raster": str(image), "strategy": "grid", "patch_size": PATCH, "step": 16, "seed": 0,
                        "split": {"train": 0.8, "valid": 0.2}, "output": str(work / "grid.gpkg")}, quiet())
    result = extract_patches_job({
        "sources": [{"path": str(image), "patch_size": PATCH, "name": "landsat"}],
        "label": {"kind": "segmentation", "path": str(data_dir / NC / "strata.tif"), "classes": CLASSES},
        "positions": str(work / "grid.gpkg"), "output": str(work / "dataset")}, quiet())
    return work, image, result


@pytest.fixture(scope="module")
def model(nc):
    """A short training (a fixed number of epochs, whatever the machine's load) of a small U-Net
    on the partly nodata patches."""
    work, _, _ = nc
    train_model_job({"dataset": str(work / "dataset"), "architecture": "unet", "epochs": 8, "batch_size": 16,
                     "learning_rate": 3e-3, "seed": 0,
                     "hyperparameters": {"depth": 2, "width": 8}, "output": str(work / "model")}, quiet())
    return work / "model"


def test_to_nan_blanks_every_band_of_a_pixel_with_one_nodata_band():
    array = np.array([[[1, -5], [3, 4]], [[-9, 6], [7, 8]]], np.int16)  # 2 x 2 pixels, 2 bands
    out = to_nan(array, [-9, -5])
    expected = np.array([[[np.nan, np.nan], [3, 4]], [[np.nan, np.nan], [7, 8]]], np.float32)
    np.testing.assert_array_equal(out, expected)


def test_nodata_fill_layer_fills_nan_with_zero_and_adds_a_validity_channel():
    x = np.array([[[[1.0, 2.0], [np.nan, np.nan]]]], np.float32)
    np.testing.assert_array_equal(np.asarray(nodata_fill()(x)), [[[[1, 2], [0, 0]]]])
    np.testing.assert_array_equal(np.asarray(nodata_fill(validity=True)(x)), [[[[1, 2, 1], [0, 0, 0]]]])


def test_partly_nodata_patches_are_kept_and_read_as_nan(nc):
    work, image, result = nc
    stack, masks, dataset = read_stack(image)
    bad, gt = np.logical_or.reduce(masks), dataset.GetGeoTransform()
    reader = open_dataset(work / "dataset")
    opened = ogr.Open(str(work / "dataset" / "positions.gpkg"))  # keep the data source alive
    positions = opened.GetLayer(0)
    fractions, valid_train = [], []
    arrays = {split: reader.arrays(split) for split in ("train", "valid")}
    for feature in positions:
        point = feature.GetGeometryRef()
        col = int(np.floor((point.GetX() - gt[0]) / gt[1] + 0.5)) - PATCH // 2
        row = int(np.floor((point.GetY() - gt[3]) / gt[5] + 0.5)) - PATCH // 2
        sources, labels = arrays[feature.GetField("split")]
        patch, label = sources["landsat"][feature.GetField("index")], labels[feature.GetField("index")]
        window = bad[row:row + PATCH, col:col + PATCH]
        np.testing.assert_array_equal(np.isnan(patch).all(-1), window)  # every band of a nodata pixel is NaN
        assert not np.isnan(patch[~window]).any()
        np.testing.assert_allclose(patch[~window], stack[row:row + PATCH, col:col + PATCH][~window], rtol=1e-6)
        assert (label[window] == -1).all()  # no class is learnt where serving maps none
        fractions.append(window.mean())
        if feature.GetField("split") == "train":
            valid_train.append(patch[~window])
    fractions = np.array(fractions)
    assert ((fractions > 0) & (fractions <= 0.5)).sum() > 50 and fractions.max() <= 0.5
    assert result["rejected"]["nodata"] > 0  # more than half nodata
    mean = np.concatenate(valid_train).astype(np.float64).mean(axis=0)  # statistics of valid pixels only
    np.testing.assert_allclose(reader.manifest["sources"][0]["mean"], mean, rtol=1e-6)


def write_copy(path, stack, bad, gt, projection, nodata):
    """The image as float32 GeoTIFF with every band's nodata pixels written as ``nodata[b]``."""
    driver = gdal.GetDriverByName("GTiff")
    out = driver.Create(str(path), stack.shape[1], stack.shape[0], stack.shape[2], gdal.GDT_Float32)
    out.SetGeoTransform(gt)
    out.SetProjection(projection)
    for b in range(stack.shape[2]):
        band = stack[..., b].copy()
        band[bad[b]] = nodata[b]
        out.GetRasterBand(b + 1).WriteArray(band)
        out.GetRasterBand(b + 1).SetNoDataValue(nodata[b])
    out = None
    return str(path)


def serve(model, source, output, products=("class_map",)):
    result = apply_model_job({"model": str(model), "sources": [str(source)], "output": str(output),
                              "outputs": list(products), "tile_size": 64}, quiet())
    return {kind: gdal.Open(path).ReadAsArray() for kind, path in result["outputs"].items()}


def test_the_map_ignores_the_nodata_value_and_maps_no_class_on_nodata(nc, model, tmp_path):
    work, image, _ = nc
    stack, masks, dataset = read_stack(image)
    gt, projection = dataset.GetGeoTransform(), dataset.GetProjection()
    first = write_copy(tmp_path / "a.tif", stack, masks, gt, projection, [-99999.0] * 5 + [-32768.0])
    second = write_copy(tmp_path / "b.tif", stack, masks, gt, projection, [-32768.0] * 5 + [-99999.0])
    map_a = serve(model, first, tmp_path / "map_a.tif")["class_map"]
    map_b = serve(model, second, tmp_path / "map_b.tif")["class_map"]
    np.testing.assert_array_equal(map_a, map_b)
    any_bad = np.logical_or.reduce(masks)
    assert (map_a[any_bad] == 0).all()  # the class map's nodata
    assert (map_a[~any_bad] > 0).all()


def test_a_validity_channel_model_trains_and_serves(nc, tmp_path):
    work, image, _ = nc
    train_model_job({"dataset": str(work / "dataset"), "architecture": "unet", "epochs": 1, "batch_size": 16,
                     "validity_channel": True, "hyperparameters": {"depth": 1, "width": 4},
                     "output": str(tmp_path / "model")}, quiet())
    loaded = load_model_folder(tmp_path / "model")
    layer = loaded.model.get_layer("nodata_fill_landsat")
    assert layer.validity and layer.compute_output_shape((None, 8, 8, 6))[-1] == 7
    bad = np.logical_or.reduce(read_stack(image)[1])
    class_map = serve(tmp_path / "model", image, tmp_path / "map.tif")["class_map"]
    assert (class_map[bad] == 0).all() and (class_map[~bad] > 0).all()


def test_the_served_map_is_the_network_on_the_nan_filled_image(nc, model, tmp_path):
    """Serving == one call of the network on the whole image with nodata as NaN (the reader's
    convention in training), padded by numpy.pad reflect, kept part; valid pixels compared."""
    work, image, _ = nc
    stack, masks, _ = read_stack(image)
    bad = np.logical_or.reduce(masks)
    loaded = load_model_folder(model)
    geometry = loaded.metadata.geometry
    image_nan = np.where(bad[..., None], np.nan, stack).astype(np.float32)
    before, ef, rf = geometry.before(0), geometry.ef, geometry.sources[0].rf
    pads = [(before, -(-n // ef) * ef + rf - ef - n - before) for n in image_nan.shape[:2]]
    padded = np.pad(image_nan, pads + [(0, 0)], mode="reflect")
    expected = call_model(loaded.model, [padded[None]])[0][0]
    crop = geometry.crop
    expected = expected[crop:crop + stack.shape[0], crop:crop + stack.shape[1]]
    served = serve(model, image, tmp_path / "map.tif", ("probabilities",))["probabilities"]
    served = np.moveaxis(served, 0, -1)
    np.testing.assert_allclose(served[~bad], expected[~bad], atol=1e-5)


def class_shares(values) -> np.ndarray:
    return np.bincount(values, minlength=len(NAMES) + 1)[1:] / len(values)


def test_no_class_rim_along_the_nodata_frame(nc, model, tmp_path):
    """The class shares in a 5-px band along the nodata frame are within a few points of the shares
    20-40 px inside it (no "developed" rim)."""
    work, image, _ = nc
    bad = np.logical_or.reduce(read_stack(image)[1])
    class_map = serve(model, image, tmp_path / "map.tif")["class_map"]
    distance = ndimage.distance_transform_edt(~bad)
    rim, inside = class_map[(distance > 0) & (distance <= 5)], class_map[(distance > 20) & (distance <= 40)]
    rim_shares, inside_shares = class_shares(rim[rim > 0]), class_shares(inside[inside > 0])
    shown = {"rim": dict(zip(NAMES, rim_shares.round(3))), "inside": dict(zip(NAMES, inside_shares.round(3)))}
    assert (inside_shares > 0.1).sum() >= 2, shown  # a map, not one class everywhere
    assert np.abs(rim_shares - inside_shares).max() <= 0.08, shown
    assert rim_shares[0] <= inside_shares[0] + 0.05, shown  # developed
