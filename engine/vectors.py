"""Vector layers: open one by path and name, read points, write GeoPackage layers, and the
vector side of rasterising class polygons.

A vector input is a path (any OGR format) plus an optional layer name; without a name the
first layer is used. Errors name the file and, for a missing layer or field, the ones it has.
A **position** (:class:`Positions`) is a point in map units of one CRS with an optional integer
class and a split; positions are written as the GeoPackage point layer ``positions`` with
fields ``class`` (integer or null), ``split`` and the feature id ``fid`` (1..n).
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from .classes import ClassStyle, class_color
from .contract import SPLITS
from .crs import crs_transform, transform_xy
from .errors import EngineError, InvalidSpec

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

#: The point layer of sample positions (select_samples output, a dataset's ``positions.gpkg``).
POSITIONS_LAYER = "positions"


def open_layer(path, layer: str | None = None, what: str = "vector file"):
    """``(dataset, layer)`` of the vector file ``path`` (the layer called ``layer``, or the first).

    ``path`` may also be an open GDAL vector dataset (its layer is looked up the same way).
    ``what`` names the input in errors ("mask", "reference"). Keep ``dataset`` alive while the
    layer is used. Raises :class:`EngineError` when the file is not a vector dataset or has no
    such layer.
    """
    if isinstance(path, gdal.Dataset):
        dataset, path = path, path.GetDescription()
    else:
        try:
            dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
        except RuntimeError as error:
            raise EngineError(f"cannot open the {what} {path} as a vector layer: {error}") from None
    if dataset is None or dataset.GetLayerCount() == 0:
        raise EngineError(f"the {what} {path} holds no vector layer")
    found = dataset.GetLayerByName(layer) if layer else dataset.GetLayer(0)
    if found is None:
        names = [dataset.GetLayer(i).GetName() for i in range(dataset.GetLayerCount())]
        raise EngineError(f"the {what} {path} has no layer {layer!r}; layers: {', '.join(names)}")
    return dataset, found


def is_vector(path) -> bool:
    """Whether ``path`` opens as a vector dataset with at least one layer (else: maybe a raster)."""
    try:
        dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    except RuntimeError:
        return False
    return dataset is not None and dataset.GetLayerCount() > 0


def layer_crs_wkt(layer) -> str:
    """The layer's CRS as WKT, or ``""`` when it has none."""
    srs = layer.GetSpatialRef()
    return srs.ExportToWkt() if srs is not None else ""


# -- fields ----------------------------------------------------------------------------------------
def field_index(layer, field: str, path) -> int:
    """Index of ``field`` in ``layer``; :class:`InvalidSpec` lists the layer's fields."""
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if field not in names:
        raise InvalidSpec(f"{path}: no field {field!r}; fields: {', '.join(names) or 'none'}")
    return names.index(field)


