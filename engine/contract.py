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

# -- sampling ------------------------------------------------------------------------------------
SAMPLING_STRATEGIES = ("points", "polygons", "label_raster", "grid")
LABEL_STRATEGIES = ("constant", "total", "smallest", "all")
POLYGON_MODES = ("random", "grid")
SPLIT_MODES = ("random", "blocks")
SPLITS = ("train", "valid", "test")

# -- datasets ------------------------------------------------------------------------------------
LABEL_KINDS = ("class", "segmentation", "image")

# -- training ------------------------------------------------------------------------------------
CLASS_WEIGHTING = ("none", "balanced")
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

# -- spec: select_samples ------------------------------------------------------------------------

# -- spec: extract_patches -----------------------------------------------------------------------

# -- spec: train_model ---------------------------------------------------------------------------

# -- spec: evaluate_map --------------------------------------------------------------------------

# -- spec: import_model --------------------------------------------------------------------------

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
