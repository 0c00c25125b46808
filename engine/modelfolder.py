"""The model folder: a Keras model and the metadata that serves it.

Format ``deepfield-model`` version 1 (one folder, written atomically)::

    <folder>/
      model.keras        the Keras 3 model (inputs (None, None, bands), one per source)
      deepfield.json     the metadata below
      custom.py          optional: user code imported before loading (custom layers)

``deepfield.json``::

    {"format": "deepfield-model", "version": 1,
     "task": "classification" | "segmentation" | "regression" | "super_resolution",
     "inputs": [{"name": "pan", "bands": 1, "rf": 56, "scale": "1", "nodata": [0.0] | null,
                 "spacing": [28.5, 28.5] | null}],
     "ef": 8, "sf": "1", "crop": 24,
     "outputs": [{"name": "output", "kind": "probabilities" | "regression" | "image", "bands": 3}],
     "classes": [{"value": 1, "name": "water", "color": "#1f78b4"}],
     "normalisation": {"pan": {"mean": [412.3], "std": [97.1]}},
     "training": {...free-form...}}

Inputs are listed in source order (source 0 is the reference); ``rf`` is in that source's
pixels, ``scale`` its spacing over the reference's, ``nodata`` one value per band, ``spacing``
(optional; absent in older folders) the pixel size (x, y) of the rasters it was trained on, in
their CRS units (Apply model warns when a source's differs). ``ef``,
``crop`` are output pixels, ``sf`` output spacing over the reference spacing (see
docs/architecture.md, "Model geometry"). Normalisation is applied *inside* the model: the
statistics are recorded for information. Classes (classifiers) list one entry per output
channel, in channel order. Loading checks the declared geometry against the one derived
from the network (:mod:`.fields`).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .contract import MODEL_TASKS
from .fields import check_declared, derive_geometry, model_inputs
from .geometry import ModelGeometry, SourceGeometry
from .outputs import atomic_output
from .errors import EngineError, NotAModelFolder
from .classes import ClassStyle

FORMAT = "deepfield-model"
VERSION = 1
METADATA = "deepfield.json"
MODEL = "model.keras"
CUSTOM_CODE = "custom.py"
TASKS = MODEL_TASKS
OUTPUT_KINDS = ("probabilities", "regression", "image")
TASK_OUTPUT_KIND = {"classification": "probabilities", "segmentation": "probabilities",
                    "regression": "regression", "super_resolution": "image"}
KEYS = {"format", "version", "task", "inputs", "ef", "sf", "crop", "outputs", "classes", "normalisation",
        "training"}
REQUIRED = ("task", "inputs", "ef", "sf", "crop", "outputs")
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class InputInfo:
    """One model input (a source): ``rf`` in its pixels, ``scale`` = its spacing / the reference's."""

    name: str
    bands: int
    rf: int
    scale: Fraction = Fraction(1)
    nodata: tuple | None = None
    spacing: tuple[float, float] | None = None  # training pixel size (x, y), CRS units; None: not recorded


@dataclass(frozen=True)
class OutputInfo:
    """One model output: ``kind`` in :data:`OUTPUT_KINDS`, ``bands`` = channels."""

    name: str
    kind: str
    bands: int


