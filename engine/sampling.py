"""Sample positions: where patches are cut, their class, their split (``select_samples`` job).

Vocabulary:

- A **position** is a point in the map units of the *reference raster* (the image patches will
  be cut from), optionally with a class value (an integer) and a split (``train``, ``valid``,
  ``test``). Positions are written as a GeoPackage point layer ``positions`` with fields
  ``class`` (integer or null), ``split`` and the feature id ``fid`` (1..n).
- The **footprint** of a position is the ``patch_size`` x ``patch_size`` reference pixels of
  its patch, placed by the patch-centre rule (:func:`engine.geometry.patch_start`).

Strategies (``spec["strategy"]``):

``points``      a point layer with an integer class field, any CRS (reprojected; equivalent
                CRSs, e.g. EPSG:3358 and an unnamed LCC with the same parameters, are not).
``polygons``    a polygon layer with an integer class field: ``samples_per_class`` random pixel
                centres per class, or every ``step``-th pixel centre (``polygon_mode: grid``);
                ``border_distance`` (map units) keeps positions that far inside the polygons.
``label_raster`` a label raster: ``label_strategy`` ``constant`` (``samples`` per class),
                ``total`` (``samples`` spread evenly over the classes), ``smallest`` (as many per
                class as the smallest class has), ``all``; its integer nodata is skipped.
``grid``        a regular grid (``step`` pixels) over the reference raster keeping only
                positions whose whole footprint is valid (no band is nodata) and inside the
                optional ``mask`` raster (non-zero); positions have no class.

Splits (``split``: proportions for train/valid/test): ``split_mode: random`` (stratified per
class) or ``blocks``: square blocks of ``block_size`` map units, from the raster origin, go
wholly to one split and positions whose footprint crosses a block border are dropped, so no
footprint of one split overlaps a footprint of another. The same seed gives the same selection.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import SPLITS
from .geometry import patch_start
from .outputs import atomic_output, check_outputs
from .protocol import EngineError, Reporter
from .crs import crs_transform, transform_xy
from .rasters import invalid_pixels, raster_info

LAYER = "positions"
BLOCKS_LAYER = "blocks"
BLOCK_PATCHES = 8  # automatic block side, in patches
MIN_BLOCKS = 3  # fewer blocks holding positions cannot fill train, valid and test
STRATEGIES = ("points", "polygons", "label_raster", "grid")
LABEL_STRATEGIES = ("constant", "total", "smallest", "all")
READ_BUDGET_BYTES = 64 * 2**20


# -- positions -------------------------------------------------------------------------------

@dataclass
class Positions:
    """Positions in the reference raster's CRS (map units); ``classes`` is None without classes."""

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


# -- vectors ---------------------------------------------------------------------------------

def _open_layer(path: str, layer_name: str | None = None):
    from osgeo import ogr

    ogr.UseExceptions()
    try:
        source = ogr.Open(str(path))
    except RuntimeError as error:
        raise EngineError(f"cannot open vector file {path}: {error}") from None
    if source is None:
        raise EngineError(f"cannot open vector file {path}")
    layer = source.GetLayerByName(layer_name) if layer_name else source.GetLayer(0)
    if layer is None:
        raise EngineError(f"{path}: no layer {layer_name!r}")
    return source, layer


def _layer_wkt(layer, path: str, reporter: Reporter | None, target_wkt: str) -> str:
    srs = layer.GetSpatialRef()
    if srs is None:
        if reporter:
            reporter.warning(f"{path} has no CRS: its coordinates are taken in the raster's CRS")
        return target_wkt
    return srs.ExportToWkt()


def _field_index(layer, field: str, path: str) -> int:
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if field not in names:
        raise EngineError(f"{path}: no field {field!r}; fields: {', '.join(names) or 'none'}")
    return names.index(field)


