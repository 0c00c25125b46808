"""Labels as users have them, from QGIS: polygons with a text class field through the whole
chain with ``qgis_process.bin`` (SpaceNet Atlanta pan, building footprints), and a text class
field of positions accepted by Extract patches in-process (NC Landsat points)."""

from __future__ import annotations

import json
from pathlib import Path

from deepfield.algorithms.train_model import ARCHITECTURES
from osgeo import gdal, ogr, osr

from ..rasterised import burnt

SPACENET = "spacenet_solaris"
NC = "nc_landsat7_landcover"
POLYGONS, GRID, SEGMENTATION = 1, 3, 1  # Select samples strategies, Extract patches label kind (enum indices)


def building_labels(data_dir: Path, path: Path) -> str:
    """A GeoPackage copy of the SpaceNet footprints with a text field ``landcover``: each building
    ``building``, and one ``ground`` polygon covering the rest of the image."""
    image = gdal.Open(str(data_dir / SPACENET / "sample_geotiff.tif"))
    gt = image.GetGeoTransform()
    ring = ogr.Geometry(ogr.wkbLinearRing)
    x0, y0, x1, y1 = gt[0], gt[3], gt[0] + image.RasterXSize * gt[1], gt[3] + image.RasterYSize * gt[5]
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        ring.AddPoint_2D(x, y)
    ground = ogr.Geometry(ogr.wkbPolygon)
    ground.AddGeometry(ring)
    source = ogr.Open(str(data_dir / SPACENET / "geotiff_labels.geojson"))
    buildings = [f.GetGeometryRef().Clone() for f in source.GetLayer(0)]
    for building in buildings:
        ground = ground.Difference(building)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(image.GetProjection())
    target = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = target.CreateLayer("labels", srs, ogr.wkbMultiPolygon)
    layer.CreateField(ogr.FieldDefn("landcover", ogr.OFTString))
    for name, geometry in [("building", b) for b in buildings] + [("ground", ground)]:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("landcover", name)
        feature.SetGeometry(ogr.ForceToMultiPolygon(geometry))
        layer.CreateFeature(feature)
    target = None
    return str(path)


def test_text_class_polygons_through_the_chain_with_qgis_process(qgis_process, data_dir, tmp_path):
    image = str(data_dir / SPACENET / "sample_geotiff.tif")
    labels = building_labels(data_dir, tmp_path / "labels.gpkg")
    samples = qgis_process.run("deepfield:selectsamples", {
        "INPUT": image, "STRATEGY": POLYGONS, "VECTOR": labels, "CLASS_FIELD": "landcover", "SAMPLES": 24,
        "PATCH_SIZE": 32, "TRAIN": 0.7, "VALID": 0.3, "TEST": 0, "OUTPUT": tmp_path / "positions.gpkg"})
    source = ogr.Open(samples["OUTPUT"])
    written = {(f.GetField("class"), f.GetField("class_name")) for f in source.GetLayer(0)}
    assert written == {(1, "building"), (2, "ground")}
    dataset = qgis_process.run("deepfield:extractpatches", {
        "SOURCES": image, "PATCH_SIZES": 32, "NAMES": "pan", "POSITIONS": samples["OUTPUT"],
        "LABEL_KIND": SEGMENTATION, "LABEL_POLYGONS": labels, "LABEL_POLYGON_FIELD": "landcover",
        "OUTPUT": tmp_path / "dataset"})
    manifest = json.loads(Path(dataset["MANIFEST"]).read_text())
    assert [(c["value"], c["name"]) for c in manifest["label"]["classes"]] == [(1, "building"), (2, "ground")]
    model = qgis_process.run("deepfield:trainmodel", {
        "DATASET": dataset["OUTPUT"], "ARCHITECTURE": ARCHITECTURES.index("unet"), "EPOCHS": 1, "BATCH_SIZE": 8,
        "HYPERPARAMETERS": json.dumps({"depth": 1, "width": 4}), "OUTPUT": tmp_path / "model"})
    applied = qgis_process.run("deepfield:applymodel", {"MODEL": model["OUTPUT"], "SOURCES": image,
                                                        "OUTPUT": tmp_path / "map.tif"})
    style = Path(applied["OUTPUT"]).with_suffix(".qml").read_text()
    assert 'label="building"' in style and 'label="ground"' in style
    qgis_process.run("deepfield:evaluatemap", {"INPUT": applied["OUTPUT"], "REFERENCE_VECTOR": labels,
                                               "CLASS_FIELD": "landcover", "OUTPUT_FOLDER": tmp_path / "evaluation"})
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    support = {row["name"]: row["support"] for row in metrics["classes"]}
    # independently: the pixels whose centre is in a building footprint, on the map's valid pixels
    class_map = gdal.Open(applied["OUTPUT"])
    footprints = burnt(class_map, data_dir / SPACENET / "geotiff_labels.geojson")
    valid = class_map.ReadAsArray() != class_map.GetRasterBand(1).GetNoDataValue()
    assert support["building"] == int((footprints & valid).sum()) > 0
    assert support["ground"] > support["building"]


