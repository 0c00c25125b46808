"""Geometry arithmetic: grids, region propagation, tiling, shrink windows, border indices."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from deepfield.engine.geometry import (
    Grid,
    ModelGeometry,
    SourceGeometry,
    Window,
    border_indices,
    intersect_bounds,
    output_grid,
    round_up,
    shrink_window,
    source_window,
    tiles,
)

SCALES = [Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(3), Fraction(4)]
SFS = [Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(3), Fraction(4)]


@st.composite
def geometries(draw, max_sources=3):
    """Random model geometries: 1..3 sources at several scales, SF < 1, = 1, > 1, odd/even RF/EF."""
    sf = draw(st.sampled_from(SFS))
    n = draw(st.integers(1, max_sources))
    scales = [Fraction(1)] + [draw(st.sampled_from(SCALES)) for _ in range(n - 1)]
    # EF must make EF * r_i whole for every source: a multiple of the denominators' lcm.
    unit = 1
    for scale in scales:
        unit = math.lcm(unit, (sf / scale).denominator)
    ef = unit * draw(st.integers(1, 4))
    sources = []
    for i, scale in enumerate(scales):
        footprint = int(ef * sf / scale)
        rf = footprint + draw(st.integers(0, 20))
        sources.append(SourceGeometry(f"s{i}", 1, rf, scale))
    return ModelGeometry(tuple(sources), ef, sf, crop=0)


@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 80), st.integers(1, 12))
def test_tiles_cover_the_grid_once(width, height, tile, ef):
    blocks = tiles(width, height, tile, ef)
    size = round_up(tile, ef)
    count = np.zeros((height, width), dtype=int)
    for block in blocks:
        assert block.width == block.height == size
        assert block.col_off % ef == 0 and block.row_off % ef == 0
        count[block.row_off:block.row_end, block.col_off:block.col_end] += 1
    assert (count == 1).all()
    assert len(blocks) == math.ceil(width / size) * math.ceil(height / size)


@settings(max_examples=200)
@given(geometries(), st.integers(1, 8), st.integers(1, 6), st.integers(-5, 5), st.integers(-5, 5))
def test_blocks_read_the_same_pixels_as_the_whole_image(geometry, blocks_per_tile, n_tiles, off_x, off_y):
    """Each EF block of a tile sees exactly the window it sees in one whole-image tile: the tile's
    window is the union of its blocks' windows, at the same phase (the exactness condition)."""
    ef = geometry.ef
    whole = Window(0, 0, ef * blocks_per_tile * n_tiles, ef * blocks_per_tile * n_tiles)
    origin = [geometry.registration().before + geometry.lattice * k for k in (off_x, off_y)]  # reference px
    for i in range(len(geometry.sources)):
        offset = tuple(Fraction(o) / geometry.sources[i].scale for o in origin)
        r = geometry.ratio(i)
        whole_window = source_window(geometry, i, whole, offset)
        for block in tiles(whole.width, whole.height, ef * blocks_per_tile, ef):
            window = source_window(geometry, i, block, offset)
            # inside the whole-image (padded) window
            assert whole_window.col_off <= window.col_off and window.col_end <= whole_window.col_end
            assert whole_window.row_off <= window.row_off and window.row_end <= whole_window.row_end
            # every EF block inside sits at offset k * EF * r_i of the tile window
            for k in range(blocks_per_tile):
                sub = Window(block.col_off + k * ef, block.row_off + k * ef, ef, ef)
                sub_window = source_window(geometry, i, sub, offset)
                assert sub_window.width == geometry.footprint(i) + geometry.window_extent(i)
                assert sub_window.col_off - window.col_off == k * ef * r
                assert sub_window.row_off - window.row_off == k * ef * r
            assert window.width == block.width * r + geometry.window_extent(i)


@given(geometries())
def test_window_holds_the_registered_context_around_the_block_footprint(geometry):
    """before/after split the network's context around the footprint (patch-centre rule); the
    window reads the registered context (the reference's own one for a single source)."""
    for i, source in enumerate(geometry.sources):
        footprint = geometry.footprint(i)
        assert geometry.before(i) == source.rf // 2 - footprint // 2
        assert geometry.before(i) + footprint + geometry.after(i) == source.rf
        if geometry.registration().before % geometry.lattice == 0:
            window = source_window(geometry, i, Window(0, 0, geometry.ef, geometry.ef), (0, 0))
            assert window.col_off == -geometry.window_before(i)
            assert window.col_end == footprint + geometry.window_after(i)
    if len(geometry.sources) == 1:
        assert geometry.window_before(0) == geometry.before(0)
        assert geometry.window_extent(0) == geometry.sources[0].rf - geometry.footprint(0)


