"""The DeepField Processing provider: its algorithms and its settings."""

from pathlib import Path

from qgis.core import Qgis, QgsMessageLog, QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .apply_model import ApplyModel
from .base import ENGINE_PYTHON_SETTING, ICONS
from .check_environment import CheckEnvironment
from .coregister_image import CoregisterImage
from .describe_model import DescribeModel
from .evaluate_map import EvaluateMap
from .extract_patches import ExtractPatches
from .import_model import ImportModel
from .runner import default_python
from .select_samples import SelectSamples
from .setup_engine import SetupEngine
from .train_model import TrainModel
from .vectorize_class_map import VectorizeClassMap

ALGORITHMS = (CheckEnvironment, SetupEngine, ApplyModel, DescribeModel, SelectSamples, CoregisterImage, ExtractPatches,
              EvaluateMap, TrainModel, ImportModel, VectorizeClassMap)
#: Processing models shipped with the plugin (built by scripts/build_model3.py).
MODELS = Path(__file__).parent.parent / "processing_models"


class ShippedModel(QgsProcessingModelAlgorithm):
    """A model of :data:`MODELS`: id ``deepfield:<file name without "_">``, the model's name as display name.

    (A QGIS 3.22 model's name is both its id and its display name.)
    """

    def __init__(self, algorithm_name: str = ""):
        super().__init__()
        self.algorithm_name = algorithm_name

    def name(self):
        return self.algorithm_name

    def displayName(self):  # noqa: N802
        return super().name()

    def createInstance(self):  # noqa: N802
        model = ShippedModel(self.algorithm_name)
        model.loadVariant(self.toVariant())
        model.setSourceFilePath(self.sourceFilePath())
        return model



class DeepFieldProvider(QgsProcessingProvider):
    def id(self):
        return "deepfield"

    def name(self):
        return "DeepField"

    def longName(self):  # noqa: N802
        return "DeepField: deep learning for remote-sensing rasters"

    def icon(self):
        return QIcon(str(ICONS / "deepfield.svg"))

    def load(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # no Processing Python plugin: run with the default interpreter
            return super().load()
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(self.name(), ENGINE_PYTHON_SETTING, "Engine Python interpreter (has TensorFlow, GDAL)",
                    default_python(), valuetype=Setting.FILE)
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(ENGINE_PYTHON_SETTING)
        except ImportError:
            pass

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
        for path in sorted(MODELS.glob("*.model3")):
            model = ShippedModel(path.stem.replace("_", ""))
            if model.fromFile(str(path)):
                self.addAlgorithm(model)
            else:
                QgsMessageLog.logMessage(f"cannot read the model {path}", "DeepField", Qgis.Warning)
