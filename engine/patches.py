"""Patch extraction: cut co-registered multi-source patches at positions (the library of the
``extract_patches`` job, :mod:`engine.jobs.extract_patches`).

Vocabulary:

- A **source** is a raster with a name and a patch size in its own pixels (:class:`engine.contract.PatchSourceSpec`;
  none given: the first source's patch on the ground, :func:`ground_size`).
  Source 0 is the reference: positions are read in its CRS and the dataset's ``scale`` of a
  source is its spacing over source 0's.
- The **label** is what a sample is trained to predict: the position's class value
  (``class``; a text class field's names get the values 1..K in sorted order, see
  :class:`engine.vectors.ClassCoding`), a patch of a label raster mapped to class indices
  (``segmentation``), or a patch of a raster of values (``image``: regression, super-resolution
  targets). Segmentation labels may also be class polygons, rasterised per read group on the
  reference source's grid (:class:`_PolygonCut`): pixels outside every polygon are ignored (-1),
  or are the label's ``background`` class (:func:`polygon_table`).
- **Split zones** (optional, segmentation): polygons naming a split each (Select samples' blocks,
  or zones drawn by hand). A patch's label pixels outside the zones of its position's split are
  ignored (-1), rasterised per read group like polygon labels (:func:`split_zones`), so a patch
  crossing into a validation or test zone never learns or validates on that zone's labels.
- Every raster is cut as serving reads it: a raster whose CRS or grid does not line up with the
  reference lattice at its ``scale`` (:func:`spacing_scale`) is warped on the fly onto it
  (:func:`engine.rasters.align_source`, a logged VRT; bilinear, nearest for segmentation labels).
- Every source patch of a sample starts on the same ground corner, one shared by all the
  sources' (aligned) grids, as serving's windows do: the common corner nearest to the start of
  the reference patch centred on the position (:func:`registered_origins`); the position moves
  to the reference patch's centre, and the label raster's patch is centred there
  (:func:`engine.geometry.patch_start` in its own pixels; docs/architecture.md).

A position is rejected, and counted per reason, when a patch leaves its raster (``outside``),
more than ``max_nodata`` of a source patch's pixels are nodata (``nodata``: a pixel is nodata
when any of its bands is nodata or NaN), or its label is missing (``label_nodata``: every label
pixel nodata or outside its split's zones, any target-image pixel nodata, or no class). Patches
partly nodata are kept as they are (the reader and serving turn nodata into NaN alike,
:mod:`engine.nodata`); segmentation label pixels on a nodata pixel of the first source are
ignored (-1) when the label patch shares its grid, as serving maps no class there.

Reading: positions are grouped by reference-source tiles of ``read_tile`` pixels; each raster
is read once per group (the bounding window of the group's patches), so a raster is read about
once in total, whatever the number of patches. Patches stream into the dataset's shards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from .classes import ClassStyle, class_color, class_styles
from .contract import SPLITS, PatchLabelSpec, PatchSourceSpec
from .crs import bounds_in, crs_equivalent
from .dataset import IGNORE_INDEX, DatasetWriter
from .errors import EngineError, InvalidSpec, NoOverlap
from .geometry import Lattice, Window, patch_start, registered_start
from .outputs import atomic_output, is_plain_path
from .protocol import Reporter
from .rasters import (
    RasterInfo,
    align_source,
    invalid_pixels,
    open_raster,
    raster_info,
    rasterize,
    resampling_for,
)
from .registration import ShiftScores
from .sampling import label_counts
from .vectors import Positions, class_polygons, has_field, is_vector, read_points, some_names, write_positions

REASONS = ("outside", "nodata", "label_nodata")
READ_CACHE_BYTES = 64 * 2**20  # GDAL block cache while extracting: each area is read about once
MAX_SCALE_DENOMINATOR = 16  # scales are simple fractions: 2, 1/2, 3/2, 4/3 ...
LABEL = "label"
#: Segmentation patches (the first accepted) whose labels are checked against the image's edges
#: (:mod:`.registration`): enough for a clear estimate, a few seconds at most.
SHIFT_PATCHES = 1000

# -- geometry --------------------------------------------------------------------------------

def registered_origins(rasters: list[RasterInfo], sizes: list[int], x: np.ndarray, y: np.ndarray):
    """Per raster, the ``[n, 2]`` first (col, row) of each point's patch, and the points moved to
    the reference patch's centre.

    Every patch of a sample starts on the same ground corner, one that all the rasters' grids
    share (:class:`engine.geometry.Lattice`), as serving's windows do
    (:func:`engine.geometry.registered_start`): the common corner nearest to where the reference
    (first) raster's patch centred on the point would start. With one raster (or nested rasters
    at scale 1) that is :func:`engine.geometry.patch_start` itself.
    """
    reference, size = rasters[0], sizes[0]
    corners = []  # (col, row, scale) of each raster in reference pixels
    for info in rasters:
        col, row = reference.grid.pixel(info.grid.origin_x, info.grid.origin_y)
        scale = Fraction(info.geotransform[1] / reference.geotransform[1]).limit_denominator(MAX_SCALE_DENOMINATOR)
        corners.append((_fraction(col), _fraction(row), scale))
    cols = Lattice.common([(c[0], c[2]) for c in corners])
    rows = Lattice.common([(c[1], c[2]) for c in corners])
    u, v = reference.grid.pixel(x, y)
    half = Fraction(size, 2)
    # the points' pixel coordinates exactly (not as simple fractions: 0.99999 is not 1)
    starts = np.array([[cols.nearest(Fraction(float(a)) - half), rows.nearest(Fraction(float(b)) - half)]
                       for a, b in zip(np.atleast_1d(u), np.atleast_1d(v))], dtype=np.int64).reshape(-1, 2)
    origins = [np.array([[registered_start(c, col, scale), registered_start(r, row, scale)] for c, r in starts],
                        dtype=np.int64).reshape(-1, 2) for col, row, scale in corners]
    centre_x, centre_y = reference.grid.map_xy(starts[:, 0] + size / 2, starts[:, 1] + size / 2)
    return origins, centre_x, centre_y


def _fraction(value) -> Fraction:
    """A (snapped) pixel coordinate as an exact simple fraction."""
    return Fraction(float(value)).limit_denominator(MAX_SCALE_DENOMINATOR * 64)


def spacing_in(info: RasterInfo, crs_wkt: str) -> float:
    """``info``'s pixel spacing (x) in the units of ``crs_wkt``: its own, or GDAL's suggested
    resolution for warping it into that CRS."""
    if crs_equivalent(info.crs_wkt, crs_wkt):
        return info.geotransform[1]
    from osgeo import gdal

    return gdal.Warp("", info.path, format="VRT", dstSRS=crs_wkt).GetGeoTransform()[1]


def spacing_scale(info: RasterInfo, reference: RasterInfo) -> Fraction:
    """A raster's pixel spacing over the reference's (both in the reference CRS), rounded to the
    nearest simple fraction ("2", "1/2"): the dataset's, hence the model's and serving's, ``scale``."""
    ratio = spacing_in(info, reference.crs_wkt) / reference.geotransform[1]
    return Fraction(ratio).limit_denominator(MAX_SCALE_DENOMINATOR)


