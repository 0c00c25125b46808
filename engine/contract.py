"""The contract between QGIS and the engine: vocabularies and job specs (standard library only).

Everything that both sides must spell the same way is defined here once: the names of border
modes, sampling strategies, label kinds, products, report files, the temporary-output suffix, and
one dataclass spec per engine job. ``algorithms/`` (inside QGIS), ``engine/`` and
``scripts/build_model3.py`` import them from here; nothing here imports numpy, GDAL or TensorFlow,
so QGIS can import this module.

A job spec is the JSON object the worker reads: ``{"job": name, ...}``. Each job's dataclass
parses it with :meth:`JobSpec.from_dict`, which rejects an unknown key and lists the known ones
(a misspelt ``tiles_size`` is an error, never silently ignored).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import PurePath
from typing import Any, ClassVar, TypeVar

from .errors import InvalidSpec

#: Outputs are written under ``<path><PART_SUFFIX>`` and renamed on success.
PART_SUFFIX = ".part"

# -- serving -------------------------------------------------------------------------------------
#: How reads outside a source are filled (as :func:`numpy.pad` modes of the whole image).
BORDER_MODES = ("reflect", "symmetric", "edge", "constant")
#: Serving also accepts OTBTF's ``shrink``: keep only output pixels whose receptive field is inside.
SERVING_BORDERS = BORDER_MODES + ("shrink",)
#: Serving's nodata handling: ``skip`` tiles that are nodata everywhere; ``mask`` also blanks
#: pixels whose receptive field touches nodata.
NODATA_MODES = ("skip", "mask")
#: Rasters a classifier's serving can write.
CLASSIFIER_PRODUCTS = ("class_map", "confidence", "probabilities")
#: Where serving's tiles run: local threads, or Dask workers (a LocalCluster or a scheduler address).
EXECUTORS = ("threads", "dask")
#: Arithmetic serving can run the network in (``bfloat16``: opt-in, native on AVX512_BF16/AMX CPUs).
PRECISIONS = ("float32", "bfloat16")


def sibling_output(path: str, kind: str) -> str:
    """Where serving writes the extra output ``kind`` next to ``path``: ``<stem>_<kind><suffix>``
    (``.tif`` when ``path`` has no suffix). QGIS names its expected outputs with the same rule."""
    path = PurePath(path)
    return str(path.with_name(f"{path.stem}_{kind}{path.suffix or '.tif'}"))

# -- sampling ------------------------------------------------------------------------------------
SAMPLING_STRATEGIES = ("points", "polygons", "label_raster", "grid")
LABEL_STRATEGIES = ("constant", "total", "smallest", "all")
POLYGON_MODES = ("random", "grid")
SPLIT_MODES = ("random", "blocks")
SPLITS = ("train", "valid", "test")
#: How far from 1 the split proportions may sum (0.33 + 0.33 + 0.33 is meant as thirds).
SPLIT_SUM_TOLERANCE = 0.01


def split_proportions(split: dict | None) -> tuple[float, ...]:
    """The train/valid/test proportions of ``split`` (none given: all train), in :data:`SPLITS`
    order; :class:`InvalidSpec` for an unknown split name, a negative proportion, all zero, or
    proportions that do not sum to 1 within :data:`SPLIT_SUM_TOLERANCE` (never silently rescaled)."""
    split = split or {"train": 1.0}
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise InvalidSpec(f"unknown split name(s) {sorted(unknown)}; use {', '.join(SPLITS)}")
    values = tuple(float(split.get(name, 0.0)) for name in SPLITS)
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise InvalidSpec(f"split proportions must be >= 0 and not all 0: {split}")
    if abs(sum(values) - 1) > SPLIT_SUM_TOLERANCE:
        given = " + ".join(f"{name} {value:g}" for name, value in zip(SPLITS, values))
        raise InvalidSpec(f"the split proportions must sum to 1, but {given} = {sum(values):g}: "
                          "give fractions of the positions, e.g. train 0.7, valid 0.15, test 0.15")
    return values

# -- datasets ------------------------------------------------------------------------------------
LABEL_KINDS = ("class", "segmentation", "image")
#: A source name becomes a file name and a model input name: a letter, then letters, digits, ``_``.
SOURCE_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def as_source_name(text: str) -> str:
    """``text`` (a layer name) made a valid source name (:data:`SOURCE_NAME_PATTERN`): runs of other
    characters become ``_``, and ``s_`` is put before a name that does not start with a letter."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    return cleaned if SOURCE_NAME_PATTERN.match(cleaned) else f"s_{cleaned}"


