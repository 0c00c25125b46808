"""Map accuracy: compare a class map with reference labels (the library of the ``evaluate_map``
job, :mod:`engine.jobs.evaluate_map`; the report files are written by :mod:`engine.reports`).

Vocabulary:

- The **map** is a class raster (band 1, integer class values); its grid is the evaluation grid.
- The **reference** holds the true classes: a raster on any grid/CRS (resampled nearest onto the
  map's grid), polygons (rasterised onto the map's grid: pixels whose centre is inside), or points
  (each point is one sample: the map pixel that holds it).
- A **sample** is one (reference class, map class) pair: a pixel, or a point.
- The **confusion matrix** ``m[i, j]`` counts samples of reference class ``classes[i]`` mapped as
  ``classes[j]`` (rows: reference, columns: map; the scikit-learn convention).

Scores are fractions in [0, 1]; a score whose denominator is 0 (a class never mapped, or never in
the reference) is 0, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from .classes import ClassStyle, qml_classes
from .contract import EvaluateMapSpec
from .crs import bounds_in, crs_transform
from .errors import EngineError, InvalidSpec, NoOverlap
from .geometry import Bounds, Grid, Window, intersect_bounds
from .metrics import ConfusionCounts
from .protocol import Reporter
from .rasters import RasterInfo, raster_info, rasterize, resampling_for
from .vectors import field_index, is_vector, layer_crs_wkt, open_layer, read_points

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

BLOCK_PIXELS = 1 << 22  # pixels read per block (a strip of whole rows)


# -- GDAL / OGR access -------------------------------------------------------------------------------
def _open_raster(path: str, what: str):
    try:
        dataset = gdal.OpenEx(path, gdal.OF_RASTER)
    except RuntimeError as error:
        raise EngineError(f"cannot open the {what} raster {path}: {error}") from None
    if dataset is None or dataset.RasterCount < 1:
        raise EngineError(f"the {what} {path} is not a raster with at least one band")
    return dataset


def _strips(width: int, height: int, block_rows: int) -> Iterator[Window]:
    """Strips of whole rows, about :data:`BLOCK_PIXELS` pixels each, a multiple of ``block_rows`` high."""
    rows = max(block_rows, (BLOCK_PIXELS // max(1, width)) // block_rows * block_rows)
    for row in range(0, height, rows):
        yield Window(0, row, width, min(rows, height - row))


def _require_overlap(grid: Grid, bounds: Bounds, crs_wkt: str, what: str, path: str) -> None:
    """EngineError unless ``bounds`` (in ``crs_wkt``) overlap the class map's grid."""
    bounds = bounds_in(bounds, crs_wkt, grid.crs_wkt)
    if bounds is None or intersect_bounds([grid.bounds, bounds]) is None:
        raise NoOverlap(f"the {what} {path} does not overlap the class map")


def _valid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if nodata is not None:
        valid &= values != nodata
    return valid


def _as_classes(values: np.ndarray, path: str) -> np.ndarray:
    """Integer class values; an EngineError names ``path`` if a value has a fraction."""
    if values.dtype.kind == "f":
        rounded = np.round(values)
        if np.any(rounded != values):
            example = values[rounded != values][0]
            raise EngineError(f"{path} holds non-integer class values (e.g. {example}); classes must be integers")
        values = rounded
    return values.astype(np.int64)


# -- reference sources: each yields (reference classes, map classes) for a strip of the map --------
class _RasterReference:
    """A reference raster read on the map's grid (warped to a VRT, classes resampled as
    :func:`.rasters.resampling_for` says, when grids differ)."""

    def __init__(self, path: str, grid: Grid, reporter: Reporter):
        info = raster_info(path)
        self.path, self.nodata = path, info.nodata[0]
        _require_overlap(grid, info.grid.bounds, info.crs_wkt, "reference raster", path)
        source = _open_raster(path, "reference")
        same_crs = crs_transform(info.crs_wkt, grid.crs_wkt) is None  # or equivalent
        same_grid = (info.width, info.height) == (grid.width, grid.height) and np.allclose(
            info.geotransform, grid.geotransform(), rtol=0, atol=1e-6 * grid.spacing_x)
        if same_crs and same_grid:
            self.dataset, self.alpha = source, None
            return
        resampling = resampling_for("classes")
        reporter.log(f"reference {path} is on another grid or CRS: resampled ({resampling}) onto the map's grid")
        options = gdal.WarpOptions(
            format="VRT", outputBounds=grid.bounds, width=grid.width, height=grid.height,
            dstSRS=info.crs_wkt if same_crs else grid.crs_wkt, resampleAlg=resampling, dstAlpha=True, srcNodata=self.nodata,
        )
        self.dataset = gdal.Warp("", source, options=options)  # a VRT: warps lazily, block by block
        self.alpha = self.dataset.GetRasterBand(self.dataset.RasterCount)
        self._source = source  # the VRT reads from it

    def samples(self, window: Window, map_values: np.ndarray, map_valid: np.ndarray):
        args = (window.col_off, window.row_off, window.width, window.height)
        values = self.dataset.GetRasterBand(1).ReadAsArray(*args)
        valid = map_valid & _valid(values, self.nodata)
        if self.alpha is not None:
            valid &= self.alpha.ReadAsArray(*args) > 0
        return _as_classes(values[valid], self.path), map_values[valid]