def aligned_info(info: RasterInfo, reference: RasterInfo, resampling: str = resampling_for("image"),
                 log=None) -> RasterInfo:
    """``info`` on the reference lattice at its :func:`spacing_scale`, as serving aligns sources
    (:func:`engine.rasters.align_source`): the raster itself when it lines up, else a warped VRT
    (``path`` is its XML; ``log`` tells why it was warped)."""
    aligned = align_source(info, reference.grid, spacing_scale(info, reference), resampling, log)
    return raster_info(aligned.path) if aligned.warped else info


def footprint_window(info: RasterInfo, aligned: RasterInfo) -> Window:
    """The pixels of ``aligned`` (:func:`aligned_info` of ``info``) wholly inside ``info``'s
    footprint (its envelope in ``aligned``'s CRS): a warped grid is snapped outwards, and pixels
    beyond the footprint hold no data (0 or NaN when the raster declares no nodata)."""
    if aligned is info:
        return Window(0, 0, info.width, info.height)
    xmin, ymin, xmax, ymax = bounds_in(info.grid.bounds, info.crs_wkt, aligned.crs_wkt)
    (u0, u1), (v0, v1) = aligned.grid.pixel(np.array([xmin, xmax]), np.array([ymax, ymin]))
    c0, r0 = max(math.ceil(u0), 0), max(math.ceil(v0), 0)
    c1, r1 = min(math.floor(u1), aligned.width), min(math.floor(v1), aligned.height)
    return Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))


