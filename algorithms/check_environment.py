"""Check environment: what the engine interpreter runs with."""

from qgis.core import QgsProcessingOutputString

from .base import EngineAlgorithm

VERSION_KEYS = ("engine_interpreter", "python", "tensorflow", "keras", "gdal", "proj", "pyproj", "numpy")


def add_environment_outputs(algorithm) -> None:
    """The outputs of the ``check_environment`` report (also those of Set up engine)."""
    for key in VERSION_KEYS + ("gpus",):
        algorithm.addOutput(QgsProcessingOutputString(key.upper(), key.replace("_", " ")))


def environment_outputs(result: dict) -> dict:
    """The algorithm outputs of a ``check_environment`` result."""
    outputs = {key.upper(): str(result.get(key, "")) for key in VERSION_KEYS}
    outputs["GPUS"] = ", ".join(result.get("gpus", [])) or "none (CPU only)"
    return outputs


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
        add_environment_outputs(self)

    def build_job(self, parameters, context, feedback):
        return {"job": "check_environment"}, []

    def make_results(self, result, parameters, context, feedback):
        return environment_outputs(result)
