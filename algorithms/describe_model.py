"""Describe model: what a model folder holds and what serving it reads, per source."""

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from .base import EngineAlgorithm


class DescribeModel(EngineAlgorithm):
    ALG_ID = "describemodel"
    DISPLAY_NAME = "Describe model"
    GROUP_ID = "serving"
    HELP = (
        "Reads a model folder (model.keras + deepfield.json), checks that the declared receptive "
        "fields (RF), expression field (EF), spacing scale (SF) and crop match the ones derived from "
        "the network, and describes the model: task, inputs (bands, scale, RF, nodata), outputs, "
        "classes, normalisation, and the window each source is read with for a tile of the given "
        "size (output pixels; 0 = automatic: the tile Apply model picks for its memory budget of "
        "about 1 GB)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (output pixels, 0 = automatic)", QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Description", fileFilter="Text files (*.txt)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString("TEXT", "Description"))

    def build_job(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context) or None
        spec = {
            "job": "describe_model",
            "model": self.parameterAsFile(parameters, "MODEL", context),
            "tile_size": self.parameterAsInt(parameters, "TILE_SIZE", context) or None,
            "output": output,
        }
        return spec, [output] if output else []

    def make_results(self, result, parameters, context, feedback):
        feedback.pushInfo(result["text"])
        return {"TEXT": result["text"], "OUTPUT": result.get("output")}
