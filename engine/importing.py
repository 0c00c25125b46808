"""Import a network trained elsewhere: a Keras ``.keras`` / ``.h5`` file or a TensorFlow SavedModel
folder becomes a DeepField model folder (:mod:`.modelfolder`) that Describe model and Apply model
serve like a trained one.

The folder's ``model.keras`` is a small Keras model around the network: one input
``(None, None, bands)`` per source (named after it), the optional per-band normalisation
``(x - mean) / std`` (a ``Normalization`` layer), the network, one output layer per network output.

- A Keras network is nested as it is (its weights are in ``model.keras``).
- A SavedModel is copied, unchanged, into ``<folder>/savedmodel`` and called through one of its
  signatures by :class:`.imported_layers.SavedModelNetwork`; ``imported_layers.py`` is the folder's
  ``custom.py``. SavedModels with one image input only: the SavedModel is one opaque layer,
  whose map :mod:`.fields` probes on inputs of up to 40 pixels, which is enough for convolutional
  and strided networks, not for U-Nets (save those as ``.keras``, whose layers are read one by one).
- A network with a **fixed input size** (``(S, S, bands)``: a patch classifier with ``Flatten`` and
  ``Dense``, or any network exported with a fixed signature) is wrapped in
  :class:`.imported_layers.SlidingWindows`: served, it sees windows of exactly ``S`` x ``S``
  pixels, ``EF * r`` pixels apart, where EF is its output size (1 for a vector output) and SF (the
  spacing scale, declared: default 1) sets ``r``. Single-input networks only.

The geometry (RF, EF, SF, crop) is derived from the wrapped model by :func:`.fields.derive_geometry`
and proven by its tiled-vs-whole self-check; values the user declares (OTBTF's receptive field,
expression field, spacing scale; the sources' scales and band counts) are checked against it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from .classes import ClassStyle, class_color, read_classes
from .errors import EngineError, InvalidSpec
from .fields import TOLERANCE, check_declared, derive_geometry, model_inputs, pack_inputs, tiling_error, with_ef
from .geometry import ModelGeometry
from .modelfolder import ModelMetadata, check_geometry, write_model_files
from .outputs import atomic_output
from .training.network import variance

#: The custom layers of imported models, copied into their folder as ``custom.py``.
LAYERS_FILE = Path(__file__).with_name("imported_layers.py")
#: Where an imported SavedModel is kept inside the model folder.
SAVED_MODEL = "savedmodel"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SOURCE_KEYS = {"name", "bands", "scale", "rf", "nodata", "mean", "std"}


@dataclass(frozen=True)
class Network:
    """A loaded network: ``layer`` is called with its inputs (a Keras model, or a
    ``SavedModelNetwork`` layer). ``inputs``: per network input, ``(name, rows, cols, bands)``
    (``rows``/``cols`` ``None`` when any size is accepted). ``outputs``: the names of the tensors
    ``layer`` returns, in that order. ``saved_model``: the SavedModel folder it comes from, if
    any. ``kind``: ``"keras"`` or ``"savedmodel"``."""

    layer: object
    inputs: tuple[tuple, ...]
    outputs: tuple[str, ...]
    path: Path
    kind: str
    saved_model: Path | None = None

    def output_indices(self, names) -> list[int]:
        """Indices of the outputs called ``names`` (all when empty); :class:`InvalidSpec` otherwise."""
        if not names:
            return list(range(len(self.outputs)))
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise InvalidSpec(f"network {self.path} has no output {', '.join(map(repr, unknown))}; its outputs: "
                              f"{', '.join(self.outputs)}")
        return [self.outputs.index(n) for n in names]

    @property
    def fixed_size(self) -> int | None:
        """The input window size (pixels) of a network with a fixed input size, else ``None``."""
        sizes = {(rows, cols) for _, rows, cols, _ in self.inputs}
        if sizes == {(None, None)}:
            return None
        if len(self.inputs) > 1:
            raise InvalidSpec(f"network {self.path}: its inputs have fixed sizes {sorted(map(str, sizes))}; only "
                              "single-input networks with a fixed size can be imported (export it with spatial "
                              "size None, or as .keras)")
        (rows, cols), = sizes
        if rows is None or cols is None or rows != cols:
            raise InvalidSpec(f"network {self.path}: its input is {rows} x {cols} pixels; DeepField serves square "
                              "windows (rows and columns both fixed and equal, or both None)")
        return rows


@dataclass(frozen=True)
class ImportedModel:
    """What Import model writes: the wrapped Keras model, its metadata, the SavedModel to copy."""

    model: object
    metadata: ModelMetadata
    saved_model: Path | None
    custom_code: Path | None


# -- loading the network ---------------------------------------------------------------------

def load_network(path, endpoint: str = "serving_default") -> Network:
    """Load a ``.keras`` / ``.h5`` file or a SavedModel folder; :class:`InvalidSpec` when it is none."""
    from .device import tensorflow

    tensorflow()
    path = Path(path)
    if not path.exists():
        raise InvalidSpec(f"network {path}: not found; give a .keras or .h5 file or a SavedModel folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InvalidSpec(f"network {path}: a folder without saved_model.pb is not a TensorFlow SavedModel; "
                              "give a SavedModel folder or a .keras / .h5 file")
        return _load_saved_model(path, endpoint)
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise InvalidSpec(f"network {path}: not a Keras model file (expected {', '.join(KERAS_SUFFIXES)}) "
                          "nor a SavedModel folder")
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise InvalidSpec(f"network {path}: not a Keras model that this Keras can load "
                          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                          "if it uses custom layers, save it with standard ones or as a SavedModel") from None
    for tensor in model_inputs(model):
        if len(tensor.shape) != 4 or tensor.shape[-1] is None:
            raise InvalidSpec(f"network {path}: input {tensor.name!r} of shape {tuple(tensor.shape)} is not an image "
                              "(batch, rows, cols, bands)")
    inputs = tuple((t.name, t.shape[1], t.shape[2], t.shape[-1]) for t in model_inputs(model))
    return Network(model, inputs, tuple(model.output_names), path, "keras")


def _load_saved_model(path: Path, endpoint: str) -> Network:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:
        raise InvalidSpec(f"network {path}: TensorFlow cannot load this SavedModel ({type(error).__name__})") from None
    if endpoint not in loaded.signatures:
        raise InvalidSpec(f"network {path}: the SavedModel has no signature {endpoint!r}; its signatures: "
                          f"{', '.join(loaded.signatures) or 'none'} (set the endpoint)")
    function = loaded.signatures[endpoint]
    specs = function.structured_input_signature[1]
    images = {name: spec for name, spec in specs.items() if len(spec.shape) == 4}
    if len(images) != len(specs) or not images:
        raise InvalidSpec(f"network {path}: signature {endpoint!r} takes {len(specs)} input(s), "
                          f"{len(images)} of them images [batch, rows, cols, bands]; only image inputs are served")
    if len(images) > 1:
        raise InvalidSpec(f"network {path}: the SavedModel takes {len(images)} image inputs "
                          f"({', '.join(images)}); Import model serves SavedModels with one input: save a "
                          "multi-input network as .keras instead")
    (name, spec), = images.items()
    layers = _layers_module()
    outputs = sorted(function.structured_outputs)
    layer = layers.SavedModelNetwork(SAVED_MODEL, endpoint, name, outputs, load_from=path, name="savedmodel")
    return Network(layer, ((name, spec.shape[1], spec.shape[2], spec.shape[3]),), tuple(outputs), path, "savedmodel",
                   path)


def _layers_module():
    """:mod:`.imported_layers` imported as a model folder's ``custom.py`` is (registers its layers)."""
    from ..models import import_python_file

    return import_python_file(LAYERS_FILE, "imported layers")