@dataclass(frozen=True)
class ModelMetadata:
    """What ``deepfield.json`` holds (see the module docstring)."""

    task: str
    inputs: tuple[InputInfo, ...]
    ef: int
    sf: Fraction
    crop: int
    outputs: tuple[OutputInfo, ...]
    classes: tuple[ClassStyle, ...] = ()  # one per probabilities channel, in channel order
    normalisation: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @property
    def geometry(self) -> ModelGeometry:
        sources = tuple(SourceGeometry(i.name, i.bands, i.rf, i.scale) for i in self.inputs)
        return ModelGeometry(sources, self.ef, self.sf, self.crop)

    @classmethod
    def for_model(cls, model, task: str, *, geometry: ModelGeometry | None = None, classes=(),
                  sources: list[dict] | None = None, normalisation: dict | None = None,
                  training: dict | None = None, output_kind: str | None = None) -> "ModelMetadata":
        """Metadata for a Keras model: inputs and geometry from the network.

        ``task``: one of :data:`TASKS`, or a dataset label kind (``class``, ``segmentation``,
        ``image``: super-resolution when SF < 1, else regression). ``geometry``: as derived by
        :func:`.fields.derive_geometry` (derived here when ``None``). ``classes``: ``ClassStyle``
        or dicts with ``value``, ``name``, ``color`` (other keys, like the manifest's ``index``,
        are ignored), one per probabilities channel. ``sources``: dataset manifest source
        entries (``name``, ``scale``, ``nodata``, ``mean``, ``std``), which give the scales,
        nodata values and normalisation. ``normalisation``: ``{input: {"mean", "std"}}``.
        """
        sources = list(sources or [])
        if geometry is None:
            scales = [Fraction(str(s.get("scale", "1"))) for s in sources] if sources else None
            names = [s["name"] for s in sources] if sources else None
            geometry = derive_geometry(model, scales, names)
        task = _task_name(task, geometry.sf)
        nodata = {s["name"]: s.get("nodata") for s in sources}
        spacing = {s["name"]: _spacing(s.get("spacing"), s["name"]) for s in sources}
        inputs = tuple(InputInfo(s.name, s.bands, s.rf, Fraction(s.scale), _nodata(nodata.get(s.name), s.bands, s.name),
                                 spacing.get(s.name)) for s in geometry.sources)
        kind = output_kind or TASK_OUTPUT_KIND[task]
        outputs = tuple(OutputInfo(name, kind, int(tensor.shape[-1]))
                        for name, tensor in zip(model.output_names, model.outputs))
        if normalisation is None:
            normalisation = {s["name"]: {"mean": list(map(float, s["mean"])), "std": list(map(float, s["std"]))}
                             for s in sources if "mean" in s and "std" in s}
        classes = tuple(c if isinstance(c, ClassStyle) else _class(c, f"classes[{k}]") for k, c in enumerate(classes))
        return cls(task, inputs, geometry.ef, Fraction(geometry.sf), geometry.crop, outputs, classes,
                   dict(normalisation), dict(training or {}))

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "task": self.task,
            "inputs": [{"name": i.name, "bands": i.bands, "rf": i.rf, "scale": str(i.scale),
                        "nodata": list(i.nodata) if i.nodata is not None else None,
                        **({"spacing": list(i.spacing)} if i.spacing else {})} for i in self.inputs],
            "ef": self.ef, "sf": str(self.sf), "crop": self.crop,
            "outputs": [{"name": o.name, "kind": o.kind, "bands": o.bands} for o in self.outputs],
            "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in self.classes],
            "normalisation": self.normalisation, "training": self.training,
        }

    @classmethod
    def from_dict(cls, doc: dict, where: str = METADATA) -> "ModelMetadata":
        """Parse and validate; :class:`EngineError` names the field that is wrong."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise NotAModelFolder(f"{where}: not a DeepField model description (\"format\" must be {FORMAT!r})")
        if doc.get("version") != VERSION:
            raise NotAModelFolder(f"{where}: version {doc.get('version')!r} is not supported by this DeepField "
                              f"(it reads version {VERSION}); update DeepField")
        unknown = sorted(set(doc) - KEYS)
        if unknown:
            raise EngineError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for key in REQUIRED:
            if key not in doc:
                raise EngineError(f"{where}: missing field {key!r}")
        task = doc["task"]
        if task not in TASKS:
            raise EngineError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}")
        inputs = tuple(_input(item, f"{where}: inputs[{k}]") for k, item in enumerate(_list(doc, "inputs", where)))
        if not inputs:
            raise EngineError(f"{where}: \"inputs\" is empty")
        if inputs[0].scale != 1:
            raise EngineError(f"{where}: inputs[0] is the reference source: its scale must be 1, not {inputs[0].scale}")
        outputs = tuple(_output(item, f"{where}: outputs[{k}]") for k, item in enumerate(_list(doc, "outputs", where)))
        if not outputs:
            raise EngineError(f"{where}: \"outputs\" is empty")
        classes = tuple(_class(item, f"{where}: classes[{k}]") for k, item in enumerate(doc.get("classes") or []))
        metadata = cls(task, inputs, _int(doc, "ef", where, minimum=1), _fraction(doc, "sf", where),
                       _int(doc, "crop", where, minimum=0), outputs, classes,
                       _normalisation(doc.get("normalisation") or {}, inputs, where), dict(doc.get("training") or {}))
        metadata.validate(where)
        return metadata

    def validate(self, where: str = METADATA) -> None:
        """Consistency between fields (names, classes vs probabilities channels, whole footprints)."""
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise EngineError(f"{where}: input names repeat: {names}")
        for k, item in enumerate(self.inputs):
            if (self.ef * self.sf / item.scale).denominator != 1:
                raise EngineError(f"{where}: inputs[{k}] ({item.name}): EF {self.ef} x SF {self.sf} / scale "
                                  f"{item.scale} is not a whole number of pixels")
        probabilities = [o for o in self.outputs if o.kind == "probabilities"]
        if self.task in ("classification", "segmentation") and not probabilities:
            raise EngineError(f"{where}: a {self.task} model needs a \"probabilities\" output")
        if probabilities and self.classes and len(self.classes) != probabilities[0].bands:
            raise EngineError(f"{where}: {len(self.classes)} classes for output {probabilities[0].name!r} "
                              f"of {probabilities[0].bands} channels")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model folder: the Keras model and its metadata."""

    model: object
    metadata: ModelMetadata
    path: Path


