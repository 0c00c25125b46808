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

from ..engine.contract import AUTOMATIC_ARCHITECTURE, CLASS_WEIGHTING, LR_SCHEDULES, TrainModelSpec
from ..models import WHEN_TO_USE, ZOO
from .base import EngineAlgorithm

#: The enum's options; saved models (.model3) store the index, so it never changes: the first zoo
#: (sorted), then "automatic" (the default), then later zoo entries in the order ZOO lists them.
FIRST_ZOO = ("fusion", "patch_classifier", "superres", "unet")
ARCHITECTURES = FIRST_ZOO + (AUTOMATIC_ARCHITECTURE,) + tuple(name for name in ZOO if name not in FIRST_ZOO)


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
        "image targets); the best epoch is kept. The model folder also holds history.csv, "
        "training_curves.png, confusion_matrix.json/.png and TensorBoard logs (logs/). Checkpoints "
        "go to <output>.checkpoint: after a cancel or a crash, 'Resume' continues from there; a "
        "cancelled run still writes the best model so far. The same seed gives the same run on a CPU.\n\n"
        "Which knob matters when:\n"
        "- Time budget (minutes) is the main one: training stops when it is spent (or after Epochs, whichever "
        "comes first) and the learning rate decays over that span (cosine), so a longer budget gives a "
        "better model until the validation macro F-score stops rising (see training_curves.png). On 2 CPU "
        "cores, 10-15 minutes is enough for a Landsat scene, often much less: on NC Landsat (32 px test blocks, "
        "an AVX-512 CPU) the land-cover workflow's U-Net mapped the test blocks as well after 1.5 minutes as "
        "after 14 (macro F-score 0.54-0.55 at 1.5, 3, 4 and 14 minutes); a GPU needs far less.\n"
        "- Crop size (pixels, a multiple of the network's expression field; segmentation): every step trains on "
        "a random crop of each patch, a new one each time: extract patches larger than the crop to see more "
        "varied context from the same labels. On NC Landsat (32 px test blocks, 44 epochs each), 96 px patches "
        "with 64 px crops gave better forest, developed and water F-scores than 64 px patches with 48 px "
        "crops (overall accuracy 0.78 against 0.77 without class weights, about the same with 'sqrt') at 1.6 "
        "times the time per epoch; 0 (whole patches) sees one fixed window per patch.\n"
        "- Class weighting: 'sqrt' (default) lifts rare classes; 'none' favours the common classes and overall "
        "accuracy; 'balanced' favours recall of rare classes most. Measured on NC Landsat with the same epochs: "
        "'none' gave 2 to 5 points more overall accuracy than 'sqrt' and about the same macro F-score, while "
        "'sqrt' made the network map a class of a few hundred pixels (sediment) where the test area has none. "
        "Use 'sqrt' when a rare class matters to you and has enough labelled pixels (thousands), else 'none'.\n"
        "- Focal loss exponent (classes; 0 = cross-entropy): 2 trains on the focal loss, which lowers the weight "
        "of pixels the network already classifies well so that hard and rare ones count more. On NC Landsat with "
        "the land-cover workflow's recipe (class weighting 'none'), 2 seeds: on the demo's split, macro F-score "
        "0.57 and 0.57 against 0.50 and 0.57 with the cross-entropy, overall accuracy 0.70 and 0.69 against 0.69 "
        "and 0.67; on the 32 px block split, 0.55 after 4 minutes (one seed) as with the cross-entropy, and "
        "after 14 minutes 0.57 and 0.55 over the test area's classes (cross-entropy: 0.54), but it mapped sediment "
        "on 15-18 test pixels where there is none (0.49 and 0.47 counting that class). Try 2 when small classes "
        "drown in large ones and a stray class on a few pixels matters less to you than their recall.\n"
        "- Learning rate (AdamW, with weight decay): lower it ten times if the validation loss is NaN or "
        "jumps; the default suits batch-normalised zoo networks.\n"
        "- Augment (flips/90-degree rotations) is right for overhead images; turn it off only when "
        "orientation carries meaning (shadows, sun-synchronous illumination).\n"
        "- Random band gains (advanced; classes): every training sample's bands are multiplied by random gains "
        "between 1 - g and 1 + g, one per band, so that the network leans less on exact radiometry (another "
        "date, haze, another sensor's calibration). On NC Landsat's 32 px block split (one seed, 14 minutes, "
        "the land-cover workflow's recipe), 0.1 gave a macro F-score of 0.550 against 0.542 over the test "
        "area's classes without class weights, and 0.573 against 0.557 with 'sqrt': improvements within the "
        "run-to-run differences of one scene, so it is off by default. Try 0.1 for a model meant to map other "
        "dates or scenes than the one it learnt from. Every source band is scaled, so leave it at 0 when a "
        "source holds elevations, indices or other values that are not radiances or reflectances.\n"
        "- Weight averaging momentum (advanced): validates and writes a moving average of the weights over "
        "about the last 1 / (1 - momentum) steps instead of the last step's. On NC Landsat (one seed, 2 CPU "
        "cores, 14 minutes) 0.99 lifted the 32 px block split's macro F-score from 0.47 to 0.55 (the average "
        "no longer mapped a few pixels of an absent class) at the same overall accuracy (0.78-0.79). Leave it "
        "at 0 for runs of a few hundred steps: their average still holds the first steps.\n"
        "- Compile training with XLA (advanced): on NC Landsat's U-Net on 2 CPU cores, a step of 16 crops of "
        "64 px took 0.34 s instead of 0.52 s, after about 30 s of compiling in the first epoch, so 14 minutes "
        "trained 79 epochs instead of 57 (macro F-score 0.56 against 0.55 on the 32 px block split): worth it "
        "for runs of more than a few minutes. A seeded run still repeats exactly. Adversarial and multi-worker runs are "
        "not compiled.\n"
        "- Validity channel: gives the network a band saying where the inputs are nodata, for sources with "
        "large nodata areas; nodata is filled after normalisation in any case, the same way as in Apply model.\n"
        "The loss and the validation scores count labelled pixels only; the best epoch (highest validation "
        "macro F-score) is the one written.\n\n"
        "When to use which architecture (automatic, the default, picks one from the dataset and logs why):\n"
        + "\n".join(f"- {name}: {WHEN_TO_USE[name]}" for name in sorted(ZOO))
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
            "TIME_BUDGET", "Time budget (minutes, 0 = no limit)", QgsProcessingParameterNumber.Double,
            defaultValue=10.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", "Epochs (at most)", QgsProcessingParameterNumber.Integer, defaultValue=100, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", "Batch size (patches)", QgsProcessingParameterNumber.Integer, defaultValue=16, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "LEARNING_RATE", "Learning rate", QgsProcessingParameterNumber.Double, defaultValue=1e-3,
            minValue=1e-8))
        self.addParameter(QgsProcessingParameterEnum(
            "CLASS_WEIGHTING", "Class weighting", options=list(CLASS_WEIGHTING),
            defaultValue=CLASS_WEIGHTING.index("sqrt")))
        self.addParameter(QgsProcessingParameterNumber(
            "FOCAL_GAMMA", "Focal loss exponent (0 = cross-entropy; classes)", QgsProcessingParameterNumber.Double,
            defaultValue=TrainModelSpec.focal_gamma, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "CROP_SIZE", "Random crop size (pixels, 0 = whole patches; segmentation)",
            QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            "AUGMENT", "Augment (random flips and 90-degree rotations)", defaultValue=True))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", "Random seed", QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0))
        advanced = [
            QgsProcessingParameterNumber(
                "EARLY_STOPPING", "Early stopping patience (epochs, 0 = off)", QgsProcessingParameterNumber.Integer,
                defaultValue=0, minValue=0),
            QgsProcessingParameterEnum("SCHEDULE", "Learning-rate schedule", options=list(LR_SCHEDULES),
                                       defaultValue=0),
            QgsProcessingParameterNumber("WEIGHT_DECAY", "Weight decay (AdamW)", QgsProcessingParameterNumber.Double,
                                         defaultValue=1e-4, minValue=0.0),
            QgsProcessingParameterNumber(
                "EMA_MOMENTUM", "Weight averaging momentum (per step, 0 = off; the model written is the average)",
                QgsProcessingParameterNumber.Double, defaultValue=TrainModelSpec.ema_momentum, minValue=0.0,
                maxValue=0.9999),
            QgsProcessingParameterNumber(
                "GAIN_JITTER", "Random band gains (0 = off; 0.1: each band times 0.9 to 1.1; classes)",
                QgsProcessingParameterNumber.Double, defaultValue=TrainModelSpec.gain_jitter, minValue=0.0,
                maxValue=0.9),
            QgsProcessingParameterBoolean("VALIDITY_CHANNEL", "Validity channel (nodata mask as an input band)",
                                          defaultValue=False),
            QgsProcessingParameterBoolean("RESUME", "Resume from the checkpoint", defaultValue=False),
            QgsProcessingParameterBoolean("MIXED_PRECISION", "Mixed precision (GPU)", defaultValue=False),
            QgsProcessingParameterBoolean("JIT_COMPILE", "Compile training with XLA (faster steps on a CPU)",
                                          defaultValue=TrainModelSpec.jit_compile),
            QgsProcessingParameterBoolean(
                "GAN", "Adversarial loss (image datasets: super-resolution, translation)", defaultValue=False),
            QgsProcessingParameterNumber(
                "ADVERSARIAL_WEIGHT", "Adversarial loss weight (against the content loss on the normalised target)",
                QgsProcessingParameterNumber.Double, defaultValue=TrainModelSpec.adversarial_weight, minValue=0.0),
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
            "focal_gamma": self.parameterAsDouble(parameters, "FOCAL_GAMMA", context),
            "augment": self.parameterAsBoolean(parameters, "AUGMENT", context),
            "gain_jitter": self.parameterAsDouble(parameters, "GAIN_JITTER", context),
            "time_budget": self.parameterAsDouble(parameters, "TIME_BUDGET", context),
            "crop_size": self.parameterAsInt(parameters, "CROP_SIZE", context),
            "schedule": LR_SCHEDULES[self.parameterAsEnum(parameters, "SCHEDULE", context)],
            "weight_decay": self.parameterAsDouble(parameters, "WEIGHT_DECAY", context),
            "ema_momentum": self.parameterAsDouble(parameters, "EMA_MOMENTUM", context),
            "validity_channel": self.parameterAsBoolean(parameters, "VALIDITY_CHANNEL", context),
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "early_stopping_patience": self.parameterAsInt(parameters, "EARLY_STOPPING", context),
            "resume": self.parameterAsBoolean(parameters, "RESUME", context),
            "mixed_precision": self.parameterAsBoolean(parameters, "MIXED_PRECISION", context),
            "jit_compile": self.parameterAsBoolean(parameters, "JIT_COMPILE", context),
            "gan": self.parameterAsBoolean(parameters, "GAN", context),
            "adversarial_weight": self.parameterAsDouble(parameters, "ADVERSARIAL_WEIGHT", context),
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