# -- the sources ------------------------------------------------------------------------------

def check_sources(network: Network, sources: list[dict]) -> list[int]:
    """Check the sources against the network's inputs before any heavy work.

    Returns, per source, the index of the network input it feeds: by name when the source names
    are the network's input names, else in order. Errors name the source and the fix.
    """
    names = [s["name"] for s in sources]
    net_names = [i[0] for i in network.inputs]
    for source in sources:
        unknown = sorted(set(source) - SOURCE_KEYS)
        if unknown:
            raise InvalidSpec(f"source {source['name']!r}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(SOURCE_KEYS))}")
    if len(set(names)) != len(names):
        raise InvalidSpec(f"source names repeat: {names}; give each source its own name")
    if len(sources) != len(net_names):
        more = "more" if len(sources) > len(net_names) else "fewer"
        raise InvalidSpec(f"{len(sources)} source(s) given ({', '.join(names)}), {more} than the {len(net_names)} "
                          f"input(s) of network {network.path} ({', '.join(net_names)}); give one source per "
                          "network input, in the network's input order")
    order = [net_names.index(n) for n in names] if sorted(names) == sorted(net_names) else list(range(len(names)))
    for source, k in zip(sources, order):
        bands = network.inputs[k][3]
        if source.get("bands") is not None and int(source["bands"]) != bands:
            raise InvalidSpec(f"source {source['name']!r} has {source['bands']} band(s) but network input "
                              f"{net_names[k]!r} takes {bands}; give a raster (and bands) of {bands} band(s), "
                              "or list the sources in the network's input order")
        for key in ("mean", "std"):
            if source.get(key) is not None and (not isinstance(source[key], list) or len(source[key]) != bands):
                raise InvalidSpec(f"source {source['name']!r}: {key} {source[key]!r} is not a list of {bands} value(s) "
                                  f"(the network input takes {bands} band(s)); give one {key} per band")
        if (source.get("mean") is None) != (source.get("std") is None):
            raise InvalidSpec(f"source {source['name']!r}: normalisation needs both mean and std (one per band)")
        if source.get("std") is not None and min(source["std"]) < 0:
            raise InvalidSpec(f"source {source['name']!r}: std must not be negative")
        if source.get("scale") is not None:
            fraction(source["scale"], f"source {source['name']!r}: scale")
        rf = source.get("rf")
        if rf is not None and (not isinstance(rf, int) or isinstance(rf, bool) or rf < 1):
            raise InvalidSpec(f"source {source['name']!r}: rf must be a positive integer (its pixels), not {rf!r}")
    return order


