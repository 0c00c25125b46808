"""Map accuracy: compare a class map with reference labels (the library of the ``evaluate_map``
job, :mod:`engine.jobs.evaluate_map`; the report files are written by :mod:`engine.reports`).

Vocabulary:

- The **map** is a class raster (band 1, integer class values); its grid is the evaluation grid.
- The **reference** holds the true classes: a raster on any grid/CRS (resampled nearest onto the
  map's grid), polygons (rasterised onto the map's grid: pixels whose centre is inside), or points
  (each point is one sample: the map pixel that holds it). A text class field is matched to the
  map's classes by name (the names stored with the map, what the model learnt: its ``.qml``,
  GDAL category names or RAT; else the spec's ``classes``); texts of no class and nulls are
  skipped and counted. Pixels outside every reference polygon are not counted, or, with the
  spec's ``background``, are that class (pixels of skipped polygons are never counted).
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

from .classes import ClassStyle, class_styles, qml_classes
from .contract import EvaluateMapSpec
from .crs import bounds_in, crs_transform
from .errors import EngineError, InvalidSpec, NoOverlap
from .geometry import Bounds, Grid, Window
from .metrics import ConfusionCounts
from .protocol import Reporter
from .rasters import RasterInfo, raster_info, rasterize, resampling_for
from .vectors import class_polygons, field_index, is_vector, layer_crs_wkt, open_layer, read_points

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
    """EngineError unless ``bounds`` (in ``crs_wkt``) overlap the class map's grid. Closed
    intervals: the bounds of one point, or of points on one row, have no area but do overlap."""
    bounds = bounds_in(bounds, crs_wkt, grid.crs_wkt)
    xmin, ymin, xmax, ymax = grid.bounds
    if bounds is None or bounds[0] > xmax or bounds[2] < xmin or bounds[1] > ymax or bounds[3] < ymin:
        raise NoOverlap(f"the {what} {path} does not overlap the class map")


def check_class_map(info: RasterInfo) -> None:
    """A class map is one band of integer class values: refuse an image of several bands (a
    real-valued band is refused where a value with a fraction is read, see :func:`_as_classes`)."""
    if info.bands != 1:
        raise EngineError(f"the class map {info.path} has {info.bands} bands of {info.dtype}: a class map is one "
                          "band of integer class values (e.g. Apply model's output); give the class map, not an image")


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

    skipped = None  # features skipped per reason (vector references)
    background = None  # the class outside every polygon (polygon references)

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
    """Reference polygons rasterised strip by strip onto the map's grid, burning the class field
    (``codes``: the class value of each burnt value 1..K, for text fields burnt as codes).

    With a ``background`` class value, the valid pixels outside every polygon of ``outline``
    (the reference layer as given, skipped features included) are that class."""

    def __init__(self, vector, layer, field_name: str, path: str, grid: Grid, codes: np.ndarray | None = None,
                 background: int | None = None, outline=None, skipped: dict | None = None):
        self.vector, self.layer, self.field, self.path, self.grid = vector, layer, field_name, path, grid
        self.codes, self.background, self.skipped = codes, background, skipped
        self.outline = outline or (vector, layer)

    def samples(self, window: Window, map_values: np.ndarray, map_valid: np.ndarray):
        values = rasterize(self.grid, window, self.vector, self.layer.GetName(), self.field)
        inside = map_valid & np.isfinite(values)
        classes = np.zeros(values.shape, dtype=np.int64)
        if self.codes is not None:
            classes[inside] = self.codes[values[inside].astype(np.int64) - 1]
        else:
            classes[inside] = _as_classes(values[inside], f"{self.path} field {self.field!r}")
        if self.background is None:
            return classes[inside], map_values[inside]
        vector, layer = self.outline
        outside = map_valid & ~inside & ~rasterize(self.grid, window, vector, layer.GetName())
        classes[outside] = self.background
        counted = inside | outside
        return classes[counted], map_values[counted]


class _PointReference:
    """Reference points: each point is one sample, the map pixel holding it (map CRS)."""

    def __init__(self, spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter, known=()):
        points = read_points(spec.reference, info.crs_wkt, spec.class_field, layer_name=spec.reference_layer,
                             warn=reporter.warning, known=known)
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
        self.skipped, self.background = points.skipped, None
        self.on_nodata = 0  # points on class-map nodata (or outside the mask): counted, reported
        if not inside.all():
            reporter.warning(f"{int((~inside).sum())} reference points lie outside the class map and are not counted")

    def samples(self, window: Window, map_values: np.ndarray, map_valid: np.ndarray):
        chosen = (self.rows >= window.row_off) & (self.rows < window.row_end)
        rows, cols = self.rows[chosen] - window.row_off, self.cols[chosen] - window.col_off
        valid = map_valid[rows, cols]
        self.on_nodata += int((~valid).sum())
        return self.values[chosen][valid], map_values[rows, cols][valid]


def _vector_reference(spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter):
    vector, layer = open_layer(spec.reference, spec.reference_layer, "reference")
    grid = info.grid
    path = spec.reference
    if not spec.class_field:
        raise InvalidSpec(f"the reference {path} is a vector layer: give 'class_field' (the field holding classes)")
    index = field_index(layer, spec.class_field, f"the reference layer {path}")
    kind = layer.GetLayerDefn().GetFieldDefn(index).GetType()
    if kind not in (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal, ogr.OFTString):
        raise InvalidSpec(f"the class field {spec.class_field!r} of {path} holds neither integers nor text; "
                          "choose a class field")
    named = _map_names(spec)
    known = _named_classes(spec, path, named) if kind == ogr.OFTString else ()
    _require_geometries(layer, path)
    xmin, xmax, ymin, ymax = layer.GetExtent()
    _require_overlap(grid, (xmin, ymin, xmax, ymax), layer_crs_wkt(layer), "reference layer", path)
    geometry = _geometry_kind(layer)
    if geometry not in ("point", "polygon"):
        raise EngineError(f"the reference layer {path} holds {geometry} geometries; use points or polygons")
    if geometry == "point":
        if spec.background is not None:
            raise InvalidSpec(f"the reference layer {path} holds points: 'background' (the class of the pixels "
                              "outside every polygon) is for a polygon reference; leave it empty")
        return _PointReference(spec, info, reporter, known)
    background = _background_value(spec, named, path)
    reporter.log(f"reference polygons {path}, rasterised on the map's pixels; outside every polygon: "
                 + ("not counted" if background is None else f"class {background}"
                    + (f" ({spec.background})" if str(spec.background).strip() != str(background) else "")))
    if not known:
        return _PolygonReference(vector, layer, spec.class_field, path, grid, background=background)
    burn, coding = class_polygons(path, spec.class_field, info.crs_wkt, layer_name=spec.reference_layer,
                                  warn=reporter.warning, known=known)
    reporter.log(f"class field {spec.class_field!r} matched to the map's class names: "
                 + ", ".join(f"{c.name}={c.value}" for c in coding.classes))
    return _PolygonReference(burn, burn.GetLayer(0), "burn", path, grid,
                             np.array([c.value for c in coding.classes], dtype=np.int64),
                             background, (vector, layer), coding.skipped)


def _map_names(spec: EvaluateMapSpec) -> tuple[ClassStyle, ...]:
    """The map's classes by name: the names stored with the map (what the model learnt, see
    :func:`map_classes`), then the spec's ``classes`` of other names."""
    stored = tuple(map_classes(spec.map).values())
    names = {c.name for c in stored}
    return stored + tuple(c for c in class_styles(spec.classes or ()) if c.name not in names)


