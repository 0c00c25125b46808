"""Exact streamed serving: a loaded model over sources, tile by tile (:func:`serve_model`).

The output raster is cut into square, EF-aligned tiles of one size (:func:`.geometry.tiles`);
each tile reads, per source, the window that region propagation gives (border-padded on the
whole image, :func:`.rasters.read_window`), runs the network once, keeps ``[crop, crop + N)``
and writes it. Reading runs ahead in threads (:class:`.executors.ThreadExecutor`) while
TensorFlow computes, and a background thread writes: at most a few tiles live in memory.
Tiled output equals the network run once on the whole border-padded image (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable

import numpy as np

from .classes import ClassStyle, class_color
from .autotile import LARGEST_TILE, choose_tile, memory_budget_bytes
from .contract import CLASSIFIER_PRODUCTS, NODATA_MODES, SERVING_BORDERS, sibling_output
from .crs import bounds_in
from .device import compute_device, tensorflow
from .dihedral import dihedral_mean
from .executors import Executor, ThreadExecutor
from .fields import pack_inputs
from .errors import EngineError, InvalidSpec, NoOverlap
from .geometry import (
    Grid,
    ModelGeometry,
    Window,
    clip_window,
    intersect_bounds,
    intersect_windows,
    output_grid,
    shrink_window,
    source_window,
    tiles,
)
from .precision import in_precision
from .protocol import Reporter
from .rasters import (
    AlignedSource,
    GeoTiffWriter,
    align_source,
    invalid_pixels,
    raster_info,
    rasterize,
    read_window,
)
from .vectors import layer_crs_wkt, open_layer

#: Activation bytes per reference-input pixel and channel of the widest layer: float32 x a few
#: live tensors (input, output, a skip connection, TensorFlow's scratch).
BYTES_PER_CHANNEL = 4 * 4


# -- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileTask:
    """One unit of work: an output block (pixels of the written grid, EF-aligned, may stick out of
    the grid) and the window each source needs. Small and picklable: no model, no arrays."""

    index: int
    block: Window
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class MaskSpec:
    """A polygon layer: output pixels outside its polygons become nodata."""

    path: str
    layer: str | None = None


@dataclass
class ServingPlan:
    """Everything a run needs except the model: the written grid, the aligned sources, the tasks."""

    geometry: ModelGeometry
    sources: tuple[AlignedSource, ...]
    grid: Grid
    tile: int
    border: str
    tasks: list[TileTask]
    mask: MaskSpec | None = None

    @property
    def read_mode(self) -> str:
        """Border mode for reads: in ``shrink`` mode only the dropped overhang of the last tiles
        is padded, so any mode does."""
        return "reflect" if self.border == "shrink" else self.border

    @property
    def warped_sources(self) -> list[str]:
        return [source.name for source in self.sources if source.warped]


def plan_serving(geometry: ModelGeometry, source_paths: list[str], *, tile: int | None = None,
                 memory_mb: float | None = None, bytes_per_reference_pixel: float = 64 * BYTES_PER_CHANNEL,
                 border: str = "reflect", extent: tuple[float, float, float, float] | None = None,
                 mask: MaskSpec | None = None, resampling: str = "bilinear",
                 nodata: list[tuple | None] | None = None,
                 log: Callable[[str], None] | None = None) -> ServingPlan:
    """Check the sources against the model, align them, build the output grid and the tile tasks.

    ``tile``: output pixels per tile side (raised to a multiple of EF); ``None`` picks the
    cheapest that fits ``memory_mb`` (MB; ``None``: half the memory available now) for this grid
    (:func:`.autotile.choose_tile`). ``extent``: ``(xmin, ymin, xmax, ymax)`` in the reference CRS.
    ``nodata``: per source, per band nodata values used where the raster declares none.
    """
    if border not in SERVING_BORDERS:
        raise InvalidSpec(f"unknown border mode {border!r}; use one of {', '.join(SERVING_BORDERS)}")
    aligned, reference = _align_sources(geometry, source_paths, resampling, nodata, log)
    corners = tuple((s.corner[0], s.corner[1], Fraction(g.scale)) for s, g in zip(aligned, geometry.sources))
    try:  # the full run's grid: an extent or a mask only selects its pixels (tiles keep its phase)
        full = output_grid(reference, _common_extent(aligned, None, None, reference.crs_wkt),
                           Fraction(geometry.sf), corners, geometry.registration().before)
    except ValueError as error:
        raise NoOverlap(f"no output pixel fits the common extent of the sources: {error}") from None
    window = Window(0, 0, full.width, full.height)
    if extent or mask is not None:
        window = clip_window(full, _common_extent(aligned, extent, mask, reference.crs_wkt), Fraction(geometry.sf))
        if window is None:
            raise NoOverlap("no output pixel fits the common extent of the sources, extent and mask")
    offsets = [_origin_in(source, reference, full, g.scale) for source, g in zip(aligned, geometry.sources)]
    if border == "shrink":
        inside = shrink_window(geometry, full.width, full.height, offsets, [(s.width, s.height) for s in aligned])
        window = inside and intersect_windows(window, inside)
        if window is None:
            needs = ", ".join(f"input {g.name!r} ({s.name}) {g.rf} x {g.rf} px"
                              for s, g in zip(aligned, geometry.sources))
            raise EngineError(f"border mode 'shrink': the image{' (within the extent)' if extent else ''} is smaller "
                              f"than the model's receptive field (needs at least {needs}); use border mode 'reflect' "
                              "to pad it")
    grid = full.subgrid(window)
    if tile is None or tile <= 0:
        tile = choose_tile(geometry, grid.width, grid.height, memory_budget_bytes(memory_mb),
                           bytes_per_reference_pixel)
    tile = min(tile, max(grid.width, grid.height))  # one tile is enough for a small image
    blocks = tiles(grid.width, grid.height, tile, geometry.ef, (window.col_off, window.row_off))
    tasks = []
    for k, block in enumerate(blocks):
        on_full = Window(block.col_off + window.col_off, block.row_off + window.row_off, block.width, block.height)
        tasks.append(TileTask(k, block, tuple(source_window(geometry, i, on_full, offsets[i])
                                              for i in range(len(aligned)))))
    return ServingPlan(geometry, aligned, grid, blocks[0].width, border, tasks, mask)


def _origin_in(source: AlignedSource, reference: Grid, grid: Grid, scale) -> tuple[Fraction, Fraction]:
    """``grid``'s origin in ``source``'s pixel coordinates (Fractions: a whole number unless the
    origin is off the source's corners, see :class:`.geometry.Registration`)."""
    col, row = reference.pixel(grid.origin_x, grid.origin_y)
    return ((Fraction(round(col)) - source.corner[0]) / Fraction(scale),
            (Fraction(round(row)) - source.corner[1]) / Fraction(scale))


def _align_sources(geometry: ModelGeometry, source_paths: list[str], resampling: str,
                   nodata: list[tuple | None] | None, log) -> tuple[tuple[AlignedSource, ...], Grid]:
    """Check the sources against the model's inputs and put them on the reference lattice."""
    if len(source_paths) != len(geometry.sources):
        names = ", ".join(s.name for s in geometry.sources)
        raise EngineError(f"the model takes {len(geometry.sources)} source(s) ({names}), "
                          f"got {len(source_paths)} raster(s)")
    infos = [raster_info(path) for path in source_paths]
    for info, source in zip(infos, geometry.sources):
        if info.bands != source.bands:
            raise EngineError(f"model input {source.name!r} takes {source.bands} band(s), but {info.path} has "
                              f"{info.bands}; pass the sources in the model's input order")
    reference = infos[0].grid
    aligned = []
    for k, (info, source) in enumerate(zip(infos, geometry.sources)):
        declared = nodata[k] if nodata else None
        if declared:  # declared nodata (model metadata) for bands whose raster declares none; a warp honours it
            info = replace(info, nodata=tuple(own if own is not None else value
                                              for own, value in zip(info.nodata, declared)))
        aligned.append(align_source(info, reference, source.scale, resampling, log))
    return tuple(aligned), reference


def _common_extent(aligned, extent, mask: MaskSpec | None, crs_wkt: str):
    """Intersection of the sources, the extent and the mask's bounds (reference CRS)."""
    areas = [(source.name, source.bounds) for source in aligned]
    if extent:
        areas.append(("extent", tuple(extent)))
    if mask is not None:
        areas.append(("mask", _mask_bounds(mask, crs_wkt)))
    common = intersect_bounds([bounds for _, bounds in areas])
    if common is None:
        listed = "; ".join(f"{name}: ({', '.join(f'{v:.2f}' for v in bounds)})" for name, bounds in areas)
        raise NoOverlap(f"the sources{', extent' if extent else ''}{' and mask' if mask else ''} do not overlap "
                          f"(bounds in the reference CRS: {listed})")
    return common


def _mask_bounds(mask: MaskSpec, crs_wkt: str) -> tuple[float, float, float, float]:
    """Bounds of the mask polygons in the reference CRS."""
    dataset, layer = open_layer(mask.path, mask.layer, "mask")
    xmin, xmax, ymin, ymax = layer.GetExtent()
    bounds = bounds_in((xmin, ymin, xmax, ymax), layer_crs_wkt(layer), crs_wkt)
    if bounds is None:
        raise EngineError(f"the mask {mask.path} cannot be transformed into the reference CRS")
    return bounds


def describe_serving(geometry: ModelGeometry, tile: int) -> list[str]:
    """Text lines: the lattice every source's window starts on, and what a tile of ``tile``
    output pixels reads from each source."""
    block = tiles(tile, tile, tile, geometry.ef)[0]
    registration = geometry.registration()
    lines = [f"Tile of {block.width} x {block.width} output pixels (EF {geometry.ef}, SF {geometry.sf}, "
             f"crop {geometry.crop}, kept from output pixel {geometry.kept_crop}):"]
    for i, source in enumerate(geometry.sources):
        window = source_window(geometry, i, block, (0, 0))
        scale = Fraction(source.scale)
        lattice = registration.lattice / scale
        lines.append(
            f"  {source.name}: reads {window.width} x {window.height} px (RF {source.rf}, "
            f"{geometry.ratio(i)} px per output px, {geometry.window_before(i)} px of context before, "
            f"{geometry.window_after(i)} after); windows start every {lattice} of its px "
            f"({registration.lattice} reference px)"
        )
    lines.append(f"  every source's window starts on the same corner, {registration.before} reference px before "
                 f"the block, on the corners all source grids share (every {registration.lattice} reference px)")
    halo = 1 - (block.width * geometry.ratio(0)) ** 2 / Fraction(source_window(geometry, 0, block, (0, 0)).width) ** 2
    lines.append(f"  {float(halo):.0%} of the reference pixels read are context shared with neighbouring tiles")
    return lines


# -- products: what is written from the network's outputs ----------------------------------------


@dataclass
class Product:
    """One output raster: ``make(outputs)`` turns the network's cropped outputs (list of
    ``(rows, cols, channels)`` float arrays) into its ``(rows, cols, bands)`` array."""

    path: str
    bands: int
    dtype: str
    nodata: float
    make: Callable[[list[np.ndarray]], np.ndarray]
    descriptions: tuple[str, ...] = ()
    classes: tuple[ClassStyle, ...] = ()
    kind: str = "raw"


FLOAT_NODATA = -9999.0


def classifier_products(output: str, index: int, classes: tuple[ClassStyle, ...],
                        kinds: list[str]) -> list[Product]:
    """Products of a probabilities output (tensor ``index``): the first kind goes to ``output``,
    the others next to it as ``<stem>_<kind>.tif``."""
    unknown = [kind for kind in kinds if kind not in CLASSIFIER_PRODUCTS]
    if unknown or not kinds:
        raise EngineError(f"unknown outputs {unknown or kinds}; a classifier writes any of {', '.join(CLASSIFIER_PRODUCTS)}")
    values = np.array([c.value for c in classes])
    names = tuple(c.name for c in classes)
    products = []
    for k, kind in enumerate(kinds):
        path = output if k == 0 else sibling_output(output, kind)
        if kind == "class_map":
            dtype = "uint8" if values.max() < 255 else "uint16"
            nodata = 0 if 0 not in values else int(values.max()) + 1
            products.append(Product(path, 1, dtype, nodata, lambda outs, i=index: values[np.argmax(outs[i], -1)][..., None],
                                    ("class",), classes, kind))
        elif kind == "confidence":
            products.append(Product(path, 1, "float32", FLOAT_NODATA,
                                    lambda outs, i=index: np.max(outs[i], -1, keepdims=True), ("confidence",), (), kind))
        else:
            products.append(Product(path, len(classes), "float32", FLOAT_NODATA, lambda outs, i=index: outs[i],
                                    tuple(f"p({name})" for name in names), (), kind))
    return products


def raw_products(output: str, channels: list[int], names: list[str], stack: bool = True) -> list[Product]:
    """Float32 products of the network's outputs: stacked as bands of one raster, or one each."""
    if stack:
        return [Product(output, sum(channels), "float32", FLOAT_NODATA,
                        lambda outs: np.concatenate(outs, -1) if len(outs) > 1 else outs[0],
                        tuple(f"{n}[{c}]" if ch > 1 else n for n, ch in zip(names, channels) for c in range(ch)))]
    return [Product(output if k == 0 else sibling_output(output, name), ch, "float32", FLOAT_NODATA,
                    lambda outs, i=k: outs[i], tuple(f"{name}[{c}]" for c in range(ch)), (), name)
            for k, (name, ch) in enumerate(zip(names, channels))]


# -- run ----------------------------------------------------------------------------------------


@dataclass
class _Tile:
    """A read tile: model inputs, or ``fill`` ("background": every source pixel is nodata;
    "nodata": masked out entirely) when the network need not run; ``invalid`` output pixels
    (rows, cols) become nodata. See :func:`fill_value`."""

    task: TileTask
    inputs: list[np.ndarray]
    fill: str | None
    invalid: np.ndarray | None = None
    empty: np.ndarray | None = None
    partial: bool = False  # some source pixel is nodata: the network's outputs may not be finite


@dataclass
class RunStats:
    """Counts and timings of a run (seconds: wall clock; compute: inside TensorFlow)."""

    tiles: int = 0
    skipped: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0


#: Traced networks kept (the latest ones: each keeps its model alive).
TRACED_KEPT = 4


def make_infer(model, tile_shapes: list[tuple[int, ...]] | None = None, *, precision: str = "float32",
               jit_compile: bool = False):
    """A traced ``model(inputs, training=False)`` returning a list of float32 numpy arrays.

    With ``tile_shapes`` (per source ``(rows, cols, bands)``) the input signature is fixed, so
    TensorFlow traces once for all tiles. ``precision`` and ``jit_compile`` (XLA): see
    :mod:`.precision`. The same model, shapes and options get the same function again (the
    latest :data:`TRACED_KEPT`): a job serving several scenes, or serving again, traces and warms
    the network once per tile shape (the trace, TensorFlow's graph optimisation and oneDNN's
    kernels cost 1-2 CPU s on the first call of the zoo U-Net at 2048 px tiles). A bfloat16
    function computes with the weights the model had when it was first made."""
    return _trace(model, tuple(map(tuple, tile_shapes)) if tile_shapes else None, precision, jit_compile)


@functools.lru_cache(maxsize=TRACED_KEPT)
def _trace(model, tile_shapes, precision: str, jit_compile: bool):
    tf = tensorflow()
    signature = None
    if tile_shapes:
        signature = [tf.TensorSpec((1,) + tuple(shape), tf.float32) for shape in tile_shapes]
    network = in_precision(model, precision)

    def call(*inputs):
        outputs = network(pack_inputs(network, inputs), training=False)
        return [tf.cast(out, tf.float32) for out in _as_list(outputs)]

    traced = tf.function(call, input_signature=signature, reduce_retracing=True, jit_compile=jit_compile)
    device = compute_device()

    def infer(arrays: list[np.ndarray]) -> list[np.ndarray]:
        with tf.device(device):
            return [out.numpy() for out in traced(*[a[None] for a in arrays])]

    return infer


def check_tta(geometry: ModelGeometry) -> None:
    """Test-time augmentation is exact (tiles stitch like one pass) when a flipped or rotated
    tile window looks like a tile window: as much context after each EF block as before it."""
    lopsided = [s.name for i, s in enumerate(geometry.sources) if geometry.before(i) != geometry.after(i)]
    if lopsided:
        raise EngineError(f"test-time augmentation needs a model with as much context on each side of a block; "
                          f"input(s) {', '.join(lopsided)} have not (RF - EF odd): serve without it")


def run_plan(model, plan: ServingPlan, products: list[Product], *, reporter: Reporter | None = None,
             executor: Executor | None = None, nodata_mode: str = "skip", background: float | None = None,
             tta: bool = False, precision: str = "float32", jit_compile: bool = False) -> RunStats:
    """Serve ``model`` over ``plan``: read ahead, compute, write in the background.

    Tiles that are nodata in every source are not computed: they are written as each product's
    nodata; raw (regression/image) products take ``background`` instead when it is given.
    ``tta``: average the network over the 8 flips/rotations of each tile (:mod:`.dihedral`)."""
    if nodata_mode not in NODATA_MODES:
        raise EngineError(f"unknown nodata mode {nodata_mode!r}; use one of {', '.join(NODATA_MODES)}")
    reporter = reporter or Reporter(stream=io.StringIO())
    geometry = plan.geometry
    shapes = [(w.height, w.width, s.bands) for w, s in zip(plan.tasks[0].windows, plan.sources)]
    infer = make_infer(model, shapes, precision=precision, jit_compile=jit_compile)
    if tta:
        check_tta(geometry)
        infer = dihedral_mean(infer)
    reader = TileReader(plan, nodata_mode)
    stats = RunStats()
    started = time.perf_counter()
    own_executor = executor is None
    executor = executor or ThreadExecutor(workers=1, lookahead=2)
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(GeoTiffWriter(p.path, plan.grid, p.bands, p.dtype, p.nodata, p.descriptions,
                                                     p.classes)) for p in products]
        writer = stack.enter_context(_BackgroundWriter(writers, products, background))
        if own_executor:
            stack.callback(executor.close)
        n = len(plan.tasks)
        for tile in executor.map(reader, plan.tasks):
            reporter.check_cancelled()
            if tile.fill:
                stats.skipped += 1
                writer.put(tile, None)
            else:
                t0 = time.perf_counter()
                kept = compute_tile(infer, geometry, tile)
                stats.compute_seconds += time.perf_counter() - t0
                writer.put(tile, kept)
            stats.tiles += 1
            reporter.progress(100.0 * stats.tiles / n)
        if stats.skipped == stats.tiles:  # inside the writers' scope: nothing is left behind
            raise EngineError("every tile is nodata in every source: nothing to serve "
                              "(check the sources' nodata values and the extent)")
    stats.seconds = time.perf_counter() - started
    return stats


