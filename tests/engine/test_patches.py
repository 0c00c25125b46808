"""extract_patches on real data: co-registration of pan 0.5 m / MS 1 m, values, labels, rejections."""

import functools
import io
import json
import sys
from fractions import Fraction

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from deepfield.engine.dataset import open_dataset
from deepfield.engine.geometry import Window, patch_start, snap
from deepfield.engine.jobs.extract_patches import run as extract_patches_job
from deepfield.engine.errors import EngineError, InvalidSpec, NoOverlap
from deepfield.engine.protocol import Reporter
from deepfield.engine.rasters import align_source, raster_info, read_window
from deepfield.engine.jobs.select_samples import run as select_samples_job
from deepfield.engine.vectors import Positions, write_positions

from ..conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from demo_data import building_inputs

SPACENET = "spacenet_solaris"
NC = "nc_landsat7_landcover"


def run(job, spec):
    stream = io.StringIO()
    result = job(spec, Reporter(stream))
    return result, [json.loads(line) for line in stream.getvalue().splitlines()]


def accepted_positions(folder):
    """(x, y, class, split, index) of positions.gpkg, read with OGR."""
    source = ogr.Open(str(folder / "positions.gpkg"))
    return [(f.GetGeometryRef().GetX(), f.GetGeometryRef().GetY(), f.GetField("class"), f.GetField("split"),
             f.GetField("index")) for f in source.GetLayer(0)]


def feature_count(path):
    source = ogr.Open(str(path))
    return source.GetLayer(0).GetFeatureCount()


@functools.lru_cache(maxsize=None)
def opened(path):
    return gdal.Open(path)


def gdal_window(path, x, y, size):
    """Independent patch read: window start = centre node - size // 2 (even: nearest corner; odd: pixel)."""
    dataset = opened(path)
    gt = dataset.GetGeoTransform()
    u, v = (x - gt[0]) / gt[1], (y - gt[3]) / gt[5]
    if size % 2 == 0:
        col, row = int(np.floor(u + 0.5)) - size // 2, int(np.floor(v + 0.5)) - size // 2
    else:
        col, row = int(np.floor(u)) - size // 2, int(np.floor(v)) - size // 2
    data = dataset.ReadAsArray(col, row, size, size).reshape(dataset.RasterCount, size, size)
    return np.moveaxis(data, 0, -1), (col, row), gt


@functools.lru_cache(maxsize=None)
def served_source(path, reference, scale):
    """The source as serving reads it: :func:`align_source` on the reference grid at the model's scale."""
    return align_source(raster_info(path), raster_info(reference).grid, Fraction(scale))


def served_window(path, reference, scale, x, y, size):
    """What serving reads for a ``size`` patch centred on (x, y): the aligned source's window
    from the patch-centre rule; also the window's first pixel corner in map units."""
    aligned = served_source(path, reference, scale)
    col = patch_start(snap((x - aligned.bounds[0]) / aligned.spacing[0]), size)
    row = patch_start(snap((aligned.bounds[3] - y) / aligned.spacing[1]), size)
    corner = (aligned.bounds[0] + col * aligned.spacing[0], aligned.bounds[3] - row * aligned.spacing[1])
    return read_window(aligned.path, Window(col, row, size, size), dtype=np.float32), corner


@pytest.fixture(scope="module")
def pan_ms(data_dir, tmp_path_factory):
    """Random points over Rotterdam pair 1, pan patch 64 (0.5 m) + MS patch 32 (1 m), MS 16 px target."""
    folder = tmp_path_factory.mktemp("panms")
    pan = str(data_dir / SPACENET / "preproc_tutorial_pan1.tif")
    ms = str(data_dir / SPACENET / "preproc_tutorial_ms1.tif")
    run(select_samples_job, {"raster": pan, "strategy": "grid", "patch_size": 64, "step": 37,
                             "split": {"train": 0.7, "valid": 0.3}, "seed": 0, "output": str(folder / "grid.gpkg")})
    result, messages = run(extract_patches_job, {
        "sources": [{"path": pan, "patch_size": 64, "name": "pan"}, {"path": ms, "patch_size": 32, "name": "ms"}],
        "positions": str(folder / "grid.gpkg"), "label": {"kind": "image", "path": ms, "patch_size": 16},
        "shard_size": 50, "output": str(folder / "dataset")})
    return {"pan": pan, "ms": ms, "folder": folder / "dataset", "result": result, "messages": messages}