class _PolygonReference:
    """Reference polygons rasterised strip by strip onto the map's grid, burning the class field."""

    def __init__(self, vector, layer, field_name: str, path: str, grid: Grid):
        self.vector, self.layer, self.field, self.path, self.grid = vector, layer, field_name, path, grid

    def samples(self, window: Window, map_values: np.ndarray, map_valid: np.ndarray):
        values = rasterize(self.grid, window, self.vector, self.layer.GetName(), self.field)
        valid = map_valid & np.isfinite(values)
        return _as_classes(values[valid], f"{self.path} field {self.field!r}"), map_values[valid]


class _PointReference:
    """Reference points: each point is one sample, the map pixel holding it (map CRS)."""

    def __init__(self, spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter):
        points = read_points(spec.reference, info.crs_wkt, spec.class_field, layer_name=spec.reference_layer,
                             warn=reporter.warning)
        if not len(points.x):
            raise EngineError(f"the reference layer {spec.reference} has no point with a value in field "
                              f"{spec.class_field!r}")
        cols, rows = (np.floor(v) for v in info.grid.pixel(points.x, points.y))
        inside = (np.isfinite(cols) & np.isfinite(rows) & (cols >= 0) & (cols < info.width)
                  & (rows >= 0) & (rows < info.height))
        if not inside.any():
            raise NoOverlap(f"no point of {spec.reference} falls on the class map")
        self.cols, self.rows = cols[inside].astype(np.int64), rows[inside].astype(np.int64)
        self.values = points.classes[inside]
        if not inside.all():
            reporter.warning(f"{int((~inside).sum())} reference points lie outside the class map and are not counted")

    def samples(self, window: Window, map_values: np.ndarray, map_valid: np.ndarray):
        chosen = (self.rows >= window.row_off) & (self.rows < window.row_end)
        rows, cols = self.rows[chosen] - window.row_off, self.cols[chosen] - window.col_off
        valid = map_valid[rows, cols]
        return self.values[chosen][valid], map_values[rows, cols][valid]


def _vector_reference(spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter):
    vector, layer = open_layer(spec.reference, spec.reference_layer, "reference")
    grid = info.grid
    path = spec.reference
    if not spec.class_field:
        raise InvalidSpec(f"the reference {path} is a vector layer: give 'class_field' (the field holding classes)")
    index = field_index(layer, spec.class_field, f"the reference layer {path}")
    if layer.GetLayerDefn().GetFieldDefn(index).GetType() not in (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal):
        raise InvalidSpec(f"the class field {spec.class_field!r} of {path} is not numeric; choose an integer field")
    xmin, xmax, ymin, ymax = layer.GetExtent()
    _require_overlap(grid, (xmin, ymin, xmax, ymax), layer_crs_wkt(layer), "reference layer", path)
    kind = _geometry_kind(layer)
    if kind == "point":
        return _PointReference(spec, info, reporter)
    if kind == "polygon":
        return _PolygonReference(vector, layer, spec.class_field, path, grid)
    raise EngineError(f"the reference layer {path} holds {kind} geometries; use points or polygons")