def compute_tile(infer, geometry: ModelGeometry, tile: _Tile) -> list[np.ndarray]:
    """Run the network on a read tile (not a ``fill`` one): its kept outputs, ``(size, size, channels)``."""
    size = tile.task.block.width
    return [_keep(out[0], geometry.kept_crop, size, k) for k, out in enumerate(infer(tile.inputs))]


def _keep(output: np.ndarray, crop: int, size: int, index: int) -> np.ndarray:
    """``output[crop:crop+size, crop:crop+size]``; an :class:`EngineError` if the network's output
    is too small (its geometry does not match the model)."""
    if output.shape[0] < crop + size or output.shape[1] < crop + size:
        raise EngineError(f"model output {index} is {output.shape[0]} x {output.shape[1]} px for a tile of {size} px "
                          f"with crop {crop}: the model geometry (RF/EF/SF/crop) does not match the network")
    return output[Window(crop, crop, size, size).to_slices()]


class TileReader:
    """Reads a task's source windows (thread-safe: GDAL handles are per thread); detects tiles that
    are nodata everywhere and, in ``mask`` mode, output pixels whose receptive field touches nodata."""

    def __init__(self, plan: ServingPlan, nodata_mode: str):
        self.plan = plan
        self.nodata_mode = nodata_mode

    def __call__(self, task: TileTask) -> _Tile:
        plan = self.plan
        inputs, bad_masks = [], []
        for source, window in zip(plan.sources, task.windows):
            array = read_window(source.path, window, plan.read_mode, dtype=np.float32)
            bad = invalid_pixels(array, source.nodata)
            if bad.any():
                array[bad] = np.nan  # the network fills NaN, whatever the nodata value (engine.nodata)
            bad_masks.append(bad)
            inputs.append(array)
        invalid = None
        fill = "background" if all(bad.all() for bad in bad_masks) else None
        if fill and self.nodata_mode == "mask":
            fill = "nodata"
        if not fill and self.nodata_mode == "mask":
            invalid = _touching(plan.geometry, bad_masks, task.block.width)
        if not fill and plan.mask is not None:
            outside = ~rasterize(plan.grid, task.block, plan.mask.path, plan.mask.layer)
            fill = "nodata" if outside.all() else None
            invalid = outside if invalid is None else invalid | outside
        if fill:
            return _Tile(task, [], fill)
        partial = any(bad.any() for bad in bad_masks)
        empty = _empty(plan.geometry, bad_masks, task.block.width) if partial and self.nodata_mode == "skip" else None
        if partial:  # a pixel whose own inputs are nodata gets nodata
            own = _own_nodata(plan.geometry, bad_masks, task.block.width)
            invalid = own if invalid is None else invalid | own
        return _Tile(task, inputs, None, invalid if invalid is not None and invalid.any() else None,
                     empty if empty is not None and empty.any() else None, partial)


