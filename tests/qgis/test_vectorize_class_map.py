"""Vectorise class map through Processing: in-process (loaded with the class colours) and qgis_process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from ..polygonize import reference_polygons

ALG = "deepfield:vectorizeclassmap"
STRATA = "nc_landsat7_landcover/strata.tif"  # 489 x 443 px, 28.5 m, classes 1..7 (Float32)
NAMES = ["", "developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"]
COLORS = {1: "#e31a1c", 2: "#ffff99", 3: "#b2df8a", 4: "#fdbf6f", 5: "#33a02c", 6: "#1f78b4", 7: "#cab2d6"}


@pytest.fixture(scope="module")
def paletted(data_dir, tmp_path_factory) -> str:
    """strata.tif as a uint8 class map with a colour table and category names (nodata 0)."""
    source = gdal.Open(str(data_dir / STRATA))
    values = source.ReadAsArray()
    path = tmp_path_factory.mktemp("paletted") / "strata_paletted.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), source.RasterXSize, source.RasterYSize, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(source.GetGeoTransform())
    dataset.SetProjection(source.GetProjection())
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(0)
    band.WriteArray(np.where(values < 0, 0, values).astype(np.uint8))
    table = gdal.ColorTable()
    for value, color in COLORS.items():
        table.SetColorEntry(value, tuple(int(color[i:i + 2], 16) for i in (1, 3, 5)) + (255,))
    band.SetRasterColorTable(table)
    band.SetCategoryNames(NAMES)
    band = dataset = None
    return str(path)


def categories(layer) -> dict[int, tuple[str, str]]:
    """value -> (label, fill colour) of a categorized vector layer's renderer."""
    renderer = layer.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "class"
    return {int(c.value()): (c.label(), c.symbol().color().name()) for c in renderer.categories()}


def test_in_process_loaded_with_the_class_colours_the_user_sees(qgis_app, paletted, tmp_path):
    import processing
    from qgis.core import QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtGui import QColor

    class_map = QgsRasterLayer(paletted, "strata")
    assert class_map.renderer().type() == "paletted"  # from the colour table and category names
    shown = [QgsPalettedRasterRenderer.Class(1, QColor("#ff00ff"), "built-up")] + [
        c for c in class_map.renderer().classes() if 2 <= c.value <= 7]  # the user recoloured class 1
    class_map.setRenderer(QgsPalettedRasterRenderer(class_map.dataProvider(), 1, shown))
    QgsProject.instance().addMapLayer(class_map)
    output = tmp_path / "polygons.gpkg"
    try:
        results = processing.runAndLoadResults(ALG, {"INPUT": class_map.id(), "SKIP_VALUES": "2, 7",
                                                     "TILE_SIZE": 40, "OUTPUT": str(output)})
        assert results["OUTPUT"] == str(output)
        assert results["POLYGONS"] == len(reference_polygons(paletted, skip=(2, 7)))
        loaded = [layer for layer in QgsProject.instance().mapLayers().values()
                  if layer.source().split("|")[0] == str(output)]
        assert len(loaded) == 1 and loaded[0].featureCount() == results["POLYGONS"]
        assert categories(loaded[0]) == {1: ("built-up", "#ff00ff"), **{
            v: (NAMES[v], COLORS[v]) for v in (3, 4, 5, 6)}}
        assert {f["name"] for f in loaded[0].getFeatures() if f["class"] == 5} == {"forest"}
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_input_errors_are_clear(qgis_app, paletted, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=r"name the output \*\.gpkg"):
        processing.run(ALG, {"INPUT": paletted, "OUTPUT": str(tmp_path / "polygons.shp")})
    with pytest.raises(QgsProcessingException, match="integers separated by commas"):
        processing.run(ALG, {"INPUT": paletted, "SKIP_VALUES": "1, x", "OUTPUT": str(tmp_path / "p.gpkg")})
    assert not any(tmp_path.iterdir())