def fraction(value, what: str) -> Fraction:
    """A positive spacing ratio from ``"2"``, ``"1/2"``, 0.5 or 2; :class:`InvalidSpec` naming ``what``."""
    try:
        result = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        result = Fraction(0)
    if result <= 0:
        raise InvalidSpec(f"{what} must be a positive number or fraction such as 2 or 1/2, not {value!r}")
    return result


# -- building the served model ------------------------------------------------------------------

def wrap_network(network: Network, sources: list[dict], order: list[int], keep: list[int],
                 spacing_scale: Fraction | None):
    """The Keras model served: per-source inputs, normalisation, the network, its outputs ``keep``
    (indices into ``network.outputs``), named."""
    import keras

    inputs = [keras.Input((None, None, network.inputs[k][3]), name=s["name"]) for s, k in zip(sources, order)]
    values = [keras.layers.Normalization(mean=s["mean"], variance=variance(s["std"]), name=f"normalise_{s['name']}")(x)
              if s.get("mean") is not None else x for s, x in zip(sources, inputs)]
    window = network.fixed_size
    layer = network.layer
    if window is not None:
        layer = _sliding(network, window, spacing_scale or Fraction(1))
    by_input = [values[order.index(k)] for k in range(len(order))]
    outputs = layer(pack_inputs(layer, by_input))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    taken = {s["name"] for s in sources} | {layer.name}
    names = [f"{name}_output" if name in taken else name for name in (network.outputs[k] for k in keep)]
    outputs = [keras.layers.Activation("linear", dtype="float32", name=n)(outputs[k]) for n, k in zip(names, keep)]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                       name="imported")


