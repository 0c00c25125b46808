"""GDAL raster I/O: describe sources, read windows with border padding, align, write GeoTIFFs.

All windows are in pixels of the raster they refer to (see :mod:`.geometry`). Arrays are
``(rows, cols, bands)`` (channels last, as the models take them).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction
from pathlib import Path

import numpy as np
from osgeo import gdal, gdal_array, osr

from .classes import ClassStyle, class_map_qml, rgb
from .crs import crs_equivalent, crs_transform
from .geometry import Grid, Window, border_indices, snap
from .outputs import atomic_output, is_plain_path
from .errors import EngineError, MissingCRS
from .vectors import layer_crs_wkt, open_layer
from .vrt import simple_sources

gdal.UseExceptions()
osr.UseExceptions()


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is: size (pixels), bands, numpy dtype name, north-up grid, per-band nodata."""

    path: str
    width: int
    height: int
    bands: int
    dtype: str
    geotransform: tuple[float, float, float, float, float, float]
    crs_wkt: str
    nodata: tuple[float | None, ...]
    descriptions: tuple[str, ...] = ()

    @property
    def grid(self) -> Grid:
        return Grid.from_geotransform(self.geotransform, self.width, self.height, self.crs_wkt)


def raster_info(path: str | os.PathLike) -> RasterInfo:
    """Describe a raster; :class:`EngineError` if it is missing, has no CRS or is not north-up.

    ``path``: a file, VRT XML, or any GDAL source string (``/vsizip/...``, ``GPKG:f.gpkg:table``).
    """
    path = str(path)
    if is_plain_path(path) and not Path(path).exists():
        raise EngineError(f"raster not found: {path}")
    try:
        dataset = gdal.Open(path)
    except RuntimeError as error:
        raise EngineError(f"cannot open raster {path}: GDAL says: {error}") from None
    crs_wkt = dataset.GetProjection()
    if dataset.GetGeoTransform(can_return_null=True) is None:
        raise MissingCRS(f"raster {path} is not georeferenced (no geotransform: its pixels have no position on the "
                         "ground); georeference it (e.g. gdal_edit.py -a_ullr xmin ymax xmax ymin -a_srs EPSG:...)")
    if not crs_wkt:
        raise MissingCRS(f"raster {path} has no coordinate reference system; assign one (e.g. gdal_edit.py -a_srs)")
    geotransform = tuple(dataset.GetGeoTransform())
    try:
        Grid.from_geotransform(geotransform, dataset.RasterXSize, dataset.RasterYSize, crs_wkt)
    except ValueError as error:
        raise EngineError(f"raster {path}: {error}; warp it to a north-up grid first (gdalwarp)") from None
    bands = [dataset.GetRasterBand(b + 1) for b in range(dataset.RasterCount)]
    return RasterInfo(
        path=path,
        width=dataset.RasterXSize,
        height=dataset.RasterYSize,
        bands=dataset.RasterCount,
        dtype=np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(bands[0].DataType)).name,
        geotransform=geotransform,
        crs_wkt=crs_wkt,
        nodata=tuple(band.GetNoDataValue() for band in bands),
        descriptions=tuple(band.GetDescription() for band in bands),
    )


# -- reading ------------------------------------------------------------------------------------

_local = threading.local()


def open_raster(path: str) -> gdal.Dataset:
    """A read-only dataset for ``path`` (a file, VRT XML or GDAL source string), one handle per
    thread (GDAL handles are not thread-safe).

    A file replaced or rewritten since its handle was opened (another inode, size or modification
    time) is reopened and the old handle closed, so a process never reads a rewritten file stale.
    A VRT whose ComplexSources only copy pixels is read through SimpleSources (same pixels,
    about 9x faster with GDAL 3.6: :mod:`.vrt`).
    """
    cache = getattr(_local, "datasets", None)
    if cache is None:
        cache = _local.datasets = {}
    stamp = _file_stamp(path)
    cached = cache.get(path)
    if cached is None or cached[0] != stamp:
        cached = cache[path] = (stamp, gdal.Open(simple_sources(path)))
    return cached[1]