def test_pan_ms_coregistered_and_equal_to_what_serving_reads(pan_ms):
    """Pan (0.499993 m) is the reference; MS (1.000048 m) is not exactly 2x, so serving warps it
    onto the pan lattice at 2x: the MS patches and targets are those warped values."""
    reader = open_dataset(pan_ms["folder"])
    manifest = reader.manifest
    assert [s["scale"] for s in manifest["sources"]] == ["1", "2"]
    assert served_source(pan_ms["ms"], pan_ms["pan"], "2").warped
    warped = [m["message"] for m in pan_ms["messages"] if "warped" in m.get("message", "")]
    assert len(warped) == 2 and all("preproc_tutorial_ms1.tif" in m for m in warped)  # MS source + MS target
    selected = feature_count(pan_ms["folder"].parent / "grid.gpkg")
    assert manifest["splits"]["train"] + manifest["splits"]["valid"] == selected == 15 * 15
    arrays = {split: reader.arrays(split) for split in ("train", "valid")}
    positions = accepted_positions(pan_ms["folder"])
    assert len(positions) == sum(manifest["splits"].values())
    for x, y, _, split, index in positions:
        sources, labels = arrays[split]
        pan, (pc, pr), pgt = gdal_window(pan_ms["pan"], x, y, 64)
        ms, (mx, my) = served_window(pan_ms["ms"], pan_ms["pan"], "2", x, y, 32)
        target, _ = served_window(pan_ms["ms"], pan_ms["pan"], "2", x, y, 16)
        np.testing.assert_array_equal(sources["pan"][index], pan.astype(np.float32))
        np.testing.assert_array_equal(sources["ms"][index], ms)
        np.testing.assert_array_equal(labels[index], target)
        # both patch centres (map units) are the same point, exactly: the MS lattice is the pan's at 2x
        pan_centre = (pgt[0] + (pc + 32) * pgt[1], pgt[3] + (pr + 32) * pgt[5])
        ms_centre = (mx + 16 * 2 * pgt[1], my + 16 * 2 * pgt[5])
        assert abs(pan_centre[0] - ms_centre[0]) < 1e-6 and abs(pan_centre[1] - ms_centre[1]) < 1e-6
        # and the stored position is the (aligned) MS pixel corner they centre on
        assert abs(x - ms_centre[0]) < 1e-6 and abs(y - ms_centre[1]) < 1e-6


def test_train_statistics_and_shards(pan_ms):
    reader = open_dataset(pan_ms["folder"])
    sources, labels = reader.arrays("train")
    for source in reader.manifest["sources"]:
        values = sources[source["name"]].reshape(-1, source["bands"]).astype(np.float64)
        np.testing.assert_allclose(source["mean"], values.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(source["std"], values.std(axis=0), rtol=1e-9)
    assert len(reader.manifest["shards"]["train"]) == -(-reader.size("train") // 50)
    assert labels.dtype == np.float32 and labels.shape[1:] == (16, 16, 4)


def test_nc_class_labels_and_rejections(data_dir, tmp_path):
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    run(select_samples_job, {"raster": image, "strategy": "points", "class_field": "id", "seed": 1,
                             "vector": str(data_dir / NC / "landsat96_points.shp"),
                             "split": {"train": 0.8, "test": 0.2}, "output": str(tmp_path / "points.gpkg")})
    result, messages = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 9, "name": "landsat"}], "positions": str(tmp_path / "points.gpkg"),
        "class_field": "class", "output": str(tmp_path / "dataset"), "max_nodata": 0})
    reader = open_dataset(tmp_path / "dataset")
    classes = reader.manifest["label"]["classes"]
    assert [c["value"] for c in classes] == list(range(1, 8)) and [c["index"] for c in classes] == list(range(7))
    selected = ogr.Open(str(tmp_path / "points.gpkg"))
    total = feature_count(tmp_path / "points.gpkg")
    assert sum(result["splits"].values()) + sum(result["rejected"].values()) == total
    assert result["rejected"]["nodata"] > 0  # max_nodata 0: points near the band-7 nodata edge lose their patch
    dataset = gdal.Open(image)
    stack = dataset.ReadAsArray()
    nodata = np.array([dataset.GetRasterBand(b + 1).GetNoDataValue() for b in range(6)])
    for split in ("train", "test"):
        sources, labels = reader.arrays(split)
        assert labels.dtype == np.int32 and labels.shape == (reader.size(split),)
        rows = [p for p in accepted_positions(tmp_path / "dataset") if p[3] == split]
        for x, y, value, _, index in rows:
            assert classes[labels[index]]["value"] == value
            expected, (col, row), _ = gdal_window(image, x, y, 9)
            np.testing.assert_array_equal(sources["landsat"][index], expected)
            assert not (expected == nodata).any()
    counts = reader.manifest["class_counts"]["train"]
    assert sum(counts) == reader.size("train")
    assert any("rejected positions" in m.get("message", "") for m in messages)
    # independently: every rejected position's 9x9 window touches nodata or leaves the image
    assert result["rejected"]["outside"] + result["rejected"]["nodata"] == sum(
        1 for f in selected.GetLayer(0) if _window_bad(stack, nodata, dataset.GetGeoTransform(), f, 9))


