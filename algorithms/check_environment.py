"""Check environment: what the engine interpreter runs with."""

from qgis.core import QgsProcessingOutputString

from .base import EngineAlgorithm

VERSION_KEYS = ("engine_interpreter", "python", "tensorflow", "keras", "gdal", "proj", "pyproj", "numpy")


class CheckEnvironment(EngineAlgorithm):
    ALG_ID = "checkenvironment"
    DISPLAY_NAME = "Check environment"
    GROUP_ID = "tools"
    HELP = (
        "Starts the DeepField engine (the Python interpreter set in Processing > Options > "
        "Providers > DeepField) and reports the versions of TensorFlow, GDAL, PROJ and numpy it "
        "uses, and the GPUs TensorFlow sees. Run it first when something does not work: its "
        "message says what is missing."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        for key in VERSION_KEYS + ("gpus",):
            self.addOutput(QgsProcessingOutputString(key.upper(), key.replace("_", " ")))

    def build_job(self, parameters, context, feedback):
        return {"job": "check_environment"}, []

    def make_results(self, result, parameters, context, feedback):
        outputs = {key.upper(): str(result.get(key, "")) for key in VERSION_KEYS}
        outputs["GPUS"] = ", ".join(result.get("gpus", [])) or "none (CPU only)"
        return outputs
