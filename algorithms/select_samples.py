"""Select samples: patch positions with their class and train/valid/test split (a point layer)."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ..engine.contract import LABEL_STRATEGIES, POLYGON_MODES, SAMPLING_STRATEGIES, SPLIT_MODES, SPLITS
from .base import EngineAlgorithm, raster_path

STRATEGY_LABELS = ("Points with a class field", "Polygons with a class field", "Label raster",
                   "Regular grid (segmentation)")


class SelectSamples(EngineAlgorithm):
    ALG_ID = "selectsamples"
    DISPLAY_NAME = "Select samples"
    GROUP_ID = "sampling"
    HELP = (
        "Chooses where patches will be cut from an image and writes them as a GeoPackage point layer "
        "(fields class, split, fid) in the image's CRS, plus a class balance table (CSV). Strategies: "
        "points with an integer class field (any CRS); polygons with an integer class field (N random "
        "pixel centres per class, or every STEP-th pixel centre, optionally a minimum distance inside the "
        "polygon border); a label raster (constant N per class, total N, as many as the smallest class, or "
        "all pixels; its nodata is skipped); a regular grid keeping only patches whose pixels are all valid "
        "(no band nodata, inside the optional mask), every STEP pixels. STEP 0 = the patch size (grid strategy and "
        "polygons in grid mode). Positions outside the image, whose patch leaves it, or "
        "on nodata are dropped. Splits are random (stratified per class) or spatially disjoint: square "
        "blocks of BLOCK SIZE map units (0 = automatic: 8 x patch size x pixel size; the log warns when fewer "
        "than 3 blocks hold positions) go wholly to one split and patches crossing a block border are dropped, "
        "so validation patches never overlap training patches; the optional split blocks output holds these "
        "blocks as polygons with their split (e.g. to evaluate a map on the test blocks only). Same seed, "
        "same selection."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Image (patches are cut from it)"))
        self.addParameter(QgsProcessingParameterEnum("STRATEGY", "Strategy", STRATEGY_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "VECTOR", "Points or polygons (points / polygons strategies)",
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", "Class field (integer)", parentLayerParameterName="VECTOR", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "LABEL_RASTER", "Label raster (label raster strategy)", optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "LABEL_STRATEGY", "Label raster: samples per class", LABEL_STRATEGIES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "SAMPLES", "Samples (per class for constant/polygons, in total for total)", defaultValue=100, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            "POLYGON_MODE", "Polygons: random points or grid", POLYGON_MODES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "PATCH_SIZE", "Patch size (image pixels)", defaultValue=32, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "STEP", "Grid step, grid strategy and polygons in grid mode (pixels; 0 = patch size)",
            defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "TRAIN", "Train proportion", QgsProcessingParameterNumber.Double, 0.7, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "VALID", "Validation proportion", QgsProcessingParameterNumber.Double, 0.15, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "TEST", "Test proportion", QgsProcessingParameterNumber.Double, 0.15, minValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            "SPLIT_MODE", "Split", ["random (stratified)", "spatial blocks (disjoint)"], defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "BLOCK_SIZE", "Block size (map units, spatial blocks; 0 = 8 x patch size x pixel size)",
            QgsProcessingParameterNumber.Double, 0.0, minValue=0))
        advanced = [
            QgsProcessingParameterNumber("BORDER_DISTANCE", "Polygons: minimum distance to the border (map units)",
                                         QgsProcessingParameterNumber.Double, 0.0, minValue=0),
            QgsProcessingParameterRasterLayer("MASK", "Grid: mask raster (non-zero = usable)", optional=True),
            QgsProcessingParameterNumber("SEED", "Random seed", defaultValue=0, minValue=0),
        ]
        self.add_advanced(*advanced)
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Sample positions", QgsProcessing.TypeVectorPoint))
        self.addParameter(QgsProcessingParameterFileDestination(
            "REPORT", "Class balance table", "CSV files (*.csv);;JSON files (*.json)", optional=True,
            createByDefault=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "BLOCKS", "Split blocks (spatial blocks split: polygons with a split field)",
            QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Number of positions"))

    def build_job(self, parameters, context, feedback):
        image = self.parameterAsRasterLayer(parameters, "INPUT", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(output).suffix.lower() != ".gpkg":
            raise QgsProcessingException(f"Sample positions are written as a GeoPackage (.gpkg), not {output}")
        strategy = SAMPLING_STRATEGIES[self.parameterAsEnum(parameters, "STRATEGY", context)]
        spec = {
            "job": "select_samples",
            "raster": raster_path(image, "image"),
            "strategy": strategy,
            "patch_size": self.parameterAsInt(parameters, "PATCH_SIZE", context),
            "split": {name: self.parameterAsDouble(parameters, name.upper(), context)
                      for name in SPLITS},
            "split_mode": SPLIT_MODES[self.parameterAsEnum(parameters, "SPLIT_MODE", context)],
            "block_size": self.parameterAsDouble(parameters, "BLOCK_SIZE", context),
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "samples": self.parameterAsInt(parameters, "SAMPLES", context),
            "samples_per_class": self.parameterAsInt(parameters, "SAMPLES", context),
            "label_strategy": LABEL_STRATEGIES[self.parameterAsEnum(parameters, "LABEL_STRATEGY", context)],
            "polygon_mode": POLYGON_MODES[self.parameterAsEnum(parameters, "POLYGON_MODE", context)],
            "border_distance": self.parameterAsDouble(parameters, "BORDER_DISTANCE", context),
            "output": output,
        }
        spec["step"] = self.parameterAsInt(parameters, "STEP", context)  # 0: the engine uses the patch size
        if strategy in ("points", "polygons"):
            if not parameters.get("VECTOR"):
                raise QgsProcessingException(f"The {strategy} strategy needs a vector layer.")
            spec["vector"], spec["layer"] = self.vector_path(parameters, "VECTOR", context, feedback)
            spec["class_field"] = self.parameterAsString(parameters, "CLASS_FIELD", context)
        label = self.parameterAsRasterLayer(parameters, "LABEL_RASTER", context)
        if strategy == "label_raster":
            if label is None:
                raise QgsProcessingException("The label raster strategy needs a label raster.")
            spec["label_raster"] = raster_path(label, "label raster")
        mask = self.parameterAsRasterLayer(parameters, "MASK", context)
        if mask is not None:
            spec["mask"] = raster_path(mask, "mask")
        report = self.parameterAsFileOutput(parameters, "REPORT", context)
        if report:
            spec["report"] = report
        blocks = self.parameterAsOutputLayer(parameters, "BLOCKS", context)
        if blocks:
            if spec["split_mode"] != "blocks" or Path(blocks).suffix.lower() != ".gpkg":
                raise QgsProcessingException(f"Split blocks ({blocks}) are written as a GeoPackage (.gpkg) "
                                             "with the spatial blocks split only")
            spec["blocks"] = blocks
        return spec, [output] + [path for path in (report, blocks) if path]

    def make_results(self, result, parameters, context, feedback):
        return {"OUTPUT": result["output"], "REPORT": result["report"], "COUNT": result["count"],
                "BLOCKS": result.get("blocks")}