def _window_bad(stack, nodata, gt, feature, size):
    x, y = feature.GetGeometryRef().GetX(), feature.GetGeometryRef().GetY()
    col = int(np.floor((x - gt[0]) / gt[1])) - size // 2
    row = int(np.floor((y - gt[3]) / gt[5])) - size // 2
    if col < 0 or row < 0 or col + size > stack.shape[2] or row + size > stack.shape[1]:
        return True
    return bool((stack[:, row:row + size, col:col + size] == nodata[:, None, None]).any())


def test_segmentation_labels_are_indices(data_dir, tmp_path):
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    strata = str(data_dir / NC / "strata.tif")
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 32, "step": 64,
                             "output": str(tmp_path / "grid.gpkg")})
    run(extract_patches_job, {"sources": [{"path": image, "patch_size": 32, "name": "landsat"}],
                              "positions": str(tmp_path / "grid.gpkg"),
                              "label": {"kind": "segmentation", "path": strata, "patch_size": 32,
                                        "classes": [{"value": 5, "name": "forest", "color": "#00aa00"},
                                                    {"value": 6, "name": "water"}]},
                              "output": str(tmp_path / "dataset")})
    reader = open_dataset(tmp_path / "dataset")
    label = reader.manifest["label"]
    values = [c["value"] for c in label["classes"]]
    assert values == [5, 6] and label["classes"][0]["name"] == "forest"
    _, labels = reader.arrays("train")
    assert labels.dtype == np.int32 and labels.shape[1:] == (32, 32)
    for x, y, _, _, index in accepted_positions(tmp_path / "dataset"):
        raw, _, _ = gdal_window(strata, x, y, 32)
        expected = np.select([raw[..., 0] == 5, raw[..., 0] == 6], [0, 1], -1)
        np.testing.assert_array_equal(labels[index], expected)
    assert sum(reader.manifest["class_counts"]["train"]) == int((labels >= 0).sum())


def test_all_rejected_is_a_clear_error(data_dir, tmp_path):
    pan = str(data_dir / SPACENET / "preproc_tutorial_pan1.tif")
    run(select_samples_job, {"raster": pan, "strategy": "grid", "patch_size": 8, "step": 200,
                             "output": str(tmp_path / "grid.gpkg")})
    with pytest.raises(InvalidSpec, match="patch size 700 is bigger than the image"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 700, "name": "pan"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "label": {"kind": "image", "path": pan},
                                  "output": str(tmp_path / "dataset")})
    with pytest.raises(NoOverlap, match="none of the .* positions has its patches inside every source"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 599, "name": "pan"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "label": {"kind": "image", "path": pan},
                                  "output": str(tmp_path / "dataset")})
    with pytest.raises(InvalidSpec, match="invalid source name"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 8, "name": "labels"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "output": str(tmp_path / "dataset")})
    with pytest.raises(InvalidSpec, match="extract_patches source: unknown spec key.*patch_sise; known keys: path, "
                                          "patch_size, name"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_sise": 8, "name": "pan"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "output": str(tmp_path / "dataset")})
    with pytest.raises(InvalidSpec, match="label kind must be one of class, segmentation, image; got 'segment'"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 8, "name": "pan"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "label": {"kind": "segment", "path": pan},
                                  "output": str(tmp_path / "dataset")})
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "dataset.part").exists()


