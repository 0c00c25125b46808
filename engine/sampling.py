"""Sample positions: where patches are cut, their class, their split (the library of the
``select_samples`` job, :mod:`engine.jobs.select_samples`).

Vocabulary:

- A **position** (:class:`engine.vectors.Positions`) is a point in the map units of the
  *reference raster* (the image patches will be cut from), optionally with a class value (an
  integer) and a split (``train``, ``valid``, ``test``); written by
  :func:`engine.vectors.write_positions`.
- The **footprint** of a position is the ``patch_size`` x ``patch_size`` reference pixels of
  its patch, placed by the patch-centre rule (:func:`engine.geometry.patch_start`).

Strategies (``spec["strategy"]``) are :class:`Sampler` classes in the registry :data:`SAMPLERS`,
all with one signature, ``sample(info, rng, reporter) -> Positions``:

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

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .contract import SPLITS, SelectSamplesSpec
from .crs import transform_xy
from .errors import EngineError, InvalidSpec, NoOverlap
from .geometry import patch_start
from .protocol import Reporter
from .rasters import RasterInfo, invalid_pixels, raster_info
from .vectors import Positions, class_polygons, read_points, write_features

BLOCKS_LAYER = "blocks"
BLOCK_PATCHES = 8  # automatic block side, in patches
MIN_BLOCKS = 3  # fewer blocks holding positions cannot fill train, valid and test
READ_BUDGET_BYTES = 64 * 2**20


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
        raise NoOverlap(
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

class Sampler(ABC):
    """A sampling strategy (after torchgeo's ``GeoSampler``): its parameters are set when it is
    made; :meth:`sample` returns candidate positions in the CRS of the reference raster ``info``.

    Units: ``*_px`` values are pixels of the reference raster, ``*_map_units`` values are in its
    CRS's map units. Candidates are filtered on the raster afterwards (:func:`filter_on_raster`).
    """

    #: The strategy's name in :data:`.contract.SAMPLING_STRATEGIES` (the spec's ``strategy``).
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: SelectSamplesSpec) -> "Sampler":
        """The sampler a ``select_samples`` spec describes."""

    @abstractmethod
    def sample(self, info: RasterInfo, rng: np.random.Generator, reporter: Reporter) -> Positions:
        """Candidate positions over the raster ``info`` (map units of its CRS)."""


@dataclass(frozen=True)
class PointSampler(Sampler):
    """The points of a layer with an integer class field, any CRS (reprojected; equivalent CRSs,
    e.g. EPSG:3358 and an unnamed LCC with the same parameters, are not)."""

    name: ClassVar[str] = "points"
    vector: str
    class_field: str
    layer: str | None = None

    @classmethod
    def from_spec(cls, spec: SelectSamplesSpec) -> "PointSampler":
        return cls(spec.vector, spec.class_field, spec.layer)

    def sample(self, info: RasterInfo, rng: np.random.Generator, reporter: Reporter) -> Positions:
        return read_points(self.vector, info.crs_wkt, self.class_field, layer_name=self.layer,
                           warn=reporter.warning)


@dataclass(frozen=True)
class PolygonSampler(Sampler):
    """Pixel centres of the raster inside class polygons: ``samples_per_class`` random ones per
    class (``mode`` random) or every ``step_px``-th column and row (``mode`` grid), at least
    ``border_distance_map_units`` inside the polygons."""

    name: ClassVar[str] = "polygons"
    vector: str
    class_field: str
    layer: str | None = None
    mode: str = "random"
    samples_per_class: int = 100
    step_px: int = 1
    border_distance_map_units: float = 0.0

    @classmethod
    def from_spec(cls, spec: SelectSamplesSpec) -> "PolygonSampler":
        return cls(spec.vector, spec.class_field, spec.layer, spec.polygon_mode, int(spec.samples_per_class),
                   int(spec.step or spec.patch_size), float(spec.border_distance))

    def sample(self, info: RasterInfo, rng: np.random.Generator, reporter: Reporter) -> Positions:
        from osgeo import gdal

        burn, values = class_polygons(self.vector, self.class_field, info.crs_wkt,
                                      self.border_distance_map_units, self.layer, reporter.warning)
        target = gdal.GetDriverByName("MEM").Create("", info.width, info.height, 1, gdal.GDT_Int32)
        target.SetGeoTransform(info.geotransform)
        gdal.RasterizeLayer(target, [1], burn.GetLayer(0), options=["ATTRIBUTE=burn"])
        codes = target.ReadAsArray()
        if not codes.any():
            raise NoOverlap(f"no pixel centre of {info.path} lies inside the polygons of {self.vector} "
                            "(no overlap, or border_distance too large)")
        xs, ys, classes = [], [], []
        for code, value in enumerate(values, start=1):
            rows, cols = np.nonzero(codes == code)
            if self.mode == "grid":
                keep = (rows % self.step_px == 0) & (cols % self.step_px == 0)
                rows, cols = rows[keep], cols[keep]
            else:
                if len(rows) < self.samples_per_class:
                    reporter.warning(f"class {value}: only {len(rows)} pixels inside its polygons "
                                     f"(asked {self.samples_per_class})")
                chosen = np.sort(rng.choice(len(rows), size=min(self.samples_per_class, len(rows)), replace=False))
                rows, cols = rows[chosen], cols[chosen]
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


@dataclass(frozen=True)
class LabelRasterSampler(Sampler):
    """Pixel centres of a label raster chosen per class (its integer nodata skipped), by
    ``strategy``: ``constant`` (``samples`` per class), ``total`` (``samples`` spread evenly over
    the classes), ``smallest`` (as many per class as the smallest class has), ``all``."""

    name: ClassVar[str] = "label_raster"
    label_raster: str
    strategy: str = "constant"
    samples: int = 100
    nodata: float | None = None

    @classmethod
    def from_spec(cls, spec: SelectSamplesSpec) -> "LabelRasterSampler":
        return cls(spec.label_raster, spec.label_strategy, int(spec.samples), spec.label_nodata)

    def sample(self, info: RasterInfo, rng: np.random.Generator, reporter: Reporter) -> Positions:
        label = raster_info(self.label_raster)
        nodata = label.nodata[0] if self.nodata is None else self.nodata
        counts = label_counts(self.label_raster, nodata)
        quota = self.quotas(counts)
        reporter.log("label pixels per class: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                     + "; selecting " + ", ".join(f"{k}: {v}" for k, v in sorted(quota.items())))
        # choose ordinals (the k-th pixel of a class in raster order), then find them in a second pass
        chosen = {value: np.sort(rng.choice(counts[value], size=quota[value], replace=False))
                  for value in sorted(counts)}
        seen = dict.fromkeys(counts, 0)
        xs, ys, classes = [], [], []
        for row0, labels, valid in _label_strips(self.label_raster, label, nodata):
            for value in chosen:
                rows, cols = np.nonzero(valid & (labels == value))
                ordinals = seen[value] + np.arange(len(rows))
                keep = np.isin(ordinals, chosen[value], assume_unique=True)
                seen[value] += len(rows)
                x, y = _pixel_centres(label, cols[keep], rows[keep] + row0)
                xs.append(x)
                ys.append(y)
                classes.append(np.full(len(x), value, dtype=np.int64))
        x, y = transform_xy(np.concatenate(xs), np.concatenate(ys), label.crs_wkt, info.crs_wkt)
        return Positions(x, y, np.concatenate(classes))

    def quotas(self, counts: dict[int, int]) -> dict[int, int]:
        """Positions to select per class value, given the label pixels per class value."""
        if self.strategy == "all":
            return dict(counts)
        if self.strategy == "smallest":
            per_class = min(counts.values())
        elif self.strategy == "constant":
            per_class = int(self.samples)
        else:  # total
            per_class = int(self.samples) // len(counts)
        return {value: min(per_class, count) for value, count in counts.items()}


@dataclass(frozen=True)
class GridSampler(Sampler):
    """Footprints of ``patch_size_px`` every ``step_px`` pixels over the raster (after torchgeo's
    ``GridGeoSampler``) whose pixels are all valid: no band is nodata (or NaN) and, with ``mask``
    (a raster on the same grid), the mask is non-zero and not its nodata. No classes."""

    name: ClassVar[str] = "grid"
    patch_size_px: int
    step_px: int
    mask: str | None = None

    @classmethod
    def from_spec(cls, spec: SelectSamplesSpec) -> "GridSampler":
        return cls(int(spec.patch_size), int(spec.step or spec.patch_size), spec.mask or None)

    def sample(self, info: RasterInfo, rng: np.random.Generator, reporter: Reporter) -> Positions:
        from osgeo import gdal

        size, path = self.patch_size_px, info.path
        mask_info = raster_info(self.mask) if self.mask else None
        if mask_info and (mask_info.width, mask_info.height) != (info.width, info.height):
            raise InvalidSpec(f"mask {self.mask} is {mask_info.width} x {mask_info.height} pixels; "
                              f"it must be on the grid of {path} ({info.width} x {info.height})")
        dataset, mask_dataset = gdal.Open(str(path)), gdal.Open(str(self.mask)) if self.mask else None
        starts_c = np.arange(0, info.width - size + 1, self.step_px)
        xs, ys = [], []
        for row in range(0, info.height - size + 1, self.step_px):
            reporter.check_cancelled()
            block = dataset.ReadAsArray(0, row, info.width, size).reshape(info.bands, size, info.width)
            bad = invalid_pixels(block, info.nodata, band_axis=0)
            if mask_dataset is not None:
                values = mask_dataset.ReadAsArray(0, row, info.width, size).reshape(-1, size, info.width)[0]
                bad |= (values == 0) | invalid_pixels(values[None], mask_info.nodata[:1], band_axis=0)
            bad_cols = np.concatenate([[0], np.cumsum(bad.any(axis=0))])
            ok = bad_cols[starts_c + size] == bad_cols[starts_c]
            x, y = info.grid.map_xy(starts_c[ok] + size / 2, np.full(ok.sum(), row + size / 2))
            xs.append(x)
            ys.append(y)
        return Positions(np.concatenate(xs), np.concatenate(ys), None)


#: Strategy name -> sampler class (one per name of :data:`.contract.SAMPLING_STRATEGIES`).
SAMPLERS: dict[str, type[Sampler]] = {
    sampler.name: sampler for sampler in (PointSampler, PolygonSampler, LabelRasterSampler, GridSampler)}


# -- splits ----------------------------------------------------------------------------------

def proportions_of(split: dict | None) -> np.ndarray:
    """Normalised train/valid/test proportions; EngineError for negative or all-zero ones."""
    split = split or {"train": 1.0}
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise InvalidSpec(f"unknown split name(s) {sorted(unknown)}; use {', '.join(SPLITS)}")
    values = np.array([float(split.get(name, 0.0)) for name in SPLITS])
    if (values < 0).any() or values.sum() <= 0:
        raise InvalidSpec(f"split proportions must be >= 0 and not all 0: {split}")
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
        raise InvalidSpec(f"block_size must be > 0 map units, got {block_size}")
    cols, rows = footprint_starts(info, positions.x, positions.y, patch_size)
    sx, sy = info.geotransform[1], -info.geotransform[5]
    first_bx, last_bx = np.floor(cols * sx / block_size), np.ceil((cols + patch_size) * sx / block_size) - 1
    first_by, last_by = np.floor(rows * sy / block_size), np.ceil((rows + patch_size) * sy / block_size) - 1
    keep = (first_bx == last_bx) & (first_by == last_by)
    return keep, np.stack([first_bx, first_by], axis=1).astype(np.int64)


def write_blocks(path, info, positions: Positions, patch_size: int, block_size: float) -> int:
    """Write the blocks holding ``positions`` (split by blocks) as the GeoPackage polygon layer
    :data:`BLOCKS_LAYER` (fields ``split``, ``positions``), clipped to the raster; returns the block count."""
    from osgeo import ogr

    _, cells = block_cells(info, positions, patch_size, block_size)
    blocks, first, counts = np.unique(cells, axis=0, return_index=True, return_counts=True)
    x0, y0 = info.geotransform[0], info.geotransform[3]
    x1, y1 = info.grid.map_xy(info.width, info.height)

    def rows():
        for (i, j), index, count in zip(blocks.tolist(), first.tolist(), counts.tolist()):
            left, right = x0 + i * block_size, min(x0 + (i + 1) * block_size, float(x1))
            top, bottom = y0 - j * block_size, max(y0 - (j + 1) * block_size, float(y1))
            yield {"split": str(positions.splits[index]), "positions": count}, ogr.CreateGeometryFromWkt(
                f"POLYGON (({left} {top}, {right} {top}, {right} {bottom}, {left} {bottom}, {left} {top}))")

    write_features(path, BLOCKS_LAYER, info.crs_wkt, ogr.wkbPolygon,
                   {"split": ogr.OFTString, "positions": ogr.OFTInteger}, rows())
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


def format_balance(table: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{split}: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "empty")
                     for split, counts in table.items())


# -- selection -------------------------------------------------------------------------------

def resolved_block_size(block_size_map_units: float, info: RasterInfo, patch_size_px: int) -> float:
    """The split blocks' side in map units: ``block_size_map_units``, or when it is 0 automatic:
    :data:`BLOCK_PATCHES` patches a side (x the raster's pixel spacing, whatever the CRS units)."""
    return float(block_size_map_units) or BLOCK_PATCHES * patch_size_px * info.geotransform[1]


def select_positions(info: RasterInfo, sampler: Sampler, patch_size_px: int, split: dict | None,
                     split_mode: str, block_size_map_units: float, rng: np.random.Generator,
                     reporter: Reporter) -> tuple[Positions, dict]:
    """Positions of ``sampler`` over the raster ``info``, filtered (:func:`filter_on_raster`),
    with their splits (``split``: proportions; ``split_mode`` random or blocks, see the module
    docstring; ``block_size_map_units``: the blocks' side, see :func:`resolved_block_size`).
    Returns them and the dropped counts by reason."""
    if patch_size_px < 1 or patch_size_px > min(info.width, info.height):
        raise InvalidSpec(f"patch size {patch_size_px} does not fit the image {info.path} "
                          f"({info.width} x {info.height} pixels)")
    positions = sampler.sample(info, rng, reporter)
    reporter.log(f"{sampler.name}: {len(positions)} candidate positions")
    reporter.progress(40)
    positions, dropped = filter_on_raster(info.path, info, positions, patch_size_px, reporter)
    proportions = proportions_of(split)
    if split_mode == "blocks":
        block_size = block_size_map_units
        keep, splits = block_splits(info, positions, patch_size_px, block_size, proportions, rng)
        dropped["block_border"] = int((~keep).sum())
        reporter.log(f"{dropped['block_border']} positions dropped: their patch crosses a block border")
        held = len(np.unique(block_cells(info, positions.subset(keep), patch_size_px, block_size)[1], axis=0))
        if held < MIN_BLOCKS:
            reporter.warning(f"only {held} block(s) of {block_size:g} map units hold positions: the splits cannot "
                             f"all get positions; use a smaller block_size (at least {MIN_BLOCKS} blocks)")
        positions = positions.subset(keep)
        positions.splits = splits
    else:
        positions.splits = random_splits(positions.classes, len(positions), proportions, rng)
    if not len(positions):
        raise EngineError(f"no position left after filtering ({dropped}); check the inputs' overlap, "
                        "nodata and the patch size")
    return positions, dropped
