"""Map evaluation: metrics against scikit-learn, and the evaluate_map job on the NC land-cover data."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from osgeo import gdal, ogr, osr
from sklearn import metrics as skm

from deepfield.engine import evaluation
from deepfield.engine.contract import REPORT_FILES
from deepfield.engine.jobs.evaluate_map import run as evaluate_map_job
from deepfield.engine.metrics import (
    ConfusionCounts,
    class_scores,
    cohen_kappa,
    confusion_matrix,
    macro_f1,
    overall_accuracy,
    summarize,
    weighted_f1,
)
from deepfield.engine.errors import InvalidSpec, NoOverlap
from deepfield.engine.protocol import EngineError, JobCancelled, Reporter

from ..rasterised import burnt

gdal.UseExceptions()
NC = "nc_landsat7_landcover"


# -- metrics ------------------------------------------------------------------------------------
def assert_same_as_sklearn(reference, predicted, classes):
    """Our matrix equals sklearn's; our scores of it equal sklearn's on the pairs it counts.

    (Our matrix, as sklearn's with ``labels``, drops pairs with a value outside ``classes``; the
    job never has such pairs: its classes are every value seen.)
    """
    matrix = confusion_matrix(reference, predicted, classes)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(reference, predicted, labels=classes))
    in_classes = np.isin(reference, classes) & np.isin(predicted, classes)
    reference, predicted = reference[in_classes], predicted[in_classes]
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        reference, predicted, labels=classes, zero_division=0)
    scores = class_scores(matrix)
    np.testing.assert_allclose(scores["precision"], precision, rtol=1e-12)
    np.testing.assert_allclose(scores["recall"], recall, rtol=1e-12)
    np.testing.assert_allclose(scores["f1"], f1, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(scores["support"], support)
    assert overall_accuracy(matrix) == pytest.approx(skm.accuracy_score(reference, predicted))
    assert macro_f1(matrix) == pytest.approx(
        skm.f1_score(reference, predicted, labels=classes, average="macro", zero_division=0))
    assert weighted_f1(matrix) == pytest.approx(
        skm.f1_score(reference, predicted, labels=classes, average="weighted", zero_division=0))
    assert cohen_kappa(matrix) == pytest.approx(skm.cohen_kappa_score(reference, predicted), nan_ok=True)
    summary = summarize(matrix)
    for kind in ("precision", "recall", "f1"):
        for average in ("macro", "weighted"):
            expected = getattr(skm, f"{kind}_score" if kind != "f1" else "f1_score")(
                reference, predicted, labels=classes, average=average, zero_division=0)
            assert summary[f"{average}_{kind}"] == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, 5000)
    noisy = np.where(rng.random(5000) < 0.7, truth, rng.integers(0, 6, 5000))
    assert_same_as_sklearn(truth, noisy, [0, 1, 2, 3, 4, 5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 4), st.integers(-2, 4)), min_size=1, max_size=60),
       st.lists(st.integers(-2, 6), min_size=1, max_size=6, unique=True))
def test_metrics_equal_sklearn_on_any_labels_and_class_lists(pairs, classes):
    """Unsorted class lists, classes absent from the data, values outside the list."""
    reference, predicted = (np.array(v) for v in zip(*pairs))
    assume((np.isin(reference, classes) & np.isin(predicted, classes)).any())  # else sklearn refuses
    assert_same_as_sklearn(reference, predicted, classes)


def test_confusion_matrix_rows_are_reference_in_class_list_order():
    matrix = confusion_matrix(np.array([7, 7, 3, 9]), np.array([3, 7, 3, 3]), [7, 3])
    np.testing.assert_array_equal(matrix, [[1, 1], [0, 1]])  # the pair (9, 3) is not counted


def test_kappa_of_a_single_class_is_nan_and_perfect_agreement_is_one():
    assert np.isnan(cohen_kappa(np.array([[10]])))
    assert cohen_kappa(np.diag([3, 4, 5])) == 1.0


def test_counts_accumulated_by_blocks_equal_one_matrix():
    rng = np.random.default_rng(1)
    reference, predicted = rng.integers(1, 9, 3000), rng.integers(2, 12, 3000)
    counts = ConfusionCounts()
    for part in np.array_split(np.arange(3000), 7):
        counts.add(reference[part], predicted[part])
    classes = counts.classes
    assert classes == sorted(set(reference) | set(predicted))
    np.testing.assert_array_equal(counts.matrix(), confusion_matrix(reference, predicted, classes))


def read_band(path):
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    return band.ReadAsArray(), band.GetNoDataValue()


def test_metrics_equal_sklearn_on_real_labels(data_dir):
    strata, strata_nodata = read_band(data_dir / NC / "strata.tif")
    labels, labels_nodata = read_band(data_dir / NC / "landsat96_labelled_pixels.tif")
    valid = (strata != strata_nodata) & (labels != labels_nodata)
    assert valid.sum() == 2872
    assert_same_as_sklearn(labels[valid].astype(int), strata[valid].astype(int), [1, 2, 3, 4, 5, 6, 7])


# -- the job ----------------------------------------------------------------------------------------
def run(tmp_path, **spec):
    """Run the job with ``spec`` (paths may be Path objects); return its result and protocol messages."""
    stream = io.StringIO()
    spec = {"output_folder": tmp_path / "evaluation", **spec}
    spec = {key: str(value) if isinstance(value, Path) else value for key, value in spec.items()}
    result = evaluate_map_job({"job": "evaluate_map", **spec}, Reporter(stream))
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    return result, messages


@pytest.fixture(scope="module")
def nc(data_dir):
    return data_dir / NC


@pytest.fixture(scope="module")
def labelled_pixels_run(nc, tmp_path_factory):
    return run(tmp_path_factory.mktemp("labelled"), map=nc / "strata.tif",
               reference=nc / "landsat96_labelled_pixels.tif")[0]


class Tables(HTMLParser):
    """Table cells of an HTML page by table id: {id: [[cell text, ...], ...]}; and <img> sources."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._table, self._cell = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table is not None:
            self._table[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_strata_against_labelled_pixels(labelled_pixels_run):
    metrics, files = labelled_pixels_run["metrics"], labelled_pixels_run["files"]
    assert metrics["samples"] == 2872
    assert 0.995 <= metrics["overall_accuracy"] < 0.996  # the README: 99.5 % agree
    assert 0.99 < metrics["kappa"] < metrics["overall_accuracy"]
    assert [c["value"] for c in metrics["classes"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [c["name"] for c in metrics["classes"]] == [f"class {v}" for v in range(1, 8)]
    assert sum(map(sum, metrics["confusion_matrix"])) == 2872
    assert set(files) == set(REPORT_FILES)


def test_report_files_agree_with_metrics_json(labelled_pixels_run):
    files = labelled_pixels_run["files"]
    metrics = json.loads(open(files["metrics_json"]).read())
    assert metrics == json.loads(json.dumps(labelled_pixels_run["metrics"]))

    with open(files["per_class_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    for row, expected in zip(rows, metrics["classes"], strict=True):
        assert int(row["value"]) == expected["value"] and row["name"] == expected["name"]
        assert float(row["f1"]) == expected["f1"] and int(row["support"]) == expected["support"]
    with open(files["confusion_matrix_csv"]) as handle:
        lines = list(csv.reader(handle))
    assert lines[0][1:] == [c["name"] for c in metrics["classes"]]
    assert [[int(v) for v in line[1:]] for line in lines[1:]] == metrics["confusion_matrix"]

    page = Tables()
    page.feed(open(files["report_html"], encoding="utf-8").read())
    summary = dict(page.tables["summary"])
    assert summary["Overall accuracy (%)"] == f"{100 * metrics['overall_accuracy']:.2f}"
    assert summary["Kappa"] == f"{metrics['kappa']:.4f}"
    assert summary["Macro F-score (%)"] == f"{100 * metrics['macro_f1']:.2f}"
    assert summary["Weighted F-score (%)"] == f"{100 * metrics['weighted_f1']:.2f}"
    assert int(summary["Samples"]) == metrics["samples"]
    header, *body = page.tables["per-class"]
    assert header[:5] == ["Value", "Class", "Precision (%)", "Recall (%)", "F-score (%)"]
    for cells, expected in zip(body, metrics["classes"]):
        assert cells[1] == expected["name"]
        assert cells[2:5] == [f"{100 * expected[k]:.2f}" for k in ("precision", "recall", "f1")]
        assert int(cells[5]) == expected["support"]
    assert body[-2][1:5] == ["macro average"] + [f"{100 * metrics[f'macro_{k}']:.2f}" for k in ("precision", "recall", "f1")]
    assert [[int(c) for c in row[1:]] for row in page.tables["confusion"][1:]] == metrics["confusion_matrix"]
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_confusion_png_is_a_valid_png_of_sensible_size(labelled_pixels_run):
    data = open(labelled_pixels_run["files"]["confusion_matrix_png"], "rb").read()
    width, height = png_size(data)
    assert 300 <= width <= 3000 and 300 <= height <= 3000
    html = open(labelled_pixels_run["files"]["report_html"], encoding="utf-8").read()
    assert base64.b64encode(data).decode() in html  # the report embeds this very image


def test_strata_against_points_counts_each_point_inside_the_map(nc, tmp_path):
    result, messages = run(tmp_path, map=nc / "strata.tif", reference=nc / "landsat96_points.shp", class_field="id")
    metrics = result["metrics"]
    assert metrics["samples"] == 885  # 115 of the 1000 points lie outside the 489 x 443 grid
    assert metrics["overall_accuracy"] == pytest.approx(816 / 885)  # README: 816 agree with strata
    assert any(m.get("level") == "warning" and "115 reference points" in m["message"] for m in messages)


def test_points_in_another_crs_are_reprojected(nc, tmp_path):
    lonlat = tmp_path / "points_4326.gpkg"
    gdal.VectorTranslate(str(lonlat), str(nc / "landsat96_points.shp"), dstSRS="EPSG:4326", format="GPKG",
                         layerName="pts")
    result, _ = run(tmp_path, map=nc / "strata.tif", reference=lonlat, reference_layer="pts", class_field="id")
    # NAD83(HARN) -> WGS84 is not exact: allow a point on a pixel edge to change pixel.
    assert abs(result["metrics"]["samples"] - 885) <= 2
    assert result["metrics"]["overall_accuracy"] == pytest.approx(816 / 885, abs=0.005)


def test_strata_against_polygons(nc, tmp_path):
    result, _ = run(tmp_path, map=nc / "strata.tif", reference=nc / "landsat96_polygons.shp", class_field="id")
    metrics = result["metrics"]
    assert metrics["samples"] == 2264  # pixel centres inside the 34 polygons
    assert metrics["overall_accuracy"] >= 0.99
    polygons = ogr.Open(str(nc / "landsat96_polygons.shp"))
    ids = {feature.GetField("id") for feature in polygons.GetLayer()}
    assert {c["value"] for c in metrics["classes"] if c["support"] > 0} == ids


def warp(source, target, srs, spacing):
    gdal.Warp(str(target), str(source), dstSRS=srs, xRes=spacing, yRes=spacing, resampleAlg="near",
              format="GTiff")
    return target


@pytest.fixture(scope="module")
def strata_utm(nc, tmp_path_factory):
    return warp(nc / "strata.tif", tmp_path_factory.mktemp("utm") / "strata_utm.tif", "EPSG:32617", 40.0)


def test_reference_on_another_grid_and_crs_is_resampled_onto_the_map(nc, strata_utm, tmp_path):
    result, messages = run(tmp_path, map=nc / "strata.tif", reference=strata_utm)
    metrics = result["metrics"]
    assert any("resampled (nearest)" in m.get("message", "") for m in messages)
    # Warped twice (28.5 m -> 40 m UTM -> 28.5 m): most but not all pixels keep their class;
    # pixels outside the warped raster (its nodata/alpha) are not counted.
    assert 0.9 < metrics["overall_accuracy"] < 0.99  # measured 0.9458
    assert 0.9 * 489 * 443 < metrics["samples"] < 489 * 443


def test_a_finer_nested_reference_grid_resamples_exactly(nc, tmp_path):
    """9.5 m pixels: each map pixel centre is the centre of a reference pixel: nothing changes."""
    fine = warp(nc / "strata.tif", tmp_path / "fine.tif", "EPSG:3358", 9.5)
    result, messages = run(tmp_path, map=nc / "strata.tif", reference=fine)
    assert any("resampled (nearest)" in m.get("message", "") for m in messages)
    assert result["metrics"]["samples"] == 489 * 443 - 1  # strata.tif has one nodata pixel
    assert result["metrics"]["overall_accuracy"] == 1.0


def test_map_in_another_crs_against_polygons(nc, strata_utm, tmp_path):
    result, _ = run(tmp_path, map=strata_utm, reference=nc / "landsat96_polygons.shp", class_field="id")
    metrics = result["metrics"]
    # polygons are reprojected to UTM and rasterised on its 40 m grid: about (28.5/40)^2 of the pixels
    assert 0.4 * 2264 < metrics["samples"] < 0.6 * 2264
    assert metrics["overall_accuracy"] > 0.95


def test_mask_and_ignore_values(nc, tmp_path):
    strata, _ = read_band(nc / "strata.tif")
    labels, nodata = read_band(nc / "landsat96_labelled_pixels.tif")
    mask = tmp_path / "mask.geojson"
    x0, y0 = 630534.0, 228114.0  # left 200 columns, top 300 rows, on pixel edges
    mask.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3358"}},
        "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
            [x0, y0], [x0 + 200 * 28.5, y0], [x0 + 200 * 28.5, y0 - 300 * 28.5], [x0, y0 - 300 * 28.5], [x0, y0]]]}}],
    }))
    result, _ = run(tmp_path, map=nc / "strata.tif", reference=nc / "landsat96_labelled_pixels.tif",
                    mask=mask, ignore_values=[5])
    ref, mapped = labels[:300, :200], strata[:300, :200]
    keep = (ref != nodata) & (ref != 5) & (mapped != 5)
    expected = skm.confusion_matrix(ref[keep].astype(int), mapped[keep].astype(int))
    metrics = result["metrics"]
    assert 5 not in [c["value"] for c in metrics["classes"]]
    assert metrics["samples"] == keep.sum() < 2872
    np.testing.assert_array_equal(metrics["confusion_matrix"], expected)


