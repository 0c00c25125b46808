"""Map accuracy: compare a class map with reference labels; the ``evaluate_map`` job.

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

import base64
import csv
import html
import io
import json
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from .geometry import Bounds, Grid, Window
from .outputs import atomic_output, check_outputs
from .errors import NoOverlap
from .protocol import EngineError, Reporter
from .classes import ClassStyle
from .crs import bounds_in, crs_transform
from .metrics import ConfusionCounts, ratio, summarize
from .rasters import RasterInfo, raster_info, rasterize
from .sampling import read_points

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

BLOCK_PIXELS = 1 << 22  # pixels read per block (a strip of whole rows)
FILES = {
    "confusion_matrix_csv": "confusion_matrix.csv",
    "metrics_json": "metrics.json",
    "per_class_csv": "per_class.csv",
    "confusion_matrix_png": "confusion_matrix.png",
    "report_html": "report.html",
}


# -- the job spec ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationSpec:
    """The ``evaluate_map`` job spec (paths as given; see :func:`evaluate_map_job`)."""

    map: str
    reference: str
    output_folder: str
    reference_layer: str | None = None
    class_field: str | None = None
    mask: str | None = None
    mask_layer: str | None = None
    classes: tuple[ClassStyle, ...] = ()
    ignore_values: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, spec: dict) -> "EvaluationSpec":
        for key in ("map", "reference", "output_folder"):
            if not spec.get(key):
                raise EngineError(f"evaluate_map: the spec needs {key!r}")
        try:
            classes = tuple(
                ClassStyle(int(c["value"]), str(c.get("name") or f"class {int(c['value'])}"), str(c.get("color") or ""))
                for c in spec.get("classes") or ()
            )
            ignore = tuple(int(v) for v in spec.get("ignore_values") or ())
        except (KeyError, TypeError, ValueError) as error:
            raise EngineError(f"evaluate_map: 'classes' must be [{{value, name, color}}] and "
                              f"'ignore_values' integers ({error})") from None
        return cls(
            map=str(spec["map"]), reference=str(spec["reference"]), output_folder=str(spec["output_folder"]),
            reference_layer=spec.get("reference_layer") or None, class_field=spec.get("class_field") or None,
            mask=spec.get("mask") or None, mask_layer=spec.get("mask_layer") or None,
            classes=classes, ignore_values=ignore,
        )


# -- GDAL / OGR access -------------------------------------------------------------------------------
def _open_raster(path: str, what: str):
    try:
        dataset = gdal.OpenEx(path, gdal.OF_RASTER)
    except RuntimeError as error:
        raise EngineError(f"cannot open the {what} raster {path}: {error}") from None
    if dataset is None or dataset.RasterCount < 1:
        raise EngineError(f"the {what} {path} is not a raster with at least one band")
    return dataset


def _open_vector(path: str, layer_name: str | None, what: str):
    """(dataset, layer) of a vector file, or None if ``path`` is no vector dataset."""
    try:
        dataset = gdal.OpenEx(path, gdal.OF_VECTOR)
    except RuntimeError:
        return None
    if dataset is None or dataset.GetLayerCount() == 0:
        return None
    layer = dataset.GetLayerByName(layer_name) if layer_name else dataset.GetLayer(0)
    if layer is None:
        names = [dataset.GetLayer(i).GetName() for i in range(dataset.GetLayerCount())]
        raise EngineError(f"the {what} {path} has no layer {layer_name!r}; layers: {', '.join(names)}")
    return dataset, layer


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
    """A reference raster read on the map's grid (warped nearest to a VRT when grids differ)."""

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
        reporter.log(f"reference {path} is on another grid or CRS: resampled (nearest) onto the map's grid")
        options = gdal.WarpOptions(
            format="VRT", outputBounds=grid.bounds, width=grid.width, height=grid.height,
            dstSRS=info.crs_wkt if same_crs else grid.crs_wkt, resampleAlg="near", dstAlpha=True, srcNodata=self.nodata,
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

    def __init__(self, spec: EvaluationSpec, info: RasterInfo, reporter: Reporter):
        points = read_points(spec.reference, info.crs_wkt, spec.class_field, layer_name=spec.reference_layer,
                             reporter=reporter)
        if not len(points.x):
            raise EngineError(f"the reference layer {spec.reference} has no point with a value in field "
                              f"{spec.class_field!r}")
        cols, rows = (np.floor(v) for v in info.grid.pixel(points.x, points.y))
        inside = (np.isfinite(cols) & np.isfinite(rows) & (cols >= 0) & (cols < info.width)
                  & (rows >= 0) & (rows < info.height))
        if not inside.any():
            raise EngineError(f"no point of {spec.reference} falls on the class map")
        self.cols, self.rows = cols[inside].astype(np.int64), rows[inside].astype(np.int64)
        self.values = points.classes[inside]
        self.on_nodata = 0  # points on class-map nodata (or outside the mask): counted, reported
        if not inside.all():
            reporter.warning(f"{int((~inside).sum())} reference points lie outside the class map and are not counted")

    def samples(self, window: Window, map_values: np.ndarray, map_valid: np.ndarray):
        chosen = (self.rows >= window.row_off) & (self.rows < window.row_end)
        rows, cols = self.rows[chosen] - window.row_off, self.cols[chosen] - window.col_off
        valid = map_valid[rows, cols]
        self.on_nodata += int((~valid).sum())
        return self.values[chosen][valid], map_values[rows, cols][valid]


def _vector_reference(found, spec: EvaluationSpec, info: RasterInfo, reporter: Reporter):
    vector, layer = found
    grid = info.grid
    path = spec.reference
    if not spec.class_field:
        raise EngineError(f"the reference {path} is a vector layer: give 'class_field' (the field holding classes)")
    definition = layer.GetLayerDefn()
    index = definition.GetFieldIndex(spec.class_field)
    if index < 0:
        names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
        raise EngineError(f"the reference layer {path} has no field {spec.class_field!r}; fields: {', '.join(names)}")
    if definition.GetFieldDefn(index).GetType() not in (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal):
        raise EngineError(f"the class field {spec.class_field!r} of {path} is not numeric; choose an integer field")
    _require_geometries(layer, path)
    srs = layer.GetSpatialRef()
    xmin, xmax, ymin, ymax = layer.GetExtent()
    _require_overlap(grid, (xmin, ymin, xmax, ymax), srs.ExportToWkt() if srs else "", "reference layer", path)
    kind = _geometry_kind(layer)
    if kind == "point":
        return _PointReference(spec, info, reporter)
    if kind == "polygon":
        return _PolygonReference(vector, layer, spec.class_field, path, grid)
    raise EngineError(f"the reference layer {path} holds {kind} geometries; use points or polygons")


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


def open_reference(spec: EvaluationSpec, info: RasterInfo, reporter: Reporter):
    """The reference as an object with ``samples(window, map_values, map_valid)``; ``info``: the map."""
    found = _open_vector(spec.reference, spec.reference_layer, "reference")
    if found is not None:
        return _vector_reference(found, spec, info, reporter)
    return _RasterReference(spec.reference, info.grid, reporter)


# -- class names ---------------------------------------------------------------------------------------
def map_classes(path: str) -> dict[int, ClassStyle]:
    """Class names and colours stored with a class map: its ``.qml`` style, else its GDAL RAT or
    category names and colour table (band 1). Empty when none."""
    qml = Path(path).with_suffix(".qml")
    if qml.is_file():
        found = _qml_classes(qml)
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


def _qml_classes(qml: Path) -> dict[int, ClassStyle]:
    """Classes of a QGIS raster style: paletted ``paletteEntry`` or pseudocolor ``item`` elements."""
    try:
        root = ElementTree.parse(qml).getroot()
    except ElementTree.ParseError:
        return {}
    classes = {}
    for entry in list(root.iter("paletteEntry")) + list(root.iter("item")):
        try:
            value = float(entry.get("value", ""))
        except ValueError:
            continue
        if value == int(value) and entry.get("label"):
            classes[int(value)] = ClassStyle(int(value), entry.get("label"), entry.get("color", "")[:7])
    return classes


def class_infos(values: Sequence[int], given: Sequence[ClassStyle], map_path: str) -> list[ClassStyle]:
    """Names for ``values``: the spec's classes, else the map's stored names, else ``class <v>``."""
    known = {c.value: c for c in given} if given else map_classes(map_path)
    return [known.get(v, ClassStyle(v, f"class {v}")) for v in values]


# -- the job ---------------------------------------------------------------------------------------------
def accumulate(spec: EvaluationSpec, info: RasterInfo, reporter: Reporter) -> ConfusionCounts:
    """Read the map strip by strip and count (reference, map) class pairs of the valid samples.

    Valid: the map and the reference have data (not nodata/NaN), inside the mask (if any), and
    neither value is in ``ignore_values``. ``info`` describes the map (see :func:`.rasters.raster_info`).
    """
    check_class_map(info)
    grid = info.grid
    reference = open_reference(spec, info, reporter)
    mask = None
    if spec.mask:
        mask = _open_vector(spec.mask, spec.mask_layer, "mask")
        if mask is None:
            raise EngineError(f"the mask {spec.mask} is not a vector layer (polygons)")
    map_dataset = _open_raster(spec.map, "class map")
    map_band = map_dataset.GetRasterBand(1)
    ignore = np.asarray(spec.ignore_values, dtype=np.int64)
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
    return counts


def evaluate_map_job(spec: dict, reporter: Reporter) -> dict:
    """Compare a class map with a reference; write the report files to ``output_folder``.

    Spec: ``map`` (class raster, band 1), ``reference`` (raster, or vector path with
    ``reference_layer`` and numeric ``class_field``), optional ``mask`` (polygon vector path,
    ``mask_layer``), ``classes`` ([{value, name, color}]), ``ignore_values`` ([int]),
    ``output_folder``. Returns ``{"metrics": {...}, "files": {key: path}}`` (see :data:`FILES`).
    """
    evaluation = EvaluationSpec.from_dict(spec)
    check_outputs([str(Path(evaluation.output_folder) / name) for name in FILES.values()],
                  [evaluation.map, evaluation.reference, evaluation.mask])
    counts = accumulate(evaluation, raster_info(evaluation.map), reporter)
    classes = class_infos(counts.classes, evaluation.classes, evaluation.map)
    matrix = counts.matrix([c.value for c in classes])
    metrics = metrics_document(matrix, classes, evaluation)
    reporter.log(f"{metrics['samples']} samples, overall accuracy {metrics['overall_accuracy']:.4f}, "
                 f"kappa {metrics['kappa']}, macro F-score {metrics['macro_f1']:.4f}")
    files = write_report(metrics, Path(evaluation.output_folder))
    reporter.progress(100)
    return {"metrics": metrics, "files": files}


def metrics_document(matrix: np.ndarray, classes: Sequence[ClassStyle], spec: EvaluationSpec) -> dict:
    """Everything measured, JSON-ready (NaN -> None): inputs, classes, matrix, scores."""
    summary = summarize(matrix)
    per_class = summary.pop("per_class")
    rows = [
        {"value": c.value, "name": c.name, "color": c.color,
         **{key: per_class[key][i] for key in ("precision", "recall", "f1", "support", "predicted")}}
        for i, c in enumerate(classes)
    ]
    document = {
        "map": spec.map, "reference": spec.reference, "reference_layer": spec.reference_layer,
        "class_field": spec.class_field, "mask": spec.mask, "ignore_values": list(spec.ignore_values),
        **summary,
        "classes": rows,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: reference classes, columns: map classes (order of 'classes')",
    }
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in document.items()}


