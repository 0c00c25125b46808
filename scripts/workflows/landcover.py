"""Land cover: ``deepfield:segmentationworkflow``, "Land cover workflow" in the toolbox.

Co-register image to labels (the image moved by whole pixels onto its labels, when they sit off
it) -> Select samples (a regular grid over the image, spatial blocks split, the blocks as polygons) ->
Extract patches (segmentation labels from the label raster) -> Train model (U-Net) ->
Apply model (class map) -> Evaluate map (class map vs the label raster, on the test blocks only).
"""

from __future__ import annotations

import json

from . import RASTER_FILES, Child, Workflow, grid_samples_and_patches

#: The training recipe measured on NC Landsat (bench/bench_accuracy.py, bench/results/accuracy.json):
#: the workflow's defaults, ``make demo``'s settings and the benchmark's. Grid patches of ``patch``
#: px every ``step`` px, random ``crop`` px crops, a U-Net with batch norm, AdamW with a cosine
#: schedule over ``time_budget`` minutes (or ``epochs``), no class weighting (on NC, 'sqrt' weights
#: made the network map sediment, 194 pixels of the scene, where there is none: a false class costs a
#: whole class in the macro F-score), a moving average of the weights (``ema_momentum``: what is
#: validated and written), the training step compiled with XLA (``jit_compile``: faster steps on a
#: CPU), early stopping after ``patience`` epochs without a better validation macro F-score (the
#: demo's split peaks within about 100 epochs), and test-time augmentation when the map is made.
RECIPE = {"patch": 96, "step": 16, "crop": 64, "epochs": 400, "batch_size": 16, "learning_rate": 2e-3,
          "time_budget": 14.0, "class_weighting": "none", "ema_momentum": 0.99, "jit_compile": True,
          "patience": 100, "tta": True, "hyperparameters": {"depth": 3, "width": 16}}

HELP = {
    "ALG_DESC": (
        "Trains a U-Net on an image and a label raster and measures it on held-out ground, in one run: "
        "Co-register image to labels (the image moved by whole pixels onto labels that sit a pixel or two off "
        "it, else as it is) -> Select samples (a regular grid of patches over the image, split train/valid/test by spatial "
        "blocks, the blocks written as polygons) -> Extract patches (label raster patches) -> Train model "
        "(U-Net) -> Apply model (class map of the whole image) -> Evaluate map (class map vs the label "
        "raster inside the test blocks only: pixels no training patch saw). The output folder receives "
        "image_on_labels.vrt, samples.gpkg, samples_balance.csv, blocks.gpkg, test_blocks.gpkg, dataset/, model/, "
        "class_map.tif and evaluation/ (metrics.json, report.html). Run the steps one by one for more "
        "options; edit a copy of this model in the Model Designer to change the chain."),
    "image": "The image file patches are cut from and the class map is computed on (read, never changed).",
    "labels": "Integer class values on the image's pixel grid (its nodata: unlabelled pixels).",
    "output_folder": "Receives every product of the chain (existing files of the same names are replaced).",
    "patch_size": "Training patch size (image pixels); a multiple of 8 for the U-Net.",
    "grid_step": "Distance between patch centres (image pixels); smaller than the patch size: overlapping patches.",
    "block_size": "Side of the squares (map units) that go wholly to one split; a few patches wide.",
    "epochs": "Training epochs at most (the best one on the validation split is kept).",
    "time_budget": "Training time (minutes); training stops when it is spent or after the epochs, whichever "
                   "comes first. More time pays until the validation score stops rising: on NC Landsat's 32 px block "
                   "split, 2 cores of an AVX-512 CPU, the map's macro F-score was 0.54-0.55 after 1.5, 3, 4 and 14 "
                   "minutes alike; a slower CPU or a bigger network needs more.",
    "crop_size": "Every step trains on a random crop of this size (pixels) of each patch: smaller than the "
                 "patch size, a multiple of 8; 0 = whole patches.",
    "hyperparameters": 'U-Net hyper-parameters as JSON, e.g. {"depth": 2, "width": 8}.',
    "max_shift": "Co-register image to labels tries every shift of the labels up to this many pixels on each axis; "
                 "when one lines their class boundaries up clearly better with the image's edges, every step uses "
                 "the image moved onto the labels by whole pixels (image_on_labels.vrt, no resampling). 0: the "
                 "image as it is.",
}
HELP["ALG_DESC"] += (
    f" Its defaults are the recipe measured on the NC Landsat scene (bench/results/accuracy.json): patches "
    f"of {RECIPE['patch']} px every {RECIPE['step']} px, random {RECIPE['crop']} px crops, a U-Net of depth "
    f"{RECIPE['hyperparameters']['depth']} and width {RECIPE['hyperparameters']['width']}, learning rate "
    f"{RECIPE['learning_rate']:g}, class weighting '{RECIPE['class_weighting']}', {RECIPE['time_budget']:g} minutes of training, "
    f"the weights averaged with momentum {RECIPE['ema_momentum']:g}, training compiled with XLA, early stopping "
    f"after {RECIPE['patience']} epochs without improvement, test-time augmentation in the map.")


