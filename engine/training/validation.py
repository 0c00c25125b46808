"""Validation scores of a training view over the validation split (once per epoch).

Classifiers: ``loss`` (weighted like training), ``overall_accuracy``, ``kappa``, ``macro_f1``
(fractions) and ``confusion`` (reference rows x predicted columns, class indices); a network whose
outputs are not finite scores NaN. Images: ``loss``, ``psnr`` and ``psnr_bicubic`` in dB.
"""

from __future__ import annotations

import math

import numpy as np

from ..image_scores import psnr
from ..metrics import confusion_matrix, summarize
from .config import Task
from .view import TrainingView

#: The scores logged per epoch (as ``val_<name>``) when the task has them.
VALIDATION_SCALARS = ("loss", "overall_accuracy", "kappa", "macro_f1", "psnr", "psnr_bicubic")


def validate(view: TrainingView, batches, task: Task, loss) -> dict:
    """Metrics of the training view over ``batches`` (mapped by :func:`.view.label_mapper`).

    Classifiers: ``loss``, ``overall_accuracy``, ``kappa``, ``macro_f1``, ``confusion`` and the rest
    of :func:`..metrics.summarize`. Images: ``loss``, ``psnr`` (dB, data range = target max - min
    over the split) and ``psnr_bicubic`` (the first source upsampled bicubically, when its band
    count matches the target's).
    """
    if task.is_classifier:
        return _validate_classifier(view, batches, task, loss)
    return _validate_image(view, batches, task, loss)


def _validate_classifier(view, batches, task, loss) -> dict:
    n_classes = len(task.classes)
    matrix = np.zeros((n_classes, n_classes), np.int64)
    loss_sum = weight_sum = 0.0
    finite = True
    for inputs, labels, weights in batches:
        probabilities = view.model.predict_on_batch(inputs)
        finite = finite and bool(np.all(np.isfinite(probabilities)))
        batch_weight = float(np.sum(weights))
        loss_sum += float(loss(labels, probabilities, sample_weight=weights)) * batch_weight
        weight_sum += batch_weight
        keep = np.asarray(weights) > 0
        predicted = np.argmax(probabilities, axis=-1)
        matrix += confusion_matrix(np.asarray(labels)[keep], predicted[keep], range(n_classes))
    metrics = {"loss": loss_sum / weight_sum if weight_sum else math.nan, "confusion": matrix, **summarize(matrix)}
    if not finite:  # a diverged network: the argmax of NaN probabilities is no prediction
        metrics.update(overall_accuracy=math.nan, kappa=math.nan, macro_f1=math.nan)
    return metrics


def _validate_image(view, batches, task, loss) -> dict:
    from ..device import tensorflow

    tf = tensorflow()
    first = task.sources[0]
    bicubic = int(first["bands"]) == int(task.label["bands"])
    sse = sse_bicubic = loss_sum = 0.0
    count = batches_seen = 0
    low, high = math.inf, -math.inf
    for inputs, target in batches:
        target = np.asarray(target, np.float64)
        predicted = np.asarray(view.model.predict_on_batch(inputs), np.float64)
        loss_sum += float(loss(target, predicted))
        batches_seen += 1
        sse += float(np.sum((predicted - target) ** 2))
        count += target.size
        low, high = min(low, target.min()), max(high, target.max())
        if bicubic:
            coarse = inputs[0] if isinstance(inputs, tuple) else inputs
            upsampled = tf.image.resize(coarse, target.shape[1:3], method="bicubic")
            sse_bicubic += float(np.sum((upsampled.numpy() - target) ** 2))
    data_range = high - low
    metrics = {"loss": loss_sum / batches_seen, "psnr": psnr(sse / count, data_range)}
    if bicubic:
        metrics["psnr_bicubic"] = psnr(sse_bicubic / count, data_range)
    return metrics
