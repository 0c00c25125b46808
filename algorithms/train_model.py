"""Train model: train a zoo or custom network on a dataset folder and write a model folder."""

import json

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..engine.contract import AUTOMATIC_ARCHITECTURE, CLASS_WEIGHTING
from ..models import WHEN_TO_USE, ZOO
from .base import EngineAlgorithm

#: The zoo, then "automatic" (the default); appended so that the zoo's enum indices stay stable.
ARCHITECTURES = tuple(sorted(ZOO)) + (AUTOMATIC_ARCHITECTURE,)


class TrainModel(EngineAlgorithm):
    ALG_ID = "trainmodel"
    DISPLAY_NAME = "Train model"
    GROUP_ID = "training"
    HELP = (
        "Trains a network on a dataset folder written by 'Extract patches' and writes a model folder "
        "that 'Apply model' serves. The architecture 'automatic' (the default) picks it from the dataset and "
        "says why in the log: segmentation labels -> unet, one class per patch -> patch_classifier, two "
        "sources (the second coarser) with segmentation labels -> fusion, a target image at a finer spacing "
        "-> superres. Or pick an architecture from the model zoo, or give a Python file "
        "defining build(spec) -> keras.Model (it then replaces the architecture). Inputs are normalised "
        "inside the model with the dataset's per-band mean and standard deviation. Each epoch is "
        "validated on the dataset's valid split (loss, overall accuracy, macro F-score; PSNR for "
        "super-resolution); the best epoch is kept. The model folder also holds history.csv, "
        "training_curves.png, confusion_matrix.json/.png and TensorBoard logs (logs/). Checkpoints "
        "go to <output>.checkpoint: after a cancel or a crash, 'Resume' continues from there; a "
        "cancelled run still writes the best model so far. The same seed gives the same run on a CPU."
        "\n\nWhen to use which architecture:\n"
        + "\n".join(f"- {name}: {WHEN_TO_USE[name]}" for name in ARCHITECTURES)
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "DATASET", "Dataset folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterEnum(
            "ARCHITECTURE", "Architecture (model zoo; automatic = chosen from the dataset)", options=list(ARCHITECTURES),
            defaultValue=ARCHITECTURES.index(AUTOMATIC_ARCHITECTURE)))
        self.addParameter(QgsProcessingParameterFile(
            "CUSTOM_MODEL", "Custom model (.py with build(spec)); replaces the architecture",
            extension="py", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, defaultValue=20, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", "Batch size (patches)", QgsProcessingParameterNumber.Integer, defaultValue=16, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "LEARNING_RATE", "Learning rate", QgsProcessingParameterNumber.Double, defaultValue=1e-3,
            minValue=1e-8))
        self.addParameter(QgsProcessingParameterEnum(
            "CLASS_WEIGHTING", "Class weighting", options=list(CLASS_WEIGHTING), defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            "AUGMENT", "Augment (random flips and 90-degree rotations)", defaultValue=True))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", "Random seed", QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0))
        advanced = [
            QgsProcessingParameterNumber(
                "EARLY_STOPPING", "Early stopping patience (epochs, 0 = off)", QgsProcessingParameterNumber.Integer,
                defaultValue=0, minValue=0),
            QgsProcessingParameterBoolean("RESUME", "Resume from the checkpoint", defaultValue=False),
            QgsProcessingParameterBoolean("MIXED_PRECISION", "Mixed precision (GPU)", defaultValue=False),
            QgsProcessingParameterBoolean(
                "GAN", "Adversarial loss (super-resolution datasets)", defaultValue=False),
            QgsProcessingParameterString(
                "HYPERPARAMETERS", "Builder hyper-parameters (JSON object)", defaultValue="", optional=True),
            QgsProcessingParameterNumber(
                "WORKERS", "Workers (local processes; more than 1: multi-worker training, no validation)",
                QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1),
        ]
        self.add_advanced(*advanced)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))
        # older modelers link a folder output to no File parameter (Apply model's MODEL): offer a string too
        self.addOutput(QgsProcessingOutputString("MODEL", "Model folder path (for Apply model in the modeler)"))
        self.addOutput(QgsProcessingOutputNumber("BEST_EPOCH", "Best epoch"))
        self.addOutput(QgsProcessingOutputString("BEST_SCORES", "Validation scores of the best epoch (JSON)"))

    def build_job(self, parameters, context, feedback):
        text = self.parameterAsString(parameters, "HYPERPARAMETERS", context).strip()
        try:
            hyperparameters = json.loads(text) if text else {}
        except ValueError as error:
            raise QgsProcessingException(f"Hyper-parameters are not valid JSON: {error}") from None
        if not isinstance(hyperparameters, dict):
            raise QgsProcessingException('Hyper-parameters must be a JSON object, e.g. {"filters": 32}')
        custom = self.parameterAsFile(parameters, "CUSTOM_MODEL", context) or None
        output = self.parameterAsString(parameters, "OUTPUT", context)
        architecture = ARCHITECTURES[self.parameterAsEnum(parameters, "ARCHITECTURE", context)]
        spec = {
            "job": "train_model",
            "dataset": self.parameterAsFile(parameters, "DATASET", context),
            "architecture": None if custom else architecture,
            "custom_model": custom,
            "epochs": self.parameterAsInt(parameters, "EPOCHS", context),
            "batch_size": self.parameterAsInt(parameters, "BATCH_SIZE", context),
            "learning_rate": self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            "class_weighting": CLASS_WEIGHTING[self.parameterAsEnum(parameters, "CLASS_WEIGHTING", context)],
            "augment": self.parameterAsBoolean(parameters, "AUGMENT", context),
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "early_stopping_patience": self.parameterAsInt(parameters, "EARLY_STOPPING", context),
            "resume": self.parameterAsBoolean(parameters, "RESUME", context),
            "mixed_precision": self.parameterAsBoolean(parameters, "MIXED_PRECISION", context),
            "gan": self.parameterAsBoolean(parameters, "GAN", context),
            "hyperparameters": hyperparameters,
            "output": output,
        }
        workers = self.parameterAsInt(parameters, "WORKERS", context)
        if workers > 1:
            spec["workers"] = workers
        return spec, [output]

    def make_results(self, result, parameters, context, feedback):
        return {"OUTPUT": result["output"], "MODEL": result["output"], "BEST_EPOCH": result["best_epoch"],
                "BEST_SCORES": json.dumps(result["best"])}
