"""Vectorise class map on real class maps: tiled output == one gdal.Polygonize over the whole map.

The reference polygons are made in the test by one ``gdal.Polygonize`` of the whole band (with its
nodata mask), the engine cuts the map into tiny tiles and merges the pieces: the polygons must be
the same ones (count, area per class, and each polygon topologically equal to its reference).
"""

from __future__ import annotations

import io
import itertools
import json
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from osgeo import gdal, ogr

from deepfield.engine.classes import ClassStyle
from deepfield.engine.contract import VectorizeClassMapSpec
from deepfield.engine.errors import EngineError, InvalidSpec, JobCancelled
from deepfield.engine.jobs import get_job
from deepfield.engine.protocol import Reporter
from deepfield.engine.rasters import raster_info
from deepfield.engine.vectorize import LAYER, regions_of, vectorize_class_map

from ..polygonize import reference_polygons

STRATA = "nc_landsat7_landcover/strata.tif"  # 489 x 443 px, 28.5 m, classes 1..7 (Float32)
PIXEL_AREA = 28.5 * 28.5


@pytest.fixture(scope="module")
def strata(data_dir) -> str:
    return str(data_dir / STRATA)


def written(path) -> list[tuple[int, str, ogr.Geometry]]:
    """(class, name, polygon) of the output layer."""
    dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    layer = dataset.GetLayerByName(LAYER)
    return [(f.GetField("class"), f.GetField("name"), f.GetGeometryRef().Clone()) for f in layer]


def per_class(polygons) -> dict[int, tuple[int, float]]:
    counts, areas = Counter(), defaultdict(float)
    for value, geometry in polygons:
        counts[value] += 1
        areas[value] += geometry.GetArea()
    return {v: (counts[v], round(areas[v], 3)) for v in counts}


def by_place(polygons) -> dict:
    """Polygons keyed by (class, envelope): vertices are on the pixel corners, so envelopes are exact."""
    keyed = {}
    for value, geometry in polygons:
        key = (value, geometry.GetEnvelope())
        assert key not in keyed, f"two polygons of class {value} with the envelope {key[1]}"
        keyed[key] = geometry
    return keyed


def vertices(polygon: ogr.Geometry) -> int:
    return sum(polygon.GetGeometryRef(i).GetPointCount() for i in range(polygon.GetGeometryCount()))


def default_style(path) -> str:
    """The QML of the output layer's default style in the GeoPackage's layer_styles table."""
    dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    styles = dataset.GetLayerByName("layer_styles")
    rows = [f for f in styles if f.GetField("f_table_name") == LAYER and f.GetField("useAsDefault")]
    assert len(rows) == 1
    assert rows[0].GetField("f_geometry_column") == dataset.GetLayerByName(LAYER).GetGeometryColumn()
    return rows[0].GetField("styleQML")


def qml_categories(qml: str) -> dict[str, tuple[str, str]]:
    """value -> (label, fill colour "r,g,b,a") of a categorized QML."""
    root = ElementTree.fromstring(qml)
    fills = {s.get("name"): {p.get("k"): p.get("v") for p in s.iter("prop")}["color"] for s in root.iter("symbol")}
    return {c.get("value"): (c.get("label"), fills[c.get("symbol")]) for c in root.iter("category")}


@pytest.mark.parametrize("tile_size", [13])
def test_tiny_tiles_give_the_polygons_of_one_polygonize(strata, tmp_path, tile_size):
    output = tmp_path / "polygons.gpkg"
    summary = vectorize_class_map(strata, output, tile_size=tile_size)
    got = [(value, geometry) for value, _, geometry in written(output)]
    reference = reference_polygons(strata)
    assert len(got) == len(reference) > 2000
    assert per_class(got) == per_class(reference)
    assert {c["value"]: (c["polygons"], round(c["area"], 3)) for c in summary} == per_class(reference)
    got_places, reference_places = by_place(got), by_place(reference)
    assert got_places.keys() == reference_places.keys()
    for key, polygon in reference_places.items():  # topologically equal, with the same vertices
        mine = got_places[key]
        assert mine.Within(polygon) and polygon.Within(mine), f"class {key[0]} at {key[1]}"
        assert vertices(mine) == vertices(polygon)
    # no seam: some polygons span many tiles, in both directions
    widths = [(e[1] - e[0]) / 28.5 for e in (g.GetEnvelope() for _, g in got)]
    heights = [(e[3] - e[2]) / 28.5 for e in (g.GetEnvelope() for _, g in got)]
    assert max(widths) > 3 * tile_size and max(heights) > 3 * tile_size


