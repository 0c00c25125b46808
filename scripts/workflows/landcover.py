"""Land cover: ``deepfield:segmentationworkflow``, "Land cover workflow" in the toolbox.

Select samples (a regular grid over the image, spatial blocks split, the blocks as polygons) ->
Extract patches (segmentation labels from the label raster) -> Train model (U-Net) ->
Apply model (class map) -> Evaluate map (class map vs the label raster, on the test blocks only).
"""

from __future__ import annotations

from . import RASTER_FILES, Child, Workflow, grid_samples_and_patches

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
    "image": "The image file patches are cut from and the class map is computed on (read, never changed).",
    "labels": "Integer class values on the image's pixel grid (its nodata: unlabelled pixels).",
    "output_folder": "Receives every product of the chain (existing files of the same names are replaced).",
    "patch_size": "Training patch size (image pixels); a multiple of 8 for the U-Net.",
    "grid_step": "Distance between patch centres (image pixels); smaller than the patch size: overlapping patches.",
    "block_size": "Side of the squares (map units) that go wholly to one split; a few patches wide.",
    "epochs": "Training epochs (the best one on the validation split is kept).",
    "hyperparameters": 'U-Net hyper-parameters as JSON, e.g. {"depth": 2, "width": 8}.',
}


def definition() -> Workflow:
    from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterNumber, QgsProcessingParameterString

    from deepfield.algorithms.train_model import ARCHITECTURES

    number = QgsProcessingParameterNumber
    inputs = [
        QgsProcessingParameterFile("image", "Image (raster file)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("labels", "Label raster file (integer classes)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("output_folder", "Output folder", behavior=QgsProcessingParameterFile.Folder),
        number("patch_size", "Patch size (pixels)", number.Integer, defaultValue=32, minValue=8),
        number("grid_step", "Grid step (pixels)", number.Integer, defaultValue=16, minValue=1),
        number("block_size", "Block size of the spatial split (map units)", number.Double, defaultValue=3000,
               minValue=0),
        number("epochs", "Epochs", number.Integer, defaultValue=50, minValue=1),
        QgsProcessingParameterString("hyperparameters", "U-Net hyper-parameters (JSON)", defaultValue="",
                                     optional=True),
    ]
    children = grid_samples_and_patches("segmentation", "labels", "segmentation labels") + [
        Child("deepfield:trainmodel", "trainmodel", "Train model (U-Net)", {
            "DATASET": ("output", "extractpatches", "OUTPUT"),
            "ARCHITECTURE": ("static", ARCHITECTURES.index("unet")), "EPOCHS": ("input", "epochs"),
            "HYPERPARAMETERS": ("input", "hyperparameters"), "OUTPUT": ("product", "model")}),
        Child("deepfield:applymodel", "applymodel", "Apply model (class map)", {
            "MODEL": ("output", "trainmodel", "MODEL"), "SOURCES": ("input", "image"),
            "OUTPUT": ("product", "class_map.tif")}),
        Child("native:extractbyattribute", "testblocks", "Test blocks", {
            "INPUT": ("output", "selectsamples", "BLOCKS"), "FIELD": ("static", "split"),
            "OPERATOR": ("static", 0), "VALUE": ("static", "test"), "OUTPUT": ("product", "test_blocks.gpkg")}),
        Child("deepfield:evaluatemap", "evaluatemap", "Evaluate map (test blocks)", {
            "INPUT": ("output", "applymodel", "OUTPUT"), "REFERENCE_RASTER": ("input", "labels"),
            "MASK": ("output", "testblocks", "OUTPUT"), "OUTPUT_FOLDER": ("product", "evaluation")}),
    ]
    return Workflow("segmentation_workflow.model3", "Land cover workflow", inputs, children, HELP,
                    advanced=("hyperparameters",))