def _sliding(network: Network, window: int, sf: Fraction):
    """``SlidingWindows`` around a fixed-size network: windows ``block * sf`` reference pixels apart."""
    bands = network.inputs[0][3]
    outputs = network.layer(np.zeros((1, window, window, bands), np.float32))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    blocks = set()
    for out in outputs:
        shape = tuple(out.shape)
        if len(shape) == 2:
            blocks.add(1)
        elif len(shape) == 4 and shape[1] == shape[2]:
            blocks.add(int(shape[1]))
        else:
            raise InvalidSpec(f"network {network.path}: output of shape {shape} for a {window} x {window} window is "
                              "neither a vector nor a square image")
    if len(blocks) > 1:
        raise InvalidSpec(f"network {network.path}: its outputs have different sizes ({sorted(blocks)} px)")
    block = blocks.pop()
    step = block * sf
    if step.denominator != 1:
        raise InvalidSpec(f"spacing scale {sf}: the network's {block} output px per window must cover a whole number "
                          f"of input pixels (here {step}); give a spacing scale that is a multiple of 1/{block}")
    return _layers_module().SlidingWindows(network.layer, window, int(step), block, len(outputs),
                                           name="sliding_windows")


# -- the geometry and the metadata ----------------------------------------------------------------

#: Why a SavedModel may not import, and the fix.
OPAQUE_HINT = ("A SavedModel is probed as one layer, which pooling and deep U-Nets defeat: save the network as "
               ".keras (its layers are then read one by one)")
#: Tiles (in EFs) of the extra self-check: 3 EFs puts the second tile at an odd number of EFs.
PROOF_TILE = 3


def prove_geometry(model, derived: ModelGeometry) -> ModelGeometry:
    """``derived``, once tiles of :data:`PROOF_TILE` EFs equal one whole tile
    (:func:`.fields.tiling_error`), on top of :func:`.fields.derive_geometry`'s own self-check.

    A SavedModel is one opaque layer whose map :mod:`.fields` probes; a network with pooling can
    look shift-invariant pixel by pixel while it only repeats every few pixels, and pass a
    self-check whose tiles start on multiples of that: tiles at odd multiples of EF show it.
    """
    error = tiling_error(model, derived, tile=derived.ef * PROOF_TILE)
    if error > TOLERANCE:
        raise EngineError(f"tiled serving does not reproduce whole-image serving for this network (max difference "
                          f"{error:.3g} for tiles of {derived.ef * PROOF_TILE} output px; inf: the network refuses "
                          "the window sizes)")
    return derived


def declared_geometry(derived: ModelGeometry, sources: list[dict], expression_field: int | None,
                      spacing_scale: Fraction | None) -> ModelGeometry:
    """The geometry to serve: the derived one, with a declared EF (a multiple of the derived one);
    :class:`InvalidSpec` stating both values where a declared RF, EF, SF or scale differs."""
    problems = []
    for source, derived_source in zip(sources, derived.sources):
        if source.get("scale") is not None:
            scale = fraction(source["scale"], f"source {source['name']!r}: scale")
            if scale != derived_source.scale:
                problems.append(f"source {source['name']!r}: scale {scale} declared, the network's is "
                                f"{derived_source.scale}")
    base = with_ef(derived, expression_field) if expression_field and expression_field % derived.ef == 0 else derived
    declared = replace(base, ef=expression_field or base.ef, sf=spacing_scale or base.sf, sources=tuple(
        replace(g, rf=int(s["rf"])) if s.get("rf") is not None else g for s, g in zip(sources, base.sources)))
    problems += check_declared(derived, declared)
    if problems:
        raise InvalidSpec("the declared fields do not match the network: " + "; ".join(problems)
                          + ". Leave them empty to use the network's own")
    return with_ef(derived, declared.ef)