def test_nodata_and_skipped_classes_get_no_polygon(strata, tmp_path):
    """A uint8 copy with nodata 0 over a block crossing tile borders, class 5 (forest) skipped."""
    values = strata_values(strata)
    values[100:250, 50:300] = 0
    path = byte_map(strata, tmp_path / "holes.tif", values)

    output = tmp_path / "polygons.gpkg"
    vectorize_class_map(path, output, skip=(5,), tile_size=32)
    got = [(value, geometry) for value, _, geometry in written(output)]
    assert 5 not in {value for value, _ in got}
    assert per_class(got) == per_class(reference_polygons(path, skip=(5,)))
    kept = (values != 0) & (values != 5)
    assert sum(g.GetArea() for _, g in got) == pytest.approx(kept.sum() * PIXEL_AREA, rel=1e-12)
    hole = ogr.CreateGeometryFromWkt("POLYGON (({0} {2}, {1} {2}, {1} {3}, {0} {3}, {0} {2}))".format(
        *_block_bounds(gdal.Open(strata).GetGeoTransform(), 50, 300, 100, 250)))
    assert max(g.Intersection(hole).GetArea() for _, g in got) == 0


def strata_values(strata: str) -> np.ndarray:
    """strata.tif's classes as uint8, its nodata pixel as 0."""
    values = gdal.Open(strata).ReadAsArray()
    return np.where(values < 0, 0, values).astype(np.uint8)


def byte_map(strata: str, path: Path, values: np.ndarray, nodata: int = 0) -> str:
    """A uint8 GeoTIFF of ``values`` on strata.tif's grid, with ``nodata``."""
    source = gdal.Open(strata)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(source.GetGeoTransform())
    dataset.SetProjection(source.GetProjection())
    dataset.GetRasterBand(1).SetNoDataValue(nodata)
    dataset.GetRasterBand(1).WriteArray(values)
    dataset = None
    return str(path)


def _block_bounds(gt, col0, col1, row0, row1):
    return gt[0] + col0 * gt[1], gt[0] + col1 * gt[1], gt[3] + row1 * gt[5], gt[3] + row0 * gt[5]


def test_minimum_area_drops_small_regions(strata, tmp_path):
    min_area = 10 * PIXEL_AREA
    output = tmp_path / "polygons.gpkg"
    vectorize_class_map(strata, output, min_area=min_area, tile_size=50)
    got = [(value, geometry) for value, _, geometry in written(output)]
    reference = [(v, g) for v, g in reference_polygons(strata) if g.GetArea() >= min_area]
    assert len(reference) < len(reference_polygons(strata)) / 2  # most regions are tiny
    assert per_class(got) == per_class(reference)


def test_simplification_keeps_every_polygon_valid_with_fewer_vertices(strata, tmp_path):
    plain, simple = tmp_path / "plain.gpkg", tmp_path / "simple.gpkg"
    vectorize_class_map(strata, plain, min_area=20 * PIXEL_AREA, tile_size=50)
    vectorize_class_map(strata, simple, min_area=20 * PIXEL_AREA, simplify=40.0, tile_size=50)
    before, after = written(plain), written(simple)
    assert [v for v, _, _ in before] == [v for v, _, _ in after]

    assert sum(map(vertices, (g for *_, g in after))) < 0.7 * sum(map(vertices, (g for *_, g in before)))
    assert all(g.IsValid() and not g.IsEmpty() for *_, g in after)
    for (_, _, b), (_, _, a) in zip(before, after):  # each moves by less than the tolerance
        assert b.SymDifference(a).GetArea() < b.Boundary().Length() * 40.0


