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
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from osgeo import gdal, ogr, osr

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


def integer_value(value, field: str, path) -> int | None:
    """A class value as an int; None for null; :class:`EngineError` for a value that is not integer-like."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise EngineError(f"{path}: class field {field!r} must hold integers; found {value!r}")
    return int(number)


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
    holds ``train``/``valid``/``test`` per point (None before splitting)."""

    x: np.ndarray
    y: np.ndarray
    classes: np.ndarray | None = None
    splits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, keep: np.ndarray) -> "Positions":
        """The positions where the boolean or index array ``keep`` selects."""
        return Positions(self.x[keep], self.y[keep],
                         None if self.classes is None else self.classes[keep],
                         None if self.splits is None else self.splits[keep])


def read_points(path, target_wkt: str, class_field: str | None = None, split_field: str | None = None,
                layer_name: str | None = None, warn=None) -> Positions:
    """Points of a vector layer, reprojected onto ``target_wkt``; features with a null class skipped.

    Multi-points give one position per part. ``split_field`` values must be train/valid/test
    (without it every point is ``train``). ``warn(message)`` reports skipped features.
    """
    source, layer = open_layer(path, layer_name, "point layer")
    src_wkt = crs_or_target(layer, path, target_wkt, warn)
    class_index = field_index(layer, class_field, path) if class_field else None
    split_index = field_index(layer, split_field, path) if split_field else None
    xs, ys, classes, splits, skipped = [], [], [], [], 0
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None:
            skipped += 1
            continue
        if ogr.GT_Flatten(geometry.GetGeometryType()) not in (ogr.wkbPoint, ogr.wkbMultiPoint):
            raise EngineError(f"{path}: expected a point layer, found {geometry.GetGeometryName()}")
        value = None
        if class_index is not None:
            value = integer_value(feature.GetField(class_index), class_field, path)
            if value is None:
                skipped += 1
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
    if skipped and warn:
        warn(f"{path}: {skipped} feature(s) without geometry or class value skipped")
    x, y = transform_xy(np.array(xs), np.array(ys), src_wkt, target_wkt)
    return Positions(x, y, np.array(classes, dtype=np.int64) if class_field else None,
                     np.array(splits, dtype=object))


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
    ``class``, ``split``, and one Integer64 field per ``extra_fields`` entry)."""
    extra_fields = extra_fields or {}
    classes = [None] * len(positions) if positions.classes is None else positions.classes.tolist()
    splits = ["train"] * len(positions) if positions.splits is None else [str(s) for s in positions.splits]
    extra = {name: values.tolist() for name, values in extra_fields.items()}

    def rows():
        for i, (x, y) in enumerate(zip(positions.x.tolist(), positions.y.tolist())):
            point = ogr.Geometry(ogr.wkbPoint)
            point.AddPoint_2D(x, y)
            yield {"class": classes[i], "split": splits[i], **{k: v[i] for k, v in extra.items()}}, point

    fields = {"class": ogr.OFTInteger, "split": ogr.OFTString, **dict.fromkeys(extra_fields, ogr.OFTInteger64)}
    write_features(path, POSITIONS_LAYER, crs_wkt, ogr.wkbPoint, fields, rows())


# -- rasterising -----------------------------------------------------------------------------------
def class_polygons(path, class_field: str, target_wkt: str, border_distance: float = 0.0,
                   layer_name: str | None = None, warn=None) -> tuple[object, list[int]]:
    """The polygons of ``path`` in ``target_wkt``, shrunk by ``border_distance`` (map units of
    ``target_wkt``), in an in-memory layer whose integer field ``burn`` is 1 + the index of the
    feature's class in the returned list of class values (ready for GDAL rasterising).

    Returns ``(memory dataset, class values)``; features with a null class or no geometry, and
    polygons that vanish once shrunk, are left out.
    """
    source, layer = open_layer(path, layer_name, "polygon layer")
    class_index = field_index(layer, class_field, path)
    transform = crs_transform(crs_or_target(layer, path, target_wkt, warn), target_wkt)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
    burn = memory.CreateLayer("polygons", None, ogr.wkbMultiPolygon)
    burn.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
    values: list[int] = []
    for feature in layer:
        value = integer_value(feature.GetField(class_index), class_field, path)
        geometry = feature.GetGeometryRef()
        if value is None or geometry is None:
            continue
        geometry = geometry.Clone()
        if transform is not None:
            geometry.Transform(transform)
        if border_distance > 0:
            geometry = geometry.Buffer(-float(border_distance))
            if geometry.IsEmpty():
                continue
        if value not in values:
            values.append(value)
        out = ogr.Feature(burn.GetLayerDefn())
        out.SetField("burn", values.index(value) + 1)
        out.SetGeometry(geometry)
        burn.CreateFeature(out)
    del source
    return memory, values