def _as_number(value) -> int | None:
    """``value`` as an int when it is integer-like (``3``, ``3.0``, ``"3"``), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


#: The text field holding each position's class name next to its integer ``class``.
CLASS_NAME_FIELD = "class_name"
#: Reasons a feature is skipped when its class is read (counted in :attr:`ClassCoding.skipped`).
SKIP_REASONS = ("no_geometry", "null_class", "unknown_class")


@dataclass
class ClassCoding:
    """How the values of a class field become integer class values, with names and colours.

    An integer field (or a text field holding only integers) keeps its values; a text field's
    distinct names get the values 1..K in sorted order (stable: the same names give the same
    values). ``classes``: the classes found, by value. With ``known`` classes (names or values
    of a model or dataset), other classes are skipped as ``unknown_class``. ``skipped`` counts
    features per :data:`SKIP_REASONS`; ``unknown``: the field's values of no known class.
    """

    field: str
    by_raw: dict
    classes: tuple[ClassStyle, ...]
    skipped: dict
    unknown: tuple = ()

    def value(self, raw) -> int | None:
        """The class value of the field value ``raw``; None (counted) for null or unknown."""
        if raw is None or raw == "":
            self.skipped["null_class"] += 1
            return None
        value = self.by_raw.get(raw)
        if value is None:
            self.skipped["unknown_class"] += 1
        return value

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1


def class_coding(layer, field: str, path, known: Sequence[ClassStyle] = ()) -> ClassCoding:
    """The :class:`ClassCoding` of ``field`` in ``layer`` (reads the layer once, then rewinds it).

    Class names of an integer field come from ``known``, else from a :data:`CLASS_NAME_FIELD`
    field (DeepField's positions), else the values themselves. Raises :class:`InvalidSpec` for
    a missing field and :class:`EngineError` for a field that is neither integer nor text, or
    a text field none of whose texts is the name of one of the ``known`` classes.
    """
    index = field_index(layer, field, path)
    definition = layer.GetLayerDefn()
    kind = definition.GetFieldDefn(index).GetType()
    name_index = definition.GetFieldIndex(CLASS_NAME_FIELD)
    raws: dict = {}
    layer.ResetReading()
    for feature in layer:
        raw = feature.GetField(index)
        if raw is not None and raw != "" and raw not in raws:
            raws[raw] = feature.GetField(name_index) if name_index >= 0 else None
    layer.ResetReading()
    numbers = {raw: _as_number(raw) for raw in raws}
    if kind == ogr.OFTString and None in numbers.values():
        names = sorted(raws)
        if known:
            by_name = {c.name: c.value for c in known}
            by_raw = {name: by_name[name] for name in names if name in by_name}
            if not by_raw:
                raise EngineError(f"{path}: no text of the class field {field!r} is a class name: it holds "
                                  f"{some_names(names)}; the class names are {some_names(sorted(by_name))}. Choose the "
                                  "field whose texts are these names (or rename its texts to them)")
        else:
            by_raw = {name: value for value, name in enumerate(names, start=1)}
        found = {value: str(name) for name, value in by_raw.items()}
    elif kind in (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal, ogr.OFTString):
        for raw, number in numbers.items():
            if number is None:
                raise EngineError(f"{path}: class field {field!r} must hold integers or text; found {raw!r}")
        known_values = {c.value: c.name for c in known}
        by_raw = {raw: number for raw, number in numbers.items() if not known or number in known_values}
        found = {number: known_values.get(number) or raws[raw] or str(number) for raw, number in by_raw.items()}
    else:
        raise EngineError(f"{path}: class field {field!r} is of type "
                          f"{ogr.GetFieldTypeName(kind)}; choose a field of integers or text")
    colors = {c.value: c.color for c in known}
    classes = tuple(ClassStyle(value, name, colors.get(value) or class_color(k))
                    for k, (value, name) in enumerate(sorted(found.items())))
    unknown = tuple(str(raw) for raw in sorted(raws, key=str) if raw not in by_raw)
    return ClassCoding(field, by_raw, classes, dict.fromkeys(SKIP_REASONS, 0), unknown)


def some_names(names: Sequence[str], most: int = 5) -> str:
    """The first ``most`` of ``names``, quoted, and how many more: ``'a', 'b' and 3 more``."""
    shown = ", ".join(repr(str(name)) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def report_skipped(path, skipped: dict, warn=None, unknown: Sequence[str] = ()) -> None:
    """``warn`` how many features of ``path`` were skipped, per reason (nothing when none), and
    the ``unknown`` classes (:attr:`ClassCoding.unknown`)."""
    if warn and any(skipped.values()):
        warn(f"{path}: features skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items() if v)
             + (f" (classes not known: {some_names(unknown)})" if unknown and skipped.get("unknown_class") else ""))


def crs_or_target(layer, path, target_wkt: str, warn=None) -> str:
    """The layer's CRS WKT; a layer without CRS is taken in ``target_wkt`` (``warn`` says so)."""
    wkt = layer_crs_wkt(layer)
    if not wkt and warn:
        warn(f"{path} has no CRS: its coordinates are taken in the raster's CRS")
    return wkt or target_wkt


# -- positions -------------------------------------------------------------------------------------
@dataclass
class Positions:
    """Points in one CRS (map units); ``classes`` (int64) is None without classes, ``splits``
    holds ``train``/``valid``/``test`` per point (None before splitting). ``class_styles``:
    the classes' names and colours (by value), ``skipped``: features left out when reading, per
    reason (:data:`SKIP_REASONS`)."""

    x: np.ndarray
    y: np.ndarray
    classes: np.ndarray | None = None
    splits: np.ndarray | None = None
    class_styles: tuple[ClassStyle, ...] = ()
    skipped: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, keep: np.ndarray) -> "Positions":
        """The positions where the boolean or index array ``keep`` selects."""
        return Positions(self.x[keep], self.y[keep],
                         None if self.classes is None else self.classes[keep],
                         None if self.splits is None else self.splits[keep], self.class_styles, self.skipped)