# -- reading ---------------------------------------------------------------------------------

@dataclass
class _Cut:
    """A raster to cut patches from, with each position's patch origin in its pixels and the
    window of its pixels that hold data (:func:`footprint_window`)."""

    name: str
    info: RasterInfo
    size: int
    origins: np.ndarray  # [n, 2] (col, row)
    valid: Window

    def inside(self) -> np.ndarray:
        c, r, v = self.origins[:, 0], self.origins[:, 1], self.valid
        return ((c >= v.col_off) & (r >= v.row_off) & (c + self.size <= v.col_off + v.width)
                & (r + self.size <= v.row_off + v.height))

    def read_group(self, members: np.ndarray) -> dict[int, np.ndarray]:
        """Patches ``[size, size, bands]`` of positions ``members``, from one read of their bounding window."""
        origins = self.origins[members]
        c0, r0 = origins.min(axis=0)
        c1, r1 = origins.max(axis=0) + self.size
        block = self.read(Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0)))
        return {int(m): block[r - r0:r - r0 + self.size, c - c0:c - c0 + self.size]
                for m, (c, r) in zip(members, origins)}

    def read(self, window: Window) -> np.ndarray:
        """``[height, width, bands]`` pixels of ``window``."""
        block = open_raster(self.info.path).ReadAsArray(window.col_off, window.row_off, window.width, window.height)
        return np.moveaxis(block.reshape((self.info.bands,) + block.shape[-2:]), 0, -1)


@dataclass
class _PolygonCut(_Cut):
    """Segmentation labels from class polygons, rasterised window by window on ``info``'s grid:
    ``[h, w, 1]`` class indices ``lookup[burn]`` (:func:`polygon_table`; ``burn`` 0 outside every
    polygon, see :func:`engine.vectors.class_polygons`)."""

    burn: object = None
    lookup: np.ndarray = None

    def read(self, window: Window) -> np.ndarray:
        codes = rasterize(self.info.grid, window, self.burn, attribute="burn")
        return self.lookup[np.where(np.isfinite(codes), codes, 0).astype(np.int64)].astype(np.int32)[..., None]


def read_groups(reference: _Cut, order: np.ndarray, read_tile: int) -> list[np.ndarray]:
    """Positions (indices, from ``order``) grouped by the reference tile holding their patch origin."""
    origins = reference.origins[order]
    keys = (origins[:, 1] // read_tile) * (1 << 32) + origins[:, 0] // read_tile
    sort = np.argsort(keys, kind="stable")
    keys, members = keys[sort], order[sort]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    return np.split(members, bounds)


@contextlib.contextmanager
def bounded_gdal_cache(limit: int = READ_CACHE_BYTES):
    """Cap GDAL's block cache (default 5 % of RAM) while reading, then restore it."""
    from osgeo import gdal

    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, limit))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


# -- labels ----------------------------------------------------------------------------------

def class_table(values, classes=()) -> list[dict]:
    """The manifest's class list: ``{index, value, name, color}`` per class value, by value.

    ``classes`` (``{value, name, color}``), when given, are the classes (other values are
    ignored); otherwise every value in ``values`` is a class.
    """
    given = {int(c["value"]): c for c in classes}
    table = []
    for index, value in enumerate(sorted(given or set(int(v) for v in values))):
        entry = given.get(value, {})
        table.append({"index": index, "value": value, "name": str(entry.get("name", value)),
                      "color": entry.get("color", class_color(index))})
    return table


def to_indices(values: np.ndarray, table: list[dict], invalid: np.ndarray) -> np.ndarray:
    """Label values to class indices; ``-1`` where ``invalid`` or the value is not in ``table``."""
    known = np.array([c["value"] for c in table])
    index = np.searchsorted(known, values)
    index = np.clip(index, 0, len(known) - 1)
    hit = (known[index] == values) & ~invalid
    return np.where(hit, index, -1).astype(np.int32)


# -- extraction ------------------------------------------------------------------------------

