"""Evaluate map: compare a class map with reference labels (raster, points or polygons)."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)

from ..engine.contract import REPORT_FILES
from .base import EngineAlgorithm, RasterLayerParameter, parse_integers, renderer_classes


class EvaluateMap(EngineAlgorithm):
    ALG_ID = "evaluatemap"
    DISPLAY_NAME = "Evaluate map"
    GROUP_ID = "evaluation"
    HELP = (
        "Measures how well a class map agrees with reference labels: overall accuracy, Cohen's kappa, "
        "per-class precision, recall and F-score, macro and weighted F-score, and the confusion matrix "
        "(rows: reference, columns: map). The reference is either a raster (any grid or CRS: it is "
        "resampled, nearest neighbour, onto the map's pixels) or a vector layer with a class field of integers "
        "or text: polygons are rasterised on the map's pixels (pixel centres inside), every point counts "
        "as one sample (the map pixel holding it). A text field (e.g. OSM's fclass = building) is matched by "
        "name to the map's class names, those the model learnt (the map's .qml or GDAL category names; else "
        "its paletted style's labels); features whose text is not a class name, and those with no class, are "
        "skipped and counted (log, metrics.json). Pixels outside every reference polygon are not counted, or, "
        "with a background class (a class value or name, as Extract patches' class of the pixels outside every "
        "polygon: e.g. building footprints with background = background), are that class; pixels of skipped "
        "polygons are never counted. Nodata of both is ignored; an optional polygon mask "
        "limits the evaluation (the background too); listed values are ignored in both. Class names come from "
        "the map's paletted style, its .qml, or its GDAL category names. The output folder receives "
        "metrics.json, per_class.csv, confusion_matrix.csv/.png and report.html (shown as the result)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterLayerParameter("INPUT", "Class map"))
        self.addParameter(RasterLayerParameter(
            "REFERENCE_RASTER", "Reference raster (or give a reference vector layer)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REFERENCE_VECTOR", "Reference points or polygons (or give a reference raster)",
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", "Class field of the reference vector layer (integers, or text matched to the class "
            "map's class names)", parentLayerParameterName="REFERENCE_VECTOR", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "BACKGROUND", "Reference polygons: class of the pixels outside every polygon (a class value or name, "
            "e.g. background; empty: those pixels are not counted)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "MASK", "Mask (evaluate inside these polygons only)", [QgsProcessing.TypeVectorPolygon], optional=True))
        ignore = QgsProcessingParameterString(
            "IGNORE_VALUES", "Class values to ignore (comma-separated)", defaultValue="", optional=True)
        self.add_advanced(ignore)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Report folder"))
        self.addOutput(QgsProcessingOutputHtml("REPORT", "Evaluation report"))
        self.addOutput(QgsProcessingOutputNumber("OA", "Overall accuracy (0-1)"))
        self.addOutput(QgsProcessingOutputNumber("KAPPA", "Cohen's kappa"))
        self.addOutput(QgsProcessingOutputNumber("MACRO_F1", "Macro F-score (0-1)"))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        has_raster = bool(parameters.get("REFERENCE_RASTER"))
        has_vector = bool(parameters.get("REFERENCE_VECTOR"))
        if has_raster == has_vector:
            return False, "Give exactly one reference: a reference raster or a reference vector layer."
        if has_vector and not parameters.get("CLASS_FIELD"):
            return False, "Choose the class field of the reference vector layer."
        if has_raster and self.parameterAsString(parameters, "BACKGROUND", context).strip():
            return False, ("The class of the pixels outside every polygon (BACKGROUND) is for reference polygons; "
                           "a reference raster's unlabelled pixels are its nodata: leave it empty.")
        return super().checkParameterValues(parameters, context)

    def build_job(self, parameters, context, feedback):
        class_map = self.raster_input(parameters, "INPUT", context)
        folder = self.parameterAsString(parameters, "OUTPUT_FOLDER", context)
        spec = {
            "job": "evaluate_map",
            "map": class_map.path,
            "output_folder": folder,
            "classes": renderer_classes(class_map.layer),
            "ignore_values": parse_integers(self.parameterAsString(parameters, "IGNORE_VALUES", context), "Values to ignore"),
        }
        reference_raster = self.raster_input(parameters, "REFERENCE_RASTER", context)
        if reference_raster is not None:
            spec["reference"] = reference_raster.path
        else:
            spec["reference"], spec["reference_layer"] = self.vector_path(
                parameters, "REFERENCE_VECTOR", context, feedback)
            spec["class_field"] = self.parameterAsString(parameters, "CLASS_FIELD", context)
            spec["background"] = self.parameterAsString(parameters, "BACKGROUND", context).strip() or None
        if parameters.get("MASK"):
            spec["mask"], spec["mask_layer"] = self.vector_path(parameters, "MASK", context, feedback)
        return spec, [str(Path(folder) / name) for name in REPORT_FILES.values()]

    def make_results(self, result, parameters, context, feedback):
        metrics, files = result["metrics"], result["files"]
        return {
            "OUTPUT_FOLDER": str(Path(files["report_html"]).parent),
            "REPORT": files["report_html"],
            "OA": metrics["overall_accuracy"],
            "KAPPA": metrics["kappa"],
            "MACRO_F1": metrics["macro_f1"],
        }


