"""Image translation after pix2pix (Isola et al. 2017): a U-Net generator and a conditional PatchGAN critic.

The generator maps the sources (at the reference spacing, coarser ones up-sampled like the U-Net's)
to an image of ``out_bands`` bands on the same grid (SF 1): ``depth`` encoder steps of 4 x 4
stride-2 convolutions (LeakyReLU 0.2, batch normalisation but on the first), a 3 x 3 bottleneck,
and ``depth`` decoder steps (ReLU, batch normalisation), each concatenated with the encoder tensor
of its size; a linear 3 x 3 convolution gives the output. A decoder step up-samples with
``upsampling``: ``nearest`` (the default: nearest up-sampling then a 3 x 3 convolution, free of the
checkerboard artefacts of short trainings) or ``transpose`` (pix2pix's 4 x 4 stride-2 transposed
convolution). Fully convolutional with period 2**depth (patch sizes a multiple of it; served in
inference mode, batch normalisation is a per-channel affine map, so tiles stay exact).
Hyper-parameters: ``depth`` (4), ``width`` (32 filters, doubled at each step, at most 8 times),
``upsampling``.

The critic (:func:`build_discriminator`) is pix2pix's PatchGAN: it sees the sources *and* an image
(the target or the generator's output), concatenated, and gives one logit per patch cell.
"""

from __future__ import annotations

from ..engine.protocol import EngineError
from .spec import ModelSpec, keras, model, source_inputs
from .unet import UPSAMPLING, reference_stack

MAX_WIDTH_FACTOR = 8


def build(spec) -> "keras.Model":
    spec = ModelSpec.coerce(spec)
    depth, width, upsampling = spec.param("depth", 4), spec.param("width", 32), spec.param("upsampling", "nearest")
    if depth < 1 or width < 1 or upsampling not in UPSAMPLING:
        raise EngineError(f"translation: depth and width must be >= 1 and upsampling one of {', '.join(UPSAMPLING)}")
    layers = keras().layers
    inputs, tensors = source_inputs(spec)
    x = reference_stack(spec, tensors, "translation")

    def filters(level):
        return width * min(2**level, MAX_WIDTH_FACTOR)

    skips = []
    for level in range(depth):
        skips.append(x)
        x = layers.Conv2D(filters(level), 4, strides=2, padding="same", use_bias=level == 0)(x)
        if level:
            x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv2D(filters(depth), 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for level in reversed(range(depth)):
        if upsampling == "nearest":
            x = layers.Conv2D(filters(level), 3, padding="same", use_bias=False)(layers.UpSampling2D(2)(x))
        else:
            x = layers.Conv2DTranspose(filters(level), 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Concatenate()([x, skips[level]])
    output = layers.Conv2D(spec.channels_out, 3, padding="same", name="output")(x)
    return model(inputs, output, "translation")


def build_discriminator(spec) -> "keras.Model":
    """pix2pix's conditional PatchGAN: inputs = the sources (normalised, in source order) then the
    image (normalised), outputs one logit per 8 x 8 cell (three 4 x 4 stride-2 convolutions, then
    a 4 x 4 convolution and the logits: a 70-pixel receptive field with the default 3 levels).
    Hyper-parameters: ``discriminator_width`` (32), ``discriminator_levels`` (3)."""
    spec = ModelSpec.coerce(spec)
    width, levels = spec.param("discriminator_width", 32), spec.param("discriminator_levels", 3)
    k = keras()
    inputs, tensors = source_inputs(spec)
    image = k.Input((None, None, spec.channels_out), name="image")
    x = k.layers.Concatenate()([reference_stack(spec, tensors, "translation"), image])
    for level in range(levels):
        x = k.layers.Conv2D(width * 2**level, 4, strides=2, padding="same")(x)
        x = k.layers.LeakyReLU(0.2)(x)
    x = k.layers.LeakyReLU(0.2)(k.layers.Conv2D(width * 2**levels, 4, padding="same")(x))
    logits = k.layers.Conv2D(1, 4, padding="same", name="logits")(x)
    return k.Model([*inputs, image], logits, name="conditional_patch_discriminator")
