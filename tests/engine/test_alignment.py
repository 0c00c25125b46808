"""Registered windows: every source's window (and every patch of a sample) starts on one corner
shared by all source grids; clipped runs keep the full run's tiles. Pure arithmetic, hypothesis."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepfield.engine.geometry import (
    Grid,
    Lattice,
    ModelGeometry,
    SourceGeometry,
    Window,
    clip_window,
    output_grid,
    registered_start,
    source_window,
    tiles,
)

SCALES = [Fraction(1, 2), Fraction(1), Fraction(2), Fraction(3), Fraction(4), Fraction(6)]
SFS = [Fraction(1, 2), Fraction(1), Fraction(2), Fraction(4)]


@st.composite
def geometries(draw):
    """1..3 sources at scales {1/2, 1, 2, 3, 4, 6}, SF {1/2, 1, 2, 4}, odd and even RF/EF, crops."""
    sf = draw(st.sampled_from(SFS))
    scales = [Fraction(1)] + draw(st.lists(st.sampled_from(SCALES), max_size=2))
    unit = 1
    for scale in scales:
        unit = math.lcm(unit, (sf / scale).denominator)
    ef = unit * draw(st.integers(1, 4))
    sources = tuple(SourceGeometry(f"s{i}", 1, int(ef * sf / scale) + draw(st.integers(0, 25)), scale)
                    for i, scale in enumerate(scales))
    return ModelGeometry(sources, ef, sf, crop=ef * draw(st.integers(0, 2)))


def common_corners(scales, low, high):
    """Reference columns in [low, high) that are a corner of every source grid (all grids start at 0)."""
    return [c for c in range(low, high) if all((c / Fraction(s)).denominator == 1 for s in scales)]


@settings(max_examples=300)
@given(geometries())
def test_registration_is_the_smallest_lead_that_puts_windows_on_common_corners(geometry):
    """Written out by brute force: leads 0, 1, 2, ... output px; the first whose context
    ``before(0) + lead * sf`` is a whole number of reference pixels on the common lattice."""
    sf = Fraction(geometry.sf)
    lattice = math.lcm(*(Fraction(s.scale).numerator for s in geometry.sources))
    candidates = [lead for lead in range(lattice * sf.denominator * 2)
                  if (geometry.before(0) + lead * sf).denominator == 1 and (geometry.before(0) + lead * sf) % lattice == 0]
    registration = geometry.registration()
    assert registration.lattice == lattice
    expected = candidates[0] if candidates else 0
    assert registration.lead == expected
    assert registration.before == geometry.before(0) + expected * sf
    assert registration.blocks * geometry.ef >= registration.lead
    assert geometry.kept_crop == geometry.crop + registration.lead


@settings(max_examples=300)
@given(geometries(), st.integers(0, 40), st.integers(0, 40), st.integers(1, 4), st.integers(0, 3))
def test_windows_of_every_source_start_on_one_common_corner(geometry, x0, y0, blocks, shift):
    """Sources all starting at reference pixel 0: the output grid from output_grid, any EF block;
    every source's window starts on the same reference pixel, a corner of every grid, and the
    network's output for it, kept from ``kept_crop``, lands on the block (reference source)."""
    scales = [s.scale for s in geometry.sources]
    reference = Grid(0.0, 0.0, 1.0, 1.0, 1000, 1000)
    extent = (float(x0), -1000.0 + y0, 1000.0, -float(y0))
    grid = output_grid(reference, extent, Fraction(geometry.sf), tuple((0, 0, s) for s in scales),
                       geometry.registration().before)
    origin = (round(grid.origin_x), round(-grid.origin_y))
    assert origin[0] >= x0 and origin[1] >= y0  # first admissible corner inside the extent
    ef, sf = geometry.ef, Fraction(geometry.sf)
    block = Window(shift * ef, 2 * shift * ef, blocks * ef, blocks * ef)
    starts = set()
    for i, scale in enumerate(scales):
        offset = (Fraction(origin[0]) / scale, Fraction(origin[1]) / scale)
        window = source_window(geometry, i, block, offset)
        starts.add((window.col_off * scale, window.row_off * scale))
        assert window.width == blocks * geometry.footprint(i) + geometry.window_extent(i)
    assert len(starts) == 1
    (col, row), = starts
    col, row = int(col), int(row)
    before = geometry.registration().before
    if before % geometry.lattice == 0:
        assert (col, row) in {(c, r) for c in common_corners(scales, col, col + 1)
                              for r in common_corners(scales, row, row + 1)}
    # the reference window holds the native context before the output pixel it yields at crop
    # (patch-centre rule); ``lead`` pixels later, at kept_crop, comes the block's first pixel
    assert col + geometry.before(0) + geometry.registration().lead * sf == origin[0] + block.col_off * sf


