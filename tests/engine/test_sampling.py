"""select_samples on real data: NC Landsat points, strata label raster, polygons, grids, splits."""

import io
import json
from collections import Counter

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from deepfield.engine.contract import SAMPLING_STRATEGIES, SelectSamplesSpec
from deepfield.engine.errors import InvalidSpec, NoOverlap
from deepfield.engine.protocol import EngineError, Reporter
from deepfield.engine.crs import crs_equivalent
from deepfield.engine.jobs.select_samples import run as select_samples_job

NC = "nc_landsat7_landcover"


def run(spec):
    stream = io.StringIO()
    result = select_samples_job(spec, Reporter(stream))
    return result, [json.loads(line) for line in stream.getvalue().splitlines()]


def features(path):
    """Features of the first layer of a vector file (the data source is kept open meanwhile)."""
    source = ogr.Open(str(path))
    yield from source.GetLayer(0)


def read_gpkg(path):
    """(x, y, class, split, fid) of the positions layer, read with OGR."""
    source = ogr.Open(str(path))
    layer = source.GetLayerByName("positions")
    rows = [(f.GetGeometryRef().GetX(), f.GetGeometryRef().GetY(), f.GetField("class"), f.GetField("split"),
             f.GetFID()) for f in layer]
    return rows, layer.GetSpatialRef().ExportToWkt()


@pytest.fixture(scope="module")
def nc(data_dir):
    return {"image": str(data_dir / NC / "lsat7_2000_6band.vrt"), "points": str(data_dir / NC / "landsat96_points.shp"),
            "polygons": str(data_dir / NC / "landsat96_polygons.shp"), "strata": str(data_dir / NC / "strata.tif")}


def expected_point_classes(image, points):
    """Independently: class of every point whose pixel is inside the image and not nodata in any band."""
    dataset = gdal.Open(image)
    gt = dataset.GetGeoTransform()
    stack = dataset.ReadAsArray()
    nodata = [dataset.GetRasterBand(b + 1).GetNoDataValue() for b in range(dataset.RasterCount)]
    counts = Counter()
    for feature in features(points):
        geometry = feature.GetGeometryRef()
        col = int(np.floor((geometry.GetX() - gt[0]) / gt[1]))
        row = int(np.floor((geometry.GetY() - gt[3]) / gt[5]))
        if not (0 <= col < dataset.RasterXSize and 0 <= row < dataset.RasterYSize):
            continue
        if any(stack[b, row, col] == nodata[b] for b in range(dataset.RasterCount)):
            continue
        counts[feature.GetField("id")] += 1
    return counts


def test_nc_points_counts_match_gdal(nc, tmp_path):
    result, messages = run({"raster": nc["image"], "strategy": "points", "vector": nc["points"], "class_field": "id",
                            "split": {"train": 0.7, "valid": 0.15, "test": 0.15}, "seed": 5,
                            "output": str(tmp_path / "points.gpkg")})
    rows, wkt = read_gpkg(tmp_path / "points.gpkg")
    expected = expected_point_classes(nc["image"], nc["points"])
    assert Counter(r[2] for r in rows) == expected
    assert result["count"] == sum(expected.values())
    # positions are the original coordinates: EPSG:3358 and the raster's LCC are the same CRS
    originals = {(round(f.GetGeometryRef().GetX(), 3), round(f.GetGeometryRef().GetY(), 3))
                 for f in features(nc["points"])}
    assert all((round(x, 3), round(y, 3)) in originals for x, y, *_ in rows)
    # stratified splits: each class split close to its proportions, balance table written
    splits = Counter(r[3] for r in rows)
    assert abs(splits["train"] / len(rows) - 0.7) < 0.03
    table = (tmp_path / "points_balance.csv").read_text().splitlines()
    assert table[0] == "split,class,count" and len(table) > 7
    assert any("class balance per split" in m.get("message", "") for m in messages)
    assert sorted(r[4] for r in rows) == list(range(1, len(rows) + 1))


