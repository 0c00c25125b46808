"""The network that is trained and served, and what it is trained with (loss, optimiser, weights).

The network has one input per dataset source (named like it, spatial size ``None``), normalised
inside the model with the manifest's per-band mean/std, then nodata (NaN) filled with 0 and,
optionally, a validity channel appended (:mod:`engine.nodata`); an ``image`` network's output is
de-normalised (:func:`output_statistics`). The builder's model sits in between.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..errors import EngineError
from ..fields import pack_inputs
from .config import Task, TrainConfig


def builder_spec(task: Task, config: TrainConfig) -> dict:
    """The spec a zoo/custom ``build(spec)`` receives (see :mod:`deepfield.models.spec`)."""
    spec = {
        "task": task.kind,
        "sources": [{"name": s["name"], "bands": int(s["bands"]) + int(bool(config.validity_channel)),
                     "patch_size": int(s["patch_size"]),
                     "scale": str(s.get("scale", "1"))} for s in task.sources],
        "classes": len(task.classes),
        **config.hyperparameters,
    }
    if task.kind == "image":
        spec.update(out_bands=int(task.label["bands"]), factor=int(1 / Fraction(str(task.label.get("scale") or 1))))
    return spec


def load_builder(config: TrainConfig):
    """The ``build(spec) -> keras.Model`` function named by the config."""
    from ... import models

    if config.custom_model:
        return models.load_custom_builder(config.custom_model)
    try:
        return models.ZOO[config.architecture]
    except KeyError:
        raise EngineError(
            f"unknown architecture {config.architecture!r}; the model zoo has: {', '.join(sorted(models.ZOO))}"
        ) from None


def load_discriminator(task: Task, config: TrainConfig):
    """The critic of an adversarial run (logits per patch cell): the zoo's one for the architecture
    (:data:`deepfield.models.DISCRIMINATORS`; conditional when it takes the sources too), else the
    super-resolution patch discriminator."""
    from ...models import DISCRIMINATORS, superres

    build = DISCRIMINATORS.get(config.architecture, superres.build_discriminator)
    return build(builder_spec(task, config))


def output_statistics(task: Task) -> tuple[list, list]:
    """Mean/std an ``image`` network's output is de-normalised with: the first source's when it has
    the target's bands (an identity-initialised network then passes its input through), else the
    target's own."""
    first = task.sources[0]
    if int(first["bands"]) == int(task.label["bands"]):
        return first["mean"], first["std"]
    return task.label["mean"], task.label["std"]


def build_network(task: Task, config: TrainConfig):
    """The network to train and serve: normalisation + the builder's model (+ de-normalisation)."""
    from ..device import tensorflow

    tensorflow()
    import keras

    core = load_builder(config)(builder_spec(task, config))
    inputs = source_inputs(task)
    # a user's builder may take a dict of inputs
    output = core(pack_inputs(core, normalised_sources(task, config, inputs)))
    if task.kind == "image":
        mean, std = output_statistics(task)
        output = keras.layers.Normalization(mean=mean, variance=variance(std), invert=True, dtype="float32",
                                            name="denormalise")(output)
    output = keras.layers.Activation("linear", dtype="float32", name="output")(output)
    return keras.Model(arrange_inputs(task, inputs), output, name=core.name)


def source_inputs(task: Task) -> list:
    """One Keras input per dataset source, named like it (spatial size ``None``)."""
    import keras

    return [keras.Input((None, None, int(s["bands"])), name=s["name"]) for s in task.sources]


def normalised_sources(task: Task, config: TrainConfig, inputs: list) -> list:
    """The sources as the builder's model sees them: normalised with the manifest's per-band
    mean/std, NaN (nodata) filled with 0, plus the validity channel when configured."""
    import keras

    from ..nodata import nodata_fill

    return [nodata_fill(bool(config.validity_channel), name=f"nodata_fill_{s['name']}")(
        keras.layers.Normalization(mean=s["mean"], variance=variance(s["std"]), name=f"normalise_{s['name']}")(x))
        for s, x in zip(task.sources, inputs)]


def variance(std) -> np.ndarray:
    """Per-band variance for a Normalization layer; a constant band (std 0) is only centred."""
    std = np.asarray(std, dtype=np.float64)
    return np.where(std > 0, std, 1.0) ** 2


def arrange_inputs(task: Task, values):
    """Per-source values (a list in source order, or a dict by source name) in the structure the
    network takes, as serving calls it: the array itself for one source, a tuple for several."""
    if isinstance(values, dict):
        values = [values[s["name"]] for s in task.sources]
    return tuple(values) if len(values) > 1 else values[0]


def class_weights(counts, mode: str) -> np.ndarray:
    """Per-class loss weights from training label counts.

    ``none``: all 1. ``balanced``: ``total / (K * count)`` (scikit-learn's rule, K = classes
    present); ``sqrt``: the square root of ``balanced`` (rare classes count more, without the
    noise of weights in the hundreds). Classes absent from the training split weigh 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return np.ones(len(counts), dtype=np.float32)
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return (np.sqrt(weights) if mode == "sqrt" else weights).astype(np.float32)


def pixel_crossentropy(labels, probabilities, focal_gamma: float = 0.0):
    """Per-pixel loss of class ``probabilities`` (softmax over the last axis) for integer ``labels``:
    the cross-entropy ``-log p`` (``p``: the probability of the true class), or with ``focal_gamma``
    > 0 the focal loss ``-(1 - p) ** focal_gamma * log p`` (Lin et al. 2017), which lowers the
    weight of pixels the network already classifies well, so that rare and hard ones count more."""
    import keras

    crossentropy = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    if not focal_gamma:
        return crossentropy
    return keras.ops.power(1.0 - keras.ops.exp(-crossentropy), float(focal_gamma)) * crossentropy


def make_loss(task: Task, config: TrainConfig):
    """Classifiers: :func:`pixel_crossentropy` at ``config.focal_gamma``, averaged with the
    per-label weights (weight 0 = ignored); images: L1 or L2."""
    import keras

    if task.is_classifier:
        class PixelCrossentropy(keras.losses.Loss):
            def call(self, labels, probabilities):
                return pixel_crossentropy(labels, probabilities, config.focal_gamma)

        name = "focal_crossentropy" if config.focal_gamma else "sparse_categorical_crossentropy"
        return PixelCrossentropy(name=name, reduction="mean_with_sample_weight")
    return keras.losses.MeanAbsoluteError() if config.loss == "l1" else keras.losses.MeanSquaredError()


def make_optimizer(config: TrainConfig, averaged: bool = False):
    """AdamW at the configured learning rate and weight decay (the schedule is set per step by
    :func:`.schedule.learning_rate_at`); in mixed precision wrapped in a ``LossScaleOptimizer``
    (dynamic loss scaling against float16 gradient underflow: a custom train step must scale its
    loss with ``optimizer.scale_loss`` before taking gradients; ``apply_gradients`` unscales them)."""
    import keras

    momentum = float(config.ema_momentum) if averaged else 0.0
    optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=float(config.weight_decay),
                                       use_ema=momentum > 0, ema_momentum=momentum)
    return keras.optimizers.LossScaleOptimizer(optimizer) if config.mixed_precision else optimizer
