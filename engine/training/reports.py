"""What a run reports: ``history.csv``, ``training_curves.png``, TensorBoard scalars and the
final validation's confusion matrix (``confusion_matrix.json``/``.png``).

``history.csv`` has one row per epoch: ``epoch``, the training losses (``loss``; with ``gan``
also ``adversarial``, ``discriminator_loss``), the validation scores (``val_loss``,
``val_overall_accuracy``, ``val_kappa``, ``val_macro_f1``; or ``val_psnr``, ``val_psnr_bicubic``
in dB), ``learning_rate`` and ``seconds`` (wall time of the epoch with its validation).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..classes import ClassStyle
from ..metrics import summarize
from ..outputs import atomic_output

HISTORY = "history.csv"
CURVES = "training_curves.png"
CONFUSION = "confusion_matrix"
LOGS = "logs"


def write_history(path: Path, rows: list[dict]) -> None:
    """``history.csv``: one row per epoch; columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_output(path) as temp, open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_curves(path: Path, rows: list[dict], classifier: bool) -> None:
    """``training_curves.png``: losses per epoch, and the validation scores (fractions for a
    ``classifier``, else PSNR in dB)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    losses, scores = figure.subplots(1, 2)
    for key in ("loss", "val_loss"):
        losses.plot(epochs, [row[key] for row in rows], marker="o", label=key)
    losses.set(xlabel="epoch", ylabel="loss", title="Loss")
    keys = ("val_overall_accuracy", "val_macro_f1") if classifier else ("val_psnr", "val_psnr_bicubic")
    for key in keys:
        if key in rows[0]:
            scores.plot(epochs, [row[key] for row in rows], marker="o", label=key)
    scores.set(xlabel="epoch", ylabel="fraction" if classifier else "dB", title="Validation")
    for axes in (losses, scores):
        axes.legend()
        axes.grid(alpha=0.3)
    with atomic_output(path) as temp:
        figure.savefig(temp, format="png")


def write_scalars(folder: Path, step: int, row: dict) -> None:
    """Append one epoch's scalars to TensorBoard event files in ``train/`` and ``validation/``.

    Written with TensorFlow's core summary op (the ``tensorboard`` package is not needed to
    write, only to view: ``tensorboard --logdir <model folder>/logs``).
    """
    from ..device import tensorflow

    tf = tensorflow()
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    groups = {"train": {k: v for k, v in row.items() if not k.startswith("val_")},
              "validation": {k[len("val_"):]: v for k, v in row.items() if k.startswith("val_")}}
    for name, scalars in groups.items():
        writer = tf.summary.create_file_writer(str(folder / name))
        with writer.as_default():
            for tag, value in scalars.items():
                if tag != "epoch":
                    tf.summary.write(f"epoch_{tag}", tf.constant(float(value)), step=step, metadata=metadata)
        writer.close()


def confusion_document(matrix, classes: Sequence[ClassStyle], map_description: str,
                       reference_description: str) -> dict:
    """A confusion matrix and its scores, JSON-ready (NaN -> None), in ``evaluate_map``'s
    ``metrics.json`` layout: ``map``/``reference`` (what was compared, as text), the scores of
    :func:`..metrics.summarize`, one row per class and the matrix (reference rows x map columns)."""
    matrix = np.asarray(matrix, np.int64)
    summary = summarize(matrix)
    per_class = summary.pop("per_class")
    document = {
        "map": map_description, "reference": reference_description, **summary,
        "classes": [{"value": c.value, "name": c.name, "color": c.color,
                     **{key: values[i] for key, values in per_class.items()}} for i, c in enumerate(classes)],
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: reference classes, columns: map classes (order of 'classes')",
    }
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in document.items()}


def write_confusion(folder: Path, document: dict) -> None:
    """``confusion_matrix.json`` and ``confusion_matrix.png`` in ``folder``."""
    from ..reports import confusion_png

    (folder / f"{CONFUSION}.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    (folder / f"{CONFUSION}.png").write_bytes(confusion_png(document))