def _file_stamp(path: str) -> tuple[int, int, int] | None:
    """A plain file's (inode, size in bytes, mtime in ns); None for other sources or a missing file."""
    if not is_plain_path(path):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def read_window(path: str, window: Window, mode: str = "reflect", fill: float = 0, dtype=None) -> np.ndarray:
    """Pixels of ``window`` as a C-contiguous ``(rows, cols, bands)`` array.

    ``dtype``: the array's type, default the raster's own. Pixels outside the raster come from the
    border ``mode`` applied to the whole image (see :func:`.geometry.border_indices`); ``constant``
    fills them with ``fill``. The in-range part is read once (its bounding box, pixel-interleaved,
    in the raster's own type) and copied into the result in one pass that also converts it: numpy
    widens UInt16 to float32 about twice as fast as GDAL's conversion while reading (a conversion
    that may round or clip, say float to integer, is left to GDAL); only the padding is indexed.
    """
    dataset = open_raster(path)
    native = np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(dataset.GetRasterBand(1).DataType))
    dtype = np.dtype(dtype or native)
    rows = border_indices(window.row_off, window.height, dataset.RasterYSize, mode)
    cols = border_indices(window.col_off, window.width, dataset.RasterXSize, mode)
    inside_rows, inside_cols = rows[rows >= 0], cols[cols >= 0]
    if inside_rows.size == 0 or inside_cols.size == 0:
        return np.full((window.height, window.width, dataset.RasterCount), fill, dtype=dtype)
    r0, c0 = int(inside_rows.min()), int(inside_cols.min())
    box = Window(c0, r0, int(inside_cols.max()) + 1 - c0, int(inside_rows.max()) + 1 - r0)
    read_type = native if np.can_cast(native, dtype, "safe") else dtype
    block = dataset.ReadAsArray(box.col_off, box.row_off, box.width, box.height,
                                buf_type=gdal_array.NumericTypeCodeToGDALTypeCode(read_type.type), interleave="pixel")
    block = block.reshape(box.height, box.width, dataset.RasterCount)
    if box == window:
        return block.astype(dtype, copy=False)
    out = _padded(block, np.maximum(rows - r0, 0), np.maximum(cols - c0, 0),
                  _in_image(window.row_off, window.height, dataset.RasterYSize),
                  _in_image(window.col_off, window.width, dataset.RasterXSize), dtype)
    if mode == "constant":
        out[rows < 0] = fill
        out[:, cols < 0] = fill
    return out


def _in_image(start: int, size: int, length: int) -> slice:
    """The positions of an axis' window ``[start, start + size)`` inside ``[0, length)`` (may be empty)."""
    first = min(max(-start, 0), size)
    return slice(first, max(first, min(size, length - start)))


def _padded(block: np.ndarray, rows: np.ndarray, cols: np.ndarray, row_run: slice, col_run: slice,
            dtype: np.dtype) -> np.ndarray:
    """``block[rows][:, cols]`` as ``dtype``, where ``block[rows[k]]`` for ``k`` in ``row_run``
    (likewise ``col_run``) are consecutive rows (the part of the window inside the image): that
    part is one sliced copy, only the border strips are indexed."""
    out = np.empty((rows.size, cols.size, block.shape[2]), dtype=dtype)
    if row_run.stop == row_run.start or col_run.stop == col_run.start:
        row_run = col_run = slice(0, 0)
    r, c = int(rows[row_run.start]) if row_run.stop else 0, int(cols[col_run.start]) if col_run.stop else 0
    run_rows = block[r:r + row_run.stop - row_run.start]
    out[row_run, col_run] = run_rows[:, c:c + col_run.stop - col_run.start]
    strips = np.r_[0:row_run.start, row_run.stop:rows.size]  # whole rows of padding
    out[strips] = np.take(np.take(block, rows[strips], 0), cols, 1)
    sides = np.r_[0:col_run.start, col_run.stop:cols.size]  # the padded columns of the other rows
    out[row_run, sides] = np.take(run_rows, cols[sides], 1)
    return out


def invalid_pixels(array: np.ndarray, nodata, band_axis: int = -1) -> np.ndarray:
    """Pixels of ``array`` where any band is NaN (always, declared or not) or equals its declared
    nodata; ``nodata``: one value or ``None`` per band along ``band_axis``. The one nodata test of
    sampling, patch extraction and serving: a boolean array shaped like ``array`` without that axis."""
    bands = np.moveaxis(array, band_axis, 0)
    if bands.dtype.kind == "f" and not np.isfinite(bands.sum()):  # a finite sum: no NaN anywhere
        bad = np.isnan(bands).any(axis=0)
    else:
        bad = np.zeros(bands.shape[1:], dtype=bool)
    for band, value in zip(bands, nodata):
        if value is not None:
            bad |= band == value
    return bad


# -- aligning sources on the output lattice --------------------------------------------------