def test_colour_table_and_category_names_name_and_style_the_polygons(strata, tmp_path):
    """A paletted uint8 class map as DeepField writes it (colour table + category names), made here with GDAL."""
    path = byte_map(strata, tmp_path / "paletted.tif", strata_values(strata))
    dataset = gdal.Open(path, gdal.GA_Update)
    band = dataset.GetRasterBand(1)
    table = gdal.ColorTable()
    colors = {1: (227, 26, 28), 5: (51, 160, 44), 6: (31, 120, 180)}
    for value, color in colors.items():
        table.SetColorEntry(value, color + (255,))
    band.SetRasterColorTable(table)
    band.SetCategoryNames(["", "developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"])
    band = dataset = None

    output = tmp_path / "polygons.gpkg"
    summary = vectorize_class_map(path, output, skip=(2, 3, 4, 7), tile_size=100)
    names = {value: name for value, name, _ in written(output)}
    assert names == {1: "developed", 5: "forest", 6: "water"}
    assert [(c["value"], c["name"], c["color"]) for c in summary] == [
        (1, "developed", "#e31a1c"), (5, "forest", "#33a02c"), (6, "water", "#1f78b4")]
    assert qml_categories(default_style(output)) == {
        "1": ("developed", "227,26,28,255"), "5": ("forest", "51,160,44,255"), "6": ("water", "31,120,180,255")}


def test_given_classes_override_the_map_and_unnamed_values_get_defaults(strata, tmp_path):
    output = tmp_path / "polygons.gpkg"
    summary = vectorize_class_map(strata, output, classes=(ClassStyle(1, "built", "#123456"),), skip=(3, 4, 5, 6, 7),
                                  tile_size=200)
    assert {value: name for value, name, _ in written(output)} == {1: "built", 2: "class 2"}
    assert summary[0]["color"] == "#123456" and summary[1]["color"].startswith("#")
    assert qml_categories(default_style(output))["1"] == ("built", "18,52,86,255")


def test_the_job_through_the_registry(strata, tmp_path):
    output = tmp_path / "out" / "polygons.gpkg"
    stream = io.StringIO()
    spec = VectorizeClassMapSpec(map=strata, output=str(output), min_area=5 * PIXEL_AREA, skip_values=(5,),
                                 tile_size=40).to_dict()
    result = get_job("vectorize_class_map")(json.loads(json.dumps(spec)), Reporter(stream, min_interval_s=0))
    assert result["output"] == str(output) and result["layer"] == LAYER
    assert result["polygons"] == len(written(output)) == sum(c["polygons"] for c in result["classes"])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    progress = [m["percent"] for m in lines if m["type"] == "progress"]
    assert len(progress) > 10 and progress == sorted(progress) and progress[-1] == 100
    assert list(tmp_path.joinpath("out").iterdir()) == [output]  # no .part left


@pytest.mark.parametrize("change, message", [
    ({"tiles_size": 3}, "unknown spec key"),
    ({"min_area": -1.0}, "min_area must be a number >= 0"),
    ({"simplify": "a lot"}, "simplify must be a number"),
    ({"skip_values": [0.5]}, "skip_values must be integer"),
    ({"classes": [{"value": 1, "color": "red"}]}, "classes must be"),
    ({"tile_size": 0}, "tile_size must be a whole number"),
])
def test_bad_specs_are_refused_by_key(strata, tmp_path, change, message):
    spec = {"job": "vectorize_class_map", "map": strata, "output": str(tmp_path / "p.gpkg"), **change}
    with pytest.raises(InvalidSpec, match=message):
        get_job("vectorize_class_map")(spec, Reporter(io.StringIO()))
    assert not any(tmp_path.iterdir())


def test_bad_inputs_are_refused_before_any_output(strata, tmp_path):
    with pytest.raises(InvalidSpec, match="must be a GeoPackage"):
        vectorize_class_map(strata, tmp_path / "p.shp")
    copy = tmp_path / "map.gpkg"
    gdal.Translate(str(copy), strata, format="GPKG", outputType=gdal.GDT_Byte)
    with pytest.raises(InvalidSpec, match="is the class map itself"):
        vectorize_class_map(str(copy), copy)
    fractions = tmp_path / "fractions.tif"
    gdal.Translate(str(fractions), strata, scaleParams=[[1, 7, 0.5, 3.5]], outputType=gdal.GDT_Float32)
    with pytest.raises(EngineError, match="non-integer values"):
        vectorize_class_map(str(fractions), tmp_path / "p.gpkg")
    with pytest.raises(EngineError, match="raster not found"):
        vectorize_class_map(str(tmp_path / "missing.tif"), tmp_path / "p.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fractions.tif", "map.gpkg"]