def test_read_tiles_do_not_change_the_dataset_and_cancel_leaves_nothing(pan_ms, tmp_path):
    from deepfield.engine.protocol import JobCancelled

    spec = {"sources": [{"path": pan_ms["pan"], "patch_size": 64, "name": "pan"},
                        {"path": pan_ms["ms"], "patch_size": 32, "name": "ms"}],
            "positions": str(pan_ms["folder"].parent / "grid.gpkg"),
            "label": {"kind": "image", "path": pan_ms["ms"], "patch_size": 16}}
    run(extract_patches_job, {**spec, "read_tile": 37, "output": str(tmp_path / "small_tiles")})
    reference, small = open_dataset(pan_ms["folder"]), open_dataset(tmp_path / "small_tiles")
    order = {(round(p[0], 6), round(p[1], 6)): p[4] for p in accepted_positions(pan_ms["folder"]) if p[3] == "train"}
    other = {(round(p[0], 6), round(p[1], 6)): p[4] for p in accepted_positions(tmp_path / "small_tiles")
             if p[3] == "train"}
    assert order.keys() == other.keys()
    keys = sorted(order)
    a, la = reference.take("train", [order[k] for k in keys])
    b, lb = small.take("train", [other[k] for k in keys])
    np.testing.assert_array_equal(a["pan"], b["pan"])
    np.testing.assert_array_equal(la, lb)
    reporter = Reporter(io.StringIO())
    reporter.cancel()
    with pytest.raises(JobCancelled):
        extract_patches_job({**spec, "output": str(tmp_path / "cancelled")}, reporter)
    assert not (tmp_path / "cancelled").exists() and not (tmp_path / "cancelled.part").exists()


def test_source_in_another_crs_is_warped_like_serving(data_dir, tmp_path):
    """A crop of the NC stack (bands 1-5: one nodata value, as GeoTIFF stores) warped to EPSG:4326:
    extraction warps it back onto the reference lattice (logged) and cuts what serving reads,
    instead of snapping on its degree grid."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    geographic = str(tmp_path / "crop_4326.tif")
    crop = gdal.Translate("", image, format="VRT", srcWin=[100, 100, 200, 200], bandList=[1, 2, 3, 4, 5])
    gdal.Warp(geographic, crop, dstSRS="EPSG:4326")
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 9, "step": 25,
                             "output": str(tmp_path / "grid.gpkg")})
    result, messages = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 9, "name": "landsat"},
                    {"path": geographic, "patch_size": 9, "name": "geographic"}],
        "positions": str(tmp_path / "grid.gpkg"), "label": {"kind": "image", "path": image},
        "output": str(tmp_path / "dataset")})
    warped = [m["message"] for m in messages if "warped" in m.get("message", "")]
    assert len(warped) == 1 and "crop_4326.tif" in warped[0] and "CRS differs" in warped[0]
    reader = open_dataset(tmp_path / "dataset")
    entry = reader.manifest["sources"][1]
    assert entry["scale"] == "1" and entry["spacing"] == [28.5, 28.5]
    assert 10 < reader.size("train") < result["rejected"]["outside"] + result["rejected"]["nodata"]
    sources, _ = reader.arrays("train")
    errors = np.zeros((3, 3))  # co-registered: the original pixels match best without a shift
    for x, y, _, _, index in accepted_positions(tmp_path / "dataset"):
        served, _ = served_window(geographic, image, "1", x, y, 9)
        np.testing.assert_array_equal(sources["geographic"][index], served)
        around, _, _ = gdal_window(image, x, y, 11)
        for dr in range(3):
            for dc in range(3):
                errors[dr, dc] += np.abs(around[dr:dr + 9, dc:dc + 9, :5] - served).mean()
    assert errors.argmin() == 4


def test_label_patch_size_defaults_to_the_same_ground_area(data_dir, tmp_path):
    """A label raster at half the resolution (57 m): the default label patch is 32 x 28.5 / 57 = 16 px."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    coarse = str(tmp_path / "strata_57m.tif")
    gdal.Translate(coarse, str(data_dir / NC / "strata.tif"), xRes=57, yRes=57, resampleAlg="nearest")
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 32, "step": 64,
                             "output": str(tmp_path / "grid.gpkg")})
    _, messages = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 32, "name": "landsat"}], "positions": str(tmp_path / "grid.gpkg"),
        "label": {"kind": "segmentation", "path": coarse}, "output": str(tmp_path / "dataset")})
    assert not [m for m in messages if "warped" in m.get("message", "")]  # 57 m nests in the 28.5 m lattice
    reader = open_dataset(tmp_path / "dataset")
    label = reader.manifest["label"]
    assert label["patch_size"] == 16 and label["scale"] == "2"
    _, labels = reader.arrays("train")
    assert labels.shape[1:] == (16, 16) and len(labels) > 5
    values = [c["value"] for c in label["classes"]]
    for x, y, _, _, index in accepted_positions(tmp_path / "dataset"):
        raw, (col, row), gt = gdal_window(coarse, x, y, 16)
        _, (icol, irow), igt = gdal_window(image, x, y, 32)
        assert (gt[0] + col * gt[1], gt[3] + row * gt[5]) == (igt[0] + icol * igt[1], igt[3] + irow * igt[5])
        expected = np.array([[values.index(v) if v in values else -1 for v in line] for line in raw[..., 0]])
        np.testing.assert_array_equal(labels[index], expected)