# -- parsing helpers -------------------------------------------------------------------------

def _list(doc: dict, key: str, where: str) -> list:
    value = doc[key]
    if not isinstance(value, list):
        raise EngineError(f"{where}: {key!r} must be a list")
    return value


def _require(item, keys: tuple, where: str) -> None:
    if not isinstance(item, dict):
        raise EngineError(f"{where}: must be an object")
    for key in keys:
        if key not in item:
            raise EngineError(f"{where}: missing field {key!r}")


def _int(item: dict, key: str, where: str, minimum: int) -> int:
    value = item[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise EngineError(f"{where}: {key!r} must be an integer >= {minimum}, not {value!r}")
    return value


def _fraction(item: dict, key: str, where: str) -> Fraction:
    try:
        value = Fraction(str(item[key]))
    except (ValueError, ZeroDivisionError):
        raise EngineError(f"{where}: {key!r} must be a fraction such as \"2\" or \"1/4\", not {item[key]!r}") from None
    if value <= 0:
        raise EngineError(f"{where}: {key!r} must be positive, not {item[key]!r}")
    return value


def _nodata(value, bands: int, where: str):
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value] * bands
    if len(values) != bands or not all(v is None or isinstance(v, (int, float)) for v in values):
        raise EngineError(f"{where}: \"nodata\" must be null, a number or {bands} numbers, not {value!r}")
    return tuple(None if v is None else float(v) for v in values)


def _input(item, where: str) -> InputInfo:
    _require(item, ("name", "bands", "rf", "scale"), where)
    bands = _int(item, "bands", where, minimum=1)
    return InputInfo(str(item["name"]), bands, _int(item, "rf", where, minimum=1),
                     _fraction(item, "scale", where), _nodata(item.get("nodata"), bands, where),
                     _spacing(item.get("spacing"), where))


def _spacing(value, where: str) -> tuple[float, float] | None:
    """A recorded pixel size ``[x, y]`` (positive numbers), or None when not recorded."""
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)):
        raise EngineError(f"{where}: \"spacing\" must be null or two positive numbers [x, y], not {value!r}")
    return float(value[0]), float(value[1])


def _output(item, where: str) -> OutputInfo:
    _require(item, ("name", "kind", "bands"), where)
    if item["kind"] not in OUTPUT_KINDS:
        raise EngineError(f"{where}: kind {item['kind']!r} is not one of {', '.join(OUTPUT_KINDS)}")
    return OutputInfo(str(item["name"]), item["kind"], _int(item, "bands", where, minimum=1))