# -- report files ----------------------------------------------------------------------------------------
def write_report(metrics: dict, folder: Path) -> dict[str, str]:
    """Write :data:`FILES` into ``folder`` (each file atomically); return key -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    png = confusion_png(metrics)
    contents = {
        "confusion_matrix_csv": _confusion_csv(metrics),
        "metrics_json": json.dumps(metrics, indent=2),
        "per_class_csv": _per_class_csv(metrics),
        "confusion_matrix_png": png,
        "report_html": report_html(metrics, png),
    }
    paths = {}
    for key, content in contents.items():
        path = folder / FILES[key]
        with atomic_output(path) as temp:
            if isinstance(content, bytes):
                temp.write_bytes(content)
            else:
                temp.write_text(content, encoding="utf-8")
        paths[key] = str(path)
    return paths


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _confusion_csv(metrics: dict) -> str:
    names = [c["name"] for c in metrics["classes"]]
    rows = [["reference \\ map"] + names]
    rows += [[name] + counts for name, counts in zip(names, metrics["confusion_matrix"])]
    return _csv_text(rows)


PER_CLASS_COLUMNS = ("value", "name", "precision", "recall", "f1", "support", "predicted")


def _per_class_csv(metrics: dict) -> str:
    return _csv_text([list(PER_CLASS_COLUMNS)] + [[c[k] for k in PER_CLASS_COLUMNS] for c in metrics["classes"]])


def confusion_png(metrics: dict) -> bytes:
    """The confusion matrix as a PNG: counts in the cells, colours = row-normalised (recall) fractions."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = [c["name"] for c in metrics["classes"]]
    fractions = ratio(matrix, matrix.sum(axis=1, keepdims=True))
    size = min(16.0, 3.0 + 0.6 * len(names))
    figure = Figure(figsize=(size + 1.5, size), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of the reference class (row)")
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("map class")
    axes.set_ylabel("reference class")
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} samples)")
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8,
                      color="white" if fractions[i, j] > 0.5 else "black")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def percent(value: float | None) -> str:
    """A fraction as shown in the report: percent with two decimals ("n/a" for None)."""
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def decimal(value: float | None) -> str:
    """Kappa as shown in the report: four decimals ("n/a" for None)."""
    return "n/a" if value is None else f"{value:.4f}"


