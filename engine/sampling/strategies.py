"""Sampling strategies: small classes with one signature, in a registry (after torchgeo's samplers).

Each :class:`Sampler` is made from a ``select_samples`` spec (:meth:`Sampler.from_spec`) and
returns candidate positions over the reference raster with ``sample(info, rng, reporter)``.
Units: ``*_px`` values are pixels of the reference raster, ``*_map_units`` values are in its
CRS's map units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..contract import SelectSamplesSpec
from ..crs import transform_xy
from ..errors import EngineError, InvalidSpec, NoOverlap
from ..protocol import Reporter
from ..rasters import RasterInfo, invalid_pixels, raster_info
from ..vectors import Positions, class_polygons, read_points
from .footprints import strip_rows


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
    """The points of a layer with a class field (integers or text), any CRS (reprojected; equivalent CRSs,
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
    """Pixel centres of the raster inside class polygons (class field of integers or text): ``samples_per_class`` random ones per
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

        burn, coding = class_polygons(self.vector, self.class_field, info.crs_wkt,
                                      self.border_distance_map_units, self.layer, reporter.warning)
        target = gdal.GetDriverByName("MEM").Create("", info.width, info.height, 1, gdal.GDT_Int32)
        target.SetGeoTransform(info.geotransform)
        gdal.RasterizeLayer(target, [1], burn.GetLayer(0), options=["ATTRIBUTE=burn"])
        codes = target.ReadAsArray()
        if not codes.any():
            raise NoOverlap(f"no pixel centre of {info.path} lies inside the polygons of {self.vector} "
                            "(no overlap, or border_distance too large)")
        xs, ys, classes = [], [], []
        for code, value in enumerate((c.value for c in coding.classes), start=1):
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
        return Positions(np.concatenate(xs), np.concatenate(ys), np.concatenate(classes), None,
                         coding.classes, coding.skipped)


def _pixel_centres(info, cols, rows) -> tuple[np.ndarray, np.ndarray]:
    return info.grid.map_xy(np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)


def _label_strips(path: str, info, nodata):
    """Yield ``(row_offset, int64 labels [h, w], valid mask)`` strips of band 1 of a label raster."""
    from osgeo import gdal

    dataset = gdal.Open(str(path))  # keep the dataset alive while its band is read
    band = dataset.GetRasterBand(1)
    step = strip_rows(info.width, 1)
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
    ``GridGeoSampler``) holding at least one valid pixel: no band nodata (or NaN) and, with
    ``mask`` (a raster on the same grid), the mask non-zero and not its nodata. Footprints partly
    nodata are kept: Extract patches decides with its ``max_nodata``. No classes."""

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
            bad_cols = np.concatenate([[0], np.cumsum(bad.sum(axis=0))])
            ok = bad_cols[starts_c + size] - bad_cols[starts_c] < size * size
            x, y = info.grid.map_xy(starts_c[ok] + size / 2, np.full(ok.sum(), row + size / 2))
            xs.append(x)
            ys.append(y)
        return Positions(np.concatenate(xs), np.concatenate(ys), None)


#: Strategy name -> sampler class (one per name of :data:`.contract.SAMPLING_STRATEGIES`).
SAMPLERS: dict[str, type[Sampler]] = {
    sampler.name: sampler for sampler in (PointSampler, PolygonSampler, LabelRasterSampler, GridSampler)}
