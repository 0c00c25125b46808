"""Pure geometry: windows, grids, model fields and region propagation.

Vocabulary (see docs/architecture.md):

- A **window** is a rectangle of pixels of one raster: ``col_off, row_off`` (may be negative
  or past the raster: those pixels come from the border mode) and ``width, height``.
- A **grid** is a north-up georeferenced pixel lattice: corner origin (map units), positive
  pixel spacing (map units), size (pixels), CRS (WKT).
- A model's **geometry**: per source ``i`` its spacing scale relative to the reference source,
  receptive field ``rf`` (source-i pixels) and the derived ``r_i`` (source-i pixels per output
  pixel); for the model the expression field ``ef`` and spacing scale ``sf`` (output spacing /
  reference spacing) and ``crop`` (output pixels the network emits before a tile's kept block).

- The **lattice** (:class:`Lattice`): the reference pixel corners shared by every source's grid.
  **Registration** (:meth:`ModelGeometry.registration`): every source's window for a block starts
  on the same lattice corner, so the network sees its inputs registered as in one whole-image
  pass; :func:`registered_start` turns that corner into each source's first pixel (serving's
  windows and sampled patches alike).
- The **output grid** covers the sources' common extent: origin on a reference pixel corner (on
  the lattice, or the registered context past it), spacing ``sf`` x the reference spacing
  (:func:`output_grid`); an extent or mask selects a window of it (:func:`clip_window`).
  **Region propagation** (:func:`source_window`) gives the source window an
  EF-aligned output block needs; :func:`tiles` cuts the output into equal EF-aligned squares;
  :func:`shrink_window` keeps the blocks that need no padding; :func:`border_indices` maps a
  padded window onto source pixels (numpy.pad modes, defined on the whole image).

Pixel decisions are integer or :class:`fractions.Fraction` arithmetic; map coordinates are
converted to pixels once, snapped to whole pixels within :data:`SNAP_TOLERANCE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .contract import BORDER_MODES


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: offsets and sizes in pixels of one raster.

    Conversions follow rasterio's ``windows.py``: :meth:`to_slices` / :meth:`from_slices` for
    array indexing (rows first), :meth:`intersection`, :meth:`translate`, :meth:`crop`.
    """

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        """First column after the window (pixels)."""
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        """First row after the window (pixels)."""
        return self.row_off + self.height

    def to_slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices selecting this window of an array whose ``[0, 0]`` is pixel ``(0, 0)``
        (offsets must not be negative: a negative slice start counts from the end)."""
        if self.col_off < 0 or self.row_off < 0:
            raise ValueError(f"{self} starts before pixel (0, 0): it has no array slices")
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    @classmethod
    def from_slices(cls, rows: slice, cols: slice) -> "Window":
        """The window of array slices ``(rows, cols)`` with explicit, non-negative bounds and step 1."""
        for name, part in (("rows", rows), ("cols", cols)):
            if part.start is None or part.stop is None or part.step not in (None, 1) or part.start < 0:
                raise ValueError(f"{name} slice {part} needs explicit non-negative bounds and step 1")
        return cls(cols.start, rows.start, max(cols.stop - cols.start, 0), max(rows.stop - rows.start, 0))

    def translate(self, col: int, row: int) -> "Window":
        """This window moved by ``col`` columns and ``row`` rows (pixels)."""
        return Window(self.col_off + col, self.row_off + row, self.width, self.height)

    def intersection(self, other: "Window") -> "Window | None":
        """The pixels in both windows (of the same raster), ``None`` when they share none."""
        col, row = max(self.col_off, other.col_off), max(self.row_off, other.row_off)
        col_end, row_end = min(self.col_end, other.col_end), min(self.row_end, other.row_end)
        if col_end <= col or row_end <= row:
            return None
        return Window(col, row, col_end - col, row_end - row)

    def crop(self, width: int, height: int) -> "Window | None":
        """The part of this window inside a raster of ``width`` x ``height`` pixels (``None``: none)."""
        return self.intersection(Window(0, 0, width, height))


@dataclass(frozen=True)
class SourceGeometry:
    """One model input.

    ``scale``: this source's pixel spacing / the reference source's spacing (1 for the
    reference, 2 for a 1 m multispectral image next to a 0.5 m panchromatic reference).
    ``rf``: receptive field, in this source's pixels (the patch that yields ``ef`` output pixels).
    """

    name: str
    bands: int
    rf: int
    scale: Fraction = Fraction(1)


@dataclass(frozen=True)
class ModelGeometry:
    """The geometry a model is served with.

    ``sf``: output spacing / reference-source spacing. ``ef``: expression field in output
    pixels; tiles start on and measure multiples of it. ``crop``: output pixels that the
    network emits before the kept block of a tile (the halo of "same"-padded networks).
    """

    sources: tuple[SourceGeometry, ...]
    ef: int
    sf: Fraction
    crop: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def ratio(self, i: int) -> Fraction:
        """``r_i``: source-i pixels per output pixel."""
        return Fraction(self.sf) / Fraction(self.sources[i].scale)

    def before(self, i: int) -> int:
        """Source-i context pixels before an EF block's footprint by the patch-centre rule
        (the network's own context; windows read :meth:`window_before`)."""
        return self.sources[i].rf // 2 - self.footprint(i) // 2

    def after(self, i: int) -> int:
        """Source-i context pixels after an EF block's footprint (patch-centre rule)."""
        return self.sources[i].rf - self.footprint(i) - self.before(i)

    def footprint(self, i: int) -> int:
        """Source-i pixels covered by one EF block of output pixels (an integer)."""
        size = self.ef * self.ratio(i)
        if size.denominator != 1:
            raise ValueError(f"EF {self.ef} x r_{i} {self.ratio(i)} is not a whole number of pixels")
        return int(size)

    @property
    def lattice(self) -> int:
        """Reference pixels between the corners shared by every source's pixel grid (nested
        sources): the lcm of the scales' numerators (6 for scales 2 and 3; 1 for finer sources)."""
        return math.lcm(*(Fraction(s.scale).numerator for s in self.sources))

    def registration(self) -> "Registration":
        """Where every source's window starts: one common corner, :data:`Registration.before`
        reference pixels before an EF block's footprint (see :class:`Registration`)."""
        sf, lattice, native = Fraction(self.sf), self.lattice, self.before(0)
        # before = native + lead * sf, lead >= 0 and a multiple of sf's denominator (whole pixels)
        # so that t = lead / sf.denominator steps ``before`` by sf's numerator; prefer a common corner.
        steps = [t for t in range(lattice) if (native + t * sf.numerator) % lattice == 0]
        t = steps[0] if steps else 0
        lead = t * sf.denominator
        return Registration(lattice, native + t * sf.numerator, lead, -(-lead // self.ef))

    def window_before(self, i: int) -> Fraction:
        """Source-i pixels of registered context before an EF block's footprint (a whole number
        unless the output grid cannot sit on common corners, see :class:`Registration`)."""
        return Fraction(self.registration().before) / Fraction(self.sources[i].scale)

    def window_extent(self, i: int) -> int:
        """Source-i pixels a registered window holds beyond the ``N * r_i`` footprint of its block:
        the window of a block ``registration().blocks`` EF blocks longer (so every size the
        network sees is one it was derived and checked with)."""
        return self.sources[i].rf + (self.registration().blocks - 1) * self.footprint(i)

    def window_after(self, i: int) -> Fraction:
        """Source-i pixels a registered window holds after its block's footprint."""
        return self.window_extent(i) - self.window_before(i)

    @property
    def kept_crop(self) -> int:
        """Output pixels a registered window's network output starts with before the kept block:
        ``crop`` plus the registration's ``lead``."""
        return self.crop + self.registration().lead


@dataclass(frozen=True)
class Registration:
    """How a model's windows sit on the sources' common lattice (per axis; the same on both).

    The network sees its inputs registered as in one whole-image pass only when every source's
    window starts on the same ground point, a corner shared by all source grids. The reference
    source's native context ``ModelGeometry.before(0)`` (patch-centre rule) fixes where the output
    pixels are; the registered context ``before`` (reference pixels, common to every source) is
    the smallest ``before(0) + lead * sf`` (``lead >= 0`` output pixels, ``before`` a whole
    number) on the ``lattice``; the network then emits ``lead`` more output pixels before the kept
    block, and every window grows by ``blocks`` EF blocks so that it still yields them.

    When no such ``before`` is a multiple of ``lattice`` (an odd native context with SF 2 over
    scales 1 and 2, say), ``lead`` is 0 and the output grid origin moves to ``before`` modulo
    ``lattice`` past a common corner, so that windows still start on common corners.
    """

    lattice: int
    before: int
    lead: int
    blocks: int


def center_index(u: float, size: int) -> int:
    """The centre node of a ``size``-pixel patch around pixel coordinate ``u`` (one axis).

    Odd sizes centre on the pixel holding ``u`` (``floor(u)``); even sizes on the nearest pixel
    corner (``round(u)``, halves up). The patch then starts at ``center_index - size // 2``.
    """
    if size % 2:
        return math.floor(u)
    return math.floor(u + 0.5)


def patch_start(u: float, size: int) -> int:
    """First pixel of the ``size``-pixel patch centred on pixel coordinate ``u`` (one axis)."""
    return center_index(u, size) - size // 2


# -- grids ------------------------------------------------------------------------------------

Bounds = tuple[float, float, float, float]
"""``(xmin, ymin, xmax, ymax)`` in map units of a grid's CRS."""

#: Pixel positions closer than this (in pixels) to a whole number are that number: it absorbs
#: the float noise of map coordinates (e.g. 630534.0000000001) without moving any real grid.
SNAP_TOLERANCE = 1e-6


def snap(value):
    """``value`` rounded to the nearest integer when it is within :data:`SNAP_TOLERANCE`
    (a number, or element-wise on a numpy array)."""
    value = np.asarray(value, dtype=float)
    nearest = np.round(value)
    snapped = np.where(np.abs(value - nearest) < SNAP_TOLERANCE, nearest, value)
    return float(snapped) if snapped.ndim == 0 else snapped


@dataclass(frozen=True)
class Grid:
    """A north-up pixel lattice.

    ``origin_x, origin_y``: map coordinates of the top-left pixel's top-left corner.
    ``spacing_x, spacing_y``: pixel size in map units, both positive (rows go south).
    ``width, height``: pixels. ``crs_wkt``: the CRS (WKT, may be empty for pure arithmetic).
    """

    origin_x: float
    origin_y: float
    spacing_x: float
    spacing_y: float
    width: int
    height: int
    crs_wkt: str = ""

    def __post_init__(self):
        if not (self.spacing_x > 0 and self.spacing_y > 0):
            raise ValueError(f"grid spacing must be positive, got {self.spacing_x}, {self.spacing_y}")

    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        """The GDAL geotransform (corner based, north-up)."""
        return (self.origin_x, self.spacing_x, 0.0, self.origin_y, 0.0, -self.spacing_y)

    @classmethod
    def from_geotransform(cls, gt, width: int, height: int, crs_wkt: str = "") -> "Grid":
        """A grid from a GDAL geotransform; ``ValueError`` for rotated or south-up ones."""
        if gt[2] != 0 or gt[4] != 0:
            raise ValueError(f"rotated geotransform {tuple(gt)} (terms 2 and 4 must be 0)")
        if not (gt[1] > 0 and gt[5] < 0):
            raise ValueError(f"geotransform {tuple(gt)} is not north-up (needs gt[1] > 0 and gt[5] < 0)")
        return cls(gt[0], gt[3], gt[1], -gt[5], int(width), int(height), crs_wkt)

    @property
    def bounds(self) -> Bounds:
        return self.window_bounds(Window(0, 0, self.width, self.height))

    def window_bounds(self, window: Window) -> Bounds:
        """Map bounds of a window of this grid."""
        return (
            self.origin_x + window.col_off * self.spacing_x,
            self.origin_y - window.row_end * self.spacing_y,
            self.origin_x + window.col_end * self.spacing_x,
            self.origin_y - window.row_off * self.spacing_y,
        )

    def pixel(self, x, y):
        """Pixel-edge coordinates ``(col, row)`` of map point(s) ``(x, y)`` (snapped, see :func:`snap`);
        numbers or numpy arrays."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return snap((x - self.origin_x) / self.spacing_x), snap((self.origin_y - y) / self.spacing_y)

    def map_xy(self, col, row):
        """Map coordinates of pixel-edge coordinates ``(col, row)`` (numbers or numpy arrays)."""
        col, row = np.asarray(col, dtype=float), np.asarray(row, dtype=float)
        return self.origin_x + col * self.spacing_x, self.origin_y - row * self.spacing_y

    def window_from_bounds(self, bounds: Bounds) -> Window:
        """The smallest window covering ``bounds`` (rounded outwards to whole pixels)."""
        col0, row1 = self.pixel(bounds[0], bounds[1])
        col1, row0 = self.pixel(bounds[2], bounds[3])
        c0, r0 = math.floor(col0), math.floor(row0)
        return Window(c0, r0, math.ceil(col1) - c0, math.ceil(row1) - r0)

    def subgrid(self, window: Window) -> "Grid":
        """The grid of a window of this one (same spacing and CRS)."""
        xmin, _, _, ymax = self.window_bounds(window)
        return Grid(xmin, ymax, self.spacing_x, self.spacing_y, window.width, window.height, self.crs_wkt)


def intersect_windows(a: Window, b: Window) -> Window | None:
    """The common part of two windows of one raster, ``None`` when it is empty."""
    col, row = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    width, height = min(a.col_end, b.col_end) - col, min(a.row_end, b.row_end) - row
    return Window(col, row, width, height) if width > 0 and height > 0 else None


def intersect_bounds(all_bounds: list[Bounds]) -> Bounds | None:
    """The common part of several bounds, ``None`` when it is empty."""
    xmin = max(b[0] for b in all_bounds)
    ymin = max(b[1] for b in all_bounds)
    xmax = min(b[2] for b in all_bounds)
    ymax = min(b[3] for b in all_bounds)
    if xmin >= xmax or ymin >= ymax:
        return None
    return (xmin, ymin, xmax, ymax)


@dataclass(frozen=True)
class Lattice:
    """The reference pixel corners (one axis) shared by every source's pixel grid:
    ``phase + k * period`` (reference pixel coordinates, whole numbers)."""

    phase: int
    period: int

    @classmethod
    def common(cls, corners) -> "Lattice":
        """From each source's ``(corner, scale)``: one of its pixel corners in reference pixel
        coordinates and its spacing in reference pixels (Fractions). No corners: every reference
        corner. ``ValueError`` when the grids share no corner (sources not aligned)."""
        corners = [(Fraction(c), Fraction(s)) for c, s in corners]
        period = math.lcm(1, *(s.numerator for _, s in corners))
        for phase in range(period):
            if all(((phase - c) / s).denominator == 1 for c, s in corners):
                return cls(phase, period)
        raise ValueError(f"the source grids {corners} share no pixel corner")

    def ceil(self, u) -> int:
        """The first common corner ``>= u``."""
        return self.phase + math.ceil(Fraction(u - self.phase) / self.period) * self.period

    def floor(self, u) -> int:
        """The last common corner ``<= u``."""
        return self.phase + math.floor(Fraction(u - self.phase) / self.period) * self.period

    def nearest(self, u) -> int:
        """The common corner nearest to ``u`` (halves go up)."""
        below = self.floor(u)
        return below if 2 * (Fraction(u) - below) < self.period else below + self.period


def registered_start(start, corner, scale) -> int:
    """The first pixel, in a source's own pixels, of a window that starts at reference pixel
    coordinate ``start``: the one rule by which serving windows and sampled patches of every
    source begin on the same ground corner. ``corner``: the source's pixel 0 corner in reference
    pixel coordinates; ``scale``: its spacing in reference pixels. ``ValueError`` when ``start``
    is not a corner of that source."""
    first = (Fraction(start) - Fraction(corner)) / Fraction(scale)
    if first.denominator != 1:
        raise ValueError(f"reference pixel {start} is not a corner of a grid of {scale} reference px from {corner}")
    return int(first)


def output_grid(reference: Grid, extent: Bounds, sf: Fraction,
                corners: tuple[tuple[Fraction, Fraction, Fraction], ...] = (), before: int = 0) -> Grid:
    """The output grid over ``extent`` (map units of the reference CRS).

    The origin is the first reference pixel corner inside ``extent`` (top-left) that lies
    ``before`` reference pixels past a corner shared by every aligned source, given in ``corners``
    as ``(col, row, scale)``: one of its corners in reference pixel coordinates and its spacing in
    reference pixels. With ``before`` = :attr:`Registration.before`, every block's windows start
    on common corners (``before`` is a multiple of the lattice unless the model cannot have it).
    Spacing is ``sf`` x the reference spacing; the size is ``ceil(extent / output spacing)`` (the
    last row/column may stick out of ``extent``).
    """
    col0, row0 = reference.pixel(extent[0], extent[3])
    col1, row1 = reference.pixel(extent[2], extent[1])
    cols = Lattice.common([(c[0], c[2]) for c in corners])
    rows = Lattice.common([(c[1], c[2]) for c in corners])
    col = cols.ceil(Fraction(col0) - before) + before
    row = rows.ceil(Fraction(row0) - before) + before
    width = math.ceil(snap((col1 - col) / float(sf)))
    height = math.ceil(snap((row1 - row) / float(sf)))
    if width <= 0 or height <= 0:
        raise ValueError(f"extent {extent} holds no output pixel of {float(sf)} reference pixels")
    return Grid(
        reference.origin_x + col * reference.spacing_x,
        reference.origin_y - row * reference.spacing_y,
        reference.spacing_x * float(sf), reference.spacing_y * float(sf),
        width, height, reference.crs_wkt,
    )


def clip_window(grid: Grid, bounds: Bounds, sf: Fraction) -> Window | None:
    """The pixels of output grid ``grid`` that an output restricted to ``bounds`` writes, or ``None``.

    An extent or a mask only selects pixels of the full output grid, so that any clipped run is
    the full run cropped: from the first pixel of ``grid`` starting inside ``bounds`` on a
    reference pixel corner (``sf`` = its spacing in reference pixels), to the last one starting
    inside ``bounds``, within ``grid``.
    """
    col0, row1 = grid.pixel(bounds[0], bounds[1])
    col1, row0 = grid.pixel(bounds[2], bounds[3])
    step = Fraction(sf).denominator  # output pixels from one reference corner to the next
    col, row = max(0, round_up(math.ceil(col0), step)), max(0, round_up(math.ceil(row0), step))
    width, height = min(grid.width, math.ceil(col1)) - col, min(grid.height, math.ceil(row1)) - row
    if width <= 0 or height <= 0:
        return None
    return Window(col, row, width, height)


# -- region propagation and tiling -------------------------------------------------------------


def source_window(geometry: ModelGeometry, i: int, block: Window, offset_i: tuple) -> Window:
    """The source-i window that output block ``block`` needs (region propagation).

    ``block``: output pixels, offsets and sizes multiples of EF. ``offset_i``: the output grid's
    origin in source-i pixel coordinates ``(col, row)`` (numbers or Fractions). Per axis the window
    starts at the registered start ``offset_i + a * r_i - window_before_i`` (the same ground corner
    for every source, :func:`registered_start`) and spans ``N * r_i + window_extent_i`` pixels.
    """
    ratio, scale = geometry.ratio(i), Fraction(geometry.sources[i].scale)
    extent = geometry.window_extent(i)
    before = geometry.registration().before

    def axis(offset, start: int, size: int) -> tuple[int, int]:
        length = size * ratio
        if (start * ratio).denominator != 1 or length.denominator != 1:
            raise ValueError(f"block {block} is not aligned on EF {geometry.ef} for source {i} (r = {ratio})")
        first = registered_start(start * Fraction(geometry.sf) - before, -Fraction(offset) * scale, scale)
        return first, int(length) + extent

    col, width = axis(offset_i[0], block.col_off, block.width)
    row, height = axis(offset_i[1], block.row_off, block.height)
    return Window(col, row, width, height)


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ``>= value``."""
    return -(-value // multiple) * multiple


def tiles(grid_w: int, grid_h: int, tile: int, ef: int, shift: tuple[int, int] = (0, 0)) -> list[Window]:
    """Square output tiles of ``tile`` pixels (raised to a multiple of ``ef``) covering the grid.

    Row-major. ``shift``: the grid's offset ``(col, row)`` in the full output grid (a clipped run):
    tiles sit where the full run's tiles of that size sit (multiples of the tile size, hence of
    ``ef``, of the full grid: same windows, same values), so the first ones may start before
    ``(0, 0)`` and the last ones extend past the grid (those pixels are computed, then dropped at
    write time); every tile has one size.
    """
    size = round_up(max(tile, 1), ef)
    col0, row0 = -(shift[0] % size), -(shift[1] % size)
    return [
        Window(col, row, size, size)
        for row in range(row0, grid_h, size)
        for col in range(col0, grid_w, size)
    ]


def shrink_window(geometry: ModelGeometry, grid_w: int, grid_h: int,
                  offsets: list[tuple[int, int]], sizes: list[tuple[int, int]]) -> Window | None:
    """The output pixels computable without border padding (``shrink`` mode), or ``None``.

    Keeps the EF blocks whose source windows lie inside every source (``sizes``: source
    ``(width, height)`` in its pixels; ``offsets`` as in :func:`source_window`). The result
    starts on a multiple of EF, so tiling it keeps the network's phase.
    """
    ef = geometry.ef
    spans = []
    for axis, grid_size in ((0, grid_w), (1, grid_h)):
        first, last = 0, round_up(grid_size, ef) // ef - 1  # EF block indices
        for i in range(len(geometry.sources)):
            step = geometry.footprint(i)
            length = step + geometry.window_extent(i)  # one block's window
            start = Fraction(offsets[i][axis]) - geometry.window_before(i)  # block k's window: start + k * step
            first = max(first, math.ceil(-start / step))  # window start >= 0
            last = min(last, math.floor((sizes[i][axis] - length - start) / step))
        if last < first:
            return None
        spans.append((first * ef, min((last + 1) * ef, grid_size) - first * ef))
    (col, width), (row, height) = spans
    if width <= 0 or height <= 0:
        return None
    return Window(col, row, width, height)


# -- border padding ----------------------------------------------------------------------------

def border_indices(start: int, size: int, length: int, mode: str):
    """Source indices for pixels ``[start, start + size)`` of an axis of ``length`` pixels.

    Indices outside ``[0, length)`` come from the border mode, defined on the whole image so that
    they never depend on the tiling: ``reflect``, ``symmetric`` and ``edge`` equal
    ``numpy.pad(np.arange(length), (before, after), mode)`` for every pad that fits in one mirror
    (``before, after <= length - 1`` for reflect, ``<= length`` for symmetric; beyond that numpy's
    result depends on both pad widths, so the mirror simply repeats with period ``2 * (length - 1)``
    resp. ``2 * length``). ``constant`` marks outside pixels with ``-1``. Returns an int64 array.
    """
    j = np.arange(start, start + size, dtype=np.int64)
    if mode == "constant":
        return np.where((j >= 0) & (j < length), j, -1)
    if mode == "edge" or (mode == "reflect" and length == 1):
        return np.clip(j, 0, length - 1)
    if mode == "reflect":
        period = 2 * (length - 1)
        j = np.mod(j, period)
        return np.where(j < length, j, period - j)
    if mode == "symmetric":
        period = 2 * length
        j = np.mod(j, period)
        return np.where(j < length, j, period - 1 - j)
    raise ValueError(f"unknown border mode {mode!r}; use one of {', '.join(BORDER_MODES)}")