def test_crs_equivalence(nc):
    image_wkt = gdal.Open(nc["image"]).GetProjection()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3358)
    assert crs_equivalent(image_wkt, srs.ExportToWkt())
    srs.ImportFromEPSG(32119)
    assert crs_equivalent(image_wkt, srs.ExportToWkt())
    srs.ImportFromEPSG(4326)
    assert not crs_equivalent(image_wkt, srs.ExportToWkt())


def test_points_in_another_crs_are_reprojected(nc, tmp_path):
    """The same points in WGS 84 select the same pixels as in EPSG:3358."""
    wgs84 = str(tmp_path / "points_4326.gpkg")
    gdal.VectorTranslate(wgs84, nc["points"], dstSRS="EPSG:4326", format="GPKG")
    spec = {"raster": nc["image"], "strategy": "points", "class_field": "id", "seed": 1}
    run({**spec, "vector": nc["points"], "output": str(tmp_path / "a.gpkg")})
    run({**spec, "vector": wgs84, "output": str(tmp_path / "b.gpkg")})
    a, _ = read_gpkg(tmp_path / "a.gpkg")
    b, _ = read_gpkg(tmp_path / "b.gpkg")
    assert len(a) == len(b) > 500
    # the raster's LCC says "unknown datum, towgs84=0": WGS 84 -> it skips the 0.8 m NAD83(HARN) shift
    assert np.abs(np.array([r[:2] for r in a]) - np.array([r[:2] for r in b])).max() < 1.0


def test_seed_repeats(nc, tmp_path):
    spec = {"raster": nc["image"], "strategy": "label_raster", "label_raster": nc["strata"],
            "label_strategy": "constant", "samples": 30, "split": {"train": 0.5, "valid": 0.5}}
    run({**spec, "seed": 7, "output": str(tmp_path / "a.gpkg")})
    run({**spec, "seed": 7, "output": str(tmp_path / "b.gpkg")})
    run({**spec, "seed": 8, "output": str(tmp_path / "c.gpkg")})
    a, b, c = (read_gpkg(tmp_path / f"{n}.gpkg")[0] for n in "abc")
    assert a == b
    assert a != c