def _geometry_kind(layer) -> str:
    kind = ogr.GT_Flatten(layer.GetGeomType())
    if kind == ogr.wkbUnknown:
        layer.ResetReading()
        feature = layer.GetNextFeature()
        layer.ResetReading()
        geometry = feature.GetGeometryRef() if feature else None
        kind = ogr.GT_Flatten(geometry.GetGeometryType()) if geometry else ogr.wkbUnknown
    if kind in (ogr.wkbPoint, ogr.wkbMultiPoint):
        return "point"
    if kind in (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
        return "polygon"
    return ogr.GeometryTypeToName(kind).lower()


def open_reference(spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter):
    """The reference as an object with ``samples(window, map_values, map_valid)``; ``info``: the map."""
    if is_vector(spec.reference):
        return _vector_reference(spec, info, reporter)
    return _RasterReference(spec.reference, info.grid, reporter)


# -- class names ---------------------------------------------------------------------------------------
def map_classes(path: str) -> dict[int, ClassStyle]:
    """Class names and colours stored with a class map: its ``.qml`` style, else its GDAL RAT or
    category names and colour table (band 1). Empty when none."""
    qml = Path(path).with_suffix(".qml")
    if qml.is_file():
        found = qml_classes(qml)
        if found:
            return found
    dataset = _open_raster(path, "class map")
    band = dataset.GetRasterBand(1)
    names: dict[int, str] = {}
    colors: dict[int, str] = {}
    table = band.GetColorTable()
    if table is not None:
        for value in range(table.GetCount()):
            r, g, b = table.GetColorEntry(value)[:3]
            colors[value] = f"#{r:02x}{g:02x}{b:02x}"
    names.update({value: name for value, name in enumerate(band.GetCategoryNames() or []) if name})
    names.update(_rat_names(band.GetDefaultRAT()))
    return {value: ClassStyle(value, name, colors.get(value, "")) for value, name in names.items()}


def _rat_names(rat) -> dict[int, str]:
    if rat is None:
        return {}
    usages = {rat.GetUsageOfCol(i): i for i in range(rat.GetColumnCount())}
    name_col = usages.get(gdal.GFU_Name)
    if name_col is None:
        return {}
    value_col = usages.get(gdal.GFU_MinMax, usages.get(gdal.GFU_Min))
    names = {}
    for row in range(rat.GetRowCount()):
        value = rat.GetValueAsInt(row, value_col) if value_col is not None else row
        name = rat.GetValueAsString(row, name_col)
        if name:
            names[value] = name
    return names


def class_infos(values: Sequence[int], given: Sequence[ClassStyle], map_path: str) -> list[ClassStyle]:
    """Names for ``values``: the spec's classes, else the map's stored names, else ``class <v>``."""
    known = {c.value: c for c in given} if given else map_classes(map_path)
    return [known.get(v, ClassStyle(v, f"class {v}")) for v in values]


# -- counting ---------------------------------------------------------------------------------------------
def accumulate(spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter) -> ConfusionCounts:
    """Read the map strip by strip and count (reference, map) class pairs of the valid samples.

    Valid: the map and the reference have data (not nodata/NaN), inside the mask (if any), and
    neither value is in ``ignore_values``. ``info`` describes the map (see :func:`.rasters.raster_info`).
    """
    grid = info.grid
    reference = open_reference(spec, info, reporter)
    mask = None
    if spec.mask:
        mask = open_layer(spec.mask, spec.mask_layer, "mask")
    map_dataset = _open_raster(spec.map, "class map")
    map_band = map_dataset.GetRasterBand(1)
    ignore = np.asarray(spec.ignore_values or (), dtype=np.int64)
    counts = ConfusionCounts()
    strips = list(_strips(grid.width, grid.height, map_band.GetBlockSize()[1]))
    for done, window in enumerate(strips):
        reporter.check_cancelled()
        raw = map_band.ReadAsArray(window.col_off, window.row_off, window.width, window.height)
        valid = _valid(raw, info.nodata[0])
        if mask is not None:
            vector, layer = mask
            valid &= rasterize(grid, window, vector, layer.GetName())
        map_values = np.zeros(raw.shape, dtype=np.int64)
        map_values[valid] = _as_classes(raw[valid], spec.map)
        ref, pred = reference.samples(window, map_values, valid)
        if ignore.size:
            keep = ~(np.isin(ref, ignore) | np.isin(pred, ignore))
            ref, pred = ref[keep], pred[keep]
        counts.add(ref, pred)
        reporter.progress(90.0 * (done + 1) / len(strips))
    if not counts.classes:
        raise EngineError(f"no valid pixel in common between the class map {spec.map} and the reference "
                          f"{spec.reference}" + (f" inside the mask {spec.mask}" if spec.mask else "")
                          + " (check nodata, ignore_values, the mask and the class field)")
    return counts