def place_patches(rasters: list[tuple[str, RasterInfo, int, Window]], positions: Positions):
    """Place the sources' patches of each position on one common corner (:func:`registered_origins`)
    and the label raster's patch (last, named :data:`LABEL`) centred on the reference patch.

    ``rasters``: (name, aligned info, patch size, :func:`footprint_window`) with every raster on
    the first one's lattice (:func:`aligned_info`: same CRS, so spacings compare); positions in
    that CRS. Returns the centres and one :class:`_Cut` per raster.
    """
    for name, info, size, valid in rasters:
        if size > min(valid.width, valid.height):
            where = f" {info.path}" if is_plain_path(info.path) else " (warped onto the reference lattice)"
            raise InvalidSpec(f"{name}: patch size {size} is bigger than the image{where} "
                              f"({valid.width} x {valid.height} pixels)")
    inputs = [r for r in rasters if r[0] != LABEL]
    origins, centre_x, centre_y = registered_origins([r[1] for r in inputs], [r[2] for r in inputs],
                                                     positions.x, positions.y)
    cuts = [_Cut(name, info, size, origin, valid) for (name, info, size, valid), origin in zip(inputs, origins)]
    for name, info, size, valid in rasters[len(inputs):]:  # the label: centred on the reference patch
        u, v = info.grid.pixel(centre_x, centre_y)
        origin = np.array([[patch_start(a, size), patch_start(b, size)] for a, b in zip(u, v)], dtype=np.int64)
        cuts.append(_Cut(name, info, size, origin.reshape(-1, 2), valid))
    return centre_x, centre_y, cuts


