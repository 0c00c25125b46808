"""Build processing_models/segmentation_workflow.model3: the DeepField chain as a Processing model.

Select samples (a grid over the image, spatial blocks split, the blocks as polygons) ->
Extract patches (segmentation labels from the label raster) -> Train model (U-Net) ->
Apply model (class map) -> Evaluate map (class map vs the label raster, on the test blocks only).

Every product goes to the model's output folder under a fixed name (:data:`PRODUCTS`), set with
expressions on the children's destination parameters. The provider loads every
``processing_models/*.model3`` (algorithms/provider.py): this one is ``deepfield:segmentationworkflow``,
"Segmentation workflow" in the toolbox. Regenerate after changing an algorithm's parameters::

    .venv/bin/python scripts/build_model3.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_FILE = REPO / "processing_models" / "segmentation_workflow.model3"
NAME, GROUP, GROUP_ID = "Segmentation workflow", "Workflows", "workflows"
#: Products in the output folder: (child id, destination parameter) -> file or folder name.
PRODUCTS = {
    ("selectsamples", "OUTPUT"): "samples.gpkg",
    ("selectsamples", "REPORT"): "samples_balance.csv",
    ("selectsamples", "BLOCKS"): "blocks.gpkg",
    ("extractpatches", "OUTPUT"): "dataset",
    ("trainmodel", "OUTPUT"): "model",
    ("applymodel", "OUTPUT"): "class_map.tif",
    ("testblocks", "OUTPUT"): "test_blocks.gpkg",
    ("evaluatemap", "OUTPUT_FOLDER"): "evaluation",
}
HELP = {
    "ALG_DESC": (
        "Trains a U-Net on an image and a label raster and measures it on held-out ground, in one run: "
        "Select samples (a regular grid of patches over the image, split train/valid/test by spatial "
        "blocks, the blocks written as polygons) -> Extract patches (label raster patches) -> Train model "
        "(U-Net) -> Apply model (class map of the whole image) -> Evaluate map (class map vs the label "
        "raster inside the test blocks only: pixels no training patch saw). The output folder receives "
        "samples.gpkg, samples_balance.csv, blocks.gpkg, test_blocks.gpkg, dataset/, model/, "
        "class_map.tif and evaluation/ (metrics.json, report.html). Run the steps one by one for more "
        "options; edit a copy of this model in the Model Designer to change the chain."),
    "image": "The image patches are cut from and the class map is computed on.",
    "labels": "Integer class values on the image's pixel grid (its nodata: unlabelled pixels).",
    "output_folder": "Receives every product of the chain (existing files of the same names are replaced).",
    "patch_size": "Training patch size (image pixels); a multiple of 8 for the U-Net.",
    "grid_step": "Distance between patch centres (image pixels); smaller than the patch size: overlapping patches.",
    "block_size": "Side of the squares (map units) that go wholly to one split; a few patches wide.",
    "epochs": "Training epochs (the best one on the validation split is kept).",
    "hyperparameters": 'U-Net hyper-parameters as JSON, e.g. {"depth": 2, "width": 8}.',
    "ALG_CREATOR": "DeepField",
}


def product(name: str):
    from qgis.core import QgsProcessingModelChildParameterSource

    return QgsProcessingModelChildParameterSource.fromExpression(f"@output_folder || '/{name}'")


def build_model():
    """The workflow as a ``QgsProcessingModelAlgorithm`` (needs a running QgsApplication)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelParameter,
        QgsProcessingParameterDefinition,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterString,
    )
    from qgis.PyQt.QtCore import QPointF

    from deepfield.algorithms.base import README_URL
    from deepfield.algorithms.train_model import ARCHITECTURES
    from deepfield.engine.contract import LABEL_KINDS, SAMPLING_STRATEGIES, SPLIT_MODES

    model = QgsProcessingModelAlgorithm(NAME, GROUP, GROUP_ID)
    number = QgsProcessingParameterNumber
    inputs = [
        QgsProcessingParameterRasterLayer("image", "Image"),
        QgsProcessingParameterRasterLayer("labels", "Label raster (integer classes)"),
        QgsProcessingParameterFile("output_folder", "Output folder", behavior=QgsProcessingParameterFile.Folder),
        number("patch_size", "Patch size (pixels)", number.Integer, defaultValue=32, minValue=8),
        number("grid_step", "Grid step (pixels)", number.Integer, defaultValue=16, minValue=1),
        number("block_size", "Block size of the spatial split (map units)", number.Double, defaultValue=3000,
               minValue=0),
        number("epochs", "Epochs", number.Integer, defaultValue=50, minValue=1),
        QgsProcessingParameterString("hyperparameters", "U-Net hyper-parameters (JSON)", defaultValue="",
                                     optional=True),
    ]
    inputs[-1].setFlags(inputs[-1].flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    for row, parameter in enumerate(inputs):
        component = QgsProcessingModelParameter(parameter.name())
        component.setPosition(QPointF(120, 60 + 70 * row))
        model.addModelParameter(parameter, component)

    defaults = {parameter.name(): parameter.defaultValue() for parameter in inputs}

    def link(name):
        """The model input ``name``; its default when missing (QGIS 3.22 passes nothing then)."""
        if defaults[name] in (None, ""):
            return [Source.fromModelParameter(name)]
        return [Source.fromExpression(f"coalesce(@{name}, {defaults[name]!r})")]

    def output_of(child, name):
        return [Source.fromChildOutput(child, name)]

    def static(value):
        return [Source.fromStaticValue(value)]

    children = [
        ("deepfield:selectsamples", "selectsamples", "Select samples (grid, spatial blocks)", {
            "INPUT": link("image"), "STRATEGY": static(SAMPLING_STRATEGIES.index("grid")), "PATCH_SIZE": link("patch_size"),
            "STEP": link("grid_step"), "SPLIT_MODE": static(SPLIT_MODES.index("blocks")),
            "BLOCK_SIZE": link("block_size")}),
        ("deepfield:extractpatches", "extractpatches", "Extract patches (segmentation labels)", {
            "SOURCES": link("image"), "PATCH_SIZES": link("patch_size"),
            "POSITIONS": output_of("selectsamples", "OUTPUT"),
            "LABEL_KIND": static(LABEL_KINDS.index("segmentation")), "LABEL_RASTER": link("labels")}),
        ("deepfield:trainmodel", "trainmodel", "Train model (U-Net)", {
            "DATASET": output_of("extractpatches", "OUTPUT"), "ARCHITECTURE": static(ARCHITECTURES.index("unet")),
            "EPOCHS": link("epochs"), "HYPERPARAMETERS": link("hyperparameters")}),
        ("deepfield:applymodel", "applymodel", "Apply model (class map)", {
            "MODEL": output_of("trainmodel", "MODEL"), "SOURCES": link("image")}),
        ("native:extractbyattribute", "testblocks", "Test blocks", {
            "INPUT": output_of("selectsamples", "BLOCKS"), "FIELD": static("split"), "OPERATOR": static(0),
            "VALUE": static("test")}),
        ("deepfield:evaluatemap", "evaluatemap", "Evaluate map (test blocks)", {
            "INPUT": output_of("applymodel", "OUTPUT"), "REFERENCE_RASTER": link("labels"),
            "MASK": output_of("testblocks", "OUTPUT")}),
    ]
    for column, (algorithm_id, child_id, description, sources) in enumerate(children):
        child = QgsProcessingModelChildAlgorithm(algorithm_id)
        child.setChildId(child_id)
        child.setDescription(description)
        child.setPosition(QPointF(420 + 260 * column, 120 + 60 * (column % 2)))
        for parameter, value in sources.items():
            child.addParameterSources(parameter, value)
        for (owner, parameter), name in PRODUCTS.items():
            if owner == child_id:
                child.addParameterSources(parameter, [product(name)])
        model.addChildAlgorithm(child)
    model.setHelpContent({**HELP, "HELP_URL": README_URL})
    return model


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["QT_HASH_SEED"] = "0"  # the same XML attribute order at every build: a diffable file
    sys.path.insert(0, str(REPO / ".build" / "plugins"))  # the package deepfield (make setup links it)
    from qgis.core import QgsApplication
    from qgis.testing import start_app

    start_app()
    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    MODEL_FILE.parent.mkdir(exist_ok=True)
    if not build_model().toFile(str(MODEL_FILE)):
        print(f"cannot write {MODEL_FILE}", file=sys.stderr)
        return 1
    print(f"wrote {MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
