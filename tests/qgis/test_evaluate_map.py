"""Evaluate map through Processing: in-process (processing.run) and as a user runs it (qgis_process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from demo_data import building_inputs  # scripts/, put on sys.path by conftest.py
from osgeo import gdal, ogr

from ..rasterised import burnt

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
    with pytest.raises(QgsProcessingException, match=r"\(BACKGROUND\) is for reference polygons"):
        processing.run(ALG, {**common, "REFERENCE_RASTER": str(nc / "strata.tif"), "BACKGROUND": "0"})
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


@pytest.fixture(scope="module")
def footprints(tmp_path_factory):
    """The SpaceNet Atlanta footprints (text field ``class`` = building) and two more features,
    a 'parking' and one without class; a class map on the 2 m grid of the pan image, as a model
    trained from them with a background writes it: 0 background, 1 building (the footprints
    burnt one pixel off, so the map is wrong along their edges), category names, nodata 255."""
    folder = tmp_path_factory.mktemp("footprints")
    inputs = building_inputs(folder)
    source = ogr.Open(inputs["buildings"], 1)
    layer = source.GetLayer(0)
    xmin, xmax, ymin, ymax = layer.GetExtent()
    for name, (x, y) in (("parking", (xmin, ymin)), (None, (xmax - 20, ymax - 20))):
        feature = ogr.Feature(layer.GetLayerDefn())
        if name:
            feature.SetField("class", name)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x} {y}, {x + 20} {y}, {x + 20} {y + 20}, "
                                                      f"{x} {y + 20}, {x} {y}))"))
        layer.CreateFeature(feature)
    source = None
    values = np.roll(burnt(inputs["coarse"], inputs["buildings"], "\"class\" = 'building'"), 1, axis=1).astype(np.uint8)
    values[:4, :] = 255
    class_map = gdal.Translate(str(folder / "building_map.tif"), inputs["coarse"], outputType=gdal.GDT_Byte,
                               noData=255)
    class_map.GetRasterBand(1).WriteArray(values)
    class_map.GetRasterBand(1).SetCategoryNames(["background", "building"])
    class_map = None
    return {"map": str(folder / "building_map.tif"), "buildings": inputs["buildings"], "values": values}


def test_in_process_with_text_polygons_and_a_background(qgis_app, footprints, tmp_path):
    """OSM-like labels as users have them: Processing with the footprints' text field and background."""
    import processing

    folder = tmp_path / "report"
    results = processing.run(ALG, {"INPUT": footprints["map"], "REFERENCE_VECTOR": footprints["buildings"],
                                   "CLASS_FIELD": "class", "BACKGROUND": "background", "OUTPUT_FOLDER": str(folder)})
    metrics = read_metrics(folder)
    assert results["OA"] == metrics["overall_accuracy"] and results["REPORT"] == str(folder / "report.html")
    assert metrics["background"] == 0
    assert metrics["skipped_features"] == {"no_geometry": 0, "null_class": 1, "unknown_class": 1}
    # independently: building inside the footprints, background outside every polygon, nodata left out
    values = footprints["values"]
    building = burnt(footprints["map"], footprints["buildings"], "\"class\" = 'building'")
    outside = ~burnt(footprints["map"], footprints["buildings"])
    valid = values != 255
    expected = [[int((valid & outside & (values == v)).sum()) for v in (0, 1)],
                [int((valid & building & (values == v)).sum()) for v in (0, 1)]]
    assert [(c["value"], c["name"]) for c in metrics["classes"]] == [(0, "background"), (1, "building")]
    assert metrics["confusion_matrix"] == expected
    assert 0 < expected[1][0] < expected[1][1] and expected[0][1] > 0  # the one-pixel shift: errors both ways
    # without a background, only the footprints' pixels count
    processing.run(ALG, {"INPUT": footprints["map"], "REFERENCE_VECTOR": footprints["buildings"],
                         "CLASS_FIELD": "class", "OUTPUT_FOLDER": str(tmp_path / "footprints_only")})
    inside = read_metrics(tmp_path / "footprints_only")
    assert inside["background"] is None and inside["samples"] == sum(expected[1])


def test_a_text_field_of_no_class_name_is_refused(qgis_app, footprints, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    houses = str(tmp_path / "houses.gpkg")
    gdal.VectorTranslate(houses, footprints["buildings"], format="GPKG", SQLDialect="SQLITE",
                         SQLStatement="SELECT geometry, 'house' AS class FROM buildings")
    with pytest.raises(QgsProcessingException, match=r"houses\.gpkg: no text of the class field 'class' is a class "
                                                     r"name: it holds 'house'; the class names are 'background', "
                                                     r"'building'"):
        processing.run(ALG, {"INPUT": footprints["map"], "REFERENCE_VECTOR": houses, "CLASS_FIELD": "class",
                             "OUTPUT_FOLDER": str(tmp_path / "report")})
    assert not (tmp_path / "report").exists()