#: The key of a dataset's labels (``labels-00000.npy`` shards): no source may be called so.
DATASET_LABELS = "labels"


def check_dataset_name(name: str, what: str = "source name") -> str:
    """``name`` if it can be a dataset source name (:data:`SOURCE_NAME_PATTERN`, and not
    :data:`DATASET_LABELS`); else :class:`InvalidSpec`."""
    if not SOURCE_NAME_PATTERN.match(name or "") or name == DATASET_LABELS:
        raise InvalidSpec(f"invalid {what} {name!r}: use a letter then letters, digits or '_' "
                          f"(not {DATASET_LABELS!r})")
    return name


# -- training ------------------------------------------------------------------------------------
#: The ``architecture`` that lets the dataset pick the zoo network (engine/training/architecture.py).
AUTOMATIC_ARCHITECTURE = "automatic"
#: Per-class loss weights from the training label counts (see engine.training.network.class_weights).
CLASS_WEIGHTING = ("none", "balanced", "sqrt")
#: Learning-rate schedules over the run (steps or time budget, whichever ends first).
LR_SCHEDULES = ("cosine", "constant")
IMAGE_LOSSES = ("l1", "l2")

# -- evaluation ----------------------------------------------------------------------------------
#: The files Evaluate map writes into its output folder, by result key.
REPORT_FILES = {
    "confusion_matrix_csv": "confusion_matrix.csv",
    "metrics_json": "metrics.json",
    "per_class_csv": "per_class.csv",
    "confusion_matrix_png": "confusion_matrix.png",
    "report_html": "report.html",
}


# -- job specs -----------------------------------------------------------------------------------
S = TypeVar("S", bound="JobSpec")