@dataclass(frozen=True)
class AlignedSource:
    """A source whose pixel corners lie on its lattice (reference spacing x scale).

    ``path``: the file, or the XML of an on-the-fly warped VRT (``warped``). ``bounds`` in the
    reference CRS. ``corner``: this source's origin in reference pixel coordinates (Fractions).
    """

    path: str
    name: str
    width: int
    height: int
    bands: int
    nodata: tuple[float | None, ...]
    bounds: tuple[float, float, float, float]
    spacing: tuple[float, float]
    corner: tuple[Fraction, Fraction]
    warped: bool

    def offset(self, grid: Grid) -> tuple[int, int]:
        """``grid``'s origin in this source's pixel coordinates (whole numbers, checked)."""
        col = snap((grid.origin_x - self.bounds[0]) / self.spacing[0])
        row = snap((self.bounds[3] - grid.origin_y) / self.spacing[1])
        if col != int(col) or row != int(row):
            raise EngineError(f"source {self.name}: output grid origin falls at pixel ({col}, {row}), not on a corner")
        return int(col), int(row)


def rasterize(grid: Grid, window: Window, vector, layer: str | None = None,
              attribute: str | None = None) -> np.ndarray:
    """Burn a vector layer into ``window`` of ``grid`` (pixels whose centre is inside a polygon).

    ``vector``: a path or an open GDAL/OGR dataset; ``layer``: its layer name (default: the
    first). A layer in another CRS is reprojected by GDAL; in an equivalent one (or none) it is
    burnt as it is. With ``attribute``: float64 values of that field, NaN where no feature or a
    null value; without: a boolean coverage.
    """
    source, found = open_layer(vector, layer)
    layer_wkt = layer_crs_wkt(found)
    target = gdal.GetDriverByName("MEM").Create("", window.width, window.height, 1,
                                               gdal.GDT_Float64 if attribute else gdal.GDT_Byte)
    target.SetGeoTransform(grid.subgrid(window).geotransform())
    target.SetProjection(grid.crs_wkt if crs_transform(layer_wkt, grid.crs_wkt) else layer_wkt or grid.crs_wkt)
    band = target.GetRasterBand(1)
    band.Fill(math.nan if attribute else 0)
    layers = [layer] if layer else None
    if attribute:
        options = gdal.RasterizeOptions(layers=layers, attribute=attribute, where=f'"{attribute}" IS NOT NULL')
    else:
        options = gdal.RasterizeOptions(layers=layers, burnValues=[1])
    gdal.Rasterize(target, source, options=options)
    if attribute:
        found.SetAttributeFilter(None)  # the where stays on the layer: the caller's, when given a dataset
    values = band.ReadAsArray()
    return values if attribute else values.astype(bool)


#: How values of each kind are resampled when a raster is warped: categories are never blended.
RESAMPLING = {"classes": "nearest", "image": "bilinear"}


def resampling_for(values: str) -> str:
    """The GDAL resampling for warping a raster of ``values``: ``"classes"`` (label rasters, class
    maps, references) -> nearest; ``"image"`` (measurements) -> bilinear."""
    try:
        return RESAMPLING[values]
    except KeyError:
        raise ValueError(f"values must be one of {', '.join(RESAMPLING)}, not {values!r}") from None


