"""The Processing model shipped with the plugin: the whole chain headless, in the toolbox, wirable.

processing_models/segmentation_workflow.model3 (scripts/workflows/landcover.py) chains Co-register
image to labels -> Select samples -> Extract patches -> Train model -> Apply model -> Evaluate map (on the test blocks).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr

from ..conftest import REPO

MODEL_FILE = REPO / "processing_models" / "segmentation_workflow.model3"
MODEL_ID = "deepfield:segmentationworkflow"
NC = "nc_landsat7_landcover"
CLASSES = set(range(1, 8))  # strata.tif land-cover classes


@pytest.fixture(scope="module")
def nc(data_dir):
    return data_dir / NC


@pytest.fixture(scope="module")
def chain(qgis_process, nc, tmp_path_factory):
    """The model run once by file, as a user runs it: small patches and U-Net, 3 epochs (about 15 s);
    the other parameters at the workflow's defaults."""
    folder = tmp_path_factory.mktemp("workflow")
    results = qgis_process.run(str(MODEL_FILE), {
        "image": nc / "lsat7_2000_6band.vrt", "labels": nc / "strata.tif", "output_folder": folder,
        "patch_size": 32, "crop_size": 0, "epochs": 3, "hyperparameters": '{"depth": 2, "width": 8}'})
    return folder, results


def layer_rows(path, *fields):
    source = ogr.Open(str(path))
    return [(feature.GetGeometryRef().Clone(), *(feature.GetField(f) for f in fields))
            for feature in source.GetLayer(0)]