def _named_classes(spec: EvaluateMapSpec, path: str, named: tuple[ClassStyle, ...]) -> tuple[ClassStyle, ...]:
    """``named`` (:func:`_map_names`), to match a text reference field; InvalidSpec when empty."""
    if not named:
        raise InvalidSpec(f"the class field {spec.class_field!r} of {path} holds text: give 'classes' "
                          f"(value, name) or a class map with its class names (.qml style or GDAL category "
                          "names) to match the names")
    return named


def _background_value(spec: EvaluateMapSpec, named: tuple[ClassStyle, ...], path: str) -> int | None:
    """The class value of the spec's ``background``: a value, or a name among ``named``."""
    background = spec.background
    if background is None or isinstance(background, int):
        return background
    text = background.strip()
    value = next((c.value for c in named if c.name == text), None)
    if value is not None:
        return value
    try:
        return int(text)
    except ValueError:
        pass
    names = ", ".join(sorted({repr(c.name) for c in named}))
    raise InvalidSpec(f"the background {text!r} (the class of the pixels outside every polygon of {path}) is not "
                      f"a class name of the class map {spec.map}"
                      + (f"; its class names: {names}" if names else ", which has no class names")
                      + "; give one of its class names or a class value")


def _require_geometries(layer, path: str) -> None:
    """EngineError when the reference layer has no feature, or no feature with a geometry."""
    count = layer.GetFeatureCount()
    if count == 0:
        raise EngineError(f"the reference layer {path} is empty (no feature): give a layer with reference samples")
    layer.ResetReading()
    located = any(feature.GetGeometryRef() is not None and not feature.GetGeometryRef().IsEmpty() for feature in layer)
    layer.ResetReading()
    if not located:
        raise EngineError(f"none of the {count} features of the reference layer {path} has a geometry: "
                          "give points or polygons with a position")


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
    if spec.background is not None:
        raise InvalidSpec(f"the reference {spec.reference} is a raster: 'background' (the class of the pixels "
                          "outside every polygon) is for a polygon reference; a reference raster's unlabelled "
                          "pixels are its nodata")
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
def accumulate(spec: EvaluateMapSpec, info: RasterInfo, reporter: Reporter) -> tuple[ConfusionCounts, object]:
    """Read the map strip by strip and count (reference, map) class pairs of the valid samples.

    Valid: the map and the reference have data (not nodata/NaN), inside the mask (if any), and
    neither value is in ``ignore_values``. ``info`` describes the map (see :func:`.rasters.raster_info`).
    Returns ``(ConfusionCounts, reference)``: the reference (:func:`open_reference`) tells the
    features it ``skipped`` per reason (None for a raster) and its ``background`` class.
    """
    check_class_map(info)
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
    skipped = getattr(reference, "on_nodata", 0)
    if skipped:
        reporter.warning(f"{skipped} of {len(reference.values)} reference points fall on nodata of the class map "
                         f"{spec.map}" + (" or outside the mask" if spec.mask else "") + " and are not counted")
    if not counts.classes:
        raise EngineError(f"no valid pixel in common between the class map {spec.map} and the reference "
                          f"{spec.reference}" + (f" inside the mask {spec.mask}" if spec.mask else "")
                          + " (check nodata, ignore_values, the mask and the class field)")
    return counts, reference