def report_html(metrics: dict, png: bytes) -> str:
    """A self-contained HTML page: summary, per-class table (OTBTF style), matrix, embedded PNG."""
    e = html.escape

    def swatch(color):
        return f'<span class="swatch" style="background:{e(color)}"></span>' if color else ""

    rows = "".join(
        f"<tr><td>{c['value']}</td><td>{swatch(c['color'])}{e(c['name'])}</td><td>{percent(c['precision'])}</td>"
        f"<td>{percent(c['recall'])}</td><td>{percent(c['f1'])}</td><td>{c['support']}</td><td>{c['predicted']}</td></tr>"
        for c in metrics["classes"]
    )
    for kind in ("macro", "weighted"):
        rows += (f'<tr class="average"><td></td><td>{kind} average</td><td>{percent(metrics[f"{kind}_precision"])}</td>'
                 f'<td>{percent(metrics[f"{kind}_recall"])}</td><td>{percent(metrics[f"{kind}_f1"])}</td>'
                 f"<td></td><td></td></tr>")
    names = [e(c["name"]) for c in metrics["classes"]]
    matrix = "".join(f"<tr><th>{name}</th>" + "".join(f"<td>{n}</td>" for n in counts) + "</tr>"
                     for name, counts in zip(names, metrics["confusion_matrix"]))
    sources = "".join(f"<tr><th>{label}</th><td>{e(str(metrics[key]))}</td></tr>"
                      for label, key in (("Class map", "map"), ("Reference", "reference"),
                                         ("Reference layer", "reference_layer"), ("Class field", "class_field"),
                                         ("Mask", "mask"), ("Ignored values", "ignore_values"))
                      if metrics.get(key) not in (None, []))
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DeepField map evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #eee; }} td:nth-child(2) {{ text-align: left; }}
tr.average td {{ font-weight: bold; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; border: 1px solid #555; }}
</style></head><body>
<h1>Map evaluation</h1>
<table id="sources">{sources}</table>
<h2>Summary</h2>
<table id="summary">
<tr><th>Overall accuracy (%)</th><td>{percent(metrics['overall_accuracy'])}</td></tr>
<tr><th>Kappa</th><td>{decimal(metrics['kappa'])}</td></tr>
<tr><th>Macro F-score (%)</th><td>{percent(metrics['macro_f1'])}</td></tr>
<tr><th>Weighted F-score (%)</th><td>{percent(metrics['weighted_f1'])}</td></tr>
<tr><th>Samples</th><td>{metrics['samples']}</td></tr>
</table>
<h2>Per class</h2>
<table id="per-class">
<tr><th>Value</th><th>Class</th><th>Precision (%)</th><th>Recall (%)</th><th>F-score (%)</th>
<th>Reference samples</th><th>Map samples</th></tr>
{rows}
</table>
<h2>Confusion matrix</h2>
<p>Rows: reference class; columns: map class; cells: samples.</p>
<table id="confusion"><tr><th>reference \\ map</th>{''.join(f'<th>{n}</th>' for n in names)}</tr>
{matrix}
</table>
<img alt="confusion matrix" src="data:image/png;base64,{image}">
</body></html>
"""