def read_points(path, target_wkt: str, class_field: str | None = None, split_field: str | None = None,
                layer_name: str | None = None, warn=None, known: Sequence[ClassStyle] = ()) -> Positions:
    """Points of a vector layer, reprojected onto ``target_wkt``; features without geometry or
    with a null or unknown class skipped and counted (:class:`ClassCoding`; ``known``: classes
    to keep, matched by name for text fields).

    Multi-points give one position per part. ``split_field`` values must be train/valid/test
    (without it every point is ``train``). ``warn(message)`` reports skipped features.
    """
    source, layer = open_layer(path, layer_name, "point layer")
    src_wkt = crs_or_target(layer, path, target_wkt, warn)
    coding = class_coding(layer, class_field, path, known) if class_field else None
    skipped = coding.skipped if coding else dict.fromkeys(SKIP_REASONS, 0)
    split_index = field_index(layer, split_field, path) if split_field else None
    xs, ys, classes, splits = [], [], [], []
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None:
            skipped["no_geometry"] += 1
            continue
        if ogr.GT_Flatten(geometry.GetGeometryType()) not in (ogr.wkbPoint, ogr.wkbMultiPoint):
            raise EngineError(f"{path}: expected a point layer, found {geometry.GetGeometryName()}")
        value = None
        if coding is not None:
            value = coding.value(feature.GetField(class_field))
            if value is None:
                continue
        split = feature.GetField(split_index) if split_index is not None else "train"
        if split not in SPLITS:
            raise EngineError(f"{path}: field {split_field!r} holds {split!r}; expected one of {', '.join(SPLITS)}")
        parts = [geometry] if geometry.GetGeometryCount() == 0 else [
            geometry.GetGeometryRef(i) for i in range(geometry.GetGeometryCount())]
        for part in parts:
            xs.append(part.GetX())
            ys.append(part.GetY())
            classes.append(value)
            splits.append(split)
    del source
    report_skipped(path, skipped, warn, coding.unknown if coding else ())
    x, y = transform_xy(np.array(xs), np.array(ys), src_wkt, target_wkt)
    return Positions(x, y, np.array(classes, dtype=np.int64) if class_field else None,
                     np.array(splits, dtype=object), coding.classes if coding else (), skipped)


def has_field(path, layer_name: str | None, field: str) -> bool:
    """Whether the layer of ``path`` has a field called ``field``."""
    source, layer = open_layer(path, layer_name, "point layer")
    found = layer.GetLayerDefn().GetFieldIndex(field) >= 0
    del source
    return found