def _integer(value, field: str, path: str) -> int | None:
    """A class value as an int; None for null; EngineError for a value that is not integer-like."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise EngineError(f"{path}: class field {field!r} must hold integers; found {value!r}")
    return int(number)


def read_points(path: str, target_wkt: str, class_field: str | None = None,
                split_field: str | None = None, layer_name: str | None = None,
                reporter: Reporter | None = None) -> Positions:
    """Points of a vector layer, reprojected onto ``target_wkt``; features with a null class skipped.

    Multi-points give one position per part. ``split_field`` values must be train/valid/test.
    """
    from osgeo import ogr

    source, layer = _open_layer(path, layer_name)
    src_wkt = _layer_wkt(layer, path, reporter, target_wkt)
    class_index = _field_index(layer, class_field, path) if class_field else None
    split_index = _field_index(layer, split_field, path) if split_field else None
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
            value = _integer(feature.GetField(class_index), class_field, path)
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
    if skipped and reporter:
        reporter.warning(f"{path}: {skipped} feature(s) without geometry or class value skipped")
    x, y = transform_xy(np.array(xs), np.array(ys), src_wkt, target_wkt)
    return Positions(x, y, np.array(classes, dtype=np.int64) if class_field else None,
                     np.array(splits, dtype=object))


def create_gpkg_layer(path: str | Path, name: str, crs_wkt: str, geometry_type: int):
    """A new GeoPackage ``path`` with one empty layer ``name`` (FID column ``fid``): (source, layer)."""
    from osgeo import gdal, ogr, osr

    ogr.UseExceptions()
    gdal.PushErrorHandler("CPLQuietErrorHandler")  # the ".part" extension warning
    try:
        source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    finally:
        gdal.PopErrorHandler()
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs_wkt)
    return source, source.CreateLayer(name, srs, geometry_type, ["FID=fid"])


def write_positions(path: str | Path, positions: Positions, crs_wkt: str,
                    extra_fields: dict[str, np.ndarray] | None = None) -> None:
    """Write ``positions`` as the GeoPackage point layer ``positions`` (fid 1..n, class, split)."""
    from osgeo import ogr

    source, layer = create_gpkg_layer(path, LAYER, crs_wkt, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("split", ogr.OFTString))
    extra_fields = extra_fields or {}
    for name in extra_fields:
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTInteger64))
    definition = layer.GetLayerDefn()
    extra = [(definition.GetFieldIndex(name), values.tolist()) for name, values in extra_fields.items()]
    classes = None if positions.classes is None else positions.classes.tolist()
    splits = ["train"] * len(positions) if positions.splits is None else [str(s) for s in positions.splits]
    layer.StartTransaction()
    for i, (x, y) in enumerate(zip(positions.x.tolist(), positions.y.tolist())):
        feature = ogr.Feature(definition)
        feature.SetFID(i + 1)
        if classes is not None:
            feature.SetField(0, classes[i])
        feature.SetField(1, splits[i])
        for index, values in extra:
            feature.SetField(index, values[i])
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(x, y)
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    del source  # closing the dataset writes the GeoPackage


# -- raster helpers --------------------------------------------------------------------------

def footprint_starts(info, x, y, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First column and row of each position's ``patch_size`` patch (patch-centre rule)."""
    u, v = info.grid.pixel(x, y)
    cols = np.array([patch_start(a, patch_size) for a in u], dtype=np.int64)
    rows = np.array([patch_start(b, patch_size) for b in v], dtype=np.int64)
    return cols, rows