def test_the_chain_trains_serves_and_evaluates_on_the_test_blocks(chain, nc):
    folder, _ = chain
    manifest = json.loads((folder / "dataset" / "manifest.json").read_text())
    assert manifest["label"]["kind"] == "segmentation"
    assert {c["value"] for c in manifest["label"]["classes"]} == CLASSES
    assert all(manifest["splits"][split] > 0 for split in ("train", "valid", "test"))
    metadata = json.loads((folder / "model" / "deepfield.json").read_text())
    assert metadata["task"] == "segmentation" and (folder / "model" / "model.keras").is_file()
    config = metadata["training"]["config"]  # the model's inputs reached Train model
    assert (config["architecture"], config["epochs"], config["hyperparameters"]) == ("unet", 3, {"depth": 2, "width": 8})
    load_workflows()
    recipe = importlib.import_module("workflows.landcover").RECIPE  # the measured recipe reached Train model
    assert (config["learning_rate"], config["class_weighting"], config["time_budget"], config["ema_momentum"],
            config["jit_compile"], config["early_stopping_patience"]) == (
        recipe["learning_rate"], recipe["class_weighting"], recipe["time_budget"], recipe["ema_momentum"],
        recipe["jit_compile"], recipe["patience"])

    image, class_map = gdal.Open(str(nc / "lsat7_2000_6band.vrt")), gdal.Open(str(folder / "class_map.tif"))
    assert class_map.GetGeoTransform() == image.GetGeoTransform()
    # every step used the image moved onto the labels (they sit 1 px up and left of it): pixel (r + 1, c + 1) at (r, c)
    moved = gdal.Open(str(folder / "image_on_labels.vrt"))
    assert moved.GetGeoTransform() == image.GetGeoTransform()
    np.testing.assert_array_equal(moved.ReadAsArray()[:, :-1, :-1], image.ReadAsArray()[:, 1:, 1:])
    assert [source["path"] for source in manifest["sources"]] == [str(folder / "image_on_labels.vrt")]
    assert (class_map.RasterXSize, class_map.RasterYSize, class_map.RasterCount) == (489, 443, 1)
    classes = class_map.ReadAsArray()
    nodata = class_map.GetRasterBand(1).GetNoDataValue()  # where a band of the image is nodata
    assert nodata not in CLASSES and set(np.unique(classes).tolist()) <= CLASSES | {nodata}
    assert (classes != nodata).mean() > 0.5

    blocks = layer_rows(folder / "blocks.gpkg", "split", "positions")
    assert {split for _, split, _ in blocks} == {"train", "valid", "test"}
    assert sum(count for *_, count in blocks) == sum(manifest["splits"].values())
    test_blocks = layer_rows(folder / "test_blocks.gpkg", "split")
    assert {split for _, split in test_blocks} == {"test"}
    assert len(test_blocks) == sum(split == "test" for _, split, _ in blocks)

    metrics = json.loads((folder / "evaluation" / "metrics.json").read_text())
    assert metrics["mask"] == str(folder / "test_blocks.gpkg")
    assert 0 <= metrics["overall_accuracy"] <= 1 and -1 <= metrics["kappa"] <= 1
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == metrics["samples"]
    assert metrics["overall_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    # independently: the labelled pixels whose centre lies in a test block (the blocks are rectangles)
    gt = image.GetGeoTransform()
    x = gt[0] + (np.arange(489) + 0.5) * gt[1]
    y = gt[3] + (np.arange(443) + 0.5) * gt[5]
    inside = np.zeros((443, 489), dtype=bool)
    for polygon, _ in test_blocks:
        left, right, bottom, top = polygon.GetEnvelope()
        assert polygon.GetArea() == pytest.approx((right - left) * (top - bottom))
        inside |= ((y > bottom) & (y < top))[:, None] & ((x > left) & (x < right))[None, :]
    strata = gdal.Open(str(nc / "strata.tif"))
    labelled = strata.ReadAsArray() != strata.GetRasterBand(1).GetNoDataValue()
    assert metrics["samples"] == (inside & labelled & (classes != 0)).sum() < labelled.sum() / 2

    report = (folder / "evaluation" / "report.html").read_text()
    for shown in (f"{100 * metrics['overall_accuracy']:.2f}", f"{metrics['kappa']:.4f}", str(metrics["samples"])):
        assert f"<td>{shown}" in report


def test_the_model_is_listed_under_the_provider(qgis_process):
    listed = qgis_process("list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    start = lines.index("DeepField") + 1  # the provider's name, then one tab-indented line per algorithm
    end = next((k for k in range(start, len(lines)) if not lines[k].startswith("\t")), len(lines))
    provider = [line.split("\t")[1] for line in lines[start:end]]
    assert MODEL_ID in provider and "deepfield:trainmodel" in provider
    described = qgis_process("help", MODEL_ID)
    assert described.returncode == 0, described.stderr
    for argument in ("image:", "labels:", "output_folder:", "patch_size:", "block_size:", "epochs:"):
        assert f"\n{argument}" in described.stdout


def load_workflows():
    """scripts/workflows (the definitions scripts/build_model3.py writes to processing_models/)."""
    spec = importlib.util.spec_from_file_location(
        "workflows", REPO / "scripts" / "workflows" / "__init__.py",
        submodule_search_locations=[str(REPO / "scripts" / "workflows")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["workflows"] = module
    spec.loader.exec_module(module)
    return module


def test_every_shipped_model_is_what_its_workflow_builds(qgis_app, tmp_path):
    from qgis.core import QgsProcessingModelAlgorithm

    workflows = load_workflows()
    built = {}
    for workflow in workflows.definitions():
        rebuilt, shipped, fresh = tmp_path / workflow.file, QgsProcessingModelAlgorithm(), QgsProcessingModelAlgorithm()
        assert workflows.assemble(workflow).toFile(str(rebuilt))
        assert shipped.fromFile(str(REPO / "processing_models" / workflow.file)) and fresh.fromFile(str(rebuilt))
        # (but for the file format version the running QGIS writes: Version1 in 3.22, Version2 in 3.40)
        variants = [model.toVariant() for model in (fresh, shipped)]
        for variant in variants:
            variant.pop("internal_version", None)
        assert variants[0] == variants[1], f"run scripts/build_model3.py ({workflow.file})"
        built[workflow.file] = workflow.name
    assert sorted(built) == sorted(path.name for path in (REPO / "processing_models").glob("*.model3"))


def test_in_process_the_provider_holds_the_model_and_its_links_are_wirable(qgis_app):
    from qgis.core import Qgis, QgsApplication, QgsProcessingContext
    from qgis.core import QgsProcessingModelChildParameterSource as Source
    from qgis.gui import QgsGui

    # QGIS 3.22: Source.ChildOutput; 3.40: the scoped Qgis.ProcessingModelChildParameterSource.ChildOutput
    child_output = (Source.ChildOutput if hasattr(Source, "ChildOutput")
                    else Qgis.ProcessingModelChildParameterSource.ChildOutput)

    registry = QgsApplication.processingRegistry()
    assert MODEL_ID in [a.id() for a in registry.providerById("deepfield").algorithms()]
    model = registry.createAlgorithmById(MODEL_ID)
    children = model.childAlgorithms()
    assert {c.algorithmId() for c in children.values()} == {
        "deepfield:coregisterimage", "deepfield:selectsamples", "deepfield:extractpatches", "deepfield:trainmodel",
        "deepfield:applymodel", "native:extractbyattribute", "deepfield:evaluatemap"}
    assert all(child.algorithm() is not None for child in children.values())

    # the outputs the chain needs exist with wirable types
    train, apply = registry.algorithmById("deepfield:trainmodel"), registry.algorithmById("deepfield:applymodel")
    assert train.outputDefinition("MODEL") is not None and apply.outputDefinition("OUTPUT").type() == "outputRaster"
    assert registry.algorithmById("deepfield:selectsamples").outputDefinition("BLOCKS").type() == "outputVector"

    # every link of the model is one the Model Designer offers (its parameter widget keeps it)
    context, widgets = QgsProcessingContext(), []

    def designer_keeps(child_id, parameter, source):
        definition = children[child_id].algorithm().parameterDefinition(parameter)
        widget = QgsGui.processingGuiRegistry().createModelerParameterWidget(model, child_id, definition, context)
        widgets.append(widget)
        widget.setWidgetValue([source])
        value = widget.value()
        value = value[0] if isinstance(value, list) else value
        return (value.source(), value.outputChildId(), value.outputName()) == (
            child_output, source.outputChildId(), source.outputName())

    links = [(child_id, parameter, source) for child_id, child in children.items()
             for parameter, sources in child.parameterSources().items() for source in sources
             if source.source() == child_output]
    assert {(c, p, s.outputChildId(), s.outputName()) for c, p, s in links} >= {
        ("applymodel", "MODEL", "trainmodel", "MODEL"), ("evaluatemap", "INPUT", "applymodel", "OUTPUT"),
        ("trainmodel", "DATASET", "extractpatches", "OUTPUT"), ("evaluatemap", "MASK", "testblocks", "OUTPUT"),
        ("selectsamples", "INPUT", "coregister", "OUTPUT"), ("extractpatches", "SOURCES", "coregister", "OUTPUT"),
        ("applymodel", "SOURCES", "coregister", "OUTPUT")}
    for child_id, parameter, source in links:
        assert designer_keeps(child_id, parameter, source), (child_id, parameter, source.outputName())
    assert not designer_keeps("evaluatemap", "INPUT", Source.fromChildOutput("trainmodel", "BEST_EPOCH"))  # a number
