"""Super-resolution x2 / x4 (SF 1/factor) and a small patch discriminator for a GAN loss.

The generator learns a residual over a bilinear up-sampling of its source: convolutions at the
input spacing, ``factor`` up-sampled by transposed convolutions (x2 steps), and a last
convolution initialised to zero, so that an untrained network is bilinear interpolation when
the output has the source's bands (else a learned 1 x 1 mix of the up-sampled bands).
Hyper-parameters: ``width`` (32), ``blocks`` (4 residual blocks), ``factor`` (2 or 4; also
``spec.factor``).
"""

from __future__ import annotations

from ..engine.protocol import EngineError
from .spec import ModelSpec, conv, keras, model, source_inputs

FACTORS = (2, 4)


def build(spec) -> "keras.Model":
    spec = ModelSpec.coerce(spec)
    factor = spec.factor if spec.factor > 1 else spec.param("factor", 2)
    if factor not in FACTORS:
        raise EngineError(f"superres: factor {factor} is not one of {', '.join(map(str, FACTORS))}")
    if len(spec.sources) != 1:
        raise EngineError(f"superres: needs one source, got {len(spec.sources)}")
    out_bands = spec.out_bands or spec.sources[0].bands
    width, blocks = spec.param("width", 32), spec.param("blocks", 4)
    layers = keras().layers
    inputs, (x,) = source_inputs(spec)
    base = layers.UpSampling2D(factor, interpolation="bilinear")(x)
    if out_bands != spec.sources[0].bands:
        base = layers.Conv2D(out_bands, 1, name="mix_bands")(base)
    h = conv(x, width)
    for _ in range(blocks):
        h = layers.Add()([h, conv(conv(h, width), width, activation=None)])
    for _ in range(factor.bit_length() - 1):
        h = layers.Conv2DTranspose(width, 4, strides=2, padding="same", activation="relu")(h)
    residual = layers.Conv2D(out_bands, 3, padding="same", kernel_initializer="zeros", name="residual")(h)
    return model(inputs, layers.Add(name="output")([base, residual]), f"superres_x{factor}")


def build_discriminator(spec) -> "keras.Model":
    """A patch discriminator on high-resolution images of ``out_bands`` bands: one logit per
    8 x 8 cell (three stride-2 convolutions). Hyper-parameter: ``discriminator_width`` (32)."""
    spec = ModelSpec.coerce(spec)
    bands = spec.out_bands or spec.sources[0].bands
    width = spec.param("discriminator_width", 32)
    k = keras()
    image = k.Input((None, None, bands), name="image")
    x = image
    for level in range(3):
        x = k.layers.Conv2D(width * 2**level, 4, strides=2, padding="same")(x)
        x = k.layers.LeakyReLU(0.2)(x)
    logits = k.layers.Conv2D(1, 3, padding="same", name="logits")(x)
    return k.Model(image, logits, name="patch_discriminator")