def _strip_rows(width: int, bands: int, itemsize: int = 8) -> int:
    return max(1, READ_BUDGET_BYTES // max(1, width * bands * itemsize))


def pixels_valid(path: str, info, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether pixel ``(col, row)`` (inside the raster) has no nodata band, read strip by strip."""
    from osgeo import gdal

    valid = np.zeros(len(cols), dtype=bool)
    if not len(cols):
        return valid
    dataset = gdal.Open(str(path))
    step = _strip_rows(info.width, info.bands)
    order = np.argsort(rows, kind="stable")
    start = 0
    while start < len(order):
        first = rows[order[start]]
        end = np.searchsorted(rows[order], first + step, side="left")
        chosen = order[start:end]
        c0, c1 = cols[chosen].min(), cols[chosen].max() + 1
        r1 = rows[chosen].max() + 1
        block = dataset.ReadAsArray(int(c0), int(first), int(c1 - c0), int(r1 - first))
        block = block.reshape((info.bands,) + block.shape[-2:])
        bad = invalid_pixels(block, info.nodata, band_axis=0)
        valid[chosen] = ~bad[rows[chosen] - first, cols[chosen] - c0]
        start = end
    return valid


def filter_on_raster(path: str, info, positions: Positions, patch_size: int,
                     reporter: Reporter) -> tuple[Positions, dict]:
    """Drop positions outside the raster, whose footprint leaves it, or on a nodata pixel."""
    u, v = info.grid.pixel(positions.x, positions.y)
    inside = (u >= 0) & (u < info.width) & (v >= 0) & (v < info.height)
    if len(positions) and not inside.any():
        raise EngineError(
            f"none of the {len(positions)} positions falls inside the raster {path} "
            f"(check that the vector layer and the raster overlap)")
    cols, rows = footprint_starts(info, positions.x, positions.y, patch_size)
    fits = inside & (cols >= 0) & (rows >= 0) & (cols + patch_size <= info.width) & (rows + patch_size <= info.height)
    centre_cols = np.floor(u[fits]).astype(np.int64)
    centre_rows = np.floor(v[fits]).astype(np.int64)
    valid = np.zeros(len(positions), dtype=bool)
    valid[fits] = pixels_valid(path, info, centre_cols, centre_rows)
    dropped = {"outside": int((~inside).sum()), "patch_outside": int((inside & ~fits).sum()),
               "nodata": int((fits & ~valid).sum())}
    reporter.log(f"positions kept {int(valid.sum())} of {len(positions)}; dropped: "
                 + ", ".join(f"{k} {n}" for k, n in dropped.items()))
    return positions.subset(valid), dropped


# -- strategies ------------------------------------------------------------------------------

def polygon_positions(path: str, info, class_field: str, rng: np.random.Generator, *,
                      mode: str = "random", samples_per_class: int = 100, step: int = 1,
                      border_distance: float = 0.0, layer_name: str | None = None,
                      reporter: Reporter | None = None) -> Positions:
    """Pixel centres of the raster inside the class polygons (random per class or a grid)."""
    from osgeo import gdal, ogr

    source, layer = _open_layer(path, layer_name)
    class_index = _field_index(layer, class_field, path)
    transform = crs_transform(_layer_wkt(layer, path, reporter, info.crs_wkt), info.crs_wkt)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
    burn = memory.CreateLayer("polygons", None, ogr.wkbMultiPolygon)
    burn.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
    values: list[int] = []
    for feature in layer:
        value = _integer(feature.GetField(class_index), class_field, path)
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
    target = gdal.GetDriverByName("MEM").Create("", info.width, info.height, 1, gdal.GDT_Int32)
    target.SetGeoTransform(info.geotransform)
    gdal.RasterizeLayer(target, [1], burn, options=["ATTRIBUTE=burn"])
    codes = target.ReadAsArray()
    del source
    if not codes.any():
        raise EngineError(f"no pixel centre of {info.path} lies inside the polygons of {path} "
                          "(no overlap, or border_distance too large)")
    xs, ys, classes = [], [], []
    for code, value in enumerate(values, start=1):
        rows, cols = np.nonzero(codes == code)
        if mode == "grid":
            keep = (rows % step == 0) & (cols % step == 0)
            rows, cols = rows[keep], cols[keep]
        elif mode == "random":
            if len(rows) < samples_per_class and reporter:
                reporter.warning(f"class {value}: only {len(rows)} pixels inside its polygons "
                                 f"(asked {samples_per_class})")
            chosen = np.sort(rng.choice(len(rows), size=min(samples_per_class, len(rows)), replace=False))
            rows, cols = rows[chosen], cols[chosen]
        else:
            raise EngineError(f"unknown polygon_mode {mode!r}; use 'random' or 'grid'")
        x, y = _pixel_centres(info, cols, rows)
        xs.append(x)
        ys.append(y)
        classes.append(np.full(len(x), value, dtype=np.int64))
    return Positions(np.concatenate(xs), np.concatenate(ys), np.concatenate(classes))


def _pixel_centres(info, cols, rows) -> tuple[np.ndarray, np.ndarray]:
    return info.grid.map_xy(np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)


def _label_strips(path: str, info, nodata):
    """Yield ``(row_offset, int64 labels [h, w], valid mask)`` strips of band 1 of a label raster."""
    from osgeo import gdal

    dataset = gdal.Open(str(path))  # keep the dataset alive while its band is read
    band = dataset.GetRasterBand(1)
    step = _strip_rows(info.width, 1)
    for row in range(0, info.height, step):
        block = band.ReadAsArray(0, row, info.width, min(step, info.height - row))
        valid = ~invalid_pixels(block[None], [nodata], band_axis=0)
        if np.issubdtype(block.dtype, np.floating):
            integral = block[valid] == np.round(block[valid])
            if not integral.all():
                raise EngineError(f"label raster {path}: value {block[valid][~integral][0]} is not an integer")
        yield row, np.where(valid, block, 0).astype(np.int64), valid


def label_counts(path: str, nodata=None) -> dict[int, int]:
    """Pixels per integer value of band 1 of a label raster (``nodata``: its own by default)."""
    info = raster_info(path)
    nodata = info.nodata[0] if nodata is None else nodata
    counts: dict[int, int] = {}
    for _, labels, valid in _label_strips(path, info, nodata):
        values, n = np.unique(labels[valid], return_counts=True)
        for value, count in zip(values.tolist(), n.tolist()):
            counts[value] = counts.get(value, 0) + count
    if not counts:
        raise EngineError(f"label raster {path} holds only nodata ({nodata})")
    return dict(sorted(counts.items()))


def label_positions(path: str, strategy: str, samples: int, rng: np.random.Generator,
                    nodata=None, reporter: Reporter | None = None) -> tuple[Positions, str]:
    """Pixel centres of a label raster chosen per class; returns them and the label raster's CRS."""
    if strategy not in LABEL_STRATEGIES:
        raise EngineError(f"unknown label strategy {strategy!r}; one of {', '.join(LABEL_STRATEGIES)}")
    info = raster_info(path)
    nodata = info.nodata[0] if nodata is None else nodata
    counts = label_counts(path, nodata)
    quota = _quotas(counts, strategy, samples)
    if reporter:
        reporter.log("label pixels per class: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                     + "; selecting " + ", ".join(f"{k}: {v}" for k, v in sorted(quota.items())))
    # choose ordinals (the k-th pixel of a class in raster order), then find them in a second pass
    chosen = {value: np.sort(rng.choice(counts[value], size=quota[value], replace=False)) for value in sorted(counts)}
    seen = dict.fromkeys(counts, 0)
    xs, ys, classes = [], [], []
    for row0, labels, valid in _label_strips(path, info, nodata):
        for value in chosen:
            rows, cols = np.nonzero(valid & (labels == value))
            ordinals = seen[value] + np.arange(len(rows))
            keep = np.isin(ordinals, chosen[value], assume_unique=True)
            seen[value] += len(rows)
            x, y = _pixel_centres(info, cols[keep], rows[keep] + row0)
            xs.append(x)
            ys.append(y)
            classes.append(np.full(len(x), value, dtype=np.int64))
    return Positions(np.concatenate(xs), np.concatenate(ys), np.concatenate(classes)), info.crs_wkt


def _quotas(counts: dict[int, int], strategy: str, samples: int) -> dict[int, int]:
    if strategy == "all":
        return dict(counts)
    if strategy == "smallest":
        per_class = min(counts.values())
    elif strategy == "constant":
        per_class = int(samples)
    else:  # total
        per_class = int(samples) // len(counts)
    return {value: min(per_class, count) for value, count in counts.items()}


def grid_positions(path: str, info, patch_size: int, step: int, mask: str | None = None,
                   reporter: Reporter | None = None) -> Positions:
    """Footprints of ``patch_size`` every ``step`` pixels whose pixels are all valid.

    A pixel is valid when no band is nodata (or NaN) and, with ``mask`` (a raster on the same
    grid), the mask is non-zero and not its nodata.
    """
    from osgeo import gdal

    if patch_size > min(info.width, info.height):
        raise EngineError(f"patch size {patch_size} is bigger than the image {path} "
                          f"({info.width} x {info.height} pixels)")
    mask_info = raster_info(mask) if mask else None
    if mask_info and (mask_info.width, mask_info.height) != (info.width, info.height):
        raise EngineError(f"mask {mask} is {mask_info.width} x {mask_info.height} pixels; "
                          f"it must be on the grid of {path} ({info.width} x {info.height})")
    dataset, mask_dataset = gdal.Open(str(path)), gdal.Open(str(mask)) if mask else None
    starts_c = np.arange(0, info.width - patch_size + 1, step)
    xs, ys = [], []
    for row in range(0, info.height - patch_size + 1, step):
        if reporter:
            reporter.check_cancelled()
        block = dataset.ReadAsArray(0, row, info.width, patch_size).reshape(info.bands, patch_size, info.width)
        bad = invalid_pixels(block, info.nodata, band_axis=0)
        if mask_dataset is not None:
            values = mask_dataset.ReadAsArray(0, row, info.width, patch_size).reshape(-1, patch_size, info.width)[0]
            bad |= (values == 0) | invalid_pixels(values[None], mask_info.nodata[:1], band_axis=0)
        bad_cols = np.concatenate([[0], np.cumsum(bad.any(axis=0))])
        ok = bad_cols[starts_c + patch_size] == bad_cols[starts_c]
        x, y = info.grid.map_xy(starts_c[ok] + patch_size / 2, np.full(ok.sum(), row + patch_size / 2))
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Positions(x, y, None)


# -- splits ----------------------------------------------------------------------------------

#: How far from 1 the split proportions may sum (0.33 + 0.33 + 0.33 is meant as thirds).
SPLIT_SUM_TOLERANCE = 0.01


def proportions_of(split: dict | None) -> np.ndarray:
    """Train/valid/test proportions (scaled to sum to exactly 1); EngineError for negative ones,
    or ones that do not sum to 1 within :data:`SPLIT_SUM_TOLERANCE` (never silently rescaled)."""
    split = split or {"train": 1.0}
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise EngineError(f"unknown split name(s) {sorted(unknown)}; use {', '.join(SPLITS)}")
    values = np.array([float(split.get(name, 0.0)) for name in SPLITS])
    if (values < 0).any() or values.sum() <= 0:
        raise EngineError(f"split proportions must be >= 0 and not all 0: {split}")
    if abs(values.sum() - 1) > SPLIT_SUM_TOLERANCE:
        given = " + ".join(f"{name} {value:g}" for name, value in zip(SPLITS, values))
        raise EngineError(f"the split proportions must sum to 1, but {given} = {values.sum():g}: "
                          "give fractions of the positions, e.g. train 0.7, valid 0.15, test 0.15")
    return values / values.sum()


def random_splits(classes: np.ndarray | None, count: int, proportions: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Split labels for ``count`` positions, stratified per class (largest-remainder rounding)."""
    splits = np.empty(count, dtype=object)
    groups = [np.arange(count)] if classes is None else [np.flatnonzero(classes == c) for c in np.unique(classes)]
    for members in groups:
        members = rng.permutation(members)
        bounds = np.round(np.cumsum(proportions) * len(members)).astype(int)
        for name, start, end in zip(SPLITS, np.concatenate([[0], bounds[:-1]]), bounds):
            splits[members[start:end]] = name
    return splits


def block_cells(info, positions: Positions, patch_size: int, block_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(footprint in one block, block ``(column, row)`` of the footprint's first pixel) per position.

    Blocks are squares of ``block_size`` map units counted from the raster's top-left corner:
    block ``(i, j)`` covers map x ``[x0 + i*block_size, x0 + (i+1)*block_size)`` and map y
    ``(y0 - (j+1)*block_size, y0 - j*block_size]``.
    """
    if block_size <= 0:
        raise EngineError(f"block_size must be > 0 map units, got {block_size}")
    cols, rows = footprint_starts(info, positions.x, positions.y, patch_size)
    sx, sy = info.geotransform[1], -info.geotransform[5]
    first_bx, last_bx = np.floor(cols * sx / block_size), np.ceil((cols + patch_size) * sx / block_size) - 1
    first_by, last_by = np.floor(rows * sy / block_size), np.ceil((rows + patch_size) * sy / block_size) - 1
    keep = (first_bx == last_bx) & (first_by == last_by)
    return keep, np.stack([first_bx, first_by], axis=1).astype(np.int64)


def write_blocks(path: str | Path, info, positions: Positions, patch_size: int, block_size: float) -> int:
    """Write the blocks holding ``positions`` (split by blocks) as the GeoPackage polygon layer
    :data:`BLOCKS_LAYER` (fields ``split``, ``positions``), clipped to the raster; returns the block count."""
    from osgeo import ogr

    _, cells = block_cells(info, positions, patch_size, block_size)
    blocks, first, counts = np.unique(cells, axis=0, return_index=True, return_counts=True)
    x0, y0 = info.geotransform[0], info.geotransform[3]
    x1, y1 = info.grid.map_xy(info.width, info.height)
    source, layer = create_gpkg_layer(path, BLOCKS_LAYER, info.crs_wkt, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("split", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("positions", ogr.OFTInteger))
    layer.StartTransaction()
    for (i, j), index, count in zip(blocks.tolist(), first.tolist(), counts.tolist()):
        left, right = x0 + i * block_size, min(x0 + (i + 1) * block_size, float(x1))
        top, bottom = y0 - j * block_size, max(y0 - (j + 1) * block_size, float(y1))
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("split", str(positions.splits[index]))
        feature.SetField("positions", count)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON (({left} {top}, {right} {top}, {right} {bottom}, {left} {bottom}, {left} {top}))"))
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    del source  # closing the dataset writes the GeoPackage
    return len(blocks)


def block_splits(info, positions: Positions, patch_size: int, block_size: float,
                 proportions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Spatially disjoint splits: returns (kept mask, split per kept position).

    Blocks are ``block_size`` map units, counted from the raster's top-left corner. A position
    is kept when its footprint lies in one block; blocks (in a seeded random order) fill the
    splits in turn until each holds its proportion of the kept positions.
    """
    keep, cells = block_cells(info, positions, patch_size, block_size)
    blocks, inverse, sizes = np.unique(cells[keep], axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = rng.permutation(len(blocks))
    targets = np.cumsum(proportions) * keep.sum()
    block_split = np.empty(len(blocks), dtype=object)
    filled, current = 0, 0
    for b in order:
        while current < len(SPLITS) - 1 and filled >= targets[current] - 1e-9:
            current += 1
        block_split[b] = SPLITS[current]
        filled += sizes[b]
    return keep, block_split[inverse]


def balance(positions: Positions) -> dict[str, dict[str, int]]:
    """Counts per split and class value (``"none"`` when positions have no class)."""
    table: dict[str, dict[str, int]] = {}
    classes = positions.classes if positions.classes is not None else np.full(len(positions), "none", dtype=object)
    for split in SPLITS:
        chosen = positions.splits == split
        values, counts = np.unique(classes[chosen].astype(str), return_counts=True)
        table[split] = {str(v): int(n) for v, n in zip(values, counts)}
    return table


def write_balance(path: str | Path, table: dict[str, dict[str, int]]) -> None:
    """The class balance table as CSV (split, class, count) or JSON (by the path's suffix)."""
    path = Path(path)
    with atomic_output(path) as temp:
        if path.suffix.lower() == ".json":
            temp.write_text(json.dumps(table, indent=1), encoding="utf-8")
            return
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["split", "class", "count"])
            for split, counts in table.items():
                for value, count in counts.items():
                    writer.writerow([split, value, count])


def format_balance(table: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{split}: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "empty")
                     for split, counts in table.items())


# -- job -------------------------------------------------------------------------------------

def select_positions(spec: dict, reporter: Reporter) -> tuple[Positions, dict, object]:
    """Positions of ``spec`` (see the module docstring), filtered, with their splits."""
    raster = spec.get("raster")
    if not raster:
        raise EngineError("select_samples needs 'raster': the image the patches will be cut from")
    info = raster_info(raster)
    patch_size = int(spec.get("patch_size", 1))
    if patch_size < 1 or patch_size > min(info.width, info.height):
        raise EngineError(f"patch size {patch_size} does not fit the image {raster} "
                          f"({info.width} x {info.height} pixels)")
    proportions = proportions_of(spec.get("split"))  # checked before any position is read
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    strategy = spec.get("strategy")
    if strategy == "points":
        positions = read_points(spec["vector"], info.crs_wkt, _required(spec, "class_field"),
                                layer_name=spec.get("layer"), reporter=reporter)
    elif strategy == "polygons":
        positions = polygon_positions(
            spec["vector"], info, _required(spec, "class_field"), rng, mode=spec.get("polygon_mode", "random"),
            samples_per_class=int(spec.get("samples_per_class", 100)), step=int(spec.get("step") or patch_size),
            border_distance=float(spec.get("border_distance", 0.0)), layer_name=spec.get("layer"),
            reporter=reporter)
    elif strategy == "label_raster":
        positions, label_wkt = label_positions(
            _required(spec, "label_raster"), spec.get("label_strategy", "constant"),
            int(spec.get("samples", 100)), rng, spec.get("label_nodata"), reporter)
        positions.x, positions.y = transform_xy(positions.x, positions.y, label_wkt, info.crs_wkt)
    elif strategy == "grid":
        positions = grid_positions(raster, info, patch_size, int(spec.get("step") or patch_size),
                                   spec.get("mask"), reporter)
    else:
        raise EngineError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    if not len(positions):
        where = {"points": spec.get("vector"), "polygons": spec.get("vector"), "label_raster": spec.get("label_raster"),
                 "grid": raster}[strategy]
        raise EngineError(f"the {strategy} strategy found no candidate position in {where}: it holds no usable "
                          f"{'point' if strategy == 'points' else 'sample'} (an empty layer, or features without "
                          "geometry or class); give a layer with samples")
    reporter.log(f"{strategy}: {len(positions)} candidate positions")
    reporter.progress(40)
    positions, dropped = filter_on_raster(raster, info, positions, patch_size, reporter)
    if spec.get("split_mode", "random") == "blocks":
        block_size = resolved_block_size(spec, info, patch_size)
        keep, splits = block_splits(info, positions, patch_size, block_size, proportions, rng)
        dropped["block_border"] = int((~keep).sum())
        reporter.log(f"{dropped['block_border']} positions dropped: their patch crosses a block border")
        held = len(np.unique(block_cells(info, positions.subset(keep), patch_size, block_size)[1], axis=0))
        if held < MIN_BLOCKS:
            reporter.warning(f"only {held} block(s) of {block_size:g} map units hold positions: the splits cannot "
                             f"all get positions; use a smaller block_size (at least {MIN_BLOCKS} blocks)")
        positions = positions.subset(keep)
        positions.splits = splits
    elif spec.get("split_mode", "random") == "random":
        positions.splits = random_splits(positions.classes, len(positions), proportions, rng)
    else:
        raise EngineError(f"unknown split_mode {spec.get('split_mode')!r}; use 'random' or 'blocks'")
    if not len(positions):
        raise EngineError(f"no position left after filtering ({dropped}); check the inputs' overlap, "
                          "nodata and the patch size")
    return positions, dropped, info


def resolved_block_size(spec: dict, info, patch_size: int) -> float:
    """``block_size`` of ``spec`` in map units; 0 or absent = automatic: 8 x the patch size x
    the raster's pixel spacing (:data:`BLOCK_PATCHES` patches a side, whatever the CRS units)."""
    block_size = float(spec.get("block_size") or 0)
    return block_size if block_size else BLOCK_PATCHES * patch_size * info.geotransform[1]


def _required(spec: dict, key: str):
    if spec.get(key) in (None, ""):
        raise EngineError(f"select_samples with strategy {spec.get('strategy')!r} needs {key!r}")
    return spec[key]


def select_samples_job(spec: dict, reporter: Reporter) -> dict:
    """Job ``select_samples``: write the positions GeoPackage and the class balance table.

    Spec: ``raster`` (the reference image), ``strategy`` (points | polygons | label_raster |
    grid), ``output`` (.gpkg), ``report`` (.csv or .json; default ``<output>_balance.csv``),
    ``patch_size`` (reference pixels, default 1), ``seed`` (0), ``split`` {train, valid, test
    proportions} (default all train), ``split_mode`` (random | blocks), ``block_size`` (map units;
    0 or absent = 8 x patch_size x the pixel spacing; a warning when fewer than 3 blocks hold positions).
    points/polygons: ``vector``, ``layer`` (optional), ``class_field``; polygons: ``polygon_mode``
    (random | grid), ``samples_per_class``, ``step`` (pixels, grid mode; 0 or absent = patch_size),
    ``border_distance`` (map units).
    label_raster: ``label_raster``, ``label_strategy`` (constant | total | smallest | all),
    ``samples``, ``label_nodata`` (default the raster's). grid: ``step`` (0 or absent = patch_size),
    ``mask`` (raster on the image grid). ``blocks`` (optional, blocks split): a GeoPackage
    receiving the blocks holding positions, with their ``split`` (see :func:`write_blocks`).
    Result: {output, report, count, balance, dropped, blocks (path or None)}.
    """
    output = spec.get("output")
    if not output:
        raise EngineError("select_samples needs 'output': the GeoPackage to write")
    if spec.get("blocks") and spec.get("split_mode", "random") != "blocks":
        raise EngineError(f"select_samples writes the split blocks ({spec['blocks']}) only with "
                          "split_mode 'blocks'")
    check_outputs([output, spec.get("report"), spec.get("blocks")],
                  [spec.get(key) for key in ("raster", "vector", "label_raster", "mask")])
    positions, dropped, info = select_positions(spec, reporter)
    reporter.check_cancelled()
    reporter.progress(80)
    table = balance(positions)
    reporter.log("class balance per split: " + format_balance(table))
    report = spec.get("report") or str(Path(output).with_name(Path(output).stem + "_balance.csv"))
    with atomic_output(output) as temp:
        write_positions(temp, positions, info.crs_wkt)
    write_balance(report, table)
    if spec.get("blocks"):
        with atomic_output(spec["blocks"]) as temp:
            patch_size = int(spec.get("patch_size", 1))
            count = write_blocks(temp, info, positions, patch_size, resolved_block_size(spec, info, patch_size))
        reporter.log(f"{count} split blocks written to {spec['blocks']}")
    reporter.progress(100)
    return {"output": str(output), "report": str(report), "count": len(positions),
            "balance": table, "dropped": dropped, "blocks": spec.get("blocks") or None}
