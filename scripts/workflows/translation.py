"""Image translation: ``deepfield:translationworkflow``, "Translation workflow" in the toolbox.

Select samples (a regular grid over the image, spatial blocks split, the blocks as polygons) ->
Extract patches (target image patches from the rendered map) -> Train model (``translation``:
pix2pix's U-Net, with its conditional PatchGAN critic when "adversarial" is on) -> Apply model
(the rendered image of the whole input).
"""

from __future__ import annotations

from . import RASTER_FILES, Child, Workflow, grid_samples_and_patches

HELP = {
    "ALG_DESC": (
        "Learns to render an image like a target image of the same ground (pix2pix: a U-Net generator "
        "with L1 and adversarial losses against a conditional PatchGAN critic), in one run: Select "
        "samples (a regular grid of patches over the image, split train/valid/test by spatial blocks, "
        "the blocks written as polygons) -> Extract patches (target image patches) -> Train model "
        "(translation) -> Apply model (the translated image of the whole input). The target is any "
        "image on the same grid: typically a styled vector layer rendered with 'Convert map to raster' "
        "(native:rasterize) at the image's pixel size and extent. The output folder receives "
        "samples.gpkg, samples_balance.csv, blocks.gpkg, dataset/, model/ (history.csv: validation "
        "PSNR per epoch) and translated.tif. Edit a copy of this model in the Model Designer to change "
        "the chain."),
    "image": "The image file patches are cut from and that is translated (read, never changed).",
    "target": "The image to learn to produce, on the image's pixel grid (e.g. an RGB rendering of a map).",
    "output_folder": "Receives every product of the chain (existing files of the same names are replaced).",
    "patch_size": "Training patch size (image pixels); a multiple of 16 with the default depth 4.",
    "grid_step": "Distance between patch centres (image pixels); smaller than the patch size: overlapping patches.",
    "block_size": ("Side of the squares (map units) that go wholly to one split; a few patches wide (0: the "
                   "largest side that puts ground in every split)."),
    "epochs": "Training epochs at most (the best one on the validation split, by PSNR, is kept).",
    "time_budget": "Training stops when these minutes are spent (0: after the epochs).",
    "adversarial": "Add the conditional GAN loss to the L1 loss (off: an L1-only generator).",
    "adversarial_weight": ("Weight of the adversarial loss against the L1 loss on the normalised target "
                           "(1e-2: pix2pix's L1 weight of 100 to the adversarial 1)."),
    "hyperparameters": 'Generator and critic hyper-parameters as JSON, e.g. {"depth": 3, "width": 16}.',
}


def definition() -> Workflow:
    from qgis.core import (
        QgsProcessingParameterBoolean,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
        QgsProcessingParameterString,
    )

    from deepfield.algorithms.train_model import ARCHITECTURES

    number = QgsProcessingParameterNumber
    inputs = [
        QgsProcessingParameterFile("image", "Image (raster file)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("target", "Target image file (e.g. a rendered map)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("output_folder", "Output folder", behavior=QgsProcessingParameterFile.Folder),
        number("patch_size", "Patch size (pixels)", number.Integer, defaultValue=64, minValue=16),
        number("grid_step", "Grid step (pixels)", number.Integer, defaultValue=32, minValue=1),
        number("block_size", "Block size of the spatial split (map units, 0 = automatic)", number.Double,
               defaultValue=0, minValue=0),
        number("epochs", "Epochs (at most)", number.Integer, defaultValue=100, minValue=1),
        number("time_budget", "Time budget (minutes, 0 = no limit)", number.Double, defaultValue=10, minValue=0),
        QgsProcessingParameterBoolean("adversarial", "Adversarial loss (conditional GAN)", defaultValue=True),
        number("adversarial_weight", "Adversarial loss weight", number.Double, defaultValue=1e-2, minValue=0),
        QgsProcessingParameterString("hyperparameters", "Hyper-parameters (JSON)", defaultValue="", optional=True),
    ]
    children = grid_samples_and_patches("image", "target", "target image") + [
        Child("deepfield:trainmodel", "trainmodel", "Train model (translation)", {
            "DATASET": ("output", "extractpatches", "OUTPUT"),
            "ARCHITECTURE": ("static", ARCHITECTURES.index("translation")), "EPOCHS": ("input", "epochs"),
            "TIME_BUDGET": ("input", "time_budget"), "GAN": ("input", "adversarial"),
            "ADVERSARIAL_WEIGHT": ("input", "adversarial_weight"),
            "HYPERPARAMETERS": ("input", "hyperparameters"), "OUTPUT": ("product", "model")}),
        Child("deepfield:applymodel", "applymodel", "Apply model (translated image)", {
            "MODEL": ("output", "trainmodel", "MODEL"), "SOURCES": ("input", "image"),
            "OUTPUT": ("product", "translated.tif")}),
    ]
    return Workflow("translation_workflow.model3", "Translation workflow", inputs, children, HELP,
                    advanced=("adversarial_weight", "hyperparameters"))
