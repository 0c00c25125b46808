"""The model folder a run writes from its best checkpoint: model + metadata and the run's reports.

``<output>/`` is written once, atomically: ``model`` + ``deepfield.json`` (with :func:`training_info`),
``history.csv``, ``training_curves.png``, ``confusion_matrix.json/.png`` (classifiers) and ``logs/``
(TensorBoard, copied from the checkpoint folder).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict

from ..classes import class_styles
from ..outputs import atomic_output
from .checkpoints import Checkpoint, RunState
from .config import Task, TrainConfig
from .reports import CURVES, HISTORY, LOGS, confusion_document, write_confusion, write_curves, write_history


def write_model_folder(config: TrainConfig, task: Task, network, geometry, checkpoint: Checkpoint,
                       state: RunState) -> None:
    """The model folder, atomically: model + metadata, history, curves, confusion matrix, logs."""
    from ..modelfolder import ModelMetadata, write_model_files

    metadata = ModelMetadata.for_model(network, task.kind, geometry=geometry, classes=task.classes,
                                       sources=list(task.sources), training=training_info(config, state))
    with atomic_output(config.output, folder=True) as folder:
        write_model_files(folder, network, metadata, custom_code=config.custom_model)
        write_history(folder / HISTORY, state.history)
        write_curves(folder / CURVES, state.history, task.is_classifier)
        if "confusion" in state.best_metrics:
            classes = list(class_styles(task.classes))
            write_confusion(folder, confusion_document(state.best_metrics["confusion"], classes,
                                                       f"{config.output} (epoch {state.best_epoch})",
                                                       f"{config.dataset} (valid split)"))
        if (checkpoint.folder / LOGS).is_dir():
            shutil.copytree(checkpoint.folder / LOGS, folder / LOGS)


def training_info(config: TrainConfig, state: RunState) -> dict:
    """What the metadata records about the run: its configuration, epochs and best validation scores."""
    best = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in state.best_metrics.items() if k != "confusion"}
    return {"config": asdict(config), "epochs_done": state.epochs_done, "best_epoch": state.best_epoch, "best": best}