def test_qgis_process_with_minimum_area_and_simplification(qgis_app, qgis_process, data_dir, tmp_path):
    """strata.tif (no palette, Float32): default names and colours; the file opens styled in QGIS."""
    from qgis.core import QgsVectorLayer

    output = tmp_path / "polygons.gpkg"
    min_area = 10 * 28.5 * 28.5
    results = qgis_process.run(ALG, {"INPUT": data_dir / STRATA, "MIN_AREA": min_area, "SIMPLIFY": 30,
                                     "SKIP_VALUES": "5", "OUTPUT": output})
    assert Path(results["OUTPUT"]) == output and sorted(p.name for p in tmp_path.iterdir()) == ["polygons.gpkg"]
    dataset = gdal.OpenEx(str(output), gdal.OF_VECTOR)
    layer = dataset.GetLayer(0)
    features = [(f.GetField("class"), f.GetField("name"), f.GetGeometryRef().Clone()) for f in layer]
    assert results["POLYGONS"] == len(features) > 100
    assert {value for value, _, _ in features} == {1, 2, 3, 4, 6, 7}
    assert all(name == f"class {value}" for value, name, _ in features)
    assert min(g.GetArea() for *_, g in features) > 0.5 * min_area  # simplified, so not exactly >= min_area
    opened = QgsVectorLayer(str(output), "polygons", "ogr")  # as a user opens the file: its default style
    assert opened.isValid() and opened.featureCount() == len(features)
    assert set(categories(opened)) == {1, 2, 3, 4, 6, 7}


def test_a_temporary_output_is_a_geopackage(qgis_app, paletted):
    import processing

    results = processing.run(ALG, {"INPUT": paletted, "SKIP_VALUES": "1,2,3,4,5,6", "OUTPUT": "TEMPORARY_OUTPUT"})
    assert results["OUTPUT"].endswith(".gpkg") and Path(results["OUTPUT"]).is_file()
    assert results["POLYGONS"] == len(reference_polygons(paletted, skip=(1, 2, 3, 4, 5, 6))) > 0


def test_cancel_stops_the_engine_and_leaves_no_output(qgis_app, paletted, tmp_path):
    """Cancel while a 6 x 6 mosaic of the map is being vectorised: Processing returns promptly and
    neither the GeoPackage nor its .part (nor an SQLite journal) remain."""
    import processing
    from qgis.core import QgsProcessingFeedback

    source = gdal.Open(paletted)
    mosaic = tmp_path / "maps" / "mosaic.tif"
    mosaic.parent.mkdir()
    dataset = gdal.GetDriverByName("GTiff").Create(str(mosaic), 6 * source.RasterXSize, 6 * source.RasterYSize, 1,
                                                   gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE"])
    dataset.SetGeoTransform(source.GetGeoTransform())
    dataset.SetProjection(source.GetProjection())
    dataset.GetRasterBand(1).SetNoDataValue(0)
    dataset.GetRasterBand(1).WriteArray(np.tile(source.ReadAsArray(), (6, 6)))
    dataset = None
    output_folder = tmp_path / "out"
    output = output_folder / "polygons.gpkg"
    feedback = QgsProcessingFeedback()
    seen: dict = {}

    def cancel_while_writing():
        try:
            deadline = time.monotonic() + 120
            while feedback.progress() <= 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            seen.update(part=Path(f"{output}.part").exists(), progress=feedback.progress())
            seen["cancelled_at"] = time.monotonic()
        finally:
            feedback.cancel()

    watcher = threading.Thread(target=cancel_while_writing, daemon=True)
    watcher.start()
    results = processing.run(ALG, {"INPUT": str(mosaic), "TILE_SIZE": 64, "OUTPUT": str(output)}, feedback=feedback)
    returned = time.monotonic()
    watcher.join(timeout=5)
    assert seen["part"] and 0 < seen["progress"] < 50, seen
    assert returned - seen["cancelled_at"] < 8
    assert "OUTPUT" not in results
    assert not output_folder.exists() or not any(output_folder.iterdir())