def test_warped_source_cuts_only_inside_its_footprint(pan_ms, tmp_path):
    """Serving's warped MS grid is snapped outwards (301 x 301 px of 0.99999 m for 300 px of 1.00005 m):
    its last column and row lie beyond the MS image (no data, no nodata declared), so patches reaching
    them are rejected as outside the source."""
    aligned = served_source(pan_ms["ms"], pan_ms["pan"], "2")
    assert (aligned.width, aligned.height) == (301, 301)
    pan = raster_info(pan_ms["pan"])
    gt = pan.geotransform
    centres = np.array([[300, 300], [562, 300], [300, 562]])  # pan pixel corners; MS 40 px: cols 261..300
    write_positions(tmp_path / "points.gpkg", Positions(gt[0] + centres[:, 0] * gt[1], gt[3] + centres[:, 1] * gt[5],
                                                        None, np.array(["train"] * 3, dtype=object)), pan.crs_wkt)
    result, _ = run(extract_patches_job, {
        "sources": [{"path": pan_ms["pan"], "patch_size": 64, "name": "pan"},
                    {"path": pan_ms["ms"], "patch_size": 40, "name": "ms"}],
        "positions": str(tmp_path / "points.gpkg"), "label": {"kind": "image", "path": pan_ms["pan"]},
        "output": str(tmp_path / "dataset")})
    assert result["splits"]["train"] == 1 and result["rejected"]["outside"] == 2
    sources, _ = open_dataset(tmp_path / "dataset").arrays("train")
    assert np.isfinite(sources["ms"][0]).all() and (sources["ms"][0] != 0).any(axis=(0, 2)).all()