def test_talk_vector():
    """conv 5x5/2 -> conv 3x3/2 -> conv 2x2 valid: RF 16, EF 1, SF 4; N output px read 4N + 12."""
    geometry = ModelGeometry((SourceGeometry("x", 4, 16),), ef=1, sf=Fraction(4))
    assert (geometry.before(0), geometry.after(0)) == (6, 6)
    for n in (1, 7, 16, 64):
        window = source_window(geometry, 0, Window(n, 2 * n, n, n), (10, 20))
        assert window == Window(10 + 4 * n - 6, 20 + 8 * n - 6, 4 * n + 12, 4 * n + 12)


def test_misaligned_block_is_refused():
    geometry = ModelGeometry((SourceGeometry("x", 1, 4, Fraction(1)),), ef=2, sf=Fraction(1, 2))
    with pytest.raises(ValueError, match="not aligned"):
        source_window(geometry, 0, Window(1, 0, 2, 2), (0, 0))


@settings(max_examples=200)
@given(geometries(), st.lists(st.tuples(st.integers(-30, 30), st.integers(-30, 30), st.integers(1, 120),
                                        st.integers(1, 120)), min_size=3, max_size=3),
       st.integers(1, 80), st.integers(1, 80))
def test_shrink_window_keeps_exactly_the_blocks_inside_every_source(geometry, placements, grid_w, grid_h):
    assume(geometry.registration().before % geometry.lattice == 0)  # whole offsets: the grid on common corners
    n = len(geometry.sources)
    offsets = [(p[0], p[1]) for p in placements[:n]]
    sizes = [(p[2], p[3]) for p in placements[:n]]
    ef = geometry.ef

    def inside(col, row):
        block = Window(col, row, ef, ef)
        for i in range(n):
            w = source_window(geometry, i, block, offsets[i])
            if w.col_off < 0 or w.row_off < 0 or w.col_end > sizes[i][0] or w.row_end > sizes[i][1]:
                return False
        return True

    window = shrink_window(geometry, grid_w, grid_h, offsets, sizes)
    expected = {(c, r) for c in range(0, grid_w, ef) for r in range(0, grid_h, ef) if inside(c, r)}
    if window is None:
        assert not expected
        return
    assert window.col_off % ef == 0 and window.row_off % ef == 0
    assert window.col_end <= grid_w and window.row_end <= grid_h
    got = {(c, r) for c in range(window.col_off, window.col_end, ef) for r in range(window.row_off, window.row_end, ef)}
    assert got == expected


MODES = ["reflect", "symmetric", "edge", "constant"]


@settings(max_examples=300)
@given(st.integers(1, 30), st.sampled_from(MODES), st.data())
def test_border_indices_equal_numpy_pad(length, mode, data):
    """Every window of the padded axis equals the same slice of numpy.pad of the whole axis."""
    limit = {"reflect": length - 1, "symmetric": length}.get(mode, 3 * length + 5)
    before = data.draw(st.integers(0, max(limit, 0)))
    after = data.draw(st.integers(0, max(limit, 0)))
    values = np.arange(length) * 10 + 3
    padded = np.pad(values, (before, after), mode=mode, **({"constant_values": -7} if mode == "constant" else {}))
    start = data.draw(st.integers(-before, length + after - 1))
    size = data.draw(st.integers(1, length + after - start))
    index = border_indices(start, size, length, mode)
    got = np.where(index >= 0, values[np.clip(index, 0, None)], -7)
    np.testing.assert_array_equal(got, padded[start + before:start + before + size])