# -- writing ---------------------------------------------------------------------------------------
def create_gpkg_layer(path, name: str, crs_wkt: str, geometry_type: int):
    """A new GeoPackage ``path`` with one empty layer ``name`` (FID column ``fid``): (source, layer)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # the ".part" extension warning
    try:
        source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    finally:
        gdal.PopErrorHandler()
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs_wkt)
    return source, source.CreateLayer(name, srs, geometry_type, ["FID=fid"])


def write_features(path, name: str, crs_wkt: str, geometry_type: int, fields: dict[str, int],
                   rows: Iterable[tuple[dict, object]]) -> None:
    """Write the GeoPackage layer ``name``: ``fields`` (name -> OGR field type) and ``rows`` of
    (field values, OGR geometry); feature ids 1..n in the order of ``rows``."""
    source, layer = create_gpkg_layer(path, name, crs_wkt, geometry_type)
    for field, kind in fields.items():
        layer.CreateField(ogr.FieldDefn(field, kind))
    definition = layer.GetLayerDefn()
    layer.StartTransaction()
    for fid, (values, geometry) in enumerate(rows, start=1):
        feature = ogr.Feature(definition)
        feature.SetFID(fid)
        for field, value in values.items():
            if value is not None:
                feature.SetField(field, value)
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    del source  # closing the dataset writes the GeoPackage


def write_positions(path, positions: Positions, crs_wkt: str,
                    extra_fields: dict[str, np.ndarray] | None = None) -> None:
    """Write ``positions`` as the GeoPackage point layer :data:`POSITIONS_LAYER` (fid 1..n,
    ``class``, :data:`CLASS_NAME_FIELD` (from ``positions.class_styles``), ``split``, and one
    Integer64 field per ``extra_fields`` entry)."""
    extra_fields = extra_fields or {}
    classes = [None] * len(positions) if positions.classes is None else positions.classes.tolist()
    splits = ["train"] * len(positions) if positions.splits is None else [str(s) for s in positions.splits]
    extra = {name: values.tolist() for name, values in extra_fields.items()}
    names = {c.value: c.name for c in positions.class_styles}

    def rows():
        for i, (x, y) in enumerate(zip(positions.x.tolist(), positions.y.tolist())):
            point = ogr.Geometry(ogr.wkbPoint)
            point.AddPoint_2D(x, y)
            yield {"class": classes[i], CLASS_NAME_FIELD: names.get(classes[i]), "split": splits[i],
                   **{k: v[i] for k, v in extra.items()}}, point

    fields = {"class": ogr.OFTInteger, CLASS_NAME_FIELD: ogr.OFTString, "split": ogr.OFTString,
              **dict.fromkeys(extra_fields, ogr.OFTInteger64)}
    write_features(path, POSITIONS_LAYER, crs_wkt, ogr.wkbPoint, fields, rows())


# -- rasterising -----------------------------------------------------------------------------------
def class_polygons(path, class_field: str, target_wkt: str, border_distance: float = 0.0,
                   layer_name: str | None = None, warn=None,
                   known: Sequence[ClassStyle] = ()) -> tuple[object, ClassCoding]:
    """The polygons of ``path`` in ``target_wkt``, shrunk by ``border_distance`` (map units of
    ``target_wkt``), in an in-memory layer whose integer field ``burn`` is 1 + the index of the
    feature's class in ``coding.classes`` (ready for GDAL rasterising; 0 stays "no class").

    Returns ``(memory dataset, coding)`` (:class:`ClassCoding` of ``class_field``; ``known``
    as in :func:`class_coding`); features with a null or unknown class or no geometry (counted
    in ``coding.skipped``, ``warn`` tells), and polygons that vanish once shrunk, are left out.
    """
    source, layer = open_layer(path, layer_name, "polygon layer")
    coding = class_coding(layer, class_field, path, known)
    codes = {c.value: k for k, c in enumerate(coding.classes, start=1)}
    transform = crs_transform(crs_or_target(layer, path, target_wkt, warn), target_wkt)
    memory = gdal.GetDriverByName("Memory").Create("polygons", 0, 0, 0, gdal.GDT_Unknown)
    srs = None
    if target_wkt:  # the layer's CRS, so that GDAL burns it without warning of an unknown one
        srs = osr.SpatialReference(wkt=target_wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    burn = memory.CreateLayer("polygons", srs, ogr.wkbMultiPolygon)
    burn.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None:
            coding.skip("no_geometry")
            continue
        value = coding.value(feature.GetField(class_field))
        if value is None:
            continue
        geometry = geometry.Clone()
        if transform is not None:
            geometry.Transform(transform)
        if border_distance > 0:
            geometry = geometry.Buffer(-float(border_distance))
            if geometry.IsEmpty():
                continue
        out = ogr.Feature(burn.GetLayerDefn())
        out.SetField("burn", codes[value])
        out.SetGeometry(geometry)
        burn.CreateFeature(out)
    del source
    report_skipped(path, coding.skipped, warn, coding.unknown)
    return memory, coding