def test_segmentation_labels_from_text_class_polygons(data_dir, tmp_path):
    """Polygons with a text class field as segmentation labels: rasterised on the image grid,
    names -> indices in sorted order, outside every polygon -1; patches without any labelled
    pixel rejected. Reference: each class's polygons burnt separately with gdal.Rasterize."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    polygons = str(data_dir / NC / "landsat96_polygons.shp")
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 16, "step": 16,
                             "output": str(tmp_path / "grid.gpkg")})
    result, messages = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 16, "name": "landsat"}], "positions": str(tmp_path / "grid.gpkg"),
        "label": {"kind": "segmentation", "path": polygons, "class_field": "label"},
        "output": str(tmp_path / "dataset")})
    vector = ogr.Open(polygons)
    names = sorted({f.GetField("label") for f in vector.GetLayer(0)})
    reader = open_dataset(tmp_path / "dataset")
    label = reader.manifest["label"]
    assert [(c["index"], c["value"], c["name"]) for c in label["classes"]] == [
        (i, i + 1, n) for i, n in enumerate(names)]
    assert label["patch_size"] == 16 and result["classes"] == label["classes"]
    reference = gdal.GetDriverByName("MEM").CreateCopy("", gdal.Open(image))
    burnt = gdal.GetDriverByName("MEM").Create("", reference.RasterXSize, reference.RasterYSize, 1, gdal.GDT_Int16)
    burnt.SetGeoTransform(reference.GetGeoTransform())
    burnt.SetProjection(reference.GetProjection())
    burnt.GetRasterBand(1).Fill(-1)
    for index, name in enumerate(names):
        gdal.Rasterize(burnt, polygons, burnValues=[index], where=f"label = '{name}'")
    truth = burnt.ReadAsArray()
    gt = reference.GetGeoTransform()
    _, labels = reader.arrays("train")
    rows = accepted_positions(tmp_path / "dataset")
    assert len(rows) == reader.size("train") > 0
    for x, y, _, _, index in rows:
        col, row = round((x - gt[0]) / gt[1]) - 8, round((y - gt[3]) / gt[5]) - 8
        np.testing.assert_array_equal(labels[index], truth[row:row + 16, col:col + 16])
    assert (labels == -1).any() and (labels >= 0).all(axis=(1, 2)).sum() < len(labels)
    assert result["rejected"]["label_nodata"] > 0
    assert sum(reader.manifest["class_counts"]["train"]) == int((labels >= 0).sum())
    assert any("rasterised from" in m.get("message", "") for m in messages)


def test_one_patch_size_is_one_ground_size_for_every_source(pan_ms, tmp_path):
    """Pan 64 px given, MS size left out: MS gets round(64 x pan spacing / MS spacing) px (the same
    ground), i.e. the very patches of the explicit 64 + 32 run."""
    pan_gt, ms_gt = gdal.Open(pan_ms["pan"]).GetGeoTransform(), gdal.Open(pan_ms["ms"]).GetGeoTransform()
    expected = round(64 * pan_gt[1] / ms_gt[1])
    _, messages = run(extract_patches_job, {
        "sources": [{"path": pan_ms["pan"], "patch_size": 64, "name": "pan"},
                    {"path": pan_ms["ms"], "patch_size": None, "name": "ms"}],
        "positions": str(pan_ms["folder"].parent / "grid.gpkg"),
        "label": {"kind": "image", "path": pan_ms["ms"], "patch_size": 16}, "output": str(tmp_path / "dataset")})
    reader = open_dataset(tmp_path / "dataset")
    assert [s["patch_size"] for s in reader.manifest["sources"]] == [64, expected] and expected == 32
    assert any("ms: patch size 32 px" in m.get("message", "") for m in messages)
    explicit = open_dataset(pan_ms["folder"])
    np.testing.assert_array_equal(reader.arrays("train")[0]["ms"], explicit.arrays("train")[0]["ms"])
    with pytest.raises(InvalidSpec, match="the first source needs its patch_size"):
        run(extract_patches_job, {"sources": [{"path": pan_ms["pan"], "patch_size": None, "name": "pan"}],
                                  "positions": str(pan_ms["folder"].parent / "grid.gpkg"),
                                  "label": {"kind": "image", "path": pan_ms["ms"]}, "output": str(tmp_path / "x")})


def test_pixels_outside_the_polygons_can_be_a_background_class(data_dir, tmp_path):
    """``background``: the pixels outside every polygon are a class of their own (value 0, first),
    not ignored, so every grid patch is kept; a background name that is a polygon class's is
    that class. Reference: the footprints burnt with gdal.Rasterize on the image grid."""
    image = str(data_dir / SPACENET / "sample_geotiff.tif")
    polygons = building_inputs(tmp_path)["buildings"]  # the footprints with a text field class = building
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 64, "step": 64,
                             "output": str(tmp_path / "grid.gpkg")})
    label = {"kind": "segmentation", "path": polygons, "class_field": "class", "background": "background"}
    result, messages = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 64, "name": "pan"}], "positions": str(tmp_path / "grid.gpkg"),
        "label": label, "output": str(tmp_path / "dataset")})
    assert [(c["index"], c["value"], c["name"]) for c in result["classes"]] == [(0, 0, "background"),
                                                                                (1, 1, "building")]
    assert result["rejected"] == {"outside": 0, "nodata": 0, "label_nodata": 0}
    assert any("outside every polygon: class 'background'" in m.get("message", "") for m in messages)
    burnt = gdal.GetDriverByName("MEM").Create("", 900, 900, 1, gdal.GDT_Byte)
    burnt.SetGeoTransform(gdal.Open(image).GetGeoTransform())
    burnt.SetProjection(gdal.Open(image).GetProjection())
    gdal.Rasterize(burnt, polygons, burnValues=[1])
    truth = burnt.ReadAsArray()
    reader = open_dataset(tmp_path / "dataset")
    _, labels = reader.arrays("train")
    rows = accepted_positions(tmp_path / "dataset")
    gt = gdal.Open(image).GetGeoTransform()
    assert len(rows) == len(labels) == feature_count(tmp_path / "grid.gpkg") > 100
    for x, y, _, _, index in rows:
        col, row = round((x - gt[0]) / gt[1]) - 32, round((y - gt[3]) / gt[5]) - 32
        np.testing.assert_array_equal(labels[index], truth[row:row + 64, col:col + 64])
    assert 0 < labels.mean() < 0.1  # about 4 % of the pixels are buildings

    # a background named as a polygon class: outside the polygons is that class (one class here)
    same, _ = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 64, "name": "pan"}], "positions": str(tmp_path / "grid.gpkg"),
        "label": {**label, "background": "building"}, "output": str(tmp_path / "same")})
    assert [(c["value"], c["name"]) for c in same["classes"]] == [(1, "building")]
    _, merged = open_dataset(tmp_path / "same").arrays("train")
    assert (merged == 0).all()


@pytest.mark.parametrize("label, message", [
    ({"kind": "segmentation", "path": "labels.tif", "background": "background"}, "for segmentation polygons"),
    ({"kind": "segmentation", "path": "p.gpkg", "class_field": "class", "background": " "}, "name of the class"),
])
def test_a_background_class_needs_polygons_and_a_name(label, message):
    with pytest.raises(InvalidSpec, match=message):
        extract_patches_job({"sources": [{"path": "x.tif", "patch_size": 8}], "positions": "p.gpkg",
                             "output": "out", "label": label}, Reporter(io.StringIO()))


def write_zones(path, crs_wkt, zones, field="split"):
    """A GeoPackage of rectangles ``(left, top, right, bottom, split)`` with the text field ``field``."""
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference(wkt=crs_wkt)
    layer = source.CreateLayer("zones", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    for left, top, right, bottom, split in zones:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField(field, split)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON (({left} {top}, {right} {top}, {right} {bottom}, {left} {bottom}, {left} {top}))"))
        layer.CreateFeature(feature)
    source = None
    return str(path)


def test_split_zones_hide_the_labels_of_other_splits(data_dir, tmp_path):
    """Split zones: the scene's west part is train, the east valid, a strip test; every patch keeps
    the label pixels whose centre lies in a zone of its own split, the others are -1; a patch
    with none left is rejected. Reference: the label raster's window read with GDAL, masked by
    the image's nodata and by the pixel centres' x against the zone borders."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    strata = str(data_dir / NC / "strata.tif")
    dataset = gdal.Open(image)
    gt, wkt, width, height = dataset.GetGeoTransform(), dataset.GetProjection(), dataset.RasterXSize, dataset.RasterYSize
    west, east = gt[0], gt[0] + width * gt[1]
    top, bottom = gt[3], gt[3] + height * gt[5]
    x1, x2 = gt[0] + 200.3 * gt[1], gt[0] + 230.3 * gt[1]  # borders through pixels, not on their edges
    zones = write_zones(tmp_path / "zones.gpkg", wkt, [(west, top, x1, bottom, "train"), (x1, top, x2, bottom, "test"),
                                                        (x2, top, east, bottom, "valid"),
                                                        (east, top, east + 10 * gt[1], bottom, "other")])  # off the scene
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 32, "step": 24,
                             "split": {"train": 0.5, "valid": 0.5}, "seed": 0, "output": str(tmp_path / "grid.gpkg")})
    classes = [{"value": v} for v in range(1, 8)]
    result, messages = run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 32, "name": "landsat"}], "positions": str(tmp_path / "grid.gpkg"),
        "label": {"kind": "segmentation", "path": strata, "classes": classes}, "split_zones": zones,
        "output": str(tmp_path / "dataset")})
    assert any("split zones from" in m.get("message", "") for m in messages)
    assert any("zones named other are no split" in m.get("message", "") for m in messages)
    reader = open_dataset(tmp_path / "dataset")
    labels = {split: reader.arrays(split)[1] for split in ("train", "valid")}
    centres_x = gt[0] + (np.arange(width) + 0.5) * gt[1]
    zone_of = np.select([centres_x < x1, centres_x < x2], ["train", "test"], "valid")
    nodata_values = [dataset.GetRasterBand(b + 1).GetNoDataValue() for b in range(dataset.RasterCount)]
    rows = accepted_positions(tmp_path / "dataset")
    seen = {"train": 0, "valid": 0}
    for x, y, _, split, index in rows:
        raw, (col, row), _ = gdal_window(strata, x, y, 32)
        pixels, _, _ = gdal_window(image, x, y, 32)
        nodata = (pixels == np.array(nodata_values)).any(axis=-1)
        expected = np.where((raw[..., 0] >= 1) & (raw[..., 0] <= 7) & ~nodata, raw[..., 0] - 1, -1)
        expected = np.where(zone_of[col:col + 32][None, :] == split, expected, -1)
        np.testing.assert_array_equal(labels[split][index], expected)
        seen[split] += int((zone_of[col:col + 32] != split).any())
    assert min(seen.values()) > 0  # patches of each split crossed a zone border
    assert len(rows) + result["rejected"]["label_nodata"] + result["rejected"]["outside"] + \
        result["rejected"]["nodata"] == feature_count(tmp_path / "grid.gpkg")
    run(extract_patches_job, {
        "sources": [{"path": image, "patch_size": 32, "name": "landsat"}], "positions": str(tmp_path / "grid.gpkg"),
        "label": {"kind": "segmentation", "path": strata, "classes": classes}, "output": str(tmp_path / "plain")})
    plain = open_dataset(tmp_path / "plain")
    assert plain.size("train") + plain.size("valid") > len(rows)  # the zones left some patches no label