def align_source(info: RasterInfo, reference: Grid, scale: Fraction, resampling: str = "bilinear",
                 log=None) -> AlignedSource:
    """Put ``info`` on the lattice of ``reference`` scaled by ``scale`` (its spacing / the
    reference spacing), warping it (GDAL VRT, on the fly) when its CRS differs, its spacing is
    not ``scale`` x the reference spacing, or its corners are off the lattice."""
    scale = Fraction(scale)
    spacing = (reference.spacing_x * float(scale), reference.spacing_y * float(scale))
    grid = info.grid
    col = (grid.origin_x - reference.origin_x) / reference.spacing_x  # in reference pixels
    row = (reference.origin_y - grid.origin_y) / reference.spacing_y
    # Corners on the lattice: scale = p/q, so the source corners must sit on multiples of 1/q.
    on_lattice = all(float(snap(v * scale.denominator)).is_integer() for v in (col, row))
    reason = None
    if not crs_equivalent(info.crs_wkt, reference.crs_wkt):
        reason = "its CRS differs from the reference source's"
    elif not (_close(grid.spacing_x, spacing[0]) and _close(grid.spacing_y, spacing[1])):
        reason = (f"its pixel spacing {grid.spacing_x:g} x {grid.spacing_y:g} is not {float(scale):g} x the "
                  f"reference spacing ({spacing[0]:g} x {spacing[1]:g})")
    elif not on_lattice:
        reason = "its pixel corners are off the reference grid"
    name = Path(info.path).name
    if reason is None:
        corner = tuple(Fraction(round(snap(v * scale.denominator)), scale.denominator) for v in (col, row))
        return AlignedSource(info.path, name, info.width, info.height, info.bands, info.nodata, grid.bounds,
                             spacing, corner, warped=False)
    return _warp(info, reference, scale, spacing, resampling, reason, name, log)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _warp(info, reference, scale, spacing, resampling, reason, name, log) -> AlignedSource:
    """A warped VRT of ``info`` in the reference CRS, on the reference lattice at ``spacing``."""
    probe = gdal.Warp("", info.path, format="VRT", dstSRS=reference.crs_wkt)
    xmin, ymin, xmax, ymax = Grid.from_geotransform(probe.GetGeoTransform(), probe.RasterXSize,
                                                    probe.RasterYSize).bounds
    probe = None
    # Snap outwards onto the lattice reference origin + k * spacing.
    kx0 = math.floor(snap((xmin - reference.origin_x) / spacing[0]))
    kx1 = math.ceil(snap((xmax - reference.origin_x) / spacing[0]))
    ky0 = math.floor(snap((reference.origin_y - ymax) / spacing[1]))
    ky1 = math.ceil(snap((reference.origin_y - ymin) / spacing[1]))
    bounds = (reference.origin_x + kx0 * spacing[0], reference.origin_y - ky1 * spacing[1],
              reference.origin_x + kx1 * spacing[0], reference.origin_y - ky0 * spacing[1])
    options = dict(format="VRT", dstSRS=reference.crs_wkt, outputBounds=bounds, xRes=spacing[0], yRes=spacing[1],
                   resampleAlg=resampling)
    nodata = info.nodata
    if all(value is not None for value in nodata):  # per band; outside the source becomes nodata
        values = " ".join(repr(float(value)) for value in nodata)
        options.update(srcNodata=values, dstNodata=values)
    else:  # float32 (as served) with NaN outside the source, not zeros taken for data
        options.update(outputType=gdal.GDT_Float32, dstNodata="nan")
        nodata = tuple(math.nan if value is None else value for value in nodata)
    warped = gdal.Warp("", os.path.abspath(info.path) if is_plain_path(info.path) else info.path, **options)
    xml = warped.GetMetadata("xml:VRT")[0]
    width, height = warped.RasterXSize, warped.RasterYSize
    warped = None
    if log:
        log(f"source {name} was warped on the fly onto the output lattice ({reason}): "
            f"{width} x {height} pixels of {spacing[0]:g} x {spacing[1]:g}, {resampling} resampling")
    corner = (Fraction(kx0) * scale, Fraction(ky0) * scale)
    return AlignedSource(xml, name, width, height, info.bands, nodata, bounds, spacing, corner, warped=True)


# -- writing --------------------------------------------------------------------------------

GTIFF_OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
#: Float bands (probabilities, regression) barely compress: the fastest DEFLATE level keeps the
#: background writer from competing with TensorFlow for the CPU (about 40 % less writing time).
FLOAT_OPTIONS = ["ZLEVEL=1"]
#: Where GDAL has ZSTD: level 1, floats with the floating-point predictor. Measured by
#: bench/bench_serving.py (``codecs``, 2048 x 2048 px of synthetic smooth probabilities and their
#: class map): the class map written 3-5x faster than with DEFLATE, float32 probabilities about
#: 1.15x faster and 3x smaller than DEFLATE level 1 (LERC lossless: slower than ZSTD). GDAL's
#: ``NUM_THREADS`` is left at 1: on 2 cores its compression threads compete with TensorFlow and
#: measured no faster.
ZSTD_OPTIONS = ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"]


@lru_cache(maxsize=None)
def has_zstd() -> bool:
    """Whether this GDAL's GTiff driver writes ZSTD."""
    return "ZSTD" in (gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or "")


def write_options(dtype: np.dtype) -> list[str]:
    """GTiff creation options of :class:`GeoTiffWriter` for bands of ``dtype``: tiled, ZSTD
    (:data:`ZSTD_OPTIONS`) where GDAL has it, else DEFLATE (:data:`GTIFF_OPTIONS`)."""
    floating = np.dtype(dtype).kind == "f"
    if not has_zstd():
        return GTIFF_OPTIONS + (FLOAT_OPTIONS if floating else [])
    tiled = [option for option in GTIFF_OPTIONS if not option.startswith("COMPRESS=")]
    return tiled + ZSTD_OPTIONS + (["PREDICTOR=3"] if floating else [])


