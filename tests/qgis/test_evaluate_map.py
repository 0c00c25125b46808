"""Evaluate map through Processing: in-process (processing.run) and as a user runs it (qgis_process)."""

from __future__ import annotations

import json

import pytest

NC = "nc_landsat7_landcover"
ALG = "deepfield:evaluatemap"


@pytest.fixture(scope="module")
def nc(data_dir):
    return data_dir / NC


def read_metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_in_process_against_the_labelled_pixels(qgis_app, nc, tmp_path):
    import processing

    folder = tmp_path / "report"
    results = processing.run(ALG, {"INPUT": str(nc / "strata.tif"),
                                   "REFERENCE_RASTER": str(nc / "landsat96_labelled_pixels.tif"),
                                   "OUTPUT_FOLDER": str(folder)})
    metrics = read_metrics(folder)
    assert 0.995 <= results["OA"] < 0.996  # the data README: 99.5 % agree
    assert (results["OA"], results["KAPPA"], results["MACRO_F1"]) == (
        metrics["overall_accuracy"], metrics["kappa"], metrics["macro_f1"])
    assert results["REPORT"] == str(folder / "report.html")
    assert "Overall accuracy" in (folder / "report.html").read_text()
    assert metrics["samples"] == 2872


def test_in_process_with_a_memory_point_layer_and_paletted_class_names(qgis_app, nc, tmp_path):
    """A layer with no file (memory) is exported for the engine; the map's paletted style names classes."""
    import processing
    from qgis.core import QgsFeatureRequest, QgsPalettedRasterRenderer, QgsRasterLayer, QgsVectorLayer
    from qgis.PyQt.QtGui import QColor

    points = QgsVectorLayer(str(nc / "landsat96_points.shp"), "points", "ogr")
    memory = points.materialize(QgsFeatureRequest().setFilterExpression('"id" IN (1, 5)'))
    assert memory.providerType() == "memory" and memory.featureCount() == 796
    class_map = QgsRasterLayer(str(nc / "strata.tif"), "strata")
    names = {1: "developed", 5: "forest"}
    palette = [QgsPalettedRasterRenderer.Class(v, QColor("#%02x0000" % (40 * v)), names.get(v, "")) for v in range(1, 8)]
    class_map.setRenderer(QgsPalettedRasterRenderer(class_map.dataProvider(), 1, palette))

    folder = tmp_path / "report"
    processing.run(ALG, {"INPUT": class_map, "REFERENCE_VECTOR": memory, "CLASS_FIELD": "id",
                         "OUTPUT_FOLDER": str(folder)})
    metrics = read_metrics(folder)
    assert metrics["reference"].endswith(".gpkg")
    by_value = {c["value"]: c for c in metrics["classes"]}
    assert by_value[1]["name"] == "developed" and by_value[5]["name"] == "forest"
    assert by_value[5]["color"] == "#c80000" and by_value[3]["name"] == "class 3"
    assert {v for v, c in by_value.items() if c["support"]} == {1, 5}
    assert sum(c["support"] for c in metrics["classes"]) == metrics["samples"] < 796  # some lie outside


def test_reference_must_be_exactly_one_and_a_vector_needs_its_field(qgis_app, nc, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    common = {"INPUT": str(nc / "strata.tif"), "OUTPUT_FOLDER": str(tmp_path / "report")}
    with pytest.raises(QgsProcessingException, match="exactly one reference"):
        processing.run(ALG, common)
    with pytest.raises(QgsProcessingException, match="exactly one reference"):
        processing.run(ALG, {**common, "REFERENCE_RASTER": str(nc / "landsat96_labelled_pixels.tif"),
                             "REFERENCE_VECTOR": str(nc / "landsat96_points.shp")})
    with pytest.raises(QgsProcessingException, match="class field"):
        processing.run(ALG, {**common, "REFERENCE_VECTOR": str(nc / "landsat96_points.shp")})
    with pytest.raises(QgsProcessingException, match="integers separated by commas"):
        processing.run(ALG, {**common, "REFERENCE_RASTER": str(nc / "strata.tif"), "IGNORE_VALUES": "1, x"})
    assert not (tmp_path / "report" / "metrics.json").exists()


def test_engine_errors_reach_the_user(qgis_app, nc, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="no valid pixel in common"):
        processing.run(ALG, {"INPUT": str(nc / "strata.tif"), "REFERENCE_RASTER": str(nc / "strata.tif"),
                             "IGNORE_VALUES": "1,2,3,4,5,6,7", "OUTPUT_FOLDER": str(tmp_path / "report")})


def test_report_files_match_the_engine():
    from deepfield.algorithms.evaluate_map import REPORT_FILES
    from deepfield.engine.contract import REPORT_FILES as FILES

    assert set(REPORT_FILES.values()) == set(FILES.values())


def test_qgis_process_with_polygons_and_a_mask(qgis_process, nc, tmp_path):
    mask = tmp_path / "mask.geojson"
    x0, y0 = 630534.0, 228114.0  # the top half of the map
    ring = [[x0, y0], [x0 + 489 * 28.5, y0], [x0 + 489 * 28.5, y0 - 221 * 28.5], [x0, y0 - 221 * 28.5], [x0, y0]]
    mask.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3358"}},
        "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    folder = tmp_path / "report"
    results = qgis_process.run(ALG, {"INPUT": nc / "strata.tif", "REFERENCE_VECTOR": nc / "landsat96_polygons.shp",
                                     "CLASS_FIELD": "id", "MASK": mask, "OUTPUT_FOLDER": folder})
    metrics = read_metrics(folder)
    assert results["OA"] == metrics["overall_accuracy"] >= 0.99
    assert results["KAPPA"] == metrics["kappa"] and results["MACRO_F1"] == metrics["macro_f1"]
    assert results["REPORT"] == str(folder / "report.html") and (folder / "confusion_matrix.png").stat().st_size > 1000
    assert 0 < metrics["samples"] < 2264  # the polygons' pixels in the top half only
    assert metrics["mask"] == str(mask)