def extract_patches(sources: Sequence[PatchSourceSpec], label: PatchLabelSpec, positions: Positions, output,
                    reporter: Reporter, shard_size: int, read_tile: int, max_nodata: float = 0.5,
                    zones: str | None = None, split_field: str = "split", zones_layer: str | None = None) -> dict:
    """Cut the patches of ``sources`` (the first is the reference) and their ``label`` at
    ``positions`` (in the reference source's CRS) into the dataset folder ``output``
    (see :mod:`.dataset`): ``shard_size`` patches per shard, positions read in groups by
    reference tiles of ``read_tile`` pixels, ``max_nodata`` the largest nodata fraction of a
    source patch (defaults: :class:`.contract.ExtractPatchesSpec`); ``zones``: the split zones
    layer (its ``split_field`` names each zone's split; ``zones_layer``: its layer, default the
    first) masking segmentation labels.

    A label raster on the reference grid is checked against the reference source's edges
    (:mod:`.registration`, the first :data:`SHIFT_PATCHES` patches): a clear shift is warned of.

    Returns {output, splits {split: n}, rejected {reason: n}, class_counts, classes, skipped,
    label_shift (the labels' best shift, :class:`.registration.LabelShift` as a dict, or None)}.
    """
    infos = [raster_info(s.path) for s in sources]
    reference = infos[0]
    polygons = label_polygons(label, reference, reporter) if label.kind == "segmentation" else None
    label_info = raster_info(label.path) if label.path and polygons is None else None
    rasters, resolved = [], []
    for s, info in zip(sources, infos):
        aligned = aligned_info(info, reference, log=reporter.log)
        if s.patch_size is None:
            s = dataclasses.replace(s, patch_size=ground_size(sources[0].patch_size, reference, aligned))
            reporter.log(f"{s.name}: patch size {s.patch_size} px, the ground of {sources[0].name}'s "
                         f"{sources[0].patch_size} px")
        resolved.append(s)
        rasters.append((s.name, aligned, s.patch_size, footprint_window(info, aligned)))
    sources = resolved
    label_size = None
    if label_info is not None:
        resampling = resampling_for("classes" if label.kind == "segmentation" else "image")
        aligned = aligned_info(label_info, reference, resampling, reporter.log)
        label_size = label.patch_size or ground_size(sources[0].patch_size, reference, aligned)
        rasters.append((LABEL, aligned, label_size, footprint_window(label_info, aligned)))
    elif polygons is not None:  # rasterised on the reference source's (aligned) grid
        label_size = label.patch_size or sources[0].patch_size
        rasters.append((LABEL, rasters[0][1], label_size, rasters[0][3]))
    centre_x, centre_y, all_cuts = place_patches(rasters, positions)
    cuts, label_cut = all_cuts[:len(sources)], (all_cuts[-1] if len(all_cuts) > len(sources) else None)
    if polygons is not None:
        burn, coding = polygons
        table, lookup = polygon_table(coding.classes, label.background)
        label_cut = _PolygonCut(**vars(label_cut), burn=burn, lookup=lookup)
    else:
        table = _classes(label, positions, label_info)
    zone_cut = None
    if zones:  # the zones' split indices, cut on the label's grid
        burn, lookup = split_zones(zones, split_field, reference, reporter, zones_layer)
        zone_cut = _PolygonCut(**{**vars(label_cut), "burn": burn, "lookup": lookup})
    rejected = dict.fromkeys(REASONS, 0)
    inside = np.logical_and.reduce([cut.inside() for cut in all_cuts])
    rejected["outside"] = int((~inside).sum())
    candidates = np.flatnonzero(inside)
    if not len(candidates):
        raise NoOverlap(f"none of the {len(positions)} positions has its patches inside every source "
                          f"({', '.join(s.path for s in sources)})")

    manifest_sources = [_source_entry(s, info, cut.info, reference) for s, info, cut in zip(sources, infos, cuts)]
    label_aligned = label_cut.info if label_cut else None
    manifest_label = _label_entry(label, label_info, label_aligned, label_size, table, reference)
    on_reference_grid = (label.kind == "segmentation" and label_size == sources[0].patch_size
                         and spacing_scale(label_aligned, reference) == 1)
    groups = read_groups(cuts[0], candidates, int(read_tile))
    shifts = ShiftScores() if on_reference_grid and label_info is not None else None
    accepted_index, accepted_split, accepted_row = [], [], []
    with atomic_output(output, folder=True) as folder, bounded_gdal_cache():
        writer = DatasetWriter(folder, manifest_sources, manifest_label, int(shard_size))
        for number, members in enumerate(groups):
            reporter.check_cancelled()
            patches = {cut.name: cut.read_group(members) for cut in cuts}
            labels = label_cut.read_group(members) if label_cut else {}
            zoned = zone_cut.read_group(members) if zone_cut else {}
            for m in members:
                sample = {name: patches[name][m] for name in patches}
                invalid = [invalid_pixels(p, info.nodata) for p, info in zip(sample.values(), infos)]
                if any(bad.mean() > max_nodata for bad in invalid):
                    rejected["nodata"] += 1
                    continue
                split = str(positions.splits[m])
                value = _label_value(label, labels.get(m), positions, m, label_info, table)
                if value is not None:
                    value = _hidden_ignored(value, invalid[0] if on_reference_grid else None,
                                            zoned[m][..., 0] != SPLITS.index(split) if zone_cut else None)
                if value is None:
                    rejected["label_nodata"] += 1
                    continue
                if shifts is not None and shifts.patches < SHIFT_PATCHES:
                    shifts.add(sample[sources[0].name], invalid[0], value, value != IGNORE_INDEX)
                accepted_row.append(writer.add(split, sample, value))
                accepted_index.append(m)
                accepted_split.append(split)
            reporter.progress(95.0 * (number + 1) / len(groups))
        reporter.log("rejected positions: " + ", ".join(f"{k} {v}" for k, v in rejected.items())
                     + f"; accepted {len(accepted_index)} of {len(positions)}")
        if not accepted_index:
            raise EngineError(f"no patch extracted: all {len(positions)} positions were rejected "
                              f"({', '.join(f'{k}: {v}' for k, v in rejected.items())}); check the "
                              "positions' overlap with the sources, their nodata and the patch sizes")
        shift = shifts.best() if shifts is not None else None
        if shift is not None and shift.clear:
            reporter.warning(shift.advice(label.path, sources[0].path, reference.geotransform))
        keep = np.array(accepted_index)
        accepted = Positions(centre_x[keep], centre_y[keep],
                             None if positions.classes is None else positions.classes[keep],
                             np.array(accepted_split, dtype=object), positions.class_styles)
        write_positions(folder / "positions.gpkg", accepted, reference.crs_wkt,
                        {"index": np.array(accepted_row), "input_row": keep + 1})
        manifest = writer.close({"rejected": rejected})
    reporter.log("patches per split: " + ", ".join(f"{k} {v}" for k, v in manifest["splits"].items()))
    reporter.progress(100)
    return {"output": str(output), "splits": manifest["splits"], "rejected": rejected,
            "class_counts": manifest["class_counts"], "classes": table, "skipped": positions.skipped,
            "label_shift": dataclasses.asdict(shift) if shift is not None else None}