class GeoTiffWriter:
    """A tiled, compressed GeoTIFF (:func:`write_options`) on ``grid``, written atomically (``<path>.part`` until closed).

    Use as a context manager; :meth:`write` takes a window of ``grid`` (it may stick out of the
    grid: the outside part is dropped) and a ``(rows, cols, bands)`` array. With ``classes`` the
    single band gets a colour table, category names, and a ``.qml`` sidecar (QGIS paletted style).
    """

    def __init__(self, path: str | os.PathLike, grid: Grid, bands: int, dtype: str, nodata: float | None = None,
                 descriptions: tuple[str, ...] = (), classes: tuple[ClassStyle, ...] = ()):
        self.path = Path(path)
        self.grid = grid
        self.bands = bands
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        self.descriptions = tuple(descriptions)
        self.classes = tuple(classes)
        if self.classes:
            _check_class_values(self.path, self.dtype, self.classes)
        self._atomic = None
        self._dataset = None

    def __enter__(self) -> "GeoTiffWriter":
        self._atomic = atomic_output(self.path)
        temp = self._atomic.__enter__()
        dataset = None
        try:
            gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(self.dtype.type)
            dataset = gdal.GetDriverByName("GTiff").Create(str(temp), self.grid.width, self.grid.height, self.bands,
                                                           gdal_type, write_options(self.dtype))
            dataset.SetGeoTransform(self.grid.geotransform())
            dataset.SetProjection(self.grid.crs_wkt)
            for b in range(self.bands):
                band = dataset.GetRasterBand(b + 1)
                if self.nodata is not None:
                    band.SetNoDataValue(float(self.nodata))
                if b < len(self.descriptions):
                    band.SetDescription(self.descriptions[b])
            if self.classes:
                _set_palette(dataset.GetRasterBand(1), self.classes)
        except BaseException as error:
            band = dataset = None  # close the file before the atomic output removes it
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        self._dataset = dataset
        return self

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write ``array`` (``(rows, cols, bands)``) at ``window`` of the grid, clipped to the grid."""
        inside = window.crop(self.grid.width, self.grid.height)
        if inside is None:
            return
        data = np.asarray(array[inside.translate(-window.col_off, -window.row_off).to_slices()], dtype=self.dtype)
        try:
            for b in range(self.bands):
                self._dataset.GetRasterBand(b + 1).WriteArray(data[:, :, b], inside.col_off, inside.row_off)
        except RuntimeError as error:
            raise self._write_error(error) from None

    def _write_error(self, error: RuntimeError) -> EngineError:
        """A failed write (disk full, file size limit, lost drive) as a message naming the output."""
        try:
            free = f"{shutil.disk_usage(self.path.parent).free / 2**20:.0f} MB free there"
        except OSError:
            free = "its folder is not reachable"
        return EngineError(f"cannot write {self.path} ({free}): GDAL says: {error}; free some disk space or "
                           "choose an output on another drive")

    def __exit__(self, *exc):
        failure = None
        if self._dataset is not None:
            try:
                self._dataset.FlushCache()
            except RuntimeError as error:
                failure = self._write_error(error)
            self._dataset = None
        if failure is not None and exc[0] is None:
            exc = (EngineError, failure, None)
        self._atomic.__exit__(*exc)  # removes <path>.part when anything failed
        if exc[1] is failure is not None:
            raise failure
        if exc[0] is None and self.classes:
            with atomic_output(self.path.with_suffix(".qml")) as qml:
                qml.write_text(class_map_qml(self.classes), encoding="utf-8")
        return False


#: Largest class value per class-map type: the next value is left for nodata.
MAX_CLASS_VALUE = {np.dtype("uint8"): 254, np.dtype("uint16"): 65534}


def _check_class_values(path: Path, dtype: np.dtype, classes: tuple[ClassStyle, ...]) -> None:
    if dtype not in MAX_CLASS_VALUE:
        raise EngineError(f"class map {path}: a paletted GeoTIFF is uint8 or uint16, not {dtype}")
    for style in classes:
        if not 0 <= style.value <= MAX_CLASS_VALUE[dtype]:
            raise EngineError(f"class map {path}: class {style.name!r} has value {style.value}, outside "
                              f"0..{MAX_CLASS_VALUE[dtype]} for a {dtype} class map")


def _set_palette(band, classes: tuple[ClassStyle, ...]) -> None:
    table = gdal.ColorTable()
    names = [""] * (max(c.value for c in classes) + 1)
    for style in classes:
        table.SetColorEntry(style.value, rgb(style.color) + (255,))
        names[style.value] = style.name
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(names)