def test_strips_give_the_same_matrix_as_one_block(nc, tmp_path, monkeypatch, labelled_pixels_run):
    monkeypatch.setattr(evaluation, "BLOCK_PIXELS", 489 * 20)  # 23 strips of 20 rows (block height 4)
    result, messages = run(tmp_path, map=nc / "strata.tif", reference=nc / "landsat96_labelled_pixels.tif")
    assert len([m for m in messages if m["type"] == "progress"]) > 1
    assert result["metrics"]["confusion_matrix"] == labelled_pixels_run["metrics"]["confusion_matrix"]


# -- class names ----------------------------------------------------------------------------------------
QML = """<!DOCTYPE qgis><qgis><pipe><rasterrenderer type="paletted" band="1"><colorPalette>
<paletteEntry value="1" label="developed" color="#ff0000" alpha="255"/>
<paletteEntry value="5" label="forest" color="#00aa00" alpha="255"/>
</colorPalette></rasterrenderer></pipe></qgis>"""


def test_class_names_from_spec_then_qml_then_default(nc, tmp_path):
    named = tmp_path / "map.tif"
    shutil.copy(nc / "strata.tif", named)
    (tmp_path / "map.qml").write_text(QML)
    result, _ = run(tmp_path, map=named, reference=nc / "landsat96_labelled_pixels.tif")
    names = {c["value"]: (c["name"], c["color"]) for c in result["metrics"]["classes"]}
    assert names[1] == ("developed", "#ff0000") and names[5] == ("forest", "#00aa00") and names[2][0] == "class 2"
    html = open(result["files"]["report_html"], encoding="utf-8").read()
    assert "forest" in html and "background:#00aa00" in html

    given_names = [{"value": 1, "name": "urban & built", "color": "#123456"}]
    result, _ = run(tmp_path, map=named, reference=nc / "landsat96_labelled_pixels.tif", classes=given_names)
    assert result["metrics"]["classes"][0]["name"] == "urban & built"
    assert "urban &amp; built" in open(result["files"]["report_html"], encoding="utf-8").read()