def read_positions(path, layer: str | None, crs_wkt: str, class_field: str | None, split_field: str | None,
                   warn, known=()) -> Positions:
    """Positions of a point layer in ``crs_wkt``; every position is ``train`` (``warn`` says so)
    when the layer has no field ``split_field``. ``known`` (``{value, name, color}``): the
    classes to keep (see :func:`engine.vectors.class_coding`)."""
    has_split = bool(split_field) and has_field(path, layer, split_field)
    if split_field and not has_split:
        warn(f"{path} has no field {split_field!r}: every position goes to the train split")
    return read_points(path, crs_wkt, class_field, split_field if has_split else None, layer_name=layer, warn=warn,
                       known=class_styles(known))


def label_polygons(label: PatchLabelSpec, reference: RasterInfo, reporter: Reporter):
    """``(burn layer, coding)`` (:func:`engine.vectors.class_polygons` in the reference CRS) when
    the segmentation label ``path`` is a vector file, else None (a label raster)."""
    if not is_vector(label.path):
        if label.background:
            raise InvalidSpec(f"{label.path} is a label raster: the label's 'background' class (pixels outside "
                              "every polygon) is for segmentation polygons; a label raster's unlabelled "
                              "pixels are its nodata")
        return None
    if not label.class_field:
        raise InvalidSpec(f"segmentation polygons {label.path}: give the label's 'class_field' "
                          "(the field holding each polygon's class, integers or text)")
    burn, coding = class_polygons(label.path, label.class_field, reference.crs_wkt, layer_name=label.layer,
                                  warn=reporter.warning, known=class_styles(label.classes))
    if not coding.classes:
        raise EngineError(f"segmentation polygons {label.path}: no polygon has a class in field "
                          f"{label.class_field!r}")
    reporter.log(f"segmentation labels rasterised from {label.path} per patch; classes: "
                 + ", ".join(f"{c.value}={c.name}" for c in coding.classes) + "; outside every polygon: "
                 + (f"class {label.background!r}" if label.background else "ignored"))
    return burn, coding


def _hidden_ignored(value: np.ndarray, *hidden: np.ndarray | None) -> np.ndarray | None:
    """The segmentation label ``value`` (class indices per pixel) with the pixels of every
    ``hidden`` mask (True: hidden; None: no mask) ignored, None when no label pixel is left."""
    masks = [mask for mask in hidden if mask is not None]
    if not masks:
        return value
    value = np.where(np.logical_or.reduce(masks), IGNORE_INDEX, value)
    return None if (value < 0).all() else value


def split_zones(path, split_field: str, reference: RasterInfo, reporter: Reporter,
                layer: str | None = None) -> tuple[object, np.ndarray]:
    """The split zones ``path`` (polygons whose text field ``split_field`` is train, valid or test)
    as ``(burn layer, lookup)``: the layer in the reference CRS (:func:`engine.vectors.class_polygons`)
    and the split index (in :data:`.contract.SPLITS`) of each burn code, -1 outside every zone and
    in zones of another name (``reporter`` warns about those)."""
    try:
        burn, coding = class_polygons(path, split_field, reference.crs_wkt, layer_name=layer, warn=reporter.warning)
    except EngineError as error:
        raise type(error)(f"split zones: {error}") from None
    names = [c.name for c in coding.classes]
    if not set(names) & set(SPLITS):
        raise EngineError(f"split zones {path}: field {split_field!r} names no split ({', '.join(SPLITS)}); "
                          f"it holds {some_names(names) or 'nothing'}: choose the field that does")
    if set(names) - set(SPLITS):
        reporter.warning(f"split zones {path}: zones named {', '.join(sorted(set(names) - set(SPLITS)))} are no "
                         "split; their label pixels are ignored")
    reporter.log(f"split zones from {path}: label pixels outside the zones of their patch's split are ignored")
    return burn, np.array([-1] + [SPLITS.index(n) if n in SPLITS else -1 for n in names], dtype=np.int32)