def test_a_text_class_field_is_extracted_in_process(qgis_app, data_dir, tmp_path):
    import processing

    points = data_dir / NC / "landsat96_points.shp"
    done = processing.run("deepfield:extractpatches", {
        "SOURCES": [str(data_dir / NC / "lsat7_2000_6band.vrt")], "PATCH_SIZES": "5", "NAMES": "landsat",
        "POSITIONS": str(points), "LABEL_KIND": 0, "CLASS_FIELD": "label", "OUTPUT": str(tmp_path / "dataset")})
    source = ogr.Open(str(points))
    names = sorted({f.GetField("label") for f in source.GetLayer(0)})
    manifest = json.loads(Path(done["MANIFEST"]).read_text())
    assert [(c["value"], c["name"]) for c in manifest["label"]["classes"]] == list(enumerate(names, start=1))


def test_split_zones_from_a_memory_layer_keep_each_split_to_its_labels(qgis_app, data_dir, tmp_path):
    """Extract patches in-process with split zones drawn as a QGIS memory layer (west half
    ``train``, east half ``valid``): no train patch holds a label east of the border, no
    validation patch one west of it, and patches crossing it keep their own side's labels."""
    import numpy as np
    import processing
    from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsVectorLayer

    image = str(data_dir / NC / "lsat7_2000_6band.vrt")
    opened = gdal.Open(image)
    gt, width, height = opened.GetGeoTransform(), opened.RasterXSize, opened.RasterYSize
    border = gt[0] + 220.5 * gt[1]
    x0, x1, y0, y1 = gt[0], gt[0] + width * gt[1], gt[3], gt[3] + height * gt[5]
    zones = QgsVectorLayer("Polygon?field=split:string", "zones", "memory")
    zones.setCrs(QgsCoordinateReferenceSystem.fromWkt(opened.GetProjection()))
    for split, left, right in (("train", x0, border), ("valid", border, x1)):
        feature = QgsFeature(zones.fields())
        feature.setAttribute("split", split)
        feature.setGeometry(QgsGeometry.fromWkt(
            f"POLYGON (({left} {y0}, {right} {y0}, {right} {y1}, {left} {y1}, {left} {y0}))"))
        zones.dataProvider().addFeature(feature)
    samples = processing.run("deepfield:selectsamples", {
        "INPUT": image, "STRATEGY": GRID, "PATCH_SIZE": 32, "STEP": 32, "SPLIT_MODE": 0, "TRAIN": 0.5, "VALID": 0.5,
        "TEST": 0.0, "OUTPUT": str(tmp_path / "grid.gpkg")})
    done = processing.run("deepfield:extractpatches", {
        "SOURCES": [image], "PATCH_SIZES": "32", "NAMES": "landsat", "POSITIONS": samples["OUTPUT"],
        "LABEL_KIND": SEGMENTATION, "LABEL_RASTER": str(data_dir / NC / "strata.tif"), "SPLIT_ZONES": zones,
        "OUTPUT": str(tmp_path / "dataset")})
    from deepfield.engine.dataset import open_dataset

    reader = open_dataset(done["OUTPUT"])
    source = ogr.Open(done["ACCEPTED"])
    crossing = 0
    for feature in source.GetLayer(0):
        split, index = feature.GetField("split"), feature.GetField("index")
        labels = reader.arrays(split)[1][index]
        centres = feature.GetGeometryRef().GetX() + (np.arange(32) - 16 + 0.5) * gt[1]
        east = centres > border
        own_side = ~east if split == "train" else east
        assert (labels[:, ~own_side] == -1).all()
        crossing += int(own_side.any() and not own_side.all() and (labels[:, own_side] >= 0).any())
    assert crossing > 0 and done["TRAIN"] > 0 and done["VALID"] > 0