def small_map(path, values, categories=None, rat_names=None, nodata=0):
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), values.shape[1], values.shape[0], 1, gdal.GDT_Byte)
    dataset.SetGeoTransform((1000.0, 10.0, 0.0, 2000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    dataset.SetProjection(srs.ExportToWkt())
    band = dataset.GetRasterBand(1)
    band.WriteArray(values)
    band.SetNoDataValue(nodata)
    if categories:
        band.SetCategoryNames(categories)
    if rat_names:
        rat = gdal.RasterAttributeTable()
        rat.CreateColumn("value", gdal.GFT_Integer, gdal.GFU_MinMax)
        rat.CreateColumn("class", gdal.GFT_String, gdal.GFU_Name)
        for row, (value, name) in enumerate(rat_names.items()):
            rat.SetValueAsInt(row, 0, value)
            rat.SetValueAsString(row, 1, name)
        band.SetDefaultRAT(rat)
    dataset = None
    return path


def test_class_names_from_gdal_categories_and_rat(tmp_path):
    values = np.array([[1, 2, 2, 0], [1, 1, 2, 3]], dtype=np.uint8)
    reference = small_map(tmp_path / "reference.tif", np.array([[1, 2, 1, 2], [1, 1, 2, 0]], dtype=np.uint8))
    by_category = small_map(tmp_path / "categories.tif", values, categories=["", "water", "crop", "town"])
    result, _ = run(tmp_path, map=by_category, reference=reference)
    metrics = result["metrics"]
    assert [c["name"] for c in metrics["classes"]] == ["water", "crop"]  # 3 is over reference nodata
    assert metrics["samples"] == 6 and metrics["confusion_matrix"] == [[3, 1], [0, 2]]
    by_rat = small_map(tmp_path / "rat.tif", values, rat_names={2: "crop", 1: "water"})
    result, _ = run(tmp_path, map=by_rat, reference=reference)
    assert [c["name"] for c in result["metrics"]["classes"]] == ["water", "crop"]


# -- errors -----------------------------------------------------------------------------------------
def test_clear_errors(nc, tmp_path):
    strata, labels = nc / "strata.tif", nc / "landsat96_labelled_pixels.tif"
    with pytest.raises(InvalidSpec, match=r"no field 'klass'.*fields: label, id"):
        run(tmp_path, map=strata, reference=nc / "landsat96_polygons.shp", class_field="klass")
    with pytest.raises(InvalidSpec, match=r"class field 'label' .* holds text: give 'classes'"):
        run(tmp_path, map=strata, reference=nc / "landsat96_polygons.shp", class_field="label")
    with pytest.raises(InvalidSpec, match=r"vector layer: give 'class_field'"):
        run(tmp_path, map=strata, reference=nc / "landsat96_points.shp")
    far = tmp_path / "far.tif"
    gdal.Translate(str(far), str(labels), outputBounds=[0, 10000, 13936.5, 0])
    with pytest.raises(NoOverlap, match=r"far\.tif does not overlap the class map"):
        run(tmp_path, map=strata, reference=far)
    with pytest.raises(EngineError, match=r"no valid pixel in common .*ignore_values"):
        run(tmp_path, map=strata, reference=labels, ignore_values=[1, 2, 3, 4, 5, 6, 7])
    with pytest.raises(EngineError, match=r"raster not found: .*missing\.tif"):
        run(tmp_path, map=tmp_path / "missing.tif", reference=labels)
    with pytest.raises(InvalidSpec, match=r"unknown spec key\(s\) ignore_value; known keys: map, reference"):
        run(tmp_path, map=strata, reference=labels, ignore_value=[1])
    assert not (tmp_path / "evaluation").exists()  # nothing written by a failed job


def tiny_raster(path: Path, values: np.ndarray, gdal_type) -> Path:
    """A GeoTIFF of ``values`` (rows, cols[, bands]) with 1 m pixels at (0, rows) in UTM 17N."""
    values = values.reshape(values.shape[0], values.shape[1], -1)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), values.shape[1], values.shape[0], values.shape[2],
                                                   gdal_type)
    dataset.SetGeoTransform((0.0, 1.0, 0.0, float(values.shape[0]), 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    dataset.SetProjection(srs.ExportToWkt())
    for band in range(values.shape[2]):
        dataset.GetRasterBand(band + 1).WriteArray(values[..., band])
    dataset = None
    return path


def test_non_integer_classes_are_refused(tmp_path):
    path = tiny_raster(tmp_path / "float.tif", np.array([[1.5, 2.0]]), gdal.GDT_Float32)
    class_map = tiny_raster(tmp_path / "map.tif", np.array([[1, 2]]), gdal.GDT_Byte)
    with pytest.raises(EngineError, match=re.escape(f"{path} holds non-integer class values (e.g. 1.5)")):
        run(tmp_path, map=class_map, reference=path)


@pytest.mark.parametrize("values, gdal_type", [
    (np.ones((2, 3, 6)), gdal.GDT_Float32),  # a 6-band image
    (np.full((2, 3, 3), 0.25), gdal.GDT_Float32),  # probabilities
    (np.ones((2, 3, 2)), gdal.GDT_Byte),  # two bands of integers
])
def test_an_image_is_refused_as_a_class_map(tmp_path, values, gdal_type):
    image = tiny_raster(tmp_path / "image.tif", values, gdal_type)
    reference = tiny_raster(tmp_path / "reference.tif", np.ones((2, 3)), gdal.GDT_Byte)
    with pytest.raises(EngineError, match=r"image\.tif has \d bands of \w+: a class map is one band of integer"):
        run(tmp_path, map=image, reference=reference)
    assert not (tmp_path / "evaluation").exists()


def class_layer(path: Path, rows: list[tuple[str, object]], field: str = "class", kind=ogr.OFTInteger,
                geometry=ogr.wkbPoint) -> Path:
    """A GeoPackage layer (UTM 17N) of ``rows`` (WKT, class value; None: null) in ``field`` of OGR type ``kind``."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer(path.stem, srs, geometry)
    layer.CreateField(ogr.FieldDefn(field, kind))
    for wkt, value in rows:
        feature = ogr.Feature(layer.GetLayerDefn())
        if value is not None:
            feature.SetField(field, value)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    source = None
    return path


def points_layer(path: Path, points: list[tuple[float, float, int]]) -> Path:
    """A GeoPackage of points (x, y, class) in UTM 17N."""
    return class_layer(path, [(f"POINT ({x} {y})", value) for x, y, value in points])


@pytest.mark.parametrize("points, agree", [
    ([(0.5, 1.5, 1)], 1),  # one point: a bounding box of no area
    ([(0.5, 0.5, 1), (1.5, 0.5, 2), (2.5, 0.5, 1)], 2),  # points on one row
])
def test_a_reference_of_one_point_or_one_row_is_evaluated(tmp_path, points, agree):
    class_map = tiny_raster(tmp_path / "map.tif", np.array([[1, 1, 1], [1, 1, 1]]), gdal.GDT_Byte)
    reference = points_layer(tmp_path / "points.gpkg", points)
    result, _ = run(tmp_path, map=class_map, reference=reference, class_field="class")
    assert result["metrics"]["samples"] == len(points)
    assert result["metrics"]["overall_accuracy"] == pytest.approx(agree / len(points))


def test_reference_points_on_map_nodata_are_counted_and_reported(tmp_path):
    class_map = tiny_raster(tmp_path / "map.tif", np.array([[1, 0, 0], [1, 1, 0]]), gdal.GDT_Byte)
    dataset = gdal.Open(str(class_map), gdal.GA_Update)
    dataset.GetRasterBand(1).SetNoDataValue(0)
    dataset = None
    points = [(x + 0.5, y + 0.5, 1) for x in range(3) for y in range(2)]  # one per pixel: 3 on nodata
    result, messages = run(tmp_path, map=class_map, reference=points_layer(tmp_path / "p.gpkg", points),
                           class_field="class")
    assert result["metrics"]["samples"] == 3
    assert any(m.get("level") == "warning" and "3 of 6 reference points fall on nodata" in m["message"]
               for m in messages)


def test_cancel_stops_before_writing(nc, tmp_path):
    reporter = Reporter(io.StringIO())
    reporter.cancel()
    spec = {"map": str(nc / "strata.tif"), "reference": str(nc / "landsat96_labelled_pixels.tif"),
            "output_folder": str(tmp_path / "out")}
    with pytest.raises(JobCancelled):
        evaluate_map_job(spec, reporter)
    assert not (tmp_path / "out").exists()


def test_a_map_in_the_equivalent_landsat_crs_needs_no_reprojection(nc, tmp_path, labelled_pixels_run):
    """A model output on the Landsat grid carries its unnamed LCC (= EPSG:3358, see the data README):
    references in EPSG:3358 are read as they are, with no resampling and no datum shift."""
    landsat_wkt = gdal.Open(str(nc / "lsat7_2000_10.tif")).GetProjection()
    class_map = tmp_path / "map_landsat_crs.tif"
    gdal.Translate(str(class_map), str(nc / "strata.tif"), outputSRS=landsat_wkt)
    # the two WKTs are not the same text: other datum names (GDAL >= 3.10's default IsSame calls them equivalent)
    landsat, strata = osr.SpatialReference(landsat_wkt), osr.SpatialReference(gdal.Open(str(nc / "strata.tif")).GetProjection())
    assert landsat.GetAttrValue("DATUM") != strata.GetAttrValue("DATUM")
    assert not landsat.IsSame(strata, ["CRITERION=STRICT"])
    result, messages = run(tmp_path, map=class_map, reference=nc / "landsat96_labelled_pixels.tif")
    assert not any("resampled" in m.get("message", "") for m in messages)
    assert result["metrics"]["confusion_matrix"] == labelled_pixels_run["metrics"]["confusion_matrix"]
    result, _ = run(tmp_path, map=class_map, reference=nc / "landsat96_polygons.shp", class_field="id")
    assert result["metrics"]["samples"] == 2264
    result, _ = run(tmp_path, map=class_map, reference=nc / "landsat96_points.shp", class_field="id")
    assert result["metrics"]["samples"] == 885


def test_metrics_document_takes_plain_descriptions_and_class_styles():
    from deepfield.engine.classes import ClassStyle
    from deepfield.engine.reports import confusion_png, metrics_document

    matrix = np.array([[3, 1], [0, 2]])  # 5 of 6 samples right; class b mapped 3 times, 2 of them right
    document = metrics_document(matrix, [ClassStyle(1, "a", "#ff0000"), ClassStyle(2, "b")],
                                map="model (epoch 3)", reference="dataset (valid split)")
    assert document["map"] == "model (epoch 3)" and document["reference"] == "dataset (valid split)"
    assert document["reference_layer"] is None and document["ignore_values"] == []
    assert document["overall_accuracy"] == pytest.approx(5 / 6)
    assert [(c["value"], c["name"], c["color"]) for c in document["classes"]] == [(1, "a", "#ff0000"), (2, "b", "")]
    assert document["classes"][1]["precision"] == pytest.approx(2 / 3)
    assert document["confusion_matrix"] == [[3, 1], [0, 2]]
    assert confusion_png(document).startswith(b"\x89PNG\r\n\x1a\n")


# -- text class fields and the background of polygon references ----------------------------------------
#: The class map's classes, as a model trained from text polygons with a background names them.
CATEGORIES = ["background", "building", "road"]
FOOTPRINTS = [  # (WKT, fclass) on the 30 x 20 map of 10 m pixels at (1000, 2000): OSM-like polygons
    ("POLYGON ((1020 1990, 1110 1990, 1020 1900, 1020 1990))", "building"),  # over the nodata corner
    ("POLYGON ((1200 1995, 1280 1940, 1220 1890, 1140 1945, 1200 1995))", "building"),
    ("POLYGON ((990 1830, 1320 1870, 1320 1885, 990 1845, 990 1830))", "road"),  # leaves the map
    ("POLYGON ((1040 1860, 1100 1860, 1100 1810, 1040 1810, 1040 1860))", "parking"),  # no such class; on the road
    ("POLYGON ((1260 1830, 1290 1830, 1290 1805, 1260 1805, 1260 1830))", "Building"),  # no such class (case)
    ("POLYGON ((1120 1990, 1180 1990, 1180 1960, 1120 1960, 1120 1990))", None),
]


@pytest.fixture
def text_inputs(tmp_path):
    """A class map with category names (nodata 255 in a corner) and the footprints' GeoPackage."""
    values = np.random.default_rng(7).integers(0, 3, (20, 30)).astype(np.uint8)
    values[:3, :5] = 255
    class_map = small_map(tmp_path / "map.tif", values, categories=CATEGORIES, nodata=255)
    polygons = class_layer(tmp_path / "footprints.gpkg", FOOTPRINTS, "fclass", ogr.OFTString, ogr.wkbPolygon)
    return class_map, polygons, values


TEXT = {1: "fclass = 'building'", 2: "fclass = 'road'"}  # the reference classes' polygons (SQL)


def expected_counts(class_map, polygons, values, wheres, background=None, mask=None):
    """(classes, confusion matrix) counted here: the polygons of each class value (``wheres``:
    value -> SQL) burnt with gdal.Rasterize, ``background`` outside every polygon, map nodata and
    outside ``mask`` left out."""
    reference = np.full(values.shape, -1)
    for value, where in wheres.items():
        reference[burnt(class_map, polygons, where)] = value
    if background is not None:
        reference[~burnt(class_map, polygons)] = background
    keep = (values != 255) & (reference >= 0)
    if mask is not None:
        keep &= burnt(class_map, mask)
    classes = sorted(set(reference[keep].tolist()) | set(values[keep].tolist()))
    return classes, skm.confusion_matrix(reference[keep], values[keep], labels=classes).tolist()


def assert_counts(metrics, expected):
    classes, matrix = expected
    assert [c["value"] for c in metrics["classes"]] == classes
    assert metrics["confusion_matrix"] == matrix
    assert metrics["samples"] == sum(map(sum, matrix)) > 0


def test_a_text_class_field_is_matched_to_the_map_category_names(text_inputs, tmp_path):
    class_map, polygons, values = text_inputs
    result, messages = run(tmp_path, map=class_map, reference=polygons, class_field="fclass")
    metrics = result["metrics"]
    assert_counts(metrics, expected_counts(class_map, polygons, values, TEXT))
    assert [c["name"] for c in metrics["classes"]] == CATEGORIES
    assert metrics["classes"][0]["support"] == 0  # outside every polygon: not counted
    assert metrics["background"] is None
    assert metrics["skipped_features"] == {"no_geometry": 0, "null_class": 1, "unknown_class": 2}
    said = "features skipped: null_class 1, unknown_class 2 (classes not known: 'Building', 'parking')"
    assert any(m.get("level") == "warning" and said in m["message"] for m in messages)
    assert any("matched to the map's class names: building=1, road=2" in m.get("message", "") for m in messages)
    saved = json.loads(Path(result["files"]["metrics_json"]).read_text())
    assert saved["skipped_features"] == metrics["skipped_features"]
    page = Tables()
    page.feed(Path(result["files"]["report_html"]).read_text(encoding="utf-8"))
    assert dict(page.tables["sources"])["Skipped features"] == "null_class 1, unknown_class 2"


@pytest.mark.parametrize("background", ["background", 0, "0"])
def test_background_counts_the_pixels_outside_every_polygon(text_inputs, tmp_path, background):
    class_map, polygons, values = text_inputs
    result, messages = run(tmp_path, map=class_map, reference=polygons, class_field="fclass", background=background)
    metrics = result["metrics"]
    assert_counts(metrics, expected_counts(class_map, polygons, values, TEXT, background=0))
    assert metrics["classes"][0]["support"] > 0
    # the pixels of skipped polygons (parking, Building, null) are neither background nor counted
    counted = burnt(class_map, polygons, "fclass IN ('building', 'road')") | ~burnt(class_map, polygons)
    assert metrics["samples"] == int(((values != 255) & counted).sum()) < int((values != 255).sum())
    assert metrics["background"] == 0 and metrics["skipped_features"]["unknown_class"] == 2
    assert any("outside every polygon: class 0" in m.get("message", "") for m in messages)


def test_background_inside_a_mask_only(text_inputs, tmp_path):
    class_map, polygons, values = text_inputs
    left = "POLYGON ((1000 1800, 1200 1800, 1200 2000, 1000 2000, 1000 1800))"  # the left 20 x 20 pixels
    mask = class_layer(tmp_path / "mask.gpkg", [(left, 1)], geometry=ogr.wkbPolygon)
    result, _ = run(tmp_path, map=class_map, reference=polygons, class_field="fclass", background="background",
                    mask=mask)
    assert_counts(result["metrics"], expected_counts(class_map, polygons, values, TEXT, background=0, mask=mask))
    assert result["metrics"]["samples"] < 20 * 20


@pytest.mark.parametrize("background", [None, "background"])
def test_an_integer_class_field_with_and_without_background(text_inputs, tmp_path, background):
    class_map, _, values = text_inputs
    coded = [(wkt, {"building": 1, "road": 2}.get(name)) for wkt, name in FOOTPRINTS]  # other classes: null
    polygons = class_layer(tmp_path / "coded.gpkg", coded, "fclass", ogr.OFTInteger, ogr.wkbPolygon)
    result, _ = run(tmp_path, map=class_map, reference=polygons, class_field="fclass", background=background)
    wheres = {1: "fclass = 1", 2: "fclass = 2"}
    expected = expected_counts(class_map, polygons, values, wheres, background=0 if background else None)
    assert_counts(result["metrics"], expected)
    assert result["metrics"]["background"] == (0 if background else None)
    assert result["metrics"]["skipped_features"] is None


def test_text_names_fall_back_to_the_spec_classes(text_inputs, tmp_path):
    class_map, polygons, values = text_inputs
    unnamed = small_map(tmp_path / "unnamed.tif", values, nodata=255)
    given = [{"value": v, "name": n} for v, n in enumerate(CATEGORIES)]
    result, _ = run(tmp_path, map=unnamed, reference=polygons, class_field="fclass", classes=given,
                    background="background")
    assert_counts(result["metrics"], expected_counts(class_map, polygons, values, TEXT, background=0))
    # the map's names first, then the spec's (e.g. its style's labels) for names the map does not have
    result, _ = run(tmp_path, map=class_map, reference=polygons, class_field="fclass",
                    classes=[{"value": 1, "name": "Building"}])
    assert result["metrics"]["skipped_features"]["unknown_class"] == 1  # parking
    either = {1: "fclass IN ('building', 'Building')", 2: "fclass = 'road'"}
    assert_counts(result["metrics"], expected_counts(class_map, polygons, values, either))


def test_a_text_field_of_no_class_name_is_refused(text_inputs, tmp_path):
    class_map, _, _ = text_inputs
    landuse = ["forest", "water", "forest", None, "meadow", "farmland"]
    polygons = class_layer(tmp_path / "landuse.gpkg", [(wkt, name) for (wkt, _), name in zip(FOOTPRINTS, landuse)],
                           "fclass", ogr.OFTString, ogr.wkbPolygon)
    with pytest.raises(EngineError, match=r"landuse\.gpkg: no text of the class field 'fclass' is a class name: "
                                          r"it holds 'farmland', 'forest', 'meadow', 'water'; the class names "
                                          r"are 'background', 'building', 'road'"):
        run(tmp_path, map=class_map, reference=polygons, class_field="fclass")
    assert not (tmp_path / "evaluation").exists()


def test_background_errors(text_inputs, tmp_path):
    class_map, polygons, _ = text_inputs
    with pytest.raises(InvalidSpec, match=r"background 'parking' .* is not a class name of the class map .*map\.tif; "
                                          r"its class names: 'background', 'building', 'road'; give one"):
        run(tmp_path, map=class_map, reference=polygons, class_field="fclass", background="parking")
    with pytest.raises(InvalidSpec, match=r"is a raster: 'background' .* is for a polygon reference"):
        run(tmp_path, map=class_map, reference=class_map, background=0)
    points = points_layer(tmp_path / "points.gpkg", [(1005.0, 1995.0, 1)])
    with pytest.raises(InvalidSpec, match=r"holds points: 'background' .* is for a polygon reference"):
        run(tmp_path, map=class_map, reference=points, class_field="class", background="background")
    for wrong in ("", " ", True, 1.5, ["background"]):
        with pytest.raises(InvalidSpec, match=r"'background' is the class of the pixels outside every reference"):
            run(tmp_path, map=class_map, reference=polygons, class_field="fclass", background=wrong)
    assert not (tmp_path / "evaluation").exists()