def _class(item, where: str) -> ClassStyle:
    _require(item, ("value", "name", "color"), where)
    _int(item, "value", where, minimum=-2**31)
    if not isinstance(item["color"], str) or not COLOR.match(item["color"]):
        raise EngineError(f"{where}: color {item['color']!r} must be \"#rrggbb\"")
    return ClassStyle(item["value"], str(item["name"]), item["color"].lower())


def _normalisation(doc, inputs: tuple[InputInfo, ...], where: str) -> dict:
    bands = {i.name: i.bands for i in inputs}
    if not isinstance(doc, dict):
        raise EngineError(f"{where}: \"normalisation\" must be an object {{input: {{mean, std}}}}")
    for name, stats in doc.items():
        if name not in bands:
            raise EngineError(f"{where}: normalisation for unknown input {name!r}")
        for key in ("mean", "std"):
            if not isinstance(stats, dict) or len(stats.get(key) or []) != bands[name]:
                raise EngineError(f"{where}: normalisation.{name}.{key} must list {bands[name]} values")
    return dict(doc)


def _task_name(task: str, sf) -> str:
    aliases = {"class": "classification", "image": "super_resolution" if Fraction(sf) < 1 else "regression"}
    task = aliases.get(task, task)
    if task not in TASKS:
        raise EngineError(f"task {task!r} is not one of {', '.join(TASKS)}")
    return task


# -- model vs metadata -----------------------------------------------------------------------

def check_model(model, metadata: ModelMetadata, where: str) -> None:
    """Input/output counts and band counts of the Keras model against the metadata."""
    inputs = model_inputs(model)
    if len(inputs) != len(metadata.inputs):
        raise EngineError(f"{where}: the metadata lists {len(metadata.inputs)} inputs, the model has {len(inputs)}")
    for info, tensor in zip(metadata.inputs, inputs):
        if tensor.shape[-1] != info.bands:
            raise EngineError(f"{where}: input {info.name!r} has {info.bands} bands in the metadata, "
                              f"{tensor.shape[-1]} in the model")
    if len(model.outputs) != len(metadata.outputs):
        raise EngineError(f"{where}: the metadata lists {len(metadata.outputs)} outputs, the model has "
                          f"{len(model.outputs)}")
    for info, tensor in zip(metadata.outputs, model.outputs):
        if tensor.shape[-1] != info.bands:
            raise EngineError(f"{where}: output {info.name!r} has {info.bands} bands in the metadata, "
                              f"{tensor.shape[-1]} in the model")


def check_geometry(model, metadata: ModelMetadata, where: str) -> ModelGeometry:
    """Derive the model's geometry and compare it with the declared one; returns the derived one.

    The geometry the layers give (the walk of :func:`.fields.derive_geometry` without its
    self-check) is compared first: the self-check ran when the geometry was declared (Train model,
    Import model), and on trained weights it no longer tests the layers alone. CPU convolution
    kernels (oneDNN) are chosen by tensor size and round differently for a tile and for the whole
    image: about 5e-5 of the output for a super-resolution network trained a few minutes, which the
    self-check would take for a missing period of halo. A declared geometry the walk does not give
    (one the self-check grew when it was declared) is derived again with the self-check.
    """
    scales, names = [i.scale for i in metadata.inputs], [i.name for i in metadata.inputs]
    derived = derive_geometry(model, scales, names, check=False)
    if check_declared(derived, metadata.geometry):
        derived = derive_geometry(model, scales, names)
    problems = check_declared(derived, metadata.geometry)
    if problems:
        raise EngineError(f"{where}: the declared geometry does not match the network: " + "; ".join(problems))
    return derived


# -- reading and writing ---------------------------------------------------------------------

