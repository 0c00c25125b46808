"""Vectorise class map: a class map to polygons (class value and name), styled with its colours."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDistance,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from .base import EngineAlgorithm, RasterLayerParameter, parse_integers, renderer_classes
from .styles import CLASS_POLYGONS, style_output


class VectorizeClassMap(EngineAlgorithm):
    ALG_ID = "vectorizeclassmap"
    DISPLAY_NAME = "Vectorise class map"
    GROUP_ID = "evaluation"
    HELP = (
        "Turns a class map (band 1, whole-number class values) into polygons: one polygon per group of "
        "touching pixels of one class (pixels sharing an edge), with the fields class (the value) and "
        "name. Any size of map: it is read tile by tile and the polygons cut by tile borders are merged, "
        "so the result is exactly that of one polygonize over the whole map, with no seams. Nodata pixels "
        "and the classes to skip (e.g. background) get no polygon. Polygons smaller than the minimum area "
        "(squared map units) are dropped; a simplification tolerance (map units) smooths the staircase "
        "outlines (each polygon on its own: neighbours may then overlap or leave slivers). Class names and "
        "colours come from the map's paletted style (what you see), else its .qml, colour table and "
        "category names. The output is a GeoPackage (an existing file of that name is replaced) whose "
        "default style, stored inside it, draws every class in its colour wherever the file is opened."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterLayerParameter("INPUT", "Class map"))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", "Minimum polygon area (squared map units, 0 = keep all)",
            QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterDistance(
            "SIMPLIFY", "Simplification tolerance (0 = none)", defaultValue=0.0, parentParameterName="INPUT",
            minValue=0.0))
        self.addParameter(QgsProcessingParameterString(
            "SKIP_VALUES", "Class values to skip (comma-separated, e.g. background)", defaultValue="", optional=True))
        self.add_advanced(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (pixels; memory only, never the result)", defaultValue=1024, minValue=1))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Class polygons", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("POLYGONS", "Number of polygons"))

    def build_job(self, parameters, context, feedback):
        class_map = self.raster_input(parameters, "INPUT", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(output).suffix.lower() != ".gpkg":
            raise QgsProcessingException(f"Vectorise class map writes GeoPackages: name the output *.gpkg, not {output}")
        spec = {
            "job": "vectorize_class_map",
            "map": class_map.path,
            "output": output,
            "min_area": self.parameterAsDouble(parameters, "MIN_AREA", context),
            "simplify": self.parameterAsDouble(parameters, "SIMPLIFY", context),
            "skip_values": parse_integers(self.parameterAsString(parameters, "SKIP_VALUES", context), "Class values to skip"),
            "classes": renderer_classes(class_map.layer),
            "tile_size": self.parameterAsInt(parameters, "TILE_SIZE", context),
        }
        return spec, [output]

    def make_results(self, result, parameters, context, feedback):
        style_output(context, result["output"], CLASS_POLYGONS)
        return {"OUTPUT": result["output"], "POLYGONS": result["polygons"]}
