"""Derive a Keras model's geometry: receptive fields, expression field, spacing scale, crop.

The result is a :class:`~.geometry.ModelGeometry` that makes region propagation exact
(docs/architecture.md, "Model geometry"). The method, per axis:

1. **Layer maps.** Along one axis a layer is a :class:`LayerMap`: output pixel ``q = k*b + phase``
   reads the input pixels ``[lo[phase] + k*a, hi[phase] + k*a]`` (its *taps*), and
   ``n_in = (a/b) * n_out + c`` for ``c`` in ``[c_lo, c_hi]`` (its *size relation*: the input
   sizes that yield exactly ``n_out`` pixels). Known layers have exact rules (convolutions with
   strides, dilation and TensorFlow's asymmetric "same" padding, pooling, transposed
   convolutions, up-sampling, cropping, zero padding, merges, per-pixel layers, and layers
   that state their own map with ``deepfield_layer_map()``, see :mod:`.imported_layers`); any
   other layer is *probed*: its size relation from zero inputs of many sizes, its taps from the
   gradient support of output pixels over random inputs.
2. **Walk the graph.** Every tensor gets, per source, an :class:`AxisMap` (:func:`compose`,
   :func:`merge`): its spacing ``s`` (source pixels per tensor pixel), size relation and
   *period* (tensor pixels after which the network repeats itself). This gives ``r_i = s``,
   ``SF = r_0``, ``EF`` = the output period, and the context ``X_i``: the largest window that
   yields exactly ``EF`` output pixels, minus ``EF * r_i`` (the talk's classifier: 16 - 4 = 12).
3. **Halo.** A second walk with concrete window sizes (a tile of ``2 EF`` output pixels)
   tracks each tensor's *exact* pixels (:func:`exact_range`: those no padding, clamping or
   cropping at a window edge reaches). The crop is the fewest whole periods ``m`` that make the
   kept block exact once every window is widened by ``m * EF * r_i`` pixels on both sides
   ("valid" networks: ``m = 0``): ``RF_i = EF r_i + X_i + 2 m EF r_i`` and ``crop = m EF``.
   TensorFlow pads a strided "same" convolution according to its input size, so the walk
   repeats with the new window sizes until the geometry is stable.
4. **Self-check.** Run the model on a random input once as one tile and once as 2 x 2
   EF-aligned tiles; a mismatch grows the halo by one period and tries again, then fails.

All arithmetic is on integers and :class:`fractions.Fraction`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Sequence

import numpy as np

from .geometry import ModelGeometry, SourceGeometry
from .protocol import EngineError

TOLERANCE = 1e-5  # self-check: max abs difference, relative to max(1, |output|)
PROBE_SIZES = range(1, 41)  # input sizes (pixels) tried when probing an unknown layer
PROBE_DRAWS = 3  # random inputs whose gradient supports are united
MAX_PASSES = 6  # derivation passes until the window sizes and the geometry agree
MAX_SPAN_STEPS = 16  # lattice steps tried for one ground span when per-source windows do not meet
WALK_TILE = 128  # output pixels (rounded up to EF) of the tile whose windows the sized walks use

POINTWISE = {
    "InputLayer", "Activation", "BatchNormalization", "Dropout", "SpatialDropout2D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Dense", "Normalization", "Rescaling",
    "Softmax", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "LayerNormalization",
    "UnitNormalization", "Identity",
    # keras.ops used in functional models
    "Relu", "Relu6", "Sigmoid", "Tanh", "Softplus", "Silu", "Gelu", "Elu", "Selu", "LeakyRelu",
    "HardSigmoid", "LogSoftmax", "Exp", "Log", "Sqrt", "Square", "Abs", "Absolute", "Negative",
    "Cast", "Clip",
}
MERGES = {"Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide",
          "TrueDivide", "Power"}
CHANNEL_AXIS_LAYERS = {"BatchNormalization", "LayerNormalization", "Normalization", "Softmax",
                       "UnitNormalization", "Concatenate", "LogSoftmax"}
CONVOLUTIONS = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D"}
POOLINGS = {"MaxPooling2D", "AveragePooling2D"}
NOT_FULLY_CONVOLUTIONAL = {"Flatten", "Reshape", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
                           "Resizing", "CenterCrop", "RandomCrop", "Permute", "MultiHeadAttention",
                           "GroupNormalization"}


# -- one axis, one source: maps and their composition ----------------------------------------

@dataclass(frozen=True)
class LayerMap:
    """One layer along one axis: output pixel ``q = k*b + phase`` depends on the input pixels
    ``[lo[phase] + k*a, hi[phase] + k*a]`` (``None``: on none), and ``n_in = (a/b) * n_out + c``
    for ``c`` in ``[c_lo, c_hi]``."""

    a: int
    b: int
    lo: tuple
    hi: tuple
    c_lo: Fraction = Fraction(0)
    c_hi: Fraction = Fraction(0)


IDENTITY = LayerMap(1, 1, (0,), (0,))


@dataclass(frozen=True)
class AxisMap:
    """A tensor along one axis, seen from one source (see the module docstring).

    ``s``: source pixels per tensor pixel; ``n_source = s * n_tensor + c``, ``c`` in
    ``[c_lo, c_hi]``; ``period`` in tensor pixels (``period * s`` is a whole number of source
    pixels): shifting the source by ``period * s`` pixels shifts the tensor by ``period``.
    """

    s: Fraction
    c_lo: Fraction
    c_hi: Fraction
    period: int


SOURCE = AxisMap(Fraction(1), Fraction(0), Fraction(0), 1)


def compose(tensor: AxisMap, layer: LayerMap) -> AxisMap:
    """The map of a layer's output, given the map of its input and the layer's map."""
    step = Fraction(layer.a, layer.b)
    period = layer.b
    while (period * step) % tensor.period:
        period += layer.b
    return AxisMap(tensor.s * step, tensor.c_lo + tensor.s * layer.c_lo, tensor.c_hi + tensor.s * layer.c_hi, period)


def merge(maps: Sequence[AxisMap], where: str) -> AxisMap:
    """Join branches that meet in an element-wise or concatenating layer (same pixel grid)."""
    if len({m.s for m in maps}) != 1:
        raise EngineError(f"{where}: merges tensors at different resolutions "
                          f"({', '.join(str(m.s) for m in maps)} source pixels per pixel)")
    c_lo, c_hi = max(m.c_lo for m in maps), min(m.c_hi for m in maps)
    if c_lo > c_hi:
        raise EngineError(f"{where}: merges tensors whose sizes never match (crop the larger branch)")
    return AxisMap(maps[0].s, c_lo, c_hi, math.lcm(*(m.period for m in maps)))


# -- layer maps ------------------------------------------------------------------------------

def conv_map(kernel: int, stride: int, dilation: int, padding: str, size: int | None = None) -> LayerMap:
    """Conv2D / pooling along one axis.

    "same" pads like TensorFlow: ``max(span + 1 - stride + short, 0) // 2`` pixels before, where
    ``short = -size % stride`` depends on the input ``size`` (taken as a multiple of the stride
    when unknown), and the input is ``stride * n_out - short`` pixels.
    """
    span = (kernel - 1) * dilation
    if padding == "valid":
        return LayerMap(stride, 1, (0,), (span,), Fraction(span + 1 - stride), Fraction(span))
    if padding == "same":
        short = -size % stride if size is not None else 0
        before = max(span + 1 - stride + short, 0) // 2
        return LayerMap(stride, 1, (-before,), (span - before,), Fraction(-short), Fraction(-short))
    raise EngineError(f"padding {padding!r} is not supported (use 'valid' or 'same')")


def output_size(layer: LayerMap, size: int) -> int:
    """Output pixels of a layer for an input of ``size`` pixels (its size relation)."""
    return math.floor((size - layer.c_lo) / Fraction(layer.a, layer.b))


def conv_transpose_map(kernel: int, stride: int, padding: str) -> LayerMap:
    """Conv2DTranspose along one axis (TensorFlow: the gradient of the matching convolution)."""
    extra = max(kernel - stride, 0)
    before = extra // 2 if padding == "same" else 0
    if padding == "same":
        extra = 0
    lo, hi = [], []
    for phase in range(stride):
        first, last = -((kernel - 1 - phase - before) // stride), (phase + before) // stride
        lo.append(first if first <= last else None)
        hi.append(last if first <= last else None)
    return LayerMap(1, stride, tuple(lo), tuple(hi), Fraction(-extra, stride), Fraction(-extra, stride))


def upsampling_map(size: int, interpolation: str) -> LayerMap | None:
    """UpSampling2D along one axis: nearest, or bilinear with half-pixel centres."""
    if interpolation == "nearest":
        return LayerMap(1, size, (0,) * size, (0,) * size)
    if interpolation == "bilinear":
        centres = [Fraction(2 * phase + 1, 2 * size) - Fraction(1, 2) for phase in range(size)]
        return LayerMap(1, size, tuple(math.floor(t) for t in centres), tuple(math.ceil(t) for t in centres))
    return None


def shift_map(before: int, after: int) -> LayerMap:
    """Cropping2D (positive) or ZeroPadding2D (negative ``before``/``after``) along one axis."""
    return LayerMap(1, 1, (before,), (before,), Fraction(before + after), Fraction(before + after))


def _layer_maps(op, where: str, sizes: tuple | None):
    """``(rows LayerMap, cols LayerMap)`` for a known single-input layer, ``"merge"``, or ``None``.

    ``sizes``: the input's ``(rows, cols)`` when known (strided "same" padding depends on it).
    """
    size = sizes or (None, None)
    kind = type(op).__name__
    if hasattr(op, "deepfield_layer_map"):  # a layer that states its map (engine/imported_layers.py)
        fields = op.deepfield_layer_map()
        axis = LayerMap(**{**fields, "c_lo": Fraction(fields["c_lo"]), "c_hi": Fraction(fields["c_hi"])})
        return axis, axis
    if getattr(op, "data_format", "channels_last") == "channels_first":
        raise EngineError(f"{where}: channels_first layers are not supported (use channels_last)")
    if kind in NOT_FULLY_CONVOLUTIONAL:
        raise EngineError(f"{where}: a {kind} layer makes the model not fully convolutional; "
                          "DeepField serves models whose inputs have spatial size None")
    if kind in CHANNEL_AXIS_LAYERS:
        axes = getattr(op, "axis", -1)
        axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
        if any(axis not in (-1, 3) for axis in axes):
            raise EngineError(f"{where}: {kind} over axis {axes} mixes pixels; only the channel axis (-1) is supported")
    if kind in MERGES:
        return "merge"
    if kind in POINTWISE:
        return IDENTITY, IDENTITY
    if kind in CONVOLUTIONS:
        return tuple(conv_map(op.kernel_size[i], op.strides[i], op.dilation_rate[i], op.padding, size[i])
                     for i in (0, 1))
    if kind in POOLINGS:
        strides = op.strides or op.pool_size
        return tuple(conv_map(op.pool_size[i], strides[i], 1, op.padding, size[i]) for i in (0, 1))
    if kind == "Conv2DTranspose" and op.output_padding is None and tuple(op.dilation_rate) == (1, 1):
        return tuple(conv_transpose_map(op.kernel_size[i], op.strides[i], op.padding) for i in (0, 1))
    if kind == "UpSampling2D":
        maps = tuple(upsampling_map(op.size[i], op.interpolation) for i in (0, 1))
        return maps if None not in maps else None
    if kind == "ZeroPadding2D":
        return tuple(shift_map(-op.padding[i][0], -op.padding[i][1]) for i in (0, 1))
    if kind == "Cropping2D":
        return tuple(shift_map(op.cropping[i][0], op.cropping[i][1]) for i in (0, 1))
    return None


# -- probing unknown layers ------------------------------------------------------------------

def probe_layer_maps(op, channels: int, where: str) -> tuple[LayerMap, LayerMap]:
    """Measure an unknown single-input layer: size relation and per-phase taps, per axis."""
    from .device import tensorflow

    tf = tensorflow()
    sizes = {}
    for n in PROBE_SIZES:
        try:
            out = op(tf.zeros((1, n, n, channels)))
        except Exception:
            continue
        if len(out.shape) != 4:
            raise EngineError(f"{where}: outputs rank {len(out.shape)}, not an image; not fully convolutional")
        sizes[n] = (int(out.shape[1]), int(out.shape[2]))
    if len({m for m in sizes.values()}) < 3:
        raise EngineError(f"{where}: cannot determine how this layer maps sizes (probed {len(sizes)} sizes)")
    return tuple(_probe_axis(op, channels, sizes, axis, where, tf) for axis in (0, 1))


def _probe_axis(op, channels, sizes, axis, where, tf) -> LayerMap:
    outs = sorted({m[axis] for m in sizes.values()})
    ranges = {m: [n for n in sizes if sizes[n][axis] == m] for m in outs[:-1]}  # last m: its max is unknown
    ms = [m for m in ranges if m > 0]
    if len(ms) < 2:
        raise EngineError(f"{where}: cannot determine how this layer maps sizes")
    step = Fraction(max(ranges[ms[-1]]) - max(ranges[ms[0]]), ms[-1] - ms[0])
    c_lo = max(min(ranges[m]) - step * m for m in ms)
    c_hi = min(max(ranges[m]) - step * m for m in ms)
    if step <= 0 or c_lo > c_hi:
        raise EngineError(f"{where}: output size is not an affine function of the input size")
    a, b = step.numerator, step.denominator
    m0 = next((m for m in reversed(ms) if m % b == 0 and m >= 2 * b), None)
    if m0 is None:
        raise EngineError(f"{where}: cannot probe this layer (outputs too small)")
    n = max(ranges[m0])
    k = m0 // b // 2
    rng = np.random.default_rng(0)
    lo, hi = [], []
    for phase in range(b):
        q = k * b + phase
        support = np.zeros(n, bool)
        for _ in range(PROBE_DRAWS):
            x = tf.constant(rng.normal(size=(1, n, n, channels)).astype("float32"))
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = op(x)
                index = [sizes[n][0] // 2, sizes[n][1] // 2]  # other axis: an inner pixel
                index[axis] = q
                value = tf.reduce_sum(out[0, index[0], index[1], :])
            grad = tape.gradient(value, x)
            if grad is not None:
                support |= np.abs(grad.numpy()[0]).sum(axis=(1 - axis, 2)) > 0
        rows = np.flatnonzero(support)
        lo.append(int(rows[0]) - k * a if rows.size else None)
        hi.append(int(rows[-1]) - k * a if rows.size else None)
    return LayerMap(a, b, tuple(lo), tuple(hi), c_lo, c_hi)


# -- walking the graph -----------------------------------------------------------------------

def _submodel(op):
    """The functional graph of a nested (functional or Sequential) model, else ``None``."""
    graph = getattr(op, "_functional", None)
    if graph is None and hasattr(op, "_nodes_by_depth"):
        graph = op
    return graph


def model_inputs(model) -> list:
    """The model's input tensors in source order: a dict of inputs keeps its insertion order
    (``model.inputs`` sorts dict keys alphabetically)."""
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return list(struct.values())
    return list(model.inputs)


def pack_inputs(model, arrays: Sequence):
    """Per-source arrays (source order) in the structure the model is called with: a dict by
    input name (models built on a dict of inputs), a list, or the single array."""
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return dict(zip(struct, arrays))
    if isinstance(struct, (list, tuple)):
        return list(arrays)
    return arrays[0]


def call_model(model, arrays: Sequence) -> list[np.ndarray]:
    """Run the model on per-source arrays (source order, ``[batch, rows, cols, bands]``);
    returns its outputs as numpy arrays, always a list."""
    out = model(pack_inputs(model, arrays), training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out]


@dataclass(frozen=True)
class TensorInfo:
    """What the walk knows of a tensor: ``{source: (rows AxisMap, cols AxisMap)}`` and, when the
    input sizes are given, its ``(rows, cols)`` size and, per axis, the range ``[first, end)`` of
    its *exact* pixels: those equal to the network's response on the infinite sources (no
    padding or cropping of the window reaches them)."""

    maps: dict
    size: tuple | None = None
    exact: tuple | None = None


def exact_range(layer: LayerMap, exact: tuple[int, int], size: int) -> tuple[int, int]:
    """Exact output pixels ``[first, end)`` of a layer (``size`` output pixels) whose input is
    exact on ``exact``: those whose every input pixel is exact."""
    good = []
    for q in range(size):
        k, phase = divmod(q, layer.b)
        if layer.lo[phase] is None or (exact[0] <= layer.lo[phase] + k * layer.a
                                       and layer.hi[phase] + k * layer.a < exact[1]):
            good.append(q)
    return (good[0], good[-1] + 1) if good else (0, 0)


def walk(model, inputs: list[TensorInfo], cache: dict) -> list[TensorInfo]:
    """Propagate :class:`TensorInfo` through the graph (inputs in ``model.inputs`` order)."""
    values = {id(t): v for t, v in zip(model.inputs, inputs)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or not node.operation:
                continue
            args = [values[id(t)] for t in node.input_tensors]
            outputs = _apply(node, args, cache)
            for tensor, value in zip(node.outputs, outputs):
                values[id(tensor)] = value
    return [values[id(t)] for t in model.outputs]


def _apply(node, args: list[TensorInfo], cache: dict) -> list[TensorInfo]:
    op = node.operation
    where = f"layer {op.name!r} ({type(op).__name__})"
    graph = _submodel(op)
    if graph is not None:
        return walk(graph, args, cache)
    maps = _layer_maps(op, where, args[0].size if args else None)
    if maps == "merge" or (len(args) > 1 and type(op).__name__ in POINTWISE):
        sizes = {arg.size for arg in args if arg.maps}
        if len(sizes) > 1:
            raise MergeSizes(f"{where}: merges tensors of sizes {sorted(sizes)} for the derived windows")
        sources = sorted({i for arg in args for i in arg.maps})
        merged = {i: tuple(merge([arg.maps[i][axis] for arg in args if i in arg.maps], where) for axis in (0, 1))
                  for i in sources}
        exacts = [arg.exact for arg in args if arg.maps and arg.exact]
        exact = exacts and tuple((max(e[axis][0] for e in exacts), min(e[axis][1] for e in exacts)) for axis in (0, 1))
        return [TensorInfo(merged, sizes.pop() if sizes else None, exact or None)] * len(node.outputs)
    if len(args) != 1:
        raise EngineError(f"{where}: unsupported layer with {len(args)} image inputs")
    if maps is None:
        if id(op) not in cache:
            cache[id(op)] = probe_layer_maps(op, int(node.input_tensors[0].shape[-1]), where)
        maps = cache[id(op)]
    out = {i: (compose(rows, maps[0]), compose(cols, maps[1])) for i, (rows, cols) in args[0].maps.items()}
    size = exact = None
    if args[0].size:
        size = tuple(output_size(maps[axis], args[0].size[axis]) for axis in (0, 1))
        exact = tuple(exact_range(maps[axis], args[0].exact[axis], size[axis]) for axis in (0, 1))
    return [TensorInfo(out, size, exact)] * len(node.outputs)


# -- reading the fields ----------------------------------------------------------------------

@dataclass(frozen=True)
class AxisFields:
    """The fields along one axis: per source ``r`` (source pixels per output pixel) and the
    context ``X`` (window pixels beyond the ``EF * r`` footprint, without halo)."""

    r: tuple
    context: tuple


def _axis_fields(maps: list[AxisMap], floors, registered: int | None = None) -> AxisFields:
    """Fields along one axis from the output's maps.

    ``floors``: per source, the context of the previous pass, whose window sizes the maps were
    walked with: a larger context than the size relation asks for is kept (the network then
    emits extra pixels after the kept block), so that the window sizes stay in that class.
    """
    context = []
    for m in maps:
        low = math.floor(m.c_hi)
        context.append(low if low >= m.c_lo else math.ceil(m.c_lo))
    if registered is not None:  # one ground span: the largest context on the common corners, plus
        # ``registered`` more lattice steps (reference pixels: the scales' numerators' lcm each)
        scales = [maps[0].s / m.s for m in maps]  # source spacing / reference spacing
        lattice = math.lcm(*(scale.numerator for scale in scales))
        ground = (-(-max(x * scale for x, scale in zip(context, scales)) // lattice) + registered) * lattice
        context = [int(ground / scale) for scale in scales]
    context = [max(x, floor) if floor is not None else x for x, floor in zip(context, floors)]
    return AxisFields(tuple(m.s for m in maps), tuple(context))


def derive_geometry(model, scales=None, names=None, check: bool = True) -> ModelGeometry:
    """The exact serving geometry of a fully convolutional Keras model (one input per source).

    ``scales``: per input, its source spacing / the reference (first) source's spacing
    (Fractions or strings); ``None`` infers them from the network (``SF / r_i``) and a given
    list must agree with it. ``names``: per input, the source name (default: the input names).
    ``check``: run the tiled-vs-whole self-check (:func:`self_check`).
    Raises :class:`EngineError` naming the layer or input that prevents exact serving.
    """
    inputs = model_inputs(model)
    names = list(names) if names is not None else [t.name for t in inputs]
    if len(names) != len(inputs):
        raise EngineError(f"{len(names)} source names for a model with {len(inputs)} inputs")
    for name, tensor in zip(names, inputs):
        if len(tensor.shape) != 4 or tensor.shape[1] is not None or tensor.shape[2] is not None:
            raise EngineError(f"model input {name!r} has shape {tuple(tensor.shape)}; serving needs "
                              "(None, None, None, bands): build it with keras.Input((None, None, bands))")
    try:
        geometry = _settle(model, inputs, names, scales)
    except MergeSizes as error:
        # branches of several sources meet with sizes that differ for the per-source windows:
        # give every source's window one ground span (a network built for registered inputs),
        # the shortest on the sources' common corners with which the branches meet
        for extra in range(MAX_SPAN_STEPS):
            try:
                geometry = _settle(model, inputs, names, scales, registered=extra)
                break
            except MergeSizes:
                continue
        else:
            raise error
    return self_check(model, geometry) if check else geometry


class MergeSizes(EngineError):
    """Branches meet with different sizes for the derived windows."""


def _settle(model, inputs, names, scales, registered: int | None = None) -> ModelGeometry:
    """Derivation passes until the geometry is stable (see :func:`derive_geometry`)."""
    geometry, probes = None, {}
    for _ in range(MAX_PASSES):  # strided "same" padding depends on the window sizes: iterate
        # (each pass walks with the previous pass's window sizes; contexts only grow)
        candidate = _derive(model, inputs, names, scales, geometry, probes, registered)
        if candidate == geometry:
            return geometry
        geometry = candidate
    raise EngineError(f"the model's geometry does not settle after {MAX_PASSES} passes: its padding depends "
                      "on the window size (strided 'same' convolutions?); use 'valid' padding or pooling to down-sample")


def window_sizes(geometry: ModelGeometry, tile: int) -> list[int]:
    """Per source, the window (pixels, per axis) a tile of ``tile`` output pixels reads."""
    return [int(tile * geometry.ratio(i)) + s.rf - geometry.footprint(i) for i, s in enumerate(geometry.sources)]


def _derive(model, inputs, names, scales, previous: ModelGeometry | None, probes: dict,
            registered: int | None = None) -> ModelGeometry:
    """One pass: walk the graph (with the window sizes of ``previous``, if any) and read the fields.

    ``probes``: probed layer maps by layer id, kept between passes."""
    sizes = window_sizes(previous, _walk_tile(previous)) if previous else [None] * len(inputs)
    info = {id(t): TensorInfo({i: (SOURCE, SOURCE)}, n and (n, n), n and ((0, n), (0, n)))
            for i, (t, n) in enumerate(zip(inputs, sizes))}
    walked = walk(model, [info[id(t)] for t in model.inputs], probes)
    outputs = [value.maps for value in walked]
    for out_tensor, value in zip(model.outputs, outputs):
        if len(out_tensor.shape) != 4:
            raise EngineError(f"model output {out_tensor.name!r} has rank {len(out_tensor.shape)}; not an image")
        missing = [names[i] for i in range(len(inputs)) if i not in value]
        if missing:
            raise EngineError(f"model input(s) {', '.join(missing)} do not reach output {out_tensor.name!r}")
    per_source = [tuple(merge([value[i][axis] for value in outputs], "model outputs") for axis in (0, 1))
                  for i in range(len(inputs))]
    ef = math.lcm(*(m.period for maps in per_source for m in maps))
    floors = previous.extra["context"] if previous else [None] * len(inputs)
    rows, cols = (_axis_fields([maps[axis] for maps in per_source], floors, registered) for axis in (0, 1))
    if (rows.r, rows.context) != (cols.r, cols.context):
        raise EngineError("the model's fields differ between rows and columns; DeepField serves square fields")
    sf = rows.r[0]
    derived_scales = [sf / r for r in rows.r]
    if scales is not None:
        if len(scales) != len(inputs):
            raise EngineError(f"{len(scales)} source scales for a model with {len(inputs)} inputs")
        for name, given, derived in zip(names, scales, derived_scales):
            if Fraction(given) != derived:
                raise EngineError(f"source {name!r} has spacing scale {Fraction(given)} but the model "
                                  f"expects {derived} (x the reference source's spacing)")
    periods = _halo_periods(walked, previous) if previous else 0
    return _geometry(inputs, names, rows, derived_scales, ef, sf, periods)


def _walk_tile(geometry: ModelGeometry) -> int:
    return -(-WALK_TILE // geometry.ef) * geometry.ef


def _halo_periods(outputs: list[TensorInfo], previous: ModelGeometry) -> int:
    """Halo periods ``m`` from the exact ranges of the outputs, walked with ``previous``'s windows
    for a tile of ``N`` output pixels: the kept block ``[m EF, m EF + N)`` must be exact. Widening
    every window by one period keeps the contamination from the left edge where it is and moves
    the right edge two periods further (once the tile is wide enough for the two not to meet;
    else the next pass, with wider windows, corrects it)."""
    ef, n = previous.ef, _walk_tile(previous)
    periods = 0
    for value in outputs:
        for first, end in value.exact:
            periods = max(periods, -(-first // ef), -(-(n + 2 * previous.crop - end) // ef))
    return periods


def _geometry(inputs, names, fields: AxisFields, scales, ef, sf, periods) -> ModelGeometry:
    sources = []
    for name, tensor, r, x, scale in zip(names, inputs, fields.r, fields.context, scales):
        footprint = int(ef * r)
        sources.append(SourceGeometry(name, int(tensor.shape[-1]), footprint + x + 2 * periods * footprint, scale))
    return ModelGeometry(tuple(sources), ef, sf, periods * ef, extra={
        "period": ef, "regime": "valid" if periods == 0 else "same",
        "context": list(fields.context), "halo": [periods * int(ef * r) for r in fields.r]})


def grow_halo(geometry: ModelGeometry, periods: int = 1) -> ModelGeometry:
    """The same geometry with ``periods`` more EF periods of halo on every side."""
    sources = tuple(replace(s, rf=s.rf + 2 * periods * geometry.footprint(i)) for i, s in enumerate(geometry.sources))
    extra = dict(geometry.extra)
    extra["halo"] = [h + periods * geometry.footprint(i) for i, h in enumerate(extra.get("halo", [0] * len(sources)))]
    extra["regime"] = "same"
    return ModelGeometry(sources, geometry.ef, geometry.sf, geometry.crop + periods * geometry.ef, extra)


def with_ef(geometry: ModelGeometry, ef: int) -> ModelGeometry:
    """The same geometry served with a larger expression field ``ef`` (a multiple of the derived one)."""
    if ef % geometry.ef:
        raise EngineError(f"expression field {ef} is not a multiple of the model's period {geometry.ef}")
    sources = tuple(replace(s, rf=s.rf + int((ef - geometry.ef) * geometry.ratio(i)))
                    for i, s in enumerate(geometry.sources))
    return ModelGeometry(sources, ef, geometry.sf, geometry.crop, dict(geometry.extra))


# -- the self-check --------------------------------------------------------------------------

def tiling_error(model, geometry: ModelGeometry, tile: int | None = None, seed: int = 0) -> float:
    """Max abs difference between 2 x 2 tiles of ``tile`` output pixels and one whole tile.

    Each source gets a random "padded image" of ``2*tile*r_i + RF_i - EF*r_i`` pixels; tiles
    read their windows by region propagation and keep ``[crop, crop + tile)``. The difference
    is relative to ``max(1, max |output|)``; infinite when the model emits too few pixels or
    refuses the window sizes (branches whose sizes do not match).
    """
    ef, crop = geometry.ef, geometry.crop
    tile = tile or ef * max(1, -(-4 // ef))
    rng = np.random.default_rng(seed)
    whole_inputs, tile_inputs = [], []
    for i, (source, size, window) in enumerate(zip(geometry.sources, window_sizes(geometry, 2 * tile),
                                                   window_sizes(geometry, tile))):
        image = rng.uniform(-1, 1, size=(1, size, size, source.bands)).astype("float32")
        whole_inputs.append(image)
        step = int(tile * geometry.ratio(i))
        tile_inputs.append(np.concatenate([image[:, y * step:y * step + window, x * step:x * step + window]
                                           for y in (0, 1) for x in (0, 1)]))
    try:
        whole = call_model(model, whole_inputs)
        tiles = call_model(model, tile_inputs)
    except Exception:
        return math.inf
    error = 0.0
    for out_whole, out_tiles in zip(whole, tiles):
        if min(out_whole.shape[1:3]) < crop + 2 * tile or min(out_tiles.shape[1:3]) < crop + tile:
            return math.inf
        kept = out_whole[0, crop:crop + 2 * tile, crop:crop + 2 * tile]
        parts = [out_tiles[k, crop:crop + tile, crop:crop + tile] for k in range(4)]
        mosaic = np.concatenate([np.concatenate(parts[:2], axis=1), np.concatenate(parts[2:], axis=1)], axis=0)
        scale = max(1.0, float(np.abs(kept).max()))
        error = max(error, float(np.abs(mosaic - kept).max()) / scale)
    return error


def self_check(model, geometry: ModelGeometry) -> ModelGeometry:
    """Verify tiled == whole serving; grow the halo by one period once if needed, else raise."""
    error = tiling_error(model, geometry)
    if error <= TOLERANCE:
        return geometry
    grown = grow_halo(geometry)
    grown_error = tiling_error(model, grown)
    if grown_error <= TOLERANCE:
        return grown
    raise EngineError(f"tiled serving does not reproduce whole-image serving for this model "
                      f"(max difference {error:.3g} with the derived geometry, {grown_error:.3g} with one "
                      f"more period of halo; inf: the model refuses the window sizes): it has a layer DeepField "
                      "does not model exactly")


def check_declared(derived: ModelGeometry, declared: ModelGeometry) -> list[str]:
    """Messages for every field where the declared geometry disagrees with the derived one.

    A declared EF that is a multiple of the derived one is accepted (with RFs to match).
    """
    if len(derived.sources) != len(declared.sources):
        return [f"{len(declared.sources)} inputs declared, the model has {len(derived.sources)}"]
    messages = []
    if Fraction(declared.sf) != Fraction(derived.sf):
        messages.append(f"SF {declared.sf} declared, the model's is {derived.sf}")
    if declared.ef % derived.ef:
        messages.append(f"EF {declared.ef} declared, the model's is {derived.ef} (or a multiple)")
    else:
        derived = with_ef(derived, declared.ef)
    if declared.crop != derived.crop:
        messages.append(f"crop {declared.crop} declared, the model's is {derived.crop}")
    for mine, theirs in zip(derived.sources, declared.sources):
        if theirs.rf != mine.rf:
            messages.append(f"input {theirs.name!r}: RF {theirs.rf} declared, the model's is {mine.rf}")
        if Fraction(theirs.scale) != Fraction(mine.scale):
            messages.append(f"input {theirs.name!r}: scale {theirs.scale} declared, the model's is {mine.scale}")
    return messages
