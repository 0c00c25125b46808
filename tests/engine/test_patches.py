"""extract_patches on real data: co-registration of pan 0.5 m / MS 1 m, values, labels, rejections."""

import functools
import io
import json

import numpy as np
import pytest
from osgeo import gdal, ogr

from deepfield.engine.dataset import open_dataset
from deepfield.engine.patches import extract_patches_job
from deepfield.engine.protocol import EngineError, Reporter
from deepfield.engine.sampling import select_samples_job

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


def test_pan_ms_coregistered_and_equal_to_gdal(pan_ms):
    reader = open_dataset(pan_ms["folder"])
    manifest = reader.manifest
    assert [s["scale"] for s in manifest["sources"]] == ["1", "2"]
    selected = feature_count(pan_ms["folder"].parent / "grid.gpkg")
    assert manifest["splits"]["train"] + manifest["splits"]["valid"] == selected == 15 * 15
    arrays = {split: reader.arrays(split) for split in ("train", "valid")}
    positions = accepted_positions(pan_ms["folder"])
    assert len(positions) == sum(manifest["splits"].values())
    for x, y, _, split, index in positions:
        sources, labels = arrays[split]
        pan, (pc, pr), pgt = gdal_window(pan_ms["pan"], x, y, 64)
        ms, (mc, mr), mgt = gdal_window(pan_ms["ms"], x, y, 32)
        target, _, _ = gdal_window(pan_ms["ms"], x, y, 16)
        np.testing.assert_array_equal(sources["pan"][index], pan.astype(np.float32))
        np.testing.assert_array_equal(sources["ms"][index], ms.astype(np.float32))
        np.testing.assert_array_equal(labels[index], target.astype(np.float32))
        # both patch centres (map units, from the geotransforms) are the same point, to sub-pixel
        pan_centre = (pgt[0] + (pc + 32) * pgt[1], pgt[3] + (pr + 32) * pgt[5])
        ms_centre = (mgt[0] + (mc + 16) * mgt[1], mgt[3] + (mr + 16) * mgt[5])
        assert abs(pan_centre[0] - ms_centre[0]) < 0.1 * pgt[1]
        assert abs(pan_centre[1] - ms_centre[1]) < 0.1 * pgt[1]
        # and the stored position is the MS (coarsest) pixel corner they centre on
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
        "class_field": "class", "output": str(tmp_path / "dataset")})
    reader = open_dataset(tmp_path / "dataset")
    classes = reader.manifest["label"]["classes"]
    assert [c["value"] for c in classes] == list(range(1, 8)) and [c["index"] for c in classes] == list(range(7))
    selected = ogr.Open(str(tmp_path / "points.gpkg"))
    total = feature_count(tmp_path / "points.gpkg")
    assert sum(result["splits"].values()) + sum(result["rejected"].values()) == total
    assert result["rejected"]["nodata"] > 0  # points near the band-7 nodata edge lose their patch
    dataset = gdal.Open(image)
    stack = dataset.ReadAsArray()
    nodata = np.array([dataset.GetRasterBand(b + 1).GetNoDataValue() for b in range(6)])
    for split in ("train", "test"):
        sources, labels = reader.arrays(split)
        assert labels.dtype == np.int32 and labels.shape == (reader.size(split),)
        rows = [p for p in accepted_positions(tmp_path / "dataset") if p[3] == split]
        for x, y, value, _, index in rows:
            assert classes[labels[index]]["value"] == value
            patch, (col, row), _ = gdal_window(image, x, y, 9)
            np.testing.assert_array_equal(sources["landsat"][index], patch)
            assert not (patch == nodata).any()
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
    with pytest.raises(EngineError, match="patch size 700 is bigger than the image"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 700, "name": "pan"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "label": {"kind": "image", "path": pan},
                                  "output": str(tmp_path / "dataset")})
    with pytest.raises(EngineError, match="none of the .* positions has its patches inside every source"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 599, "name": "pan"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "label": {"kind": "image", "path": pan},
                                  "output": str(tmp_path / "dataset")})
    with pytest.raises(EngineError, match="invalid source name"):
        run(extract_patches_job, {"sources": [{"path": pan, "patch_size": 8, "name": "labels"}],
                                  "positions": str(tmp_path / "grid.gpkg"), "output": str(tmp_path / "dataset")})
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