def _block_counts(bad: np.ndarray, blocks: int, step: int, start: int, extent: int) -> np.ndarray:
    """Nodata pixels in the ``extent``-pixel square of each EF block of a tile's source window,
    block ``(r, c)`` starting at ``start + (r, c) * step`` (summed-area table, source pixels)."""
    table = np.pad(np.cumsum(np.cumsum(bad, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
    starts = start + np.arange(blocks) * step
    r0, c0 = starts[:, None], starts[None, :]
    return table[r0 + extent, c0 + extent] - table[r0, c0 + extent] - table[r0 + extent, c0] + table[r0, c0]


def _per_pixel(geometry: ModelGeometry, blocks: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(blocks, geometry.ef, 0), geometry.ef, 1)


def _touching(geometry: ModelGeometry, bad_masks: list[np.ndarray], size: int) -> np.ndarray:
    """Output pixels (``size`` x ``size``) whose EF block's receptive field holds a nodata pixel."""
    blocks = size // geometry.ef
    hit = np.zeros((blocks, blocks), dtype=bool)
    for i, bad in enumerate(bad_masks):
        if bad.any():
            step = geometry.footprint(i)  # an EF block's window: its receptive field and the registration's margin
            hit |= _block_counts(bad, blocks, step, 0, step + geometry.window_extent(i)) > 0
    return _per_pixel(geometry, hit)


def _own_nodata(geometry: ModelGeometry, bad_masks: list[np.ndarray], size: int) -> np.ndarray:
    """Output pixels (``size`` x ``size``) whose own footprint holds a nodata pixel of any source
    (output pixel ``j`` covers source-i pixels ``[before_i + j r_i, before_i + (j + 1) r_i)``)."""
    hit = np.zeros((size, size), dtype=bool)
    edges = np.arange(size + 1)
    for i, bad in enumerate(bad_masks):
        if not bad.any():
            continue
        ratio, before = geometry.ratio(i), geometry.before(i)
        starts = np.array([before + math.floor(j * ratio) for j in edges[:-1]])
        ends = np.array([before + math.ceil(j * ratio) for j in edges[1:]])
        table = np.pad(np.cumsum(np.cumsum(bad, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
        r0, r1, c0, c1 = starts[:, None], ends[:, None], starts[None, :], ends[None, :]
        hit |= (table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]) > 0
    return hit


def _empty(geometry: ModelGeometry, bad_masks: list[np.ndarray], size: int) -> np.ndarray:
    """Output pixels whose EF block's footprint is nodata in every source: they get what a tile
    that is nodata everywhere gets, so skipping such tiles does not depend on the tiling."""
    blocks = size // geometry.ef
    empty = np.ones((blocks, blocks), dtype=bool)
    for i, bad in enumerate(bad_masks):
        step = geometry.footprint(i)
        start = math.floor(geometry.window_before(i))  # whole unless the grid is off common corners
        empty &= _block_counts(bad, blocks, step, start, step) == step * step
    return _per_pixel(geometry, empty)


def fill_value(product: Product, fill: str, background: float | None) -> float:
    """What a tile that was not computed holds: the product's nodata, or for an all-nodata
    ("background") tile of a raw product, ``background`` when given. Never a class or a
    probability: 0 is a class value and a valid confidence."""
    raw = product.kind not in CLASSIFIER_PRODUCTS
    return background if fill == "background" and raw and background is not None else product.nodata


def tile_arrays(tile: _Tile, kept: list[np.ndarray] | None, products: list[Product],
                background: float | None) -> list[np.ndarray]:
    """Each product's ``(size, size, bands)`` array for a tile: from the ``kept`` network outputs,
    or filled (``kept`` None, a ``tile.fill`` tile); nodata where the tile's pixels are invalid."""
    size = tile.task.block.width
    if kept is None:
        return [np.full((size, size, p.bands), fill_value(p, tile.fill, background), dtype=p.dtype)
                for p in products]
    arrays = [p.make(kept) for p in products]
    invalid = tile.invalid
    if tile.partial:  # a network output that is not finite (NaN inputs) is no value
        nonfinite = ~np.logical_and.reduce([np.isfinite(k).all(-1) for k in kept])
        invalid = nonfinite if invalid is None else invalid | nonfinite
    for p, array in zip(products, arrays):
        if invalid is not None:
            array[invalid] = p.nodata
        if tile.empty is not None:
            array[tile.empty] = fill_value(p, "background", background)
    return arrays


class _BackgroundWriter:
    """Turns the kept network outputs of a tile into the products and writes them, in one
    background thread fed by a bounded queue (TensorFlow computes the next tile meanwhile)."""

    def __init__(self, writers: list[GeoTiffWriter], products: list[Product], background: float | None,
                 depth: int = 2):
        self.writers = writers
        self.products = products
        self.background = background
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="deepfield-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def put(self, tile: _Tile, kept: list[np.ndarray] | None) -> None:
        """Queue a tile: ``kept`` network outputs, or ``None`` for a ``tile.fill`` tile."""
        if self.error is not None:
            raise self.error
        self.queue.put((tile, kept))

    def _run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    tile, kept = item
                    block = tile.task.block
                    for writer, array in zip(self.writers, tile_arrays(tile, kept, self.products, self.background)):
                        # a clipped run's first tiles start before the grid (full-grid phase)
                        skip_col, skip_row = max(0, -block.col_off), max(0, -block.row_off)
                        writer.write(Window(block.col_off + skip_col, block.row_off + skip_row,
                                            block.width - skip_col, block.height - skip_row),
                                     array[skip_row:, skip_col:])
                except BaseException as error:
                    self.error = error

    def __exit__(self, *exc):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error
        return False


# -- entry point: a loaded model over sources ----------------------------------------------------------


def serve_model(model, geometry: ModelGeometry, sources: list[str], output: str, *,
                products: list[Product] | None = None, tile: int | None = None, border: str = "reflect",
                extent=None, mask: MaskSpec | None = None, memory_mb: float | None = None,
                nodata_mode: str = "skip", background: float | None = None, nodata: list[tuple | None] | None = None,
                reporter: Reporter | None = None, executor: Executor | None = None, tta: bool = False,
                precision: str = "float32", jit_compile: bool = False) -> dict:
    """Serve a Keras ``model`` with ``geometry`` over ``sources``; by default every output tensor
    is written as float32 bands of ``output``. Returns the ``apply_model`` job's result: output
    paths, the grid, tile counts and timings."""
    log = reporter.log if reporter else None
    plan = plan_serving(geometry, sources, tile=tile, memory_mb=memory_mb,
                        bytes_per_reference_pixel=bytes_per_reference_pixel(model), border=border, extent=extent,
                        mask=mask, nodata=nodata, log=log)
    if products is None:
        channels = [int(out.shape[-1]) for out in _as_list(model.outputs)]
        names = [getattr(out, "name", f"output{k}") or f"output{k}" for k, out in enumerate(_as_list(model.outputs))]
        products = raw_products(output, channels, [n.split("/")[0].split(":")[0] for n in names])
    if log:
        log(f"output grid {plan.grid.width} x {plan.grid.height} px of {plan.grid.spacing_x:g} x "
            f"{plan.grid.spacing_y:g}; {len(plan.tasks)} tile(s) of {plan.tile} px; border {plan.border}")
    stats = run_plan(model, plan, products, reporter=reporter, executor=executor, nodata_mode=nodata_mode,
                     background=background, tta=tta, precision=precision, jit_compile=jit_compile)
    grid = plan.grid
    return {
        "output": products[0].path,
        "outputs": {p.kind: p.path for p in products},
        "grid": {"geotransform": list(grid.geotransform()), "width": grid.width, "height": grid.height,
                 "crs": grid.crs_wkt},
        "tiles": stats.tiles,
        "skipped_tiles": stats.skipped,
        "tile_size": plan.tile,
        "seconds": round(stats.seconds, 3),
        "compute_seconds": round(stats.compute_seconds, 3),
        "warped_sources": plan.warped_sources,
    }


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def automatic_tile(model, geometry: ModelGeometry, memory_mb: float | None = None,
                   width: int = LARGEST_TILE, height: int = LARGEST_TILE) -> int:
    """The tile size (output pixels) :func:`serve_model` picks when given none, for a ``width`` x
    ``height`` output grid (default: a large image) and ``memory_mb`` (MB; ``None``: half the
    memory available now); see :func:`.autotile.choose_tile`."""
    return choose_tile(geometry, width, height, memory_budget_bytes(memory_mb), bytes_per_reference_pixel(model))


def bytes_per_reference_pixel(model) -> float:
    """Estimated activation bytes per reference-input pixel: the widest layer's channels x
    :data:`BYTES_PER_CHANNEL` (at input resolution: a conservative bound for encoders)."""
    widest = 1
    for layer in model.layers:
        try:
            outputs = _as_list(layer.output)
        except (AttributeError, ValueError):  # a layer used several times has no single output
            continue
        for out in outputs:
            shape = getattr(out, "shape", None)
            if shape is not None and len(shape) == 4 and shape[-1]:
                widest = max(widest, int(shape[-1]))
    return widest * BYTES_PER_CHANNEL


#: Relative difference between a source's pixel size and the training one above which Apply model warns.
SPACING_TOLERANCE = 0.05


def warn_spacing(inputs, sources, warn) -> None:
    """Warn (``warn(message)``) for each source whose pixel size differs from the one its model
    input was trained at (``InputInfo.spacing``, when recorded) by more than :data:`SPACING_TOLERANCE`:
    a model serves images at the resolution it learnt, other resolutions give wrong results quietly.
    ``sources``: :class:`.rasters.RasterInfo` in model input order."""
    for item, info in zip(inputs, sources):
        if item.spacing is None:
            continue
        spacing = (info.geotransform[1], -info.geotransform[5])
        if any(abs(s - t) > SPACING_TOLERANCE * t for s, t in zip(spacing, item.spacing)):
            warn(f"source {info.path} has pixels of {spacing[0]:g} x {spacing[1]:g} (its CRS units) but the model "
                 f"input {item.name!r} was trained on pixels of {item.spacing[0]:g} x {item.spacing[1]:g}: the "
                 "results are likely wrong; resample the image to the training resolution, or train on images "
                 "at this one")


def products_for(metadata, output: str, kinds: list[str] | None, stack: bool = True) -> list[Product]:
    """The products a model folder's outputs give: classifier products for a ``probabilities``
    output, float32 bands for ``regression``/``image`` outputs."""
    outputs = list(metadata.outputs)
    probabilities = [k for k, out in enumerate(outputs) if out.kind == "probabilities"]
    if probabilities:
        index = probabilities[0]
        classes = tuple(ClassStyle(int(c.value), c.name, c.color) for c in metadata.classes)
        if not classes:
            classes = tuple(ClassStyle(v, f"class {v}", class_color(v)) for v in range(outputs[index].bands))
        if len(classes) != outputs[index].bands:
            raise EngineError(f"model output {outputs[index].name!r} has {outputs[index].bands} channels but the "
                              f"metadata lists {len(classes)} classes")
        return classifier_products(output, index, classes, list(kinds or ["class_map"]))
    return raw_products(output, [out.bands for out in outputs], [out.name for out in outputs], stack)

