"""The building map through ``qgis_process.bin``, from the polygons to the footprints (issue 15 item 1;
issue 11's second scene): SpaceNet Atlanta, pan 0.5 m, its 43 footprints given a text class field.

- processing_models/building_workflow.model3 (scripts/workflows/buildings.py) with the pan image and
  a second, coarser source of the same ground (the pan averaged to 2 m in the test's folder: Atlanta
  has no multispectral image), small settings;
- the default chain with the pan image alone (every parameter at its default but the epochs: 1), scored
  by Evaluate map on the test blocks against the footprints burnt here (outside them: background).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from demo_data import building_inputs
from osgeo import gdal, ogr

from ..conftest import REPO
from ..rasterised import burnt

MODEL_FILE = REPO / "processing_models" / "building_workflow.model3"
GRID, SEGMENTATION = 3, 1  # Select samples strategy, Extract patches label kind (enum indices)
MIN_AREA = 10.0  # m²
BUILDING, BACKGROUND = 1, 0  # class values: the text class 'building' gets 1, the background 0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return building_inputs(tmp_path_factory.mktemp("atlanta"))


def regions(mask: np.ndarray, like: gdal.Dataset, min_area: float) -> list[float]:
    """Areas of the 4-connected regions of ``mask`` of at least ``min_area`` (one gdal.Polygonize)."""
    source = gdal.GetDriverByName("MEM").Create("", mask.shape[1], mask.shape[0], 1, gdal.GDT_Byte)
    source.SetGeoTransform(like.GetGeoTransform())
    source.GetRasterBand(1).WriteArray(mask.astype(np.uint8))
    polygons = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = polygons.CreateLayer("regions")
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(source.GetRasterBand(1), source.GetRasterBand(1), layer, 0)
    return [f.GetGeometryRef().GetArea() for f in layer if f.GetGeometryRef().GetArea() >= min_area]


def test_the_building_workflow_runs_from_polygons_to_footprints(qgis_process, inputs, tmp_path):
    folder = tmp_path / "buildings"
    qgis_process.run(str(MODEL_FILE), {
        "pan": inputs["pan"], "ms": inputs["coarse"], "buildings": inputs["buildings"], "output_folder": folder,
        "patch_size": 32, "grid_step": 64, "epochs": 1, "time_budget": 0, "min_area": MIN_AREA,
        "hyperparameters": '{"depth": 2, "width": 4}'})
    manifest = json.loads((folder / "dataset" / "manifest.json").read_text())
    assert [(s["name"], s["scale"], s["patch_size"]) for s in manifest["sources"]] == [("pan", "1", 32),
                                                                                    ("ms", "4", 8)]
    assert [(c["value"], c["name"]) for c in manifest["label"]["classes"]] == [(BACKGROUND, "background"),
                                                                              (BUILDING, "building")]
    assert all(manifest["splits"][split] > 0 for split in ("train", "valid", "test"))
    assert manifest["rejected"] == {"outside": 0, "nodata": 0, "label_nodata": 0}  # background: all kept
    metadata = json.loads((folder / "model" / "deepfield.json").read_text())
    assert metadata["training"]["config"]["architecture"] == "unet"
    assert [(s["name"], s["scale"]) for s in metadata["inputs"]] == [("pan", "1"), ("ms", "4")]

    pan, class_map = gdal.Open(inputs["pan"]), gdal.Open(str(folder / "building_map.tif"))
    assert class_map.GetGeoTransform() == pan.GetGeoTransform()
    assert (class_map.RasterXSize, class_map.RasterYSize) == (900, 900)
    classes = class_map.ReadAsArray()
    assert set(np.unique(classes).tolist()) <= {BACKGROUND, BUILDING}

    # the footprints are the map's building regions of at least MIN_AREA m², background skipped
    footprints = ogr.Open(str(folder / "footprints.gpkg"))
    rows = [(f.GetField("class"), f.GetField("name"), f.GetGeometryRef().GetArea()) for f in footprints.GetLayer(0)]
    expected = regions(classes == BUILDING, class_map, MIN_AREA)
    assert {(value, name) for value, name, _ in rows} <= {(BUILDING, "building")}
    assert len(rows) == len(expected)
    assert sum(area for *_, area in rows) == pytest.approx(sum(expected))


def test_the_default_chain_on_the_pan_image_alone(qgis_process, inputs, tmp_path):
    """Select samples (grid), Extract patches (polygons, background), Train model, Apply model and
    Evaluate map at their defaults (but 1 epoch), the pan image the only source."""
    pan = inputs["pan"]
    samples = qgis_process.run("deepfield:selectsamples", {
        "INPUT": pan, "STRATEGY": GRID, "OUTPUT": tmp_path / "samples.gpkg", "BLOCKS": tmp_path / "blocks.gpkg"})
    dataset = qgis_process.run("deepfield:extractpatches", {
        "SOURCES": pan, "POSITIONS": samples["OUTPUT"], "LABEL_KIND": SEGMENTATION,
        "LABEL_POLYGONS": inputs["buildings"], "LABEL_POLYGON_FIELD": "class", "LABEL_BACKGROUND": "background",
        "OUTPUT": tmp_path / "dataset"})
    model = qgis_process.run("deepfield:trainmodel", {"DATASET": dataset["OUTPUT"], "EPOCHS": 1,
                                                      "OUTPUT": tmp_path / "model"})
    metadata = json.loads((tmp_path / "model" / "deepfield.json").read_text())
    assert metadata["training"]["config"]["architecture"] == "unet"  # automatic: segmentation labels
    applied = qgis_process.run("deepfield:applymodel", {"MODEL": model["OUTPUT"], "SOURCES": pan,
                                                        "OUTPUT": tmp_path / "map.tif"})
    test_blocks = qgis_process.run("native:extractbyattribute", {
        "INPUT": samples["BLOCKS"], "FIELD": "split", "OPERATOR": 0, "VALUE": "test",
        "OUTPUT": tmp_path / "test_blocks.gpkg"})
    # the reference: the footprints themselves (text class "building"), background outside them
    qgis_process.run("deepfield:evaluatemap", {
        "INPUT": applied["OUTPUT"], "REFERENCE_VECTOR": inputs["buildings"], "CLASS_FIELD": "class",
        "BACKGROUND": "background", "MASK": test_blocks["OUTPUT"], "OUTPUT_FOLDER": tmp_path / "evaluation"})
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    support = {row["value"]: row["support"] for row in metrics["classes"]}
    # independently: the pixels of the test blocks (burnt), per class burnt from the footprints
    image = gdal.Open(pan)
    reference = np.where(burnt(image, inputs["buildings"]), BUILDING, BACKGROUND)
    in_test = burnt(image, test_blocks["OUTPUT"])
    assert support == {BACKGROUND: int((in_test & (reference == 0)).sum()),
                       BUILDING: int((in_test & (reference == 1)).sum())}
    assert 0 < support[BUILDING] < support[BACKGROUND]
    assert {row["name"] for row in metrics["classes"]} == {"background", "building"}