@given(st.lists(st.tuples(st.integers(-12, 12), st.sampled_from(SCALES)), min_size=1, max_size=3),
       st.fractions(-50, 50, max_denominator=4))
def test_lattice_corners_by_enumeration(corners, u):
    """Lattice.common, ceil, floor, nearest against the list of integers on every grid."""
    corners = [(Fraction(c) * s, s) for c, s in corners]  # each grid has a corner at c pixels
    lattice = Lattice.common(corners)
    on_all = [k for k in range(-200, 200) if all(((k - c) / s).denominator == 1 for c, s in corners)]
    assert on_all and all((b - a) == lattice.period for a, b in zip(on_all, on_all[1:]))
    assert lattice.ceil(u) == min(k for k in on_all if k >= u)
    assert lattice.floor(u) == max(k for k in on_all if k <= u)
    nearest = lattice.nearest(u)
    assert nearest in on_all and all(abs(nearest - u) <= abs(k - u) for k in on_all)


@given(st.integers(-20, 20), st.sampled_from(SCALES), st.integers(-30, 30))
def test_registered_start_is_the_source_pixel_at_a_ground_corner(corner_px, scale, k):
    corner = corner_px * scale
    start = corner + k * scale
    assert registered_start(start, corner, scale) == k
    if scale.numerator > 1:
        try:
            registered_start(start + 1, corner, scale)
        except ValueError:
            pass
        else:
            raise AssertionError("a start off the source's corners must be refused")


@settings(max_examples=200)
@given(st.sampled_from(SFS), st.integers(1, 6), st.integers(0, 80), st.integers(0, 80), st.integers(1, 60),
       st.integers(1, 60), st.integers(1, 30))
def test_a_clipped_grid_is_a_window_of_the_full_grid_tiled_on_its_phase(sf, ef, c0, r0, w, h, tile):
    """clip_window picks whole pixels of the full grid (origins on reference corners); the tiles
    of the clipped grid sit where the full grid's tiles do and cover the clipped grid once."""
    ef = ef * sf.denominator
    full = Grid(0.0, 0.0, float(sf), float(sf), 200, 200)
    extent = (c0 + 0.3, -(r0 + h + 0.6), c0 + w + 0.1, -(r0 + 0.5))  # map units = reference px
    window = clip_window(full, extent, sf)
    # origin: the first full-grid pixel on a reference corner starting inside the extent
    cols = [j for j in range(0, 200) if c0 + 0.3 <= j * sf < c0 + w + 0.1 and (j * sf).denominator == 1]
    rows = [j for j in range(0, 200) if r0 + 0.5 <= j * sf < r0 + h + 0.6 and (j * sf).denominator == 1]
    if not cols or not rows:
        assert window is None
        return
    assert (window.col_off, window.row_off) == (cols[0], rows[0])
    assert window.col_end == min(200, math.ceil((c0 + w + 0.1) / sf))
    covered = {}
    for block in tiles(window.width, window.height, tile, ef, (window.col_off, window.row_off)):
        size = -(-tile // ef) * ef  # the full run's tiles of this size: same windows
        assert (block.col_off + window.col_off) % size == 0 and (block.row_off + window.row_off) % size == 0
        for r in range(max(block.row_off, 0), min(block.row_end, window.height)):
            for c in range(max(block.col_off, 0), min(block.col_end, window.width)):
                covered[(c, r)] = covered.get((c, r), 0) + 1
    assert len(covered) == window.width * window.height and set(covered.values()) == {1}


def test_describe_shows_each_source_s_lattice_and_registered_context():
    """10 m RF 8 + 20 m RF 4, EF 2: the reference rule puts 3 px (an odd 10 m pixel) before a
    block; both windows start 4 reference px before it, on the 20 m corners."""
    from deepfield.engine.serving import describe_serving

    geometry = ModelGeometry((SourceGeometry("s10", 4, 8), SourceGeometry("s20", 6, 4, Fraction(2))), ef=2,
                             sf=Fraction(1))
    text = "\n".join(describe_serving(geometry, 16))
    # the network emits one more output pixel first (kept from 1), so every window is one EF block
    # longer: 16 + 8 and 8 + 4 pixels
    assert "s10: reads 24 x 24 px (RF 8, 1 px per output px, 4 px of context before, 4 after); windows start " \
           "every 2 of its px (2 reference px)" in text
    assert "s20: reads 12 x 12 px (RF 4, 1/2 px per output px, 2 px of context before, 2 after); windows start " \
           "every 1 of its px (2 reference px)" in text
    assert "4 reference px before the block" in text and "kept from output pixel 1" in text


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(SCALES[1:]), st.integers(-3, 3), st.integers(-3, 3), st.integers(1, 9)),
                max_size=2),
       st.integers(1, 12), st.lists(st.tuples(st.floats(0, 60), st.floats(0, 60)), min_size=1, max_size=5))
