"""Image enhancement: ``deepfield:superresolutionworkflow``, "Super-resolution workflow" in the toolbox.

Select samples (a regular grid over the low-resolution image, spatial blocks split, the blocks as
polygons) -> Extract patches (target patches from the higher-resolution image, on the same ground)
-> Train model (superres x2 or x4, with the adversarial loss by default) -> Apply model (the
enhanced image over the whole low-resolution image) -> the test blocks (held-out ground, where
the enhanced image is compared with the target).
"""

from __future__ import annotations

from . import RASTER_FILES, Child, Workflow, grid_samples_and_patches

HELP = {
    "ALG_DESC": (
        "Trains a super-resolution network from two images of the same ground, a low-resolution one "
        "(the input) and a higher-resolution one (the target: 2 or 4 times finer, e.g. Sentinel-2 B8A "
        "20 m -> B08 10 m, or Landsat-8 30 m -> the 15 m pan), and enhances the whole low-resolution "
        "image, in one run: Select samples (a regular grid of patches over the low-resolution image, "
        "split train/valid/test by spatial blocks, the blocks written as polygons) -> Extract patches "
        "(input patches and target patches of the same ground, registered on the grids' shared corners) "
        "-> Train model (zoo superres: a residual network over bilinear up-sampling; with the "
        "adversarial loss, SRGAN-like, against a patch discriminator) -> Apply model (the enhanced "
        "image, tile by tile, identical to one pass over the whole image) -> Test blocks (the ground "
        "no training patch saw: compare the enhanced image with the target there). The output folder "
        "receives samples.gpkg, samples_balance.csv, blocks.gpkg, test_blocks.gpkg, dataset/, model/ "
        "(training_curves.png: validation PSNR against bicubic) and enhanced.tif. Run the steps one by "
        "one for more options; edit a copy of this model in the Model Designer to change the chain."),
    "low_resolution": "The image to enhance (patches are cut from it; read, never changed).",
    "target": "The same ground 2 or 4 times finer (any CRS and grid; read, never changed).",
    "output_folder": "Receives every product of the chain (existing files of the same names are replaced).",
    "patch_size": "Training patch size (low-resolution pixels); the target patch covers the same ground.",
    "grid_step": "Distance between patch centres (low-resolution pixels); smaller than the patch size: "
                 "overlapping patches.",
    "block_size": "Side of the squares (map units) that go wholly to one split; a few patches wide.",
    "time_budget": "Training minutes (the best epoch on the validation split, by PSNR, is kept).",
    "epochs": "Training epochs at most.",
    "gan": "Add the adversarial loss to the L1 loss (sharper edges; off: L1 only).",
    "adversarial_weight": "Weight of the adversarial loss against the L1 loss on the normalised target.",
    "hyperparameters": 'superres hyper-parameters as JSON, e.g. {"width": 32, "blocks": 4}.',
}


def definition() -> Workflow:
    from qgis.core import (
        QgsProcessingParameterBoolean,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
        QgsProcessingParameterString,
    )

    from deepfield.algorithms.train_model import ARCHITECTURES
    from deepfield.engine.contract import TrainModelSpec

    number = QgsProcessingParameterNumber
    inputs = [
        QgsProcessingParameterFile("low_resolution", "Low-resolution image (raster file)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("target", "Higher-resolution target image (raster file, same ground)",
                                   fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("output_folder", "Output folder", behavior=QgsProcessingParameterFile.Folder),
        number("patch_size", "Patch size (low-resolution pixels)", number.Integer, defaultValue=32, minValue=4),
        number("grid_step", "Grid step (low-resolution pixels)", number.Integer, defaultValue=16, minValue=1),
        number("block_size", "Block size of the spatial split (map units)", number.Double, defaultValue=2560,
               minValue=0),
        number("time_budget", "Training time budget (minutes, 0 = none)", number.Double, defaultValue=10.0,
               minValue=0),
        number("epochs", "Epochs (at most)", number.Integer, defaultValue=200, minValue=1),
        QgsProcessingParameterBoolean("gan", "Adversarial loss (GAN)", defaultValue=True),
        number("adversarial_weight", "Adversarial loss weight", number.Double,
               defaultValue=TrainModelSpec.adversarial_weight, minValue=0),
        QgsProcessingParameterString("hyperparameters", "superres hyper-parameters (JSON)", defaultValue="",
                                     optional=True),
    ]
    children = grid_samples_and_patches("image", "target", "target image", image="low_resolution") + [
        Child("deepfield:trainmodel", "trainmodel", "Train model (superres)", {
            "DATASET": ("output", "extractpatches", "OUTPUT"),
            "ARCHITECTURE": ("static", ARCHITECTURES.index("superres")), "EPOCHS": ("input", "epochs"),
            "TIME_BUDGET": ("input", "time_budget"), "GAN": ("input", "gan"),
            "ADVERSARIAL_WEIGHT": ("input", "adversarial_weight"),
            "HYPERPARAMETERS": ("input", "hyperparameters"), "OUTPUT": ("product", "model")}),
        Child("deepfield:applymodel", "applymodel", "Apply model (enhanced image)", {
            "MODEL": ("output", "trainmodel", "MODEL"), "SOURCES": ("input", "low_resolution"),
            "OUTPUT": ("product", "enhanced.tif")}),
        Child("native:extractbyattribute", "testblocks", "Test blocks", {
            "INPUT": ("output", "selectsamples", "BLOCKS"), "FIELD": ("static", "split"),
            "OPERATOR": ("static", 0), "VALUE": ("static", "test"), "OUTPUT": ("product", "test_blocks.gpkg")}),
    ]
    return Workflow("superresolution_workflow.model3", "Super-resolution workflow", inputs, children, HELP,
                    advanced=("hyperparameters", "adversarial_weight", "epochs"))
