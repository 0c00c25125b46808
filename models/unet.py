"""A small U-Net: "same" convolutions, ``depth`` 2x poolings (period 2**depth), softmax or linear.

Sources at a coarser scale (whole number) are up-sampled (nearest) to the reference spacing
and concatenated with it at the input; SF 1. Hyper-parameters: ``depth`` (3), ``width``
(8, doubled at each level), ``upsampling`` (``nearest`` or ``transpose``),
``batch_norm`` (true: batch normalisation after every convolution; served in inference mode, a
per-channel affine map, so tiles stay exact).
"""

from __future__ import annotations

from ..engine.protocol import EngineError
from .spec import ModelSpec, head, integer_scale, keras, model, source_inputs

UPSAMPLING = ("nearest", "transpose")


def build(spec) -> "keras.Model":
    spec = ModelSpec.coerce(spec)
    depth, width = spec.param("depth", 3), spec.param("width", 8)
    upsampling, batch_norm = spec.param("upsampling", "nearest"), spec.param("batch_norm", True)
    if depth < 1 or width < 1 or upsampling not in UPSAMPLING:
        raise EngineError(f"unet: depth and width must be >= 1 and upsampling one of {', '.join(UPSAMPLING)}")
    layers = keras().layers
    inputs, tensors = source_inputs(spec)
    x = reference_stack(spec, tensors, "unet")

    def block(x, filters):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
            if batch_norm:
                x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        return x

    skips = []
    for level in range(depth):
        x = block(x, width * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = block(x, width * 2**depth)
    for level in reversed(range(depth)):
        if upsampling == "nearest":
            x = layers.UpSampling2D(2)(x)
        else:
            x = layers.Conv2DTranspose(width * 2**level, 2, strides=2, padding="same")(x)
        x = block(layers.Concatenate()([x, skips[level]]), width * 2**level)
    return model(inputs, head(x, spec), "unet")


def reference_stack(spec: ModelSpec, tensors: list, model_name: str):
    """All sources at the reference spacing, concatenated (coarser ones up-sampled, nearest)."""
    layers = keras().layers
    stacked = []
    for index, x in enumerate(tensors):
        scale = integer_scale(spec, index, model_name)
        stacked.append(layers.UpSampling2D(scale)(x) if scale > 1 else x)
    return stacked[0] if len(stacked) == 1 else layers.Concatenate()(stacked)
