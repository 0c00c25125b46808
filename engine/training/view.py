"""The training view: the network as the loss sees it, and label patches cut to its output.

For ``class`` datasets the network's output is cut to the one output pixel covering the patch
centre (``[B, 1, 1, K]``); for ``segmentation`` the label patches are cut to the output pixels a
"valid" network emits (:attr:`TrainingView.label_window`, in label-patch pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import EngineError
from ..geometry import Window
from .config import Task
from .network import arrange_inputs


@dataclass(frozen=True)
class TrainingView:
    """The network as the loss sees it, and how label patches are cut to its output.

    ``label_window``: the pixels of the label patch the output covers (``segmentation``/``image``;
    ``None`` when they have the same size).
    """

    model: object
    label_window: Window | None


def centre_output_pixel(patch_size: int, before: int, crop: int, ratio: Fraction, out_size: int) -> int:
    """Index (one axis) of the output pixel whose footprint holds a patch's centre node.

    The patch's centre node is ``patch_size // 2`` (architecture.md, patch centre); output
    pixel ``j`` covers source pixels from ``before + (j - crop) * ratio``, ``ratio`` wide.
    """
    index = math.floor((patch_size // 2 - before) / ratio) + crop
    return min(max(index, 0), out_size - 1)


def training_view(network, task: Task, geometry) -> TrainingView:
    """Probe the network on one zero patch per source and line its output up with the labels."""
    import keras

    probe = arrange_inputs(task, [np.zeros((1, int(s["patch_size"]), int(s["patch_size"]), int(s["bands"])),
                                           np.float32) for s in task.sources])
    height, width = (int(n) for n in network(probe, training=False).shape[1:3])
    ratio = geometry.ratio(0)
    if task.kind == "class":
        if (height, width) == (1, 1):
            return TrainingView(network, None)
        size = int(task.sources[0]["patch_size"])
        row = centre_output_pixel(size, geometry.before(0), geometry.crop, ratio, height)
        col = centre_output_pixel(size, geometry.before(0), geometry.crop, ratio, width)
        cut = keras.layers.Cropping2D(((row, height - row - 1), (col, width - col - 1)))(network.output)
        return TrainingView(keras.Model(network.input, cut), None)
    size = int(task.label["patch_size"])
    if (height, width) == (size, size):
        return TrainingView(network, None)
    offset = geometry.before(0) - geometry.crop
    if task.kind == "segmentation" and ratio == 1 and 0 <= offset and offset + max(height, width) <= size:
        return TrainingView(network, Window(offset, offset, width, height))
    raise EngineError(
        f"the model's output for {task.sources[0]['patch_size']}-pixel patches is {height} x {width} pixels, "
        f"which does not line up with the dataset's {size}-pixel label patches; extract patches whose "
        f"label patch matches the model output, or use a model with the same output size"
    )


def label_mapper(task: Task, view: TrainingView, weights: np.ndarray | None):
    """A tf.data map: cut labels to the output; classifiers get per-label sample weights (0 = ignore)."""
    from ..device import tensorflow

    tf = tensorflow()
    table = None if weights is None else tf.constant(weights, tf.float32)
    window = view.label_window

    def mapper(inputs, labels):
        inputs = arrange_inputs(task, inputs)
        if task.kind == "class":
            labels = tf.reshape(labels, (-1, 1, 1))
        elif window is not None:
            labels = labels[:, window.row_off:window.row_end, window.col_off:window.col_end]
        if table is None:
            return inputs, labels
        valid = labels >= 0
        clean = tf.where(valid, labels, 0)
        return inputs, clean, tf.where(valid, tf.gather(table, clean), 0.0)

    return mapper