def definition() -> Workflow:
    from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterNumber, QgsProcessingParameterString

    from deepfield.algorithms.train_model import ARCHITECTURES
    from deepfield.engine.contract import CLASS_WEIGHTING

    number = QgsProcessingParameterNumber
    inputs = [
        QgsProcessingParameterFile("image", "Image (raster file)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("labels", "Label raster file (integer classes)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("output_folder", "Output folder", behavior=QgsProcessingParameterFile.Folder),
        number("patch_size", "Patch size (pixels)", number.Integer, defaultValue=RECIPE["patch"], minValue=8),
        number("grid_step", "Grid step (pixels)", number.Integer, defaultValue=RECIPE["step"], minValue=1),
        number("block_size", "Block size of the spatial split (map units)", number.Double, defaultValue=3000,
               minValue=0),
        number("time_budget", "Training time budget (minutes)", number.Double, defaultValue=RECIPE["time_budget"],
               minValue=0),
        number("epochs", "Epochs (at most)", number.Integer, defaultValue=RECIPE["epochs"], minValue=1),
        number("crop_size", "Random crop size (pixels, 0 = whole patches)", number.Integer,
               defaultValue=RECIPE["crop"], minValue=0),
        QgsProcessingParameterString("hyperparameters", "U-Net hyper-parameters (JSON)",
                                     defaultValue=json.dumps(RECIPE["hyperparameters"]), optional=True),
        number("max_shift", "Co-registration: largest shift of the labels tried (pixels, 0 = image unmoved)",
               number.Integer, defaultValue=2, minValue=0, maxValue=16),
    ]
    moved = ("output", "coregister", "OUTPUT")
    children = [Child("deepfield:coregisterimage", "coregister", "Co-register image to labels", {
        "INPUT": ("input", "image"), "LABELS": ("input", "labels"), "MAX_SHIFT": ("input", "max_shift"),
        "OUTPUT": ("product", "image_on_labels.vrt")})]
    children += grid_samples_and_patches("segmentation", "labels", "segmentation labels", image=moved) + [
        Child("deepfield:trainmodel", "trainmodel", "Train model (U-Net)", {
            "DATASET": ("output", "extractpatches", "OUTPUT"),
            "ARCHITECTURE": ("static", ARCHITECTURES.index("unet")), "EPOCHS": ("input", "epochs"),
            "TIME_BUDGET": ("input", "time_budget"), "CROP_SIZE": ("input", "crop_size"),
            "BATCH_SIZE": ("static", RECIPE["batch_size"]), "LEARNING_RATE": ("static", RECIPE["learning_rate"]),
            "CLASS_WEIGHTING": ("static", CLASS_WEIGHTING.index(RECIPE["class_weighting"])),
            "EMA_MOMENTUM": ("static", RECIPE["ema_momentum"]), "JIT_COMPILE": ("static", RECIPE["jit_compile"]),
            "EARLY_STOPPING": ("static", RECIPE["patience"]),
            "HYPERPARAMETERS": ("input", "hyperparameters"), "OUTPUT": ("product", "model")}),
        Child("deepfield:applymodel", "applymodel", "Apply model (class map)", {
            "MODEL": ("output", "trainmodel", "MODEL"), "SOURCES": moved, "TTA": ("static", RECIPE["tta"]),
            "OUTPUT": ("product", "class_map.tif")}),
        Child("native:extractbyattribute", "testblocks", "Test blocks", {
            "INPUT": ("output", "selectsamples", "BLOCKS"), "FIELD": ("static", "split"),
            "OPERATOR": ("static", 0), "VALUE": ("static", "test"), "OUTPUT": ("product", "test_blocks.gpkg")}),
        Child("deepfield:evaluatemap", "evaluatemap", "Evaluate map (test blocks)", {
            "INPUT": ("output", "applymodel", "OUTPUT"), "REFERENCE_RASTER": ("input", "labels"),
            "MASK": ("output", "testblocks", "OUTPUT"), "OUTPUT_FOLDER": ("product", "evaluation")}),
    ]
    return Workflow("segmentation_workflow.model3", "Land cover workflow", inputs, children, HELP,
                    advanced=("crop_size", "hyperparameters", "max_shift"))