def read_metadata(path) -> ModelMetadata:
    """The validated metadata of a model folder (the model itself is not loaded)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotAModelFolder(f"{folder} is a file, not a model folder: give the folder Train model wrote")
    if not folder.is_dir():
        raise NotAModelFolder(f"model folder not found: {folder}")
    file = folder / METADATA
    if not file.is_file():
        raise NotAModelFolder(f"{folder} is not a DeepField model folder: {METADATA} is missing")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotAModelFolder(f"{file}: not valid JSON ({error})") from None
    return ModelMetadata.from_dict(doc, str(file))


def load_model_folder(path, verify: bool = True) -> LoadedModel:
    """Load a model folder; ``verify`` also checks the declared geometry against the network."""
    folder = Path(path)
    metadata = read_metadata(folder)
    file = folder / MODEL
    if not file.is_file():
        raise NotAModelFolder(f"{folder}: the model file {MODEL} is missing")
    from .device import tensorflow
    from .nodata import nodata_fill_class

    tensorflow()
    import keras

    _import_custom_code(folder)
    nodata_fill_class()  # registers DeepField's own layer with Keras
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as error:
        raise NotAModelFolder(f"{file}: cannot load the Keras model ({type(error).__name__}: {error})") from None
    check_model(model, metadata, str(folder))
    if verify:
        check_geometry(model, metadata, str(folder))
    return LoadedModel(model, metadata, folder)


def _import_custom_code(folder: Path) -> None:
    """Import the folder's ``custom.py`` (custom layers registered with Keras) if it has one."""
    from ..models import import_python_file

    if (folder / CUSTOM_CODE).is_file():
        import_python_file(folder / CUSTOM_CODE, "model's custom code")


def write_model_files(folder, model, metadata: ModelMetadata, custom_code=None) -> None:
    """Write ``model.keras`` and ``deepfield.json`` (and ``custom.py``) into an existing folder.

    Not atomic by itself: call it inside ``atomic_output(path, folder=True)`` (as
    :func:`save_model_folder` does) when the folder holds more files.
    """
    folder = Path(folder)
    check_model(model, metadata, "save_model_folder")
    metadata.validate("save_model_folder")
    model.save(folder / MODEL)
    (folder / METADATA).write_text(json.dumps(metadata.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    if custom_code:
        shutil.copyfile(custom_code, folder / CUSTOM_CODE)


def save_model_folder(path, model, metadata: ModelMetadata, custom_code=None) -> Path:
    """Write a model folder atomically (``<path>.part`` renamed on success); returns ``path``."""
    with atomic_output(path, folder=True) as folder:
        write_model_files(folder, model, metadata, custom_code)
    return Path(path)


# -- description -----------------------------------------------------------------------------

def describe(loaded: LoadedModel) -> list[str]:
    """Text lines: task, inputs, outputs, classes, fields and normalisation of a loaded model folder
    (what a tile reads is :func:`.serving.describe_serving`)."""
    meta = loaded.metadata
    geometry = meta.geometry
    lines = [f"DeepField model {loaded.path}", f"Task: {meta.task}", "Inputs (source order, the first is the reference):"]
    for k, info in enumerate(meta.inputs):
        nodata = "none" if info.nodata is None else ", ".join(map(str, info.nodata))
        lines.append(f"  {info.name}: {info.bands} band(s), scale {info.scale}, RF {info.rf} px "
                     f"({geometry.before(k)} before, {geometry.after(k)} after by the patch-centre rule), windows "
                     f"start on the corners shared by every source, every {geometry.lattice / Fraction(info.scale)} "
                     f"px, {geometry.window_before(k)} px before a block, nodata {nodata}")
    lines.append("Outputs: " + ", ".join(f"{o.name} ({o.kind}, {o.bands} band(s))" for o in meta.outputs))
    if meta.classes:
        lines.append("Classes: " + ", ".join(f"{c.value} {c.name} {c.color}" for c in meta.classes))
    lines.append(f"Fields: EF {meta.ef} output px, SF {meta.sf}, crop {meta.crop} output px")
    if meta.normalisation:
        lines.append("Normalisation (inside the model): " + "; ".join(
            f"{name} mean {stats['mean']} std {stats['std']}" for name, stats in meta.normalisation.items()))
    return lines