def check_choice(value: Any, choices: typing.Sequence, key: str, job: str) -> Any:
    """``value`` if it is one of ``choices``, else :class:`InvalidSpec` naming the key and the choices."""
    if value not in choices:
        raise InvalidSpec(f"{job}: {key} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Base of every job's spec: strict parsing from the worker's JSON object.

    Subclasses are frozen dataclasses whose field names are the spec's keys; fields without a
    default are required. ``JOB`` is the job's registered name. ``validate`` (optional) checks
    values after parsing and raises :class:`InvalidSpec`.
    """

    JOB: ClassVar[str] = ""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[S], spec: dict) -> S:
        """Parse ``spec`` (``job`` key allowed); unknown or missing keys are :class:`InvalidSpec`."""
        if not isinstance(spec, dict):
            raise InvalidSpec(f"{cls.JOB}: the job spec must be a JSON object, not {type(spec).__name__}")
        known = cls.keys()
        values = {k: v for k, v in spec.items() if k != "job"}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidSpec(f"{cls.JOB}: unknown spec key(s) {', '.join(unknown)}; "
                              f"known keys: {', '.join(known)}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise InvalidSpec(f"{cls.JOB}: missing spec key(s) {', '.join(missing)}")
        parsed = cls(**values)
        parsed.validate()
        return parsed

    def validate(self) -> None:
        """Check values after parsing; subclasses override."""

    def to_dict(self) -> dict:
        """The JSON object the worker reads (``job`` included)."""
        return {"job": self.JOB, **dataclasses.asdict(self)}


# One spec per job, in the order of the registry (engine/jobs/__init__.py). Each section is
# owned by its job module's author; keep the section markers.

# -- spec: check_environment ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckEnvironmentSpec(JobSpec):
    JOB: ClassVar[str] = "check_environment"


# -- spec: describe_model, apply_model -----------------------------------------------------------
def _positive(value: Any, key: str, job: str, kind: type | tuple = (int, float)) -> None:
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise InvalidSpec(f"{job}: {key} must be a positive {'integer' if kind is int else 'number'}, "
                          f"not {value!r}")


@dataclasses.dataclass(frozen=True)
class DescribeModelSpec(JobSpec):
    """``model``: a model folder. ``tile_size``: output pixels (null/0 = the tile Apply model picks
    from ``memory_mb``, MB). ``output``: optional text file the description is written to."""

    JOB: ClassVar[str] = "describe_model"
    model: str
    tile_size: int | None = None
    memory_mb: float | None = None
    output: str | None = None

    def validate(self) -> None:
        if not self.model:
            raise InvalidSpec(f"{self.JOB}: the spec needs 'model' (a model folder)")
        if self.tile_size:
            _positive(self.tile_size, "tile_size", self.JOB, int)
        if self.memory_mb is not None:
            _positive(self.memory_mb, "memory_mb", self.JOB)


@dataclasses.dataclass(frozen=True)
class ApplyModelSpec(JobSpec):
    """Serve a model folder over sources (see docs/architecture.md).

    ``model`` (folder), ``sources`` (raster paths, model input order), ``output`` (GeoTIFF path),
    ``outputs`` (classifiers: any of :data:`CLASSIFIER_PRODUCTS`; the first is written to
    ``output``, the others to :func:`sibling_output`), ``tile_size`` (output px; null/0 = from
    ``memory_mb``, MB), ``border`` (:data:`SERVING_BORDERS`), ``extent`` (``[xmin, ymin, xmax, ymax]``
    in the reference source's CRS), ``mask`` and ``mask_layer`` (polygons: outside is nodata),
    ``nodata_mode`` (:data:`NODATA_MODES`: ``skip`` writes tiles that are nodata (declared or NaN)
    in every source as nodata; ``mask`` also blanks pixels whose receptive field touches nodata),
    ``background`` (optional: the value of skipped tiles in regression/image outputs instead of
    their nodata; classifier outputs always get nodata), ``stack_outputs`` (regression/image
    models with several outputs: bands of one raster, else one raster each). ``memory_mb``: null
    = half the memory available when the job starts. ``precision`` (:data:`PRECISIONS`) and
    ``jit_compile`` (XLA): opt-in faster compute, exact in their own precision.

    Execution: ``executor`` (:data:`EXECUTORS`), ``workers`` (reading threads, or local Dask worker
    processes), ``scheduler`` (an existing Dask scheduler address: its workers are used instead of a
    local cluster), ``geotiff`` (Dask: also write each product's GeoTIFF from its tile VRT),
    ``scenes`` (a list of source lists: one output per scene and a VRT mosaic; ``sources`` is then
    not needed). ``tta``: test-time augmentation, the network averaged over the 8 flips/rotations
    of every tile (exact; 8 times the compute; threads executor).
    """

    JOB: ClassVar[str] = "apply_model"
    model: str
    sources: list | None = None
    output: str = ""
    outputs: list | None = None
    tile_size: int | None = None
    border: str = "reflect"
    extent: list | None = None
    mask: str | None = None
    mask_layer: str | None = None
    memory_mb: float | None = None
    nodata_mode: str = "skip"
    background: float | None = None
    stack_outputs: bool = True
    executor: str = "threads"
    workers: int = 1
    scheduler: str | None = None
    geotiff: bool = True
    scenes: list | None = None
    tta: bool = False
    precision: str = "float32"
    jit_compile: bool = False

    def validate(self) -> None:
        for key in ("model", "output"):
            if not getattr(self, key):
                raise InvalidSpec(f"{self.JOB}: the spec needs {key!r}")
        if self.tta and self.executor != "threads":
            raise InvalidSpec(f"{self.JOB}: test-time augmentation ('tta') runs with the 'threads' executor, "
                              f"not {self.executor!r}")
        if not self.sources and not self.scenes:
            raise InvalidSpec(f"{self.JOB}: the spec needs 'sources' (or 'scenes': lists of sources)")
        check_choice(self.executor, EXECUTORS, "executor", self.JOB)
        _positive(self.workers, "workers", self.JOB, int)
        check_choice(self.border, SERVING_BORDERS, "border", self.JOB)
        check_choice(self.nodata_mode, NODATA_MODES, "nodata_mode", self.JOB)
        check_choice(self.precision, PRECISIONS, "precision", self.JOB)
        for kind in self.outputs or ():
            check_choice(kind, CLASSIFIER_PRODUCTS, "outputs", self.JOB)
        if self.tile_size:
            _positive(self.tile_size, "tile_size", self.JOB, int)
        if self.memory_mb is not None:
            _positive(self.memory_mb, "memory_mb", self.JOB)
        if not isinstance(self.jit_compile, bool):
            raise InvalidSpec(f"{self.JOB}: jit_compile must be true or false, not {self.jit_compile!r}")
        if self.extent is not None and len(self.extent) != 4:
            raise InvalidSpec(f"{self.JOB}: extent must be [xmin, ymin, xmax, ymax], not {self.extent!r}")


# -- spec: select_samples ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SelectSamplesSpec(JobSpec):
    """Where patches are cut (see :mod:`engine.sampling`). Units: ``patch_size`` and ``step`` in
    pixels of ``raster``; ``block_size`` and ``border_distance`` in its map units. ``step`` and
    ``block_size`` 0 mean automatic (the patch size; 8 patches a side). ``report`` defaults to
    ``<output stem>_balance.csv``; ``blocks`` (GeoPackage of the split blocks) needs
    ``split_mode`` ``blocks``; ``label_nodata`` defaults to the label raster's."""

    JOB: ClassVar[str] = "select_samples"
    raster: str
    strategy: str
    output: str
    report: str | None = None
    patch_size: int = 1
    seed: int = 0
    split: dict | None = None
    split_mode: str = "random"
    block_size: float = 0.0
    vector: str | None = None
    layer: str | None = None
    class_field: str | None = None
    polygon_mode: str = "random"
    samples_per_class: int = 100
    step: int = 0
    border_distance: float = 0.0
    label_raster: str | None = None
    label_strategy: str = "constant"
    samples: int = 100
    label_nodata: float | None = None
    mask: str | None = None
    blocks: str | None = None

    def validate(self) -> None:
        for key in ("raster", "output"):
            if not getattr(self, key):
                raise InvalidSpec(f"select_samples needs {key!r}: "
                                  + ("the image the patches will be cut from" if key == "raster"
                                     else "the GeoPackage to write"))
        check_choice(self.strategy, SAMPLING_STRATEGIES, "strategy", self.JOB)
        check_choice(self.split_mode, SPLIT_MODES, "split_mode", self.JOB)
        check_choice(self.polygon_mode, POLYGON_MODES, "polygon_mode", self.JOB)
        check_choice(self.label_strategy, LABEL_STRATEGIES, "label_strategy", self.JOB)
        needed = {"points": ("vector", "class_field"), "polygons": ("vector", "class_field"),
                  "label_raster": ("label_raster",), "grid": ()}[self.strategy]
        for key in needed:
            if getattr(self, key) in (None, ""):
                raise InvalidSpec(f"select_samples with strategy {self.strategy!r} needs {key!r}")
        if self.blocks and self.split_mode != "blocks":
            raise InvalidSpec(f"select_samples writes the split blocks ({self.blocks}) only with "
                              "split_mode 'blocks'")
        if int(self.patch_size) < 1:
            raise InvalidSpec(f"select_samples: patch_size must be >= 1 pixel, got {self.patch_size}")
        split_proportions(self.split)  # checked before any position is read

# -- spec: extract_patches -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PatchSourceSpec(JobSpec):
    """One raster to cut: ``path``, ``patch_size`` (its own pixels; null for a source after the
    first: the first source's patch on the ground, in its own pixels), ``name`` (dataset key)."""

    JOB: ClassVar[str] = "extract_patches source"
    path: str
    patch_size: int | None
    name: str = ""

    def validate(self) -> None:
        check_dataset_name(self.name)
        if self.patch_size is not None and (not isinstance(self.patch_size, int) or self.patch_size < 1):
            raise InvalidSpec(f"source {self.name}: patch_size must be >= 1 pixel, got {self.patch_size}")


@dataclasses.dataclass(frozen=True)
class PatchLabelSpec(JobSpec):
    """What a sample predicts: ``kind`` (:data:`LABEL_KINDS`); raster labels: ``path``,
    ``patch_size`` (label pixels; None = the first source's ground area), ``classes``
    ([{value, name, color}]; other values are ignored), ``nodata`` (default the raster's).
    Segmentation labels may also be polygons: ``path`` a vector file (``layer`` optional) with
    ``class_field`` (integers or text), rasterised per patch on the first source's grid
    (``patch_size`` in its pixels). Pixels outside every polygon are ignored, or with
    ``background`` (a class name, e.g. ``"background"``) are that class: the class of that name
    among the polygons' if there is one, else a new class of value 0 (the largest value + 1
    when 0 is taken)."""

    JOB: ClassVar[str] = "extract_patches label"
    kind: str = "class"
    path: str | None = None
    patch_size: int | None = None
    classes: tuple = ()
    nodata: float | None = None
    layer: str | None = None
    class_field: str | None = None
    background: str | None = None

    def validate(self) -> None:
        check_choice(self.kind, LABEL_KINDS, "label kind", self.JOB)
        if self.background is not None and (not isinstance(self.background, str) or not self.background.strip()):
            raise InvalidSpec(f"the label's 'background' is the name of the class of the pixels outside every "
                              f"polygon (e.g. \"background\"), or null to ignore them; got {self.background!r}")
        if self.background and not self.class_field:
            raise InvalidSpec("the label's 'background' (the class outside every polygon) is for segmentation "
                              "polygons with a 'class_field'; a label raster's unlabelled pixels are its nodata")
        if self.kind != "class" and not self.path:
            raise InvalidSpec(f"a {self.kind} label needs 'path': the label raster"
                              + (" or polygons" if self.kind == "segmentation" else ""))
        if self.class_field and self.kind != "segmentation":
            raise InvalidSpec(f"the label's 'class_field' is for segmentation polygons, not {self.kind} labels")


@dataclasses.dataclass(frozen=True)
class ExtractPatchesSpec(JobSpec):
    """Patches at positions into a dataset folder (see :mod:`engine.patches`). ``sources``: the
    first is the reference; ``positions``: a point layer (``layer`` optional); ``class_field``
    for class labels; ``split_field`` absent from the layer -> every position is train;
    ``read_tile`` in reference pixels; ``max_nodata``: the largest fraction (0-1) of a source
    patch's pixels that may be nodata (more: the position is rejected). ``split_zones``
    (segmentation labels): a polygon layer whose ``split_field`` names the split of each zone
    (e.g. Select samples' blocks); a patch's label pixels outside the zones of its own split are
    ignored, so patches may cross zone borders without learning or validating on another split's
    labels (``split_zones_layer``: its layer, default the first). ``sources`` and ``label`` are
    parsed into :class:`PatchSourceSpec` / :class:`PatchLabelSpec` (unnamed sources become
    ``source<i>``)."""

    JOB: ClassVar[str] = "extract_patches"
    sources: tuple
    positions: str
    output: str
    layer: str | None = None
    class_field: str | None = None
    split_field: str = "split"
    label: PatchLabelSpec | dict | None = None
    shard_size: int = 1024
    read_tile: int = 512
    max_nodata: float = 0.5
    split_zones: str | None = None
    split_zones_layer: str | None = None

    def __post_init__(self):
        if not isinstance(self.sources, (list, tuple)) or not all(isinstance(s, (dict, PatchSourceSpec))
                                                                  for s in self.sources):
            raise InvalidSpec("extract_patches needs 'sources': a list of {path, patch_size, name}")
        sources = tuple(s if isinstance(s, PatchSourceSpec)
                        else PatchSourceSpec.from_dict({**s, "name": s.get("name") or f"source{i + 1}"})
                        for i, s in enumerate(self.sources))
        label = self.label if isinstance(self.label, PatchLabelSpec) else PatchLabelSpec.from_dict(
            self.label or {})
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "label", label)

    def validate(self) -> None:
        if not self.sources:
            raise InvalidSpec("extract_patches needs 'sources': a list of {path, patch_size, name}")
        for key, what in (("output", "the dataset folder to write"),
                          ("positions", "a point layer (e.g. from select_samples)")):
            if not getattr(self, key):
                raise InvalidSpec(f"extract_patches needs {key!r}: {what}")
        if self.sources[0].patch_size is None:
            raise InvalidSpec(f"source {self.sources[0].name}: the first source needs its patch_size (pixels)")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise InvalidSpec(f"source names must differ: {names}")
        if not 0 <= float(self.max_nodata) <= 1:
            raise InvalidSpec(f"extract_patches: max_nodata is a fraction of the patch's pixels, between 0 and 1; "
                              f"got {self.max_nodata!r}")
        if self.label.kind == "class" and not self.class_field:
            raise InvalidSpec("a class label needs 'class_field': the positions' class field (integers or text)")
        if self.split_zones and self.label.kind != "segmentation":
            raise InvalidSpec(f"split_zones {self.split_zones}: split zones mask segmentation label pixels; "
                              f"{self.label.kind!r} labels have none to mask: leave split_zones out")

# -- spec: train_model ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainModelSpec(JobSpec):
    """Train a zoo or custom model on a dataset folder and write a model folder.

    ``dataset`` and ``output`` (folders) are required, and exactly one of ``architecture`` (a zoo
    name, or :data:`AUTOMATIC_ARCHITECTURE`: chosen from the dataset) and ``custom_model`` (a
    ``.py`` file defining ``build(spec)``). Sizes are in patches, ``learning_rate`` is per step.
    ``early_stopping_patience``: epochs without improvement before stopping (0: never). ``loss``
    (``image`` datasets): one of :data:`IMAGE_LOSSES`. ``gan`` (``image`` datasets): add an
    adversarial loss, weighted ``adversarial_weight`` against the content loss on the normalised target
    (1e-2: pix2pix's L1 weight of 100 to the adversarial 1), against the zoo's patch discriminator.
    ``focal_gamma`` (classifiers): 0 trains on the cross-entropy, > 0 on the focal loss of that
    exponent (:func:`.training.network.pixel_crossentropy`; 2 is its paper's value), on top of
    ``class_weighting``.
    ``hyperparameters`` go to the model builder unchanged. ``workers``: local training processes
    (> 1: a MultiWorkerMirroredStrategy loop). A key given as ``null`` takes its default.

    The recipe (see the Train model help): ``time_budget`` (minutes, 0 = none) stops training when
    spent; ``crop_size`` (pixels of the first source, 0 = whole patches) trains on a random crop
    of every patch at every step; ``schedule`` (:data:`LR_SCHEDULES`) decays the learning rate
    over ``epochs`` or ``time_budget``, whichever ends first; ``weight_decay`` is AdamW's
    (decoupled, per step, times the learning rate); ``ema_momentum`` (0 = off, else in (0, 1);
    0.99 averages about the last 100 steps) validates and writes an exponential moving average of
    the weights (:mod:`engine.training.averaging`; single-process, non-adversarial runs);
    ``gain_jitter`` (0 = off, else in (0, 1); classifiers) multiplies every training sample's bands
    by random gains in ``[1 - gain_jitter, 1 + gain_jitter]`` (:func:`engine.dataset.random_gains`);
    ``validity_channel`` gives the network one more band per source: 1 where the pixel is valid,
    0 where it is nodata. ``jit_compile`` compiles the training step with XLA (single-process,
    non-adversarial runs): faster steps on a CPU after a compile of tens of seconds; TensorFlow's
    op-determinism switch refuses XLA's pooling gradients, so it is left off, and a seeded CPU run
    still repeats exactly (XLA's CPU kernels do; tested).
    """

    JOB: ClassVar[str] = "train_model"

    dataset: str = ""
    output: str = ""
    architecture: str | None = None
    custom_model: str | None = None
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    class_weighting: str = "sqrt"
    focal_gamma: float = 0.0
    augment: bool = True
    gain_jitter: float = 0.0
    time_budget: float = 0.0
    crop_size: int = 0
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    ema_momentum: float = 0.0
    validity_channel: bool = False
    seed: int = 0
    resume: bool = False
    early_stopping_patience: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    gan: bool = False
    loss: str = "l1"
    adversarial_weight: float = 1e-2
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    workers: int = 1

    @classmethod
    def from_dict(cls, spec: dict) -> "TrainModelSpec":
        if isinstance(spec, dict):
            spec = {key: value for key, value in spec.items() if value is not None}
        return super().from_dict(spec)

    def validate(self) -> None:
        for key in ("dataset", "output"):
            if not getattr(self, key):
                raise InvalidSpec(f"train_model: {key!r} is required")
        if bool(self.architecture) == bool(self.custom_model):
            raise InvalidSpec("train_model: give exactly one of 'architecture' (a zoo name) and "
                              "'custom_model' (a .py file)")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise InvalidSpec(f"train_model: {key!r} must be a positive integer, got {value!r}")
        if not float(self.learning_rate) > 0:
            raise InvalidSpec(f"train_model: 'learning_rate' must be > 0, got {self.learning_rate!r}")
        if int(self.early_stopping_patience) < 0:
            raise InvalidSpec("train_model: 'early_stopping_patience' must be >= 0")
        check_choice(self.class_weighting, CLASS_WEIGHTING, "'class_weighting'", self.JOB)
        check_choice(self.schedule, LR_SCHEDULES, "'schedule'", self.JOB)
        if not float(self.time_budget) >= 0:
            raise InvalidSpec(f"train_model: 'time_budget' is in minutes, >= 0 (0: no budget); got {self.time_budget!r}")
        if not isinstance(self.crop_size, int) or self.crop_size < 0:
            raise InvalidSpec(f"train_model: 'crop_size' must be 0 (whole patches) or a size in pixels, "
                              f"got {self.crop_size!r}")
        if not 0 <= float(self.ema_momentum) < 1:
            raise InvalidSpec(f"train_model: 'ema_momentum' must be 0 (no weight averaging) or in (0, 1), e.g. 0.99; "
                              f"got {self.ema_momentum!r}")
        if not float(self.focal_gamma) >= 0:
            raise InvalidSpec(f"train_model: 'focal_gamma' must be >= 0 (0: cross-entropy; 2: the focal loss's usual "
                              f"value), got {self.focal_gamma!r}")
        if not 0 <= float(self.gain_jitter) < 1:
            raise InvalidSpec(f"train_model: 'gain_jitter' must be 0 (no random band gains) or in (0, 1), e.g. 0.1 "
                              f"(gains of 0.9 to 1.1); got {self.gain_jitter!r}")
        if not float(self.weight_decay) >= 0:
            raise InvalidSpec(f"train_model: 'weight_decay' must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.jit_compile, bool):
            raise InvalidSpec(f"train_model: 'jit_compile' must be true or false, not {self.jit_compile!r}")
        check_choice(self.loss, IMAGE_LOSSES, "'loss'", self.JOB)
        if not isinstance(self.hyperparameters, dict):
            raise InvalidSpec("train_model: 'hyperparameters' must be an object (name -> value)")
        _positive(self.workers, "workers", self.JOB, int)


# -- spec: evaluate_map --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvaluateMapSpec(JobSpec):
    """Compare the class map ``map`` with ``reference`` (a raster, or a vector path with
    ``reference_layer`` and a ``class_field`` of integers or text) inside the optional polygon
    ``mask``; ``classes`` ([{value, name, color}]) name the classes; ``ignore_values`` are not
    counted. A text class field is matched by name to the map's class names (stored with the map:
    its ``.qml``, category names or RAT; else ``classes``); texts of no class and nulls are
    skipped and counted. Polygon references: pixels outside every polygon are not counted, or with
    ``background`` (a class value, or a class name of the map, e.g. ``"background"``) are that
    class. The report files (:data:`REPORT_FILES`) go to ``output_folder``."""

    JOB: ClassVar[str] = "evaluate_map"
    map: str
    reference: str
    output_folder: str
    reference_layer: str | None = None
    class_field: str | None = None
    mask: str | None = None
    mask_layer: str | None = None
    classes: tuple = ()
    ignore_values: tuple = ()
    background: int | str | None = None

    def validate(self) -> None:
        for key in ("map", "reference", "output_folder"):
            if not getattr(self, key):
                raise InvalidSpec(f"evaluate_map: the spec needs {key!r}")
        background = self.background
        if background is not None and (isinstance(background, bool) or not isinstance(background, (int, str))
                                       or (isinstance(background, str) and not background.strip())):
            raise InvalidSpec(f"evaluate_map: 'background' is the class of the pixels outside every reference "
                              f"polygon (a class value, or a class name, e.g. \"background\"), or null not to "
                              f"count them; got {background!r}")
        try:
            for c in self.classes or ():
                int(c["value"])
            for v in self.ignore_values or ():
                int(v)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidSpec(f"evaluate_map: 'classes' must be [{{value, name, color}}] and "
                              f"'ignore_values' integers ({error})") from None

# -- spec: import_model --------------------------------------------------------------------------
#: What a model folder's network does (``deepfield.json``'s ``task``).
MODEL_TASKS = ("classification", "segmentation", "regression", "super_resolution")


@dataclasses.dataclass(frozen=True)
class ImportModelSpec(JobSpec):
    """A network trained elsewhere -> a DeepField model folder (:mod:`..importing`).

    ``network``: a Keras ``.keras`` / ``.h5`` file or a TensorFlow SavedModel folder. ``output``:
    the model folder to write. ``task``: one of :data:`MODEL_TASKS`. ``sources``: one object per
    network input, in source order (the first is the reference): ``name`` (required), and
    optionally ``bands`` (checked against the network), ``scale`` (its pixel spacing / the
    reference's, ``"2"`` or ``"1/2"``; checked), ``rf`` (OTBTF receptive field, its pixels;
    checked), ``nodata`` (a number or one per band), ``mean`` and ``std`` (per band: the network
    then sees ``(x - mean) / std``). ``expression_field`` (output pixels) and ``spacing_scale``
    (output spacing / reference spacing, e.g. ``"4"``): OTBTF-style values checked against the
    network (for a network with a fixed input size, the spacing scale sets how far apart its
    windows are: default 1). ``classes``: ``[{"value", "name", "color"?}]`` in output channel
    order; ``classes_file``: a ``.qml`` style or a ``.csv`` (``value,name[,color]``) instead.
    ``endpoint``: the SavedModel signature to serve. ``outputs``: the names of the network outputs
    to serve, in order (default: all; OTBTF networks also emit cropped copies of an output).
    """

    JOB: ClassVar[str] = "import_model"
    network: str
    output: str
    task: str
    sources: list
    classes: list = dataclasses.field(default_factory=list)
    classes_file: str | None = None
    expression_field: int | None = None
    spacing_scale: str | None = None
    endpoint: str = "serving_default"
    outputs: list = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        check_choice(self.task, MODEL_TASKS, "task", self.JOB)
        if not self.network or not self.output:
            raise InvalidSpec(f"{self.JOB}: network and output must be paths")
        if not isinstance(self.sources, list) or not self.sources:
            raise InvalidSpec(f"{self.JOB}: sources must list one object per network input, e.g. "
                              '[{"name": "image", "bands": 4}]')
        for k, source in enumerate(self.sources):
            if not isinstance(source, dict) or not source.get("name"):
                raise InvalidSpec(f"{self.JOB}: sources[{k}] must be an object with a \"name\"")
            check_dataset_name(source["name"], f"{self.JOB}: sources[{k}] name")
        if not isinstance(self.classes, list) or not isinstance(self.outputs, list) \
                or not all(isinstance(name, str) for name in self.outputs):
            raise InvalidSpec(f"{self.JOB}: classes must be a list of objects, outputs a list of output names")
        if self.classes and self.classes_file:
            raise InvalidSpec(f"{self.JOB}: give classes or classes_file, not both")
        if self.expression_field is not None and (not isinstance(self.expression_field, int)
                                                  or self.expression_field < 1):
            raise InvalidSpec(f"{self.JOB}: expression_field must be a positive integer (output pixels), "
                              f"not {self.expression_field!r}")


# -- spec: vectorize_class_map -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VectorizeClassMapSpec(JobSpec):
    """A class map to polygons (see ``engine/vectorize.py``).

    ``map``: class raster (band 1, whole-number values). ``output``: GeoPackage (``.gpkg``).
    ``min_area``: squared map units, smaller regions are dropped. ``simplify``: tolerance in map
    units (0: none). ``skip_values``: class values that get no polygon (e.g. background).
    ``classes``: ``[{"value", "name", "color"}]`` names and colours (default: the map's own).
    ``tile_size``: tile side in pixels (memory, never the result).
    """

    JOB: ClassVar[str] = "vectorize_class_map"
    map: str
    output: str
    min_area: float = 0.0
    simplify: float = 0.0
    skip_values: tuple = ()
    classes: tuple = ()
    tile_size: int = 1024

    def validate(self) -> None:
        for key, unit in (("min_area", "squared map units"), ("simplify", "map units")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidSpec(f"{self.JOB}: {key} must be a number >= 0 ({unit}); got {value!r}")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in self.skip_values):
            raise InvalidSpec(f"{self.JOB}: skip_values must be integer class values; got {list(self.skip_values)!r}")
        if any(not isinstance(c, dict) or not isinstance(c.get("value"), int)
               or not re.fullmatch(r"(#[0-9a-fA-F]{6})?", str(c.get("color") or "")) for c in self.classes):
            raise InvalidSpec(f"{self.JOB}: classes must be [{{\"value\": int, \"name\": str, \"color\": "
                              f"\"#rrggbb\"}}]; got {list(self.classes)!r}")
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or self.tile_size < 1:
            raise InvalidSpec(f"{self.JOB}: tile_size must be a whole number of pixels >= 1; got {self.tile_size!r}")


# -- spec: coregister_image ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CoregisterImageSpec(JobSpec):
    """Move ``image`` onto ``labels`` by whole pixels (see ``engine/coregistration.py``).

    ``image``: the raster to move. ``labels``: a label raster (class values; its nodata:
    unlabelled), read on the image's grid. ``output``: the moved image on the image's grid, a VRT
    when it ends in ``.vrt`` (it reads the image), else a GeoTIFF. ``max_shift``: the largest
    shift tried on each axis (image pixels; 0: the image unmoved, nothing measured).
    """

    JOB: ClassVar[str] = "coregister_image"
    image: str
    labels: str
    output: str
    max_shift: int = 2

    def validate(self) -> None:
        for key in ("image", "labels", "output"):
            if not getattr(self, key):
                raise InvalidSpec(f"{self.JOB}: the spec needs {key!r}")
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise InvalidSpec(f"{self.JOB}: max_shift must be a whole number of pixels >= 0 (0: the image "
                              f"unmoved); got {self.max_shift!r}")
