"""Co-register image: an image moved by whole pixels onto its label raster."""

from qgis.core import (
    QgsProcessingOutputBoolean,
    QgsProcessingOutputNumber,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from .base import EngineAlgorithm, RasterLayerParameter
from .styles import IMAGE, style_output


class CoregisterImage(EngineAlgorithm):
    ALG_ID = "coregisterimage"
    DISPLAY_NAME = "Co-register image to labels"
    GROUP_ID = "sampling"
    HELP = (
        "Lines an image up with its label raster when they sit a whole pixel or two apart (labels made from "
        "another date's imagery or digitised on another base map; Extract patches warns of it). It tries "
        "every shift of the labels up to the largest shift (pixels, each axis) and correlates their class "
        "boundaries with the image's edges (over at most 64 tiles of 256 px spread over the image); when one "
        "shift beats the labels as they are by 10 %, the output is the image moved the other way by that many"
        " pixels, on the image's own grid (same size and georeferencing), so every pixel lies under the label"
        " it shows. Otherwise, or with a largest shift of 0, the output is the image unmoved. Whole pixels "
        "only: no value is resampled; the one or two rows and columns the moved image no longer covers are "
        "nodata (0 for a band that declares no nodata). Use the output in every later step (Extract patches, "
        "Apply model): the class map then lines up with the labels, and Evaluate map scores it against them. "
        "A .vrt output reads the image (no copy, keep the image where it is); any other name is a GeoTIFF "
        "copy. The Land cover workflow runs it first. On the NC Landsat scene the labels line up best 1 px "
        "down and 1 px right; trained on the moved image, the map's macro F-score on the 32 px block split was "
        "0.583 against 0.544 on the image as it is (one run each, 14 minutes; bench/results/accuracy.json).")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterLayerParameter("INPUT", "Image"))
        self.addParameter(RasterLayerParameter("LABELS", "Label raster (integer classes, nodata = unlabelled)"))
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_SHIFT", "Largest shift tried (pixels, each axis; 0 = the image unmoved)",
            QgsProcessingParameterNumber.Integer, defaultValue=2, minValue=0, maxValue=16))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Co-registered image"))
        self.addOutput(QgsProcessingOutputNumber("ROWS", "Labels' best shift: rows down (image pixels)"))
        self.addOutput(QgsProcessingOutputNumber("COLS", "Labels' best shift: columns right (image pixels)"))
        self.addOutput(QgsProcessingOutputBoolean("MOVED", "The image was moved"))

    def build_job(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        spec = {
            "job": "coregister_image",
            "image": self.raster_input(parameters, "INPUT", context).path,
            "labels": self.raster_input(parameters, "LABELS", context).path,
            "output": output,
            "max_shift": self.parameterAsInt(parameters, "MAX_SHIFT", context),
        }
        return spec, [output]

    def make_results(self, result, parameters, context, feedback):
        style_output(context, result["output"], IMAGE, source=self.raster_input(parameters, "INPUT", context).layer)
        return {"OUTPUT": result["output"], "ROWS": result["rows"], "COLS": result["cols"], "MOVED": result["moved"]}