@pytest.mark.parametrize("zones, label, message", [
    ("zones.gpkg", {"kind": "class"}, "split zones mask segmentation label pixels"),
    ("no_split_field", {"kind": "segmentation"}, "split zones: .*no field 'split'"),
    ("no_split_names", {"kind": "segmentation"}, "field 'split' names no split .*'north', 'south'"),
])
def test_split_zones_need_segmentation_labels_and_split_names(data_dir, tmp_path, zones, label, message):
    """Zones with class labels, without the split field or naming no split: a clear error, no output."""
    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    wkt = gdal.Open(image).GetProjection()
    gt = gdal.Open(image).GetGeoTransform()
    box = (gt[0], gt[3], gt[0] + 100 * gt[1], gt[3] + 100 * gt[5])
    if zones == "no_split_field":
        zones = write_zones(tmp_path / "z.gpkg", wkt, [(*box, "train")], field="zone")
    elif zones == "no_split_names":
        zones = write_zones(tmp_path / "z.gpkg", wkt, [(*box, "north"), (*box, "south")])
    run(select_samples_job, {"raster": image, "strategy": "grid", "patch_size": 32, "step": 24,
                             "split": {"train": 1.0}, "output": str(tmp_path / "grid.gpkg")})
    spec = {"sources": [{"path": image, "patch_size": 32}], "positions": str(tmp_path / "grid.gpkg"),
            "class_field": "class" if label["kind"] == "class" else None, "split_zones": zones,
            "output": str(tmp_path / "out"),
            "label": {**label, "path": str(data_dir / NC / "strata.tif")} if label["kind"] != "class" else label}
    with pytest.raises(EngineError, match=message):
        run(extract_patches_job, spec)
    assert not (tmp_path / "out").exists()