def polygon_table(classes: Sequence[ClassStyle], background: str | None) -> tuple[list[dict], np.ndarray]:
    """The class table of polygon labels and ``lookup``: the class index of each burn code (0:
    outside every polygon, ``k``: ``classes[k - 1]``, see :func:`engine.vectors.class_polygons`).

    Outside is ignored (:data:`engine.dataset.IGNORE_INDEX`) without a ``background`` name; with
    one, it is the class of that name (a polygon class, or a new one of value 0, or the largest
    value + 1 when 0 is taken)."""
    styles = [dataclasses.asdict(c) for c in classes]
    outside = None
    if background:
        outside = next((c.value for c in classes if c.name == background), None)
        if outside is None:
            used = {c.value for c in classes}
            outside = 0 if 0 not in used else max(used) + 1
            styles.append({"value": outside, "name": background})
    table = class_table((), styles)
    index = {c["value"]: c["index"] for c in table}
    lookup = [IGNORE_INDEX if outside is None else index[outside]] + [index[c.value] for c in classes]
    return table, np.array(lookup, dtype=np.int32)


def _classes(label: PatchLabelSpec, positions: Positions, label_info: RasterInfo | None) -> list[dict]:
    if label.kind == "class":
        return class_table(np.unique(positions.classes),
                           label.classes or [dataclasses.asdict(c) for c in positions.class_styles])
    if label.kind == "segmentation":
        if label.classes:
            return class_table((), label.classes)
        return class_table(label_counts(label_info.path, _label_nodata(label, label_info)))
    return []


def _label_nodata(label: PatchLabelSpec, info: RasterInfo | None):
    return label.nodata if label.nodata is not None else (info.nodata[0] if info else None)


def _label_value(label: PatchLabelSpec, patch, positions: Positions, m: int, info, table):
    """The stored label of position ``m``, or None when it has none."""
    if label.kind == "class":
        index = int(to_indices(np.array([positions.classes[m]]), table, np.zeros(1, dtype=bool))[0])
        return None if index < 0 else index
    if info is None:  # segmentation polygons: already class indices
        indices = patch[..., 0].astype(np.int32)
        return None if (indices < 0).all() else indices
    nodata = [label.nodata] * info.bands if label.nodata is not None else info.nodata
    invalid = invalid_pixels(patch, nodata)
    if label.kind == "image":
        return None if invalid.any() else patch.astype(np.float32)
    indices = to_indices(patch[..., 0], table, invalid)
    return None if (indices < 0).all() else indices


def ground_size(source_size: int, reference: RasterInfo, other: RasterInfo) -> int:
    """The patch size (pixels of ``other``, >= 1) covering the ground of the first source's
    ``source_size`` patch: ``source_size`` x the reference spacing / the (aligned) spacing of
    ``other`` (a source or the label raster), rounded."""
    return max(1, round(source_size * reference.geotransform[1] / other.geotransform[1]))


def _source_entry(source: PatchSourceSpec, info: RasterInfo, aligned: RasterInfo, reference: RasterInfo) -> dict:
    """A manifest source: ``spacing``, ``scale`` and ``crs_wkt`` of the aligned raster the patches are cut from."""
    gt = aligned.geotransform
    return {"name": source.name, "path": str(source.path), "bands": info.bands, "patch_size": source.patch_size,
            "spacing": [gt[1], -gt[5]], "scale": str(spacing_scale(aligned, reference)),
            "dtype": "float32" if info.dtype == "float64" else info.dtype, "crs_wkt": aligned.crs_wkt,
            "nodata": list(info.nodata), "descriptions": list(info.descriptions)}


def _label_entry(label: PatchLabelSpec, info: RasterInfo | None, aligned: RasterInfo | None, size, table,
                 reference: RasterInfo) -> dict:
    entry = {"kind": label.kind, "patch_size": size, "classes": table,
             "bands": 1 if info is None or label.kind == "segmentation" else info.bands,
             "spacing": None, "scale": None, "path": label.path, "nodata": _label_nodata(label, info)}
    if aligned is not None:
        entry.update(spacing=[aligned.geotransform[1], -aligned.geotransform[5]],
                     scale=str(spacing_scale(aligned, reference)))
    return entry
