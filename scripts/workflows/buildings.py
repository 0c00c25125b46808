"""Buildings: ``deepfield:buildingworkflow``, "Building map workflow" in the toolbox.

Select samples (a regular grid over the panchromatic image, spatial blocks split) -> Extract
patches (the panchromatic and the coarser multispectral source, co-registered; segmentation
labels from the building polygons, background outside them) -> Train model (U-Net fed by both
sources) -> Apply model (class map of the whole scene) -> Vectorise class map (footprints: the
background skipped, small regions dropped).
"""

from __future__ import annotations

from . import RASTER_FILES, VECTOR_FILES, Child, Workflow, grid_samples_and_patches

#: The class value of the pixels outside every polygon (Extract patches' background class: 0
#: when the polygons' classes are text, which get 1..K).
BACKGROUND_VALUE = 0

HELP = {
    "ALG_DESC": (
        "Maps building footprints from a panchromatic image and a coarser multispectral image of the same "
        "ground (e.g. pan 0.5 m + MS 2 m, any whole scale), trained from building polygons, in one run: "
        "Select samples (a regular grid of patches over the pan image, split train/valid/test by spatial "
        "blocks) -> Extract patches (pan and MS patches on the same ground, labels rasterised from the "
        "polygons on the pan grid: the polygons' classes inside, the background class outside) -> Train model "
        "(a U-Net fed by both sources: the MS up-sampled to the pan spacing) -> Apply model (class map of the "
        "whole scene at the pan spacing) -> Vectorise class map (one polygon per building region, the "
        "background class (value 0) skipped, regions smaller than the minimum area dropped). The output folder "
        "receives samples.gpkg, blocks.gpkg, dataset/, model/, building_map.tif and footprints.gpkg. For a "
        "single image, run the steps one by one with one source."),
    "pan": "The panchromatic (fine) image: the reference grid of the patches and of the map (read, never changed).",
    "ms": "The multispectral (coarser) image of the same ground, its spacing a whole multiple of the pan's.",
    "buildings": "Building polygons (any CRS) with a class field; the pixels outside every polygon are background.",
    "class_field": "The polygons' class field (text, e.g. building, or integers other than 0).",
    "background": "The name of the class of the pixels outside every polygon (value 0).",
    "output_folder": "Receives every product of the chain (existing files of the same names are replaced).",
    "patch_size": "Training patch size (pan pixels, a multiple of 8); the MS patch covers the same ground.",
    "grid_step": "Distance between patch centres (pan pixels; 0 = the patch size).",
    "block_size": "Side of the squares (map units) that go wholly to one split (0 = 8 patches).",
    "time_budget": "Training time (minutes); training also stops after the epochs.",
    "epochs": "Training epochs at most (the best one on the validation split is kept).",
    "min_area": "Footprints smaller than this (squared map units) are dropped.",
    "hyperparameters": 'U-Net hyper-parameters as JSON, e.g. {"depth": 2, "width": 8}.',
}


def definition() -> Workflow:
    from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterNumber, QgsProcessingParameterString

    from deepfield.algorithms.train_model import ARCHITECTURES

    number, text = QgsProcessingParameterNumber, QgsProcessingParameterString
    inputs = [
        QgsProcessingParameterFile("pan", "Panchromatic image (raster file)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("ms", "Multispectral image, coarser (raster file)", fileFilter=RASTER_FILES),
        QgsProcessingParameterFile("buildings", "Building polygons (vector file)", fileFilter=VECTOR_FILES),
        text("class_field", "Class field of the polygons", defaultValue="class"),
        text("background", "Class outside the polygons", defaultValue="background"),
        QgsProcessingParameterFile("output_folder", "Output folder", behavior=QgsProcessingParameterFile.Folder),
        number("patch_size", "Patch size (pan pixels)", number.Integer, defaultValue=32, minValue=8),
        number("grid_step", "Grid step (pan pixels, 0 = patch size)", number.Integer, defaultValue=0, minValue=0),
        number("block_size", "Block size of the spatial split (map units, 0 = automatic)", number.Double,
               defaultValue=0, minValue=0),
        number("time_budget", "Training time budget (minutes)", number.Double, defaultValue=10, minValue=0),
        number("epochs", "Epochs (at most)", number.Integer, defaultValue=100, minValue=1),
        number("min_area", "Minimum footprint area (squared map units)", number.Double, defaultValue=10, minValue=0),
        text("hyperparameters", "U-Net hyper-parameters (JSON)", defaultValue="", optional=True),
    ]
    sources = [("input", "pan"), ("input", "ms")]
    children = grid_samples_and_patches("segmentation", None, "pan + MS, building polygons", image="pan", extract={
        "SOURCES": sources, "NAMES": ("static", "pan,ms"), "LABEL_POLYGONS": ("input", "buildings"),
        "LABEL_POLYGON_FIELD": ("input", "class_field"), "LABEL_BACKGROUND": ("input", "background")}) + [
        Child("deepfield:trainmodel", "trainmodel", "Train model (U-Net, two sources)", {
            "DATASET": ("output", "extractpatches", "OUTPUT"),
            "ARCHITECTURE": ("static", ARCHITECTURES.index("unet")), "TIME_BUDGET": ("input", "time_budget"),
            "EPOCHS": ("input", "epochs"), "HYPERPARAMETERS": ("input", "hyperparameters"),
            "OUTPUT": ("product", "model")}),
        Child("deepfield:applymodel", "applymodel", "Apply model (building map)", {
            "MODEL": ("output", "trainmodel", "MODEL"), "SOURCES": sources,
            "OUTPUT": ("product", "building_map.tif")}),
        Child("deepfield:vectorizeclassmap", "vectorizeclassmap", "Vectorise class map (footprints)", {
            "INPUT": ("output", "applymodel", "OUTPUT"), "MIN_AREA": ("input", "min_area"),
            "SKIP_VALUES": ("static", str(BACKGROUND_VALUE)), "OUTPUT": ("product", "footprints.gpkg")}),
    ]
    return Workflow("building_workflow.model3", "Building map workflow", inputs, children, HELP,
                    advanced=("grid_step", "block_size", "hyperparameters"))