def test_cancelling_leaves_no_output(strata, tmp_path):
    output = tmp_path / "polygons.gpkg"
    output.write_text("an older output")
    reporter = Reporter(io.StringIO())
    reporter.cancel()
    with pytest.raises(JobCancelled):
        vectorize_class_map(strata, output, tile_size=64, reporter=reporter)
    assert [p.name for p in tmp_path.iterdir()] == ["polygons.gpkg"] and output.read_text() == "an older output"


def test_the_input_is_never_written(strata, tmp_path):
    before = Path(strata).stat().st_mtime_ns
    vectorize_class_map(strata, tmp_path / "p.gpkg", tile_size=200)
    assert Path(strata).stat().st_mtime_ns == before
    assert not Path(strata).with_suffix(".qml").exists()


def test_regions_are_released_as_soon_as_they_are_complete(strata):
    """Streaming: a region is yielded after the row of tiles where it ends, not at the end of the map
    (what keeps memory flat as the map grows taller)."""
    stream = io.StringIO()
    reporter = Reporter(stream, min_interval_s=0)
    seen_at = []  # progress (percent) when each region arrives
    for _ in regions_of(raster_info(strata), tile_size=64, reporter=reporter):
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        seen_at.append(max(m["percent"] for m in lines if m["type"] == "progress"))
    rows = -(-443 // 64)  # 7 rows of 8 tiles
    assert min(seen_at) == pytest.approx(95 / rows, abs=0.01)  # the first ones after the first row
    assert np.mean(np.array(seen_at) <= 95 * 4 / rows) > 0.4  # many before the map is half read


class FolderWatcher(Reporter):
    """A reporter that lists the output folder at every progress report (while the job writes)."""

    def __init__(self, folder: Path):
        super().__init__(io.StringIO(), min_interval_s=0)
        self.folder = folder
        self.listings: set[str] = set()

    def progress(self, percent: float) -> None:
        self.listings.update(p.name for p in self.folder.iterdir())
        super().progress(percent)


def test_while_writing_only_the_part_file_exists(strata, tmp_path):
    """A worker killed at any moment leaves ``<output>.part`` alone (removed by the QGIS side): no
    SQLite journal beside it, and nothing under the final name."""
    watcher = FolderWatcher(tmp_path)
    vectorize_class_map(strata, tmp_path / "polygons.gpkg", tile_size=48, reporter=watcher)
    assert watcher.listings == {"polygons.gpkg.part"}
    assert [p.name for p in tmp_path.iterdir()] == ["polygons.gpkg"]


_MAPS = itertools.count()


@settings(max_examples=60)
@given(classes=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
                          elements=st.integers(0, 3)),
       tile_size=st.integers(1, 9))
def test_any_map_and_any_tile_size_give_the_polygons_of_one_polygonize(classes, tile_size):
    """Random maps of 3 classes and nodata (0): diagonal contacts, holes, regions winding across tiles."""
    path = f"/vsimem/vectorize_{next(_MAPS)}.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(path, classes.shape[1], classes.shape[0], 1, gdal.GDT_Byte)
    dataset.SetGeoTransform((1000.0, 2.5, 0.0, 5000.0, 0.0, -2.5))
    dataset.SetProjection("EPSG:32631")
    dataset.GetRasterBand(1).SetNoDataValue(0)
    dataset.GetRasterBand(1).WriteArray(classes)
    dataset = None
    try:
        got = list(regions_of(raster_info(path), tile_size=tile_size))
        reference = reference_polygons(path)
    finally:
        gdal.Unlink(path)
    assert per_class(got) == per_class(reference)
    got_places, reference_places = by_place(got), by_place(reference)
    assert got_places.keys() == reference_places.keys()
    for key, polygon in reference_places.items():
        assert got_places[key].Within(polygon) and polygon.Within(got_places[key])
        assert vertices(got_places[key]) == vertices(polygon)