@given(st.integers(2, 12), st.integers(2, 12), st.sampled_from(MODES), st.integers(0, 2**31 - 1))
def test_border_indices_pad_2d_arrays(height, width, mode, seed):
    """The separable 2D read equals numpy.pad of the whole random image, in every window."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(height, width))
    pad = (min(height, width) - 1) if mode in ("reflect", "symmetric") else 9
    padded = np.pad(image, pad, mode=mode)
    r0, c0 = rng.integers(-pad, height), rng.integers(-pad, width)
    h, w = rng.integers(1, height + pad - r0 + 1), rng.integers(1, width + pad - c0 + 1)
    rows, cols = border_indices(r0, h, height, mode), border_indices(c0, w, width, mode)
    got = image[np.clip(rows, 0, None)[:, None], np.clip(cols, 0, None)[None, :]]
    got[rows < 0, :] = 0
    got[:, cols < 0] = 0
    np.testing.assert_array_equal(got, padded[r0 + pad:r0 + pad + h, c0 + pad:c0 + pad + w])


def test_border_indices_mirror_repeats_beyond_the_image():
    np.testing.assert_array_equal(border_indices(-6, 14, 3, "reflect"), [2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1])
    np.testing.assert_array_equal(border_indices(-4, 9, 2, "symmetric"), [0, 1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(border_indices(-2, 5, 1, "reflect"), [0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="border mode"):
        border_indices(0, 3, 3, "wrap")


# -- grids ---------------------------------------------------------------------------------------


def test_grid_geotransform_round_trip_and_refusals():
    grid = Grid(630534.0, 228114.0, 28.5, 28.5, 489, 443, "")
    assert grid.geotransform() == (630534.0, 28.5, 0.0, 228114.0, 0.0, -28.5)
    assert Grid.from_geotransform(grid.geotransform(), 489, 443) == grid
    assert grid.bounds == (630534.0, 228114.0 - 443 * 28.5, 630534.0 + 489 * 28.5, 228114.0)
    with pytest.raises(ValueError, match="rotated"):
        Grid.from_geotransform((0, 1, 0.1, 0, 0, -1), 2, 2)
    with pytest.raises(ValueError, match="north-up"):
        Grid.from_geotransform((0, 1, 0, 0, 0, 1), 2, 2)
    with pytest.raises(ValueError, match="positive"):
        Grid(0, 0, 0, 1, 1, 1)


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(1, 60), st.integers(1, 60))
def test_window_bounds_round_trip(col, row, width, height):
    grid = Grid(435720.0, 4179460.0, 20.0, 20.0, 967, 973)
    window = Window(col, row, width, height)
    assert grid.window_from_bounds(grid.window_bounds(window)) == window


def test_output_grid_on_reference_corners():
    reference = Grid(100.0, 1000.0, 10.0, 10.0, 50, 40)
    # extent starts mid-pixel: origin moves to the next reference corner
    grid = output_grid(reference, (113.0, 700.0, 400.0, 985.0), Fraction(4))
    assert (grid.origin_x, grid.origin_y) == (120.0, 980.0)
    assert (grid.spacing_x, grid.width, grid.height) == (40.0, math.ceil(28 / 4), math.ceil(28 / 4))
    # a 2x coarser source with a corner at reference column 1: origin on a common corner
    grid = output_grid(reference, (100.0, 600.0, 600.0, 1000.0), Fraction(1), ((Fraction(1), Fraction(0), Fraction(2)),))
    assert (grid.origin_x, grid.origin_y, grid.width, grid.height) == (110.0, 1000.0, 49, 40)
    # super-resolution: half the spacing, twice the pixels
    grid = output_grid(reference, reference.bounds, Fraction(1, 2))
    assert (grid.spacing_x, grid.width, grid.height) == (5.0, 100, 80)
    assert intersect_bounds([(0, 0, 1, 1), (2, 2, 3, 3)]) is None


# -- Window conversions (references: explicit sets of pixel coordinates) ------------------------

windows = st.builds(Window, st.integers(-20, 20), st.integers(-20, 20), st.integers(0, 15), st.integers(0, 15))
inside_windows = st.builds(Window, st.integers(0, 20), st.integers(0, 20), st.integers(0, 15), st.integers(0, 15))


def pixels(window: Window) -> set[tuple[int, int]]:
    """The ``(row, col)`` pixels of a window, one by one."""
    return {(window.row_off + r, window.col_off + c) for r in range(window.height) for c in range(window.width)}


@given(inside_windows)
def test_window_slices_select_its_pixels(window):
    image = np.arange(40 * 40).reshape(40, 40)
    rows, cols = window.to_slices()
    expected = [[image[window.row_off + r][window.col_off + c] for c in range(window.width)]
                for r in range(window.height)]
    np.testing.assert_array_equal(image[rows, cols], np.array(expected, dtype=image.dtype).reshape(window.height,
                                                                                                    window.width))
    assert Window.from_slices(rows, cols) == window


def test_window_slices_refuse_what_numpy_would_misread():
    with pytest.raises(ValueError, match="starts before pixel"):
        Window(-1, 0, 3, 3).to_slices()
    with pytest.raises(ValueError, match="cols slice"):
        Window.from_slices(slice(0, 2), slice(None, 2))
    with pytest.raises(ValueError, match="rows slice"):
        Window.from_slices(slice(0, 4, 2), slice(0, 2))


@given(windows, windows)
def test_window_intersection_is_the_common_pixels(a, b):
    common = pixels(a) & pixels(b)
    both = a.intersection(b)
    assert both == b.intersection(a)
    if not common:
        assert both is None
    else:
        assert pixels(both) == common and both.width > 0 and both.height > 0


@given(windows, st.integers(-10, 10), st.integers(-10, 10))
def test_window_translate_moves_every_pixel(window, col, row):
    assert pixels(window.translate(col, row)) == {(r + row, c + col) for r, c in pixels(window)}
    assert (window.translate(col, row).width, window.translate(col, row).height) == (window.width, window.height)


@given(windows, st.integers(1, 25), st.integers(1, 25))
def test_window_crop_keeps_the_pixels_inside_the_raster(window, width, height):
    inside = {(r, c) for r, c in pixels(window) if 0 <= r < height and 0 <= c < width}
    cropped = window.crop(width, height)
    assert (cropped is None) == (not inside)
    if cropped is not None:
        assert pixels(cropped) == inside