def test_every_source_patch_of_a_sample_starts_on_one_common_corner(others, size, points):
    """Extract patches' rule (engine.patches.registered_origins), checked in map units: each
    source's patch origin is the same ground point, a corner of every grid, the common corner
    nearest to where the reference patch centred on the point would start; one source:
    patch_start itself."""
    from deepfield.engine.geometry import patch_start, snap
    from deepfield.engine.patches import registered_origins
    from deepfield.engine.rasters import RasterInfo

    def info(scale, col, row):  # a raster whose pixel 0 corner is at reference pixel (col, row) * scale
        gt = (1000.0 + col * float(scale) * 10, 10.0 * float(scale), 0.0, 5000.0 - row * float(scale) * 10, 0.0,
              -10.0 * float(scale))
        return RasterInfo("mem", 100, 100, 1, "float32", gt, "", (None,))

    rasters = [info(Fraction(1), 0, 0)] + [info(scale, col, row) for scale, col, row, _ in others]
    sizes = [size] + [n for *_, n in others]
    x = np.array([1000.0 + 10 * u for u, _ in points])
    y = np.array([5000.0 - 10 * v for _, v in points])
    origins, centre_x, centre_y = registered_origins(rasters, sizes, x, y)
    scales = [Fraction(1)] + [scale for scale, *_ in others]
    corners = [(Fraction(col) * scale, Fraction(row) * scale) for scale, col, row in
               [(Fraction(1), 0, 0)] + [(s, c, r) for s, c, r, _ in others]]
    for k, (u, v) in enumerate(points):
        ground = {(corner[0] + int(o[k][0]) * scale, corner[1] + int(o[k][1]) * scale)
                  for o, scale, corner in zip(origins, scales, corners)}
        assert len(ground) == 1  # one ground corner, in reference pixels
        (col, row), = ground
        assert all(((col - cc) / s).denominator == 1 and ((row - cr) / s).denominator == 1
                   for (cc, cr), s in zip(corners, scales))  # a corner of every grid
        # the nearest such corner to the centred reference start (pixel coordinates snapped as the engine does)
        ideal = (Fraction(snap(u)) - Fraction(size, 2), Fraction(snap(v)) - Fraction(size, 2))
        for axis, start in ((0, col), (1, row)):  # corners of every grid on this axis, nearest to the ideal
            common = [c for c in range(-40, 120) if all(((c - corner[axis]) / s).denominator == 1
                                                        for corner, s in zip(corners, scales))]
            assert abs(start - ideal[axis]) == min(abs(c - ideal[axis]) for c in common)
        if not others:
            assert (col, row) == (patch_start(snap(u), size), patch_start(snap(v), size))
        assert (centre_x[k], centre_y[k]) == pytest.approx((1000.0 + 10 * (col + size / 2),
                                                            5000.0 - 10 * (row + size / 2)))