def test_label_raster_strategies(nc, tmp_path):
    strata = gdal.Open(nc["strata"]).ReadAsArray()
    counts = Counter(strata[strata != -99999].astype(int).ravel().tolist())
    for strategy, samples, quota in (("constant", 300, lambda n: min(300, n)),
                                     ("smallest", 0, lambda n: min(counts.values())),
                                     ("total", 700, lambda n: min(100, n))):
        out = tmp_path / f"{strategy}.gpkg"
        run({"raster": nc["strata"], "strategy": "label_raster", "label_raster": nc["strata"],
             "label_strategy": strategy, "samples": samples, "seed": 2, "output": str(out)})
        rows, _ = read_gpkg(out)
        assert Counter(r[2] for r in rows) == {value: quota(n) for value, n in counts.items()}, strategy
        gt = gdal.Open(nc["strata"]).GetGeoTransform()
        for x, y, value, *_ in rows[:200]:
            col, row = int((x - gt[0]) // gt[1]), int((y - gt[3]) // gt[5])
            assert strata[row, col] == value


def footprints(rows, gt, size):
    """Patch footprints (col0, row0) in pixels for even/odd sizes (patch-centre rule)."""
    out = []
    for x, y, *_ in rows:
        u, v = (x - gt[0]) / gt[1], (y - gt[3]) / gt[5]
        centre = (np.floor(u + 0.5), np.floor(v + 0.5)) if size % 2 == 0 else (np.floor(u), np.floor(v))
        out.append((int(centre[0]) - size // 2, int(centre[1]) - size // 2))
    return np.array(out)


def assert_disjoint_splits(rows, gt, size):
    starts = footprints(rows, gt, size)
    splits = np.array([r[3] for r in rows])
    train = starts[splits == "train"]
    for other in starts[splits != "train"]:
        overlap = (np.abs(train[:, 0] - other[0]) < size) & (np.abs(train[:, 1] - other[1]) < size)
        assert not overlap.any()
    assert set(splits) == {"train", "valid", "test"}


def test_grid_blocks_no_overlap_between_splits(nc, tmp_path):
    out = tmp_path / "grid.gpkg"
    size = 32
    result, _ = run({"raster": nc["image"], "strategy": "grid", "patch_size": size, "step": 16, "seed": 3,
                     "split": {"train": 0.6, "valid": 0.2, "test": 0.2}, "split_mode": "blocks",
                     "block_size": 2000, "output": str(out)})
    rows, _ = read_gpkg(out)
    dataset = gdal.Open(nc["image"])
    gt, stack = dataset.GetGeoTransform(), dataset.ReadAsArray()
    nodata = np.array([dataset.GetRasterBand(b + 1).GetNoDataValue() for b in range(6)])[:, None, None]
    starts = footprints(rows, gt, size)
    bad = (stack == nodata).any(axis=0)
    partly = 0
    for col, row in starts:  # the whole patch is inside and holds a valid pixel
        assert col >= 0 and row >= 0 and col + size <= 489 and row + size <= 443
        assert not bad[row:row + size, col:col + size].all()
        partly += bool(bad[row:row + size, col:col + size].any())
    assert partly > 0  # footprints partly nodata are kept (Extract patches applies max_nodata)
    assert result["dropped"]["block_border"] > 0
    assert_disjoint_splits(rows, gt, size)
    # the grid proposes every position whose patch holds a valid pixel, then the raster filter drops
    # those whose centre pixel is nodata: count both independently
    proposed = [(r, c) for r in range(0, 443 - size + 1, 16) for c in range(0, 489 - size + 1, 16)
                if not bad[r:r + size, c:c + size].all()]
    centre_bad = sum(bool(bad[r + size // 2, c + size // 2]) for r, c in proposed)
    assert result["dropped"]["nodata"] == centre_bad > 0
    assert result["count"] + result["dropped"]["block_border"] + centre_bad == len(proposed)


def test_constant_selection_with_blocks(nc, tmp_path):
    out = tmp_path / "constant.gpkg"
    run({"raster": nc["image"], "strategy": "label_raster", "label_raster": nc["strata"], "patch_size": 16,
         "label_strategy": "constant", "samples": 400, "seed": 4, "split": {"train": 0.6, "valid": 0.2, "test": 0.2},
         "split_mode": "blocks", "block_size": 1500, "output": str(out)})
    rows, _ = read_gpkg(out)
    assert_disjoint_splits(rows, gdal.Open(nc["image"]).GetGeoTransform(), 16)


def test_split_blocks_layer_holds_each_position_in_a_block_of_its_split(nc, tmp_path):
    out, blocks = tmp_path / "grid.gpkg", tmp_path / "blocks.gpkg"
    spec = {"raster": nc["image"], "strategy": "grid", "patch_size": 32, "seed": 1, "split_mode": "blocks",
            "split": {"train": 0.6, "valid": 0.2, "test": 0.2}, "block_size": 3000, "output": str(out)}
    result, _ = run({**spec, "blocks": str(blocks)})
    assert result["blocks"] == str(blocks)
    rows, _ = read_gpkg(out)
    polygons = [(f.GetGeometryRef().Clone(), f.GetField("split"), f.GetField("positions")) for f in features(blocks)]
    gt = gdal.Open(nc["image"]).GetGeoTransform()
    extent = ogr.CreateGeometryFromWkt(f"POLYGON (({gt[0]} {gt[3]}, {gt[0] + 489 * gt[1]} {gt[3]}, "
                                       f"{gt[0] + 489 * gt[1]} {gt[3] + 443 * gt[5]}, {gt[0]} {gt[3] + 443 * gt[5]}, "
                                       f"{gt[0]} {gt[3]}))")
    assert {split for _, split, _ in polygons} == {"train", "valid", "test"}
    assert sum(n for *_, n in polygons) == result["count"] == len(rows)
    for k, (polygon, split, count) in enumerate(polygons):
        assert polygon.GetArea() <= 3000 ** 2 + 1e-6 and extent.Contains(polygon)
        inside = [r for r in rows if polygon.Contains(ogr.CreateGeometryFromWkt(f"POINT ({r[0]} {r[1]})"))]
        assert len(inside) == count and {r[3] for r in inside} == {split}
        assert all(polygon.Intersection(other).GetArea() == 0 for other, *_ in polygons[k + 1:])
    with pytest.raises(InvalidSpec, match="only with split_mode 'blocks'"):
        run({**spec, "split_mode": "random", "blocks": str(tmp_path / "no.gpkg")})
    assert not (tmp_path / "no.gpkg").exists()


def test_polygons_random_and_grid(nc, tmp_path):
    out = tmp_path / "poly.gpkg"
    run({"raster": nc["image"], "strategy": "polygons", "vector": nc["polygons"], "class_field": "id",
         "samples_per_class": 20, "border_distance": 30.0, "seed": 1, "output": str(out)})
    rows, _ = read_gpkg(out)
    polygons = [(f.GetField("id"), f.GetGeometryRef().Clone()) for f in features(nc["polygons"])]
    for x, y, value, *_ in rows:
        point = ogr.CreateGeometryFromWkt(f"POINT ({x} {y})")
        assert any(v == value and g.Contains(point) and g.Boundary().Distance(point) >= 30.0 for v, g in polygons)
    counts = Counter(r[2] for r in rows)
    assert max(counts.values()) <= 20 and len(counts) >= 5
    run({"raster": nc["image"], "strategy": "polygons", "vector": nc["polygons"], "class_field": "id",
         "polygon_mode": "grid", "step": 4, "output": str(tmp_path / "grid.gpkg")})
    grid, _ = read_gpkg(tmp_path / "grid.gpkg")
    gt = gdal.Open(nc["image"]).GetGeoTransform()
    assert all(int((x - gt[0]) // gt[1]) % 4 == 0 and int((y - gt[3]) // gt[5]) % 4 == 0 for x, y, *_ in grid)


@pytest.mark.parametrize("change, error, message", [
    ({"class_field": "nope"}, InvalidSpec, "no field 'nope'"),
    ({"patch_size": 500}, InvalidSpec, "patch size 500"),
    ({"split": {"train": 0, "valid": 0}}, InvalidSpec, "split proportions"),
    ({"strategy": "poitns"}, InvalidSpec, "strategy must be one of points, polygons, label_raster, grid"),
    ({"class_feild": "id"}, InvalidSpec, "unknown spec key.*class_feild; known keys: raster, strategy, output"),
    ({"class_field": ""}, InvalidSpec, "strategy 'points' needs 'class_field'"),
    ({"split": {"train": 0.9, "valid": 0.9, "test": 0.9}}, InvalidSpec,
     r"must sum to 1, but train 0.9 \+ valid 0.9 \+ test 0.9 = 2.7"),
    ({"split": {"train": 70, "valid": 15, "test": 15}}, InvalidSpec, "must sum to 1"),
])
def test_clear_errors(nc, tmp_path, change, error, message):
    spec = {"raster": nc["image"], "strategy": "points", "vector": nc["points"], "class_field": "id",
            "output": str(tmp_path / "out.gpkg"), **change}
    with pytest.raises(error, match=message):
        run(spec)
    assert not (tmp_path / "out.gpkg").exists() and not (tmp_path / "out.gpkg.part").exists()


def test_no_overlap_error(nc, data_dir, tmp_path):
    with pytest.raises(NoOverlap, match="none of the .* positions falls inside the raster"):
        run({"raster": str(data_dir / "spacenet_solaris" / "preproc_tutorial_ms1.tif"), "strategy": "points",
             "vector": nc["points"], "class_field": "id", "output": str(tmp_path / "out.gpkg")})


def test_polygons_grid_step_zero_is_the_patch_size(nc, tmp_path):
    spec = {"raster": nc["image"], "strategy": "polygons", "vector": nc["polygons"], "class_field": "id",
            "polygon_mode": "grid", "patch_size": 5}
    run({**spec, "step": 0, "output": str(tmp_path / "zero.gpkg")})
    run({**spec, "step": 5, "output": str(tmp_path / "five.gpkg")})
    zero, _ = read_gpkg(tmp_path / "zero.gpkg")
    five, _ = read_gpkg(tmp_path / "five.gpkg")
    assert len(zero) > 10 and [r[:3] for r in zero] == [r[:3] for r in five]
    gt = gdal.Open(nc["image"]).GetGeoTransform()
    assert all(int((x - gt[0]) // gt[1]) % 5 == 0 and int((y - gt[3]) // gt[5]) % 5 == 0 for x, y, *_ in zero)


def test_automatic_block_size_in_degrees_and_few_blocks_warning(data_dir, tmp_path):
    """EPSG:4326 (2.7e-6 degree pixels): the automatic block is 8 patches a side; the old default of
    1000 map units (degrees) puts every position in one block, which the job warns about."""
    raster = str(data_dir / "spacenet_solaris" / "road_mask_input.tif")
    spec = {"raster": raster, "strategy": "grid", "patch_size": 32, "split_mode": "blocks", "seed": 2,
            "split": {"train": 0.6, "valid": 0.2, "test": 0.2}}
    result, messages = run({**spec, "output": str(tmp_path / "auto.gpkg"), "blocks": str(tmp_path / "blocks.gpkg")})
    spacing = gdal.Open(raster).GetGeoTransform()[1]
    polygons = [f.GetGeometryRef().Clone() for f in features(tmp_path / "blocks.gpkg")]
    side = 8 * 32 * spacing
    assert len(polygons) >= 9 and all(p.GetArea() <= side ** 2 * (1 + 1e-9) for p in polygons)
    assert max(p.GetArea() for p in polygons) == pytest.approx(side ** 2, rel=1e-9)
    assert set(result["balance"]) == {"train", "valid", "test"} and all(result["balance"].values())
    assert not [m for m in messages if m.get("level") == "warning"]
    result, messages = run({**spec, "block_size": 1000, "output": str(tmp_path / "one.gpkg")})
    rows, _ = read_gpkg(tmp_path / "one.gpkg")
    assert {r[3] for r in rows} == {"train"}
    assert any("only 1 block(s)" in m.get("message", "") for m in messages if m.get("level") == "warning")


def test_every_strategy_has_one_sampler_made_from_the_spec():
    from deepfield.engine.sampling import SAMPLERS, GridSampler, PolygonSampler

    assert set(SAMPLERS) == set(SAMPLING_STRATEGIES)
    assert all(SAMPLERS[name].name == name for name in SAMPLING_STRATEGIES)
    spec = SelectSamplesSpec.from_dict({"raster": "r.tif", "strategy": "grid", "output": "o.gpkg", "patch_size": 16,
                                        "mask": "m.tif"})
    assert SAMPLERS["grid"].from_spec(spec) == GridSampler(patch_size_px=16, step_px=16, mask="m.tif")
    spec = SelectSamplesSpec.from_dict({"raster": "r.tif", "strategy": "polygons", "output": "o.gpkg",
                                        "vector": "p.shp", "class_field": "id", "patch_size": 8, "step": 3,
                                        "border_distance": 25.0, "polygon_mode": "grid"})
    sampler = SAMPLERS["polygons"].from_spec(spec)
    assert isinstance(sampler, PolygonSampler)
    assert (sampler.step_px, sampler.border_distance_map_units, sampler.mode) == (3, 25.0, "grid")


def test_text_class_field_maps_sorted_names_and_counts_nulls(nc, tmp_path):
    """A text class field: its names get 1..K in sorted order, stored with the positions; features
    with a NULL class are skipped and counted (checked against the points read with OGR)."""
    copy = tmp_path / "points.gpkg"
    gdal.VectorTranslate(str(copy), nc["points"], format="GPKG", layerName="points")
    source = ogr.Open(str(copy), 1)
    layer = source.GetLayer(0)
    nulled = 0
    for feature in layer:
        if feature.GetFID() % 10 == 0:
            feature.SetFieldNull("label")
            layer.SetFeature(feature)
            nulled += 1
    labels = {(round(f.GetGeometryRef().GetX(), 3), round(f.GetGeometryRef().GetY(), 3)): f.GetField("label")
              for f in layer}
    del layer, source
    names = sorted({name for name in labels.values() if name is not None})
    expected = {name: value for value, name in enumerate(names, start=1)}
    result, lines = run({"raster": nc["image"], "strategy": "points", "vector": str(copy), "class_field": "label",
                         "output": str(tmp_path / "out.gpkg")})
    assert nulled > 0 and result["skipped"]["null_class"] == nulled
    assert any("null_class" in line.get("message", "") for line in lines)
    assert [(c["value"], c["name"]) for c in result["classes"]] == [(v, n) for n, v in expected.items()]
    written = [(round(f.GetGeometryRef().GetX(), 3), round(f.GetGeometryRef().GetY(), 3), f.GetField("class"),
                f.GetField("class_name")) for f in features(tmp_path / "out.gpkg")]
    assert len(written) == result["count"] > 0
    for x, y, value, name in written:
        assert labels[(x, y)] == name and expected[name] == value


def test_non_integer_numbers_are_a_clear_error(nc, tmp_path):
    copy = tmp_path / "points.gpkg"
    gdal.VectorTranslate(str(copy), nc["points"], format="GPKG", SQLStatement="SELECT *, id + 0.5 AS half "
                         "FROM landsat96_points", SQLDialect="SQLITE", layerName="points")
    with pytest.raises(EngineError, match="class field 'half' must hold integers or text; found [0-9]+\\.5"):
        run({"raster": nc["image"], "strategy": "points", "vector": str(copy), "class_field": "half",
             "output": str(tmp_path / "out.gpkg")})


def test_automatic_block_size_keeps_every_class_in_every_split(nc, tmp_path):
    """NC strata, 16 px patches: the old fixed 8-patch blocks leave a class out of a split (warned);
    the automatic search finds blocks that give every class to every split, says so, and the
    blocks stay disjoint (checked on the written positions)."""
    spec = {"raster": nc["image"], "strategy": "label_raster", "label_raster": nc["strata"], "samples": 60,
            "patch_size": 16, "split_mode": "blocks", "split": {"train": 0.7, "valid": 0.15, "test": 0.15},
            "seed": 0, "output": str(tmp_path / "fixed.gpkg")}
    spacing = gdal.Open(nc["image"]).GetGeoTransform()[1]
    _, lines = run({**spec, "block_size": 8 * 16 * spacing})
    assert any("has no position in the" in line.get("message", "") for line in lines)
    result, lines = run({**spec, "output": str(tmp_path / "auto.gpkg")})
    messages = [line.get("message", "") for line in lines]
    assert any(m.startswith("automatic block size") and "every class in every split" in m for m in messages)
    assert not any("has no position in the" in m for m in messages)
    rows, _ = read_gpkg(tmp_path / "auto.gpkg")
    classes = {r[2] for r in rows}
    for split in ("train", "valid", "test"):
        assert {r[2] for r in rows if r[3] == split} == classes
    gt, size = gdal.Open(nc["image"]).GetGeoTransform(), result["block_size"]
    assert size < 8 * 16 * spacing
    block_split = {}
    for x, y, _, split, _ in rows:  # every 16 px footprint in one block, every block in one split
        col = np.floor((x - gt[0]) / gt[1] + 0.5) - 8  # even size: the nearest corner - 8 (patch-centre rule)
        row = np.floor((y - gt[3]) / gt[5] + 0.5) - 8
        first = (int(col * gt[1] // size), int(row * -gt[5] // size))
        last = (int(((col + 16) * gt[1] - 1e-6) // size), int(((row + 16) * -gt[5] - 1e-6) // size))
        assert first == last
        assert block_split.setdefault(first, split) == split
