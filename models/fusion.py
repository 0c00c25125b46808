"""Two-branch fusion: a panchromatic reference and a multispectral source at a coarser scale.

Each source gets its own convolutions at its own spacing; the multispectral features are
up-sampled to the reference spacing with a transposed convolution (stride = its scale, 2 by
default), concatenated with the panchromatic features, and decoded at the reference spacing
(SF 1). Hyper-parameters: ``width`` (16), ``layers`` (2 per branch and after the fusion).
"""

from __future__ import annotations

from ..engine.protocol import EngineError
from .spec import ModelSpec, conv, head, integer_scale, keras, model, source_inputs


def build(spec) -> "keras.Model":
    spec = ModelSpec.coerce(spec)
    if len(spec.sources) != 2:
        raise EngineError(f"fusion: needs two sources (panchromatic reference, then multispectral), "
                          f"got {len(spec.sources)}")
    scale = integer_scale(spec, 1, "fusion")
    if scale < 2:
        raise EngineError(f"fusion: the second source ({spec.sources[1].name}) must be coarser than the first "
                          f"(scale 2 or more), not scale {spec.sources[1].scale}")
    width, depth = spec.param("width", 16), spec.param("layers", 2)
    layers = keras().layers
    inputs, (pan, ms) = source_inputs(spec)
    for _ in range(depth):
        pan, ms = conv(pan, width), conv(ms, width)
    ms = layers.Conv2DTranspose(width, scale, strides=scale, padding="same", activation="relu")(ms)
    x = layers.Concatenate()([pan, ms])
    for _ in range(depth):
        x = conv(x, width)
    return model(inputs, head(x, spec), "fusion")