def import_network(network_path, sources: list[dict], task: str, *, classes=(), classes_file=None,
                   expression_field: int | None = None, spacing_scale=None, endpoint: str = "serving_default",
                   outputs=(), log: Callable[[str], None] = lambda message: None) -> ImportedModel:
    """Load a network, check it against the declared sources and fields, derive and prove its geometry.

    ``sources``, ``classes``, ``classes_file``, ``expression_field``, ``spacing_scale``, ``endpoint``,
    ``outputs``: as in :class:`.contract.ImportModelSpec`.
    """
    sf = fraction(spacing_scale, "spacing scale") if spacing_scale not in (None, "") else None
    styles = class_styles(classes, classes_file)
    network = load_network(network_path, endpoint)
    order = check_sources(network, sources)
    keep = network.output_indices(outputs)
    if network.fixed_size is not None:
        log(f"{network.path}: fixed input of {network.fixed_size} x {network.fixed_size} px: served window by window")
    model = wrap_network(network, sources, order, keep, sf)
    log("deriving the receptive field, expression field and spacing scale from the network")
    try:
        derived = prove_geometry(model, derive_geometry(model, None, [s["name"] for s in sources]))
    except EngineError as error:
        hints = [f"The network's outputs ({', '.join(network.outputs[k] for k in keep)}) may differ in size or "
                 "spacing (OTBTF's cropped outputs do): choose the one to serve with outputs"] if len(keep) > 1 else []
        if network.kind == "savedmodel":
            hints.append(OPAQUE_HINT)
        if not hints:
            raise
        raise EngineError(f"{network.path}: {error}. " + ". ".join(hints)) from None
    geometry = declared_geometry(derived, sources, expression_field, sf)
    metadata = ModelMetadata.for_model(
        model, task, geometry=geometry, classes=styles, sources=[
            {"name": s["name"], "nodata": s.get("nodata"), **({"mean": s["mean"], "std": s["std"]}
                                                             if s.get("mean") is not None else {})}
            for s in sources],
        training={"imported_from": str(network.path), "format": network.kind, "endpoint": endpoint
                  if network.kind == "savedmodel" else None, "fixed_input": network.fixed_size})
    metadata.validate(f"import_model ({network.path})")
    check_geometry(model, metadata, f"import_model ({network.path}): as Apply model will load it")
    uses_layers = network.kind == "savedmodel" or network.fixed_size is not None
    return ImportedModel(model, metadata, network.saved_model, LAYERS_FILE if uses_layers else None)


def class_styles(classes, classes_file) -> tuple[ClassStyle, ...]:
    """The classes, in output channel order: from dicts (``value``, ``name``, optional ``color``) or a
    ``.qml`` / ``.csv`` file (sorted by value); a missing colour gets the default one."""
    if classes_file:
        path = Path(classes_file)
        if not path.is_file():
            raise InvalidSpec(f"classes file {path} not found")
        try:
            found = read_classes(path)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidSpec(f"classes file: {error}") from None
        if not found:
            raise InvalidSpec(f"classes file {path}: no class found (a .qml needs paletted entries with labels, "
                              "a .csv rows value,name[,color])")
        classes = [found[value] for value in sorted(found)]
    styles = []
    for k, item in enumerate(classes):
        if not isinstance(item, ClassStyle):
            if not isinstance(item, dict) or "value" not in item or "name" not in item:
                raise InvalidSpec(f"classes[{k}] must have a value and a name, not {item!r}")
            item = ClassStyle(int(item["value"]), str(item["name"]), item.get("color") or "")
        styles.append(replace(item, color=item.color.lower() or class_color(k)))
    return tuple(styles)


def save_imported(output, imported: ImportedModel) -> Path:
    """Write the model folder atomically: ``model.keras``, ``deepfield.json``, and for SavedModels and
    fixed-size networks ``custom.py`` (and ``savedmodel/``)."""
    with atomic_output(output, folder=True) as folder:
        write_model_files(folder, imported.model, imported.metadata, imported.custom_code)
        if imported.saved_model is not None:
            shutil.copytree(imported.saved_model, Path(folder) / SAVED_MODEL)
    return Path(output)
