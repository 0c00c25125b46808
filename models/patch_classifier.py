"""The talk's strided patch classifier: conv 5x5/2 -> conv 3x3/2 -> conv 2x2, softmax.

One source: RF 16, EF 1, SF 4 (one class per 4 x 4 reference pixels; a 16-pixel patch yields
one output pixel). Several sources: one branch per source down to the output spacing
(4 reference pixels), concatenated, then a 1 x 1 softmax. A source at scale 2 takes
conv 3x3/2 -> conv 2x2 (RF 6), at scale 4 a conv 2x2 (RF 2).
Hyper-parameters: ``width`` (16).
"""

from __future__ import annotations

from ..engine.protocol import EngineError
from .spec import ModelSpec, conv, head, integer_scale, keras, model, source_inputs

SF = 4
STAGES = ((5, 2), (3, 2))  # (kernel, stride): the two strided convolutions
STAGES_BY_SCALE = {1: STAGES, 2: STAGES[1:], 4: ()}  # a source at scale 2 is already 2x down


def build(spec) -> "keras.Model":
    spec = ModelSpec.coerce(spec)
    width = spec.param("width", 16)
    inputs, tensors = source_inputs(spec)
    branches = []
    for index, x in enumerate(tensors):
        scale = integer_scale(spec, index, "patch_classifier")
        if scale not in STAGES_BY_SCALE:
            raise EngineError(f"patch_classifier: source {spec.sources[index].name!r} has scale {scale}; "
                              f"use sources at scale 1, 2 or 4")
        for kernel, stride in STAGES_BY_SCALE[scale]:
            x = conv(x, width, kernel, stride, padding="valid")
        branches.append(x)
    if len(branches) == 1:
        out = head(branches[0], spec, kernel=2, padding="valid")
    else:
        merged = keras().layers.Concatenate()([conv(x, width, 2, padding="valid") for x in branches])
        out = head(merged, spec)
    return model(inputs, out, "patch_classifier")
