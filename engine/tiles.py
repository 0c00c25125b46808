"""Tile products: a served raster as independent GeoTIFF tiles, a VRT over them, and a manifest.

Vocabulary (all sizes in output pixels of the served grid, :mod:`.serving`):

- **tile folder**: ``<output stem>.tiles/`` next to the output. It holds ``manifest.json``, one
  sub-folder per product (``class_map/``, ``confidence/``, ...) with one GeoTIFF per task,
  ``<row>_<col>.tif`` (the task's block origin, clipped to the grid), and ``<kind>.vrt`` over them.
- **task**: a :class:`.serving.TileTask`. :func:`run_tile` reads its windows, runs the model and
  writes each product's tile under ``<name>.part``, renamed when complete: a tile file that exists
  is whole, retries are idempotent, and no two tasks ever write the same file (no locks).
- **manifest**: what the tiles were made from (model fingerprint, output grid, tile size, border,
  nodata handling, sources, products, the tile list). Running the same job again keeps the tiles
  already written and verified and computes only the others (*resume*); a manifest that does not
  match starts over, with a message naming what changed.

Workers load the model once (:class:`ModelPlugin`, a Dask worker plugin; or on first use in a
thread pool), never from the task graph. The output is the same, bit for bit, as the threaded
single-file path (:func:`.serving.run_plan`): both run :func:`.serving.compute_tile` and
:func:`.serving.tile_arrays` on the same windows with the same traced model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from osgeo import gdal, gdal_array

from .classes import rgb
from .executors import Executor
from .geometry import Grid, ModelGeometry, Window
from .modelfolder import METADATA, MODEL, load_model_folder
from .outputs import atomic_output, is_plain_path, part_path, remove_path
from .protocol import EngineError, Reporter
from .rasters import GeoTiffWriter
from .serving import (
    NODATA_MODES,
    MaskSpec,
    Product,
    ServingPlan,
    TileReader,
    TileTask,
    bytes_per_reference_pixel,
    compute_tile,
    make_infer,
    plan_serving,
    tile_arrays,
)

try:  # optional: only a Dask executor registers the plugin
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - without dask the threaded path needs no plugin
    WorkerPlugin = object

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "deepfield-tiles"
MANIFEST_VERSION = 1
#: Rows per read when the final GeoTIFF is written from the VRT.
COPY_ROWS = 512


# -- the model on a worker --------------------------------------------------------------------


_models: dict[tuple, object] = {}
_models_lock = threading.Lock()


def served_infer(folder: str, shapes: tuple[tuple[int, int, int], ...]):
    """The traced inference function of the model folder for tiles of ``shapes`` (per source
    ``(rows, cols, bands)``), loaded once per process and kept."""
    key = (str(folder), tuple(shapes))
    with _models_lock:
        if key not in _models:
            _models[key] = make_infer(load_model_folder(folder, verify=False).model, list(shapes))
        return _models[key]


class ModelPlugin(WorkerPlugin):
    """Loads the model on each Dask worker when it starts (again on a restarted worker).

    Only the folder path and the tile shapes travel to the workers; every worker must see the
    model folder and the sources under the same paths (a shared file system)."""

    name = "deepfield-model"

    def __init__(self, folder: str, shapes: tuple[tuple[int, int, int], ...]):
        self.folder = str(folder)
        self.shapes = tuple(shapes)

    def setup(self, worker=None):
        served_infer(self.folder, self.shapes)


def model_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 of the model folder's network and metadata files (hex)."""
    digest = hashlib.sha256()
    for name in (MODEL, METADATA):
        with open(Path(folder) / name, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# -- one task -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileJob:
    """What every task of a run shares (picklable; the plan without its task list)."""

    model: str
    plan: ServingPlan
    products: tuple[Product, ...]
    folder: str
    nodata_mode: str = "skip"
    background: float | None = None

    def window(self, task: TileTask) -> Window:
        """The task's block clipped to the grid (output pixels): what its tile file covers."""
        block, grid = task.block, self.plan.grid
        return Window(block.col_off, block.row_off, min(block.width, grid.width - block.col_off),
                      min(block.height, grid.height - block.row_off))

    def tile_paths(self, task: TileTask) -> list[Path]:
        """One file per product: ``<folder>/<kind>/<row>_<col>.tif``."""
        name = f"{task.block.row_off}_{task.block.col_off}.tif"
        return [Path(self.folder) / product_key(p) / name for p in self.products]


@dataclass(frozen=True)
class TileRecord:
    """What a task returns (metadata only): whether the network ran, and its seconds."""

    index: int
    skipped: bool
    seconds: float


def tile_shapes(plan: ServingPlan) -> tuple[tuple[int, int, int], ...]:
    """Per source ``(rows, cols, bands)`` of the tasks' windows (every task has the same)."""
    task = plan.tasks[0]
    return tuple((w.height, w.width, s.bands) for w, s in zip(task.windows, plan.sources))


def product_key(product: Product) -> str:
    """The product's sub-folder name: its kind, or the output file's stem for raw products."""
    return product.kind if product.kind != "raw" else Path(product.path).stem


def run_tile(job: TileJob, task: TileTask, shapes: tuple[tuple[int, int, int], ...]) -> TileRecord:
    """Read, compute and write one task's tiles (idempotent: a retry rewrites the same files)."""
    started = time.perf_counter()
    tile = TileReader(job.plan, job.nodata_mode)(task)
    kept = None if tile.fill else compute_tile(served_infer(job.model, shapes), job.plan.geometry, tile)
    window = job.window(task)
    grid = job.plan.grid.subgrid(window)
    arrays = tile_arrays(tile, kept, list(job.products), job.background)
    for product, array, path in zip(job.products, arrays, job.tile_paths(task)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with GeoTiffWriter(path, grid, product.bands, product.dtype, product.nodata, product.descriptions) as writer:
            writer.write(Window(0, 0, window.width, window.height), array)
    return TileRecord(task.index, bool(tile.fill), time.perf_counter() - started)


# -- manifest and resume ------------------------------------------------------------------------


def manifest_for(job: TileJob, fingerprint: str, tasks: list[TileTask]) -> dict:
    """The manifest of a run: everything the tiles depend on, and the tile list."""
    grid = job.plan.grid
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "model": fingerprint,
        "grid": {"geotransform": list(grid.geotransform()), "width": grid.width, "height": grid.height,
                 "crs": grid.crs_wkt},
        "tile": job.plan.tile,
        "border": job.plan.border,
        "nodata_mode": job.nodata_mode,
        "background": job.background,
        "mask": dataclasses.asdict(job.plan.mask) if job.plan.mask else None,
        "sources": [_source_identity(source.path) for source in job.plan.sources],
        "products": [{"key": product_key(p), "bands": p.bands, "dtype": str(np.dtype(p.dtype)), "nodata": p.nodata}
                     for p in job.products],
        "tiles": [[t.block.col_off, t.block.row_off, t.block.width] for t in tasks],
    }


def _source_identity(path: str) -> dict:
    """A source as the manifest records it: the path (a hash for a warped VRT's XML) and, for a
    file, its size and modification time, so a rewritten source starts over."""
    if not is_plain_path(path):
        return {"vrt_sha256": hashlib.sha256(path.encode()).hexdigest()}
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _differences(old: dict, new: dict) -> list[str]:
    return [key for key in new if old.get(key) != new[key]] or ["format"]


def prepare_folder(job: TileJob, manifest: dict, log) -> set[int]:
    """Make the tile folder ready for ``manifest``: the indices of the tasks whose tiles are
    already written and verified. A folder made for another job is emptied (with a message)."""
    folder = Path(job.folder)
    file = folder / MANIFEST
    if file.is_file():
        try:
            old = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old != manifest:
            log(f"tile folder {folder} holds tiles of another job ({', '.join(_differences(old, manifest))} "
                f"differ): starting over")
            remove_path(folder)
    elif folder.exists():
        if any(folder.iterdir()):
            raise EngineError(f"{folder} exists and is not a DeepField tile folder (no {MANIFEST}); move it away "
                              "or choose another output name")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(file) as temp:
        temp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    done = set()
    for task in job.plan.tasks:
        paths = job.tile_paths(task)
        for path in paths:
            remove_path(part_path(path))  # a task interrupted while writing
        if all(_verified(path, job.window(task), product) for path, product in zip(paths, job.products)):
            done.add(task.index)
        else:
            for path in paths:
                remove_path(path)
    return done


def _verified(path: Path, window: Window, product: Product) -> bool:
    """A tile file that opens, with the window's size, the product's bands and type."""
    if not path.is_file():
        return False
    try:
        dataset = gdal.Open(str(path))
    except RuntimeError:
        return False
    dtype = gdal_array.GDALTypeCodeToNumericTypeCode(dataset.GetRasterBand(1).DataType)
    return ((dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) == (window.width, window.height, product.bands)
            and np.dtype(dtype) == np.dtype(product.dtype))


# -- assembling -----------------------------------------------------------------------------------


def write_vrt(path: Path, grid: Grid, product: Product, tiles: list[tuple[Window, Path]]) -> Path:
    """A VRT of ``product`` on ``grid`` over its tile files, each at its explicit destination
    rectangle (output pixels); tile paths are written relative to the VRT."""
    gdal_type = gdal.GetDataTypeName(gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(product.dtype).type))
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
             f"  <SRS>{escape(grid.crs_wkt)}</SRS>",
             f"  <GeoTransform>{', '.join(repr(float(v)) for v in grid.geotransform())}</GeoTransform>"]
    for b in range(product.bands):
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{b + 1}">')
        if b < len(product.descriptions):
            lines.append(f"    <Description>{escape(product.descriptions[b])}</Description>")
        lines.append(f"    <NoDataValue>{float(product.nodata)!r}</NoDataValue>")
        if product.classes and b == 0:
            lines.append("    <ColorInterp>Palette</ColorInterp>")
            lines.append("    <ColorTable>")
            colours = {c.value: rgb(c.color) for c in product.classes}
            for value in range(max(colours) + 1):
                r, g, bl = colours.get(value, (0, 0, 0))
                lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{bl}" c4="255"/>')
            lines.append("    </ColorTable>")
        for window, tile in tiles:
            rel = os.path.relpath(tile, path.parent)
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                      f"      <SourceBand>{b + 1}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{window.width}" ySize="{window.height}"/>',
                      f'      <DstRect xOff="{window.col_off}" yOff="{window.row_off}" xSize="{window.width}" '
                      f'ySize="{window.height}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    with atomic_output(path) as temp:
        temp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def geotiff_from_vrt(vrt: Path, grid: Grid, product: Product) -> None:
    """Write ``product.path`` (the same GeoTIFF the threaded path writes) from its VRT, by strips."""
    dataset = gdal.Open(str(vrt))
    with GeoTiffWriter(product.path, grid, product.bands, product.dtype, product.nodata, product.descriptions,
                       product.classes) as writer:
        for row in range(0, grid.height, COPY_ROWS):
            rows = min(COPY_ROWS, grid.height - row)
            block = dataset.ReadAsArray(0, row, grid.width, rows, interleave="pixel")
            writer.write(Window(0, row, grid.width, rows), block.reshape(rows, grid.width, product.bands))


# -- a run ----------------------------------------------------------------------------------------


def tile_folder(output: str | os.PathLike) -> Path:
    """Where the tiles of ``output`` go: ``<output stem>.tiles`` next to it."""
    output = Path(output)
    return output.with_name(output.stem + ".tiles")


def serve_tiles(model_folder: str, plan: ServingPlan, products: list[Product], *, executor: Executor,
                reporter: Reporter | None = None, nodata_mode: str = "skip", background: float | None = None,
                folder: str | os.PathLike | None = None, geotiff: bool = True) -> dict:
    """Serve the model folder over ``plan`` as tile products with ``executor``; resume from the
    tiles already in ``folder`` (default :func:`tile_folder` of the first product).

    Writes each product's VRT over its tiles and, with ``geotiff``, the product's GeoTIFF from it.
    Returns the counts: ``tiles`` (planned), ``computed_tiles``, ``resumed_tiles``, ``skipped_tiles``."""
    if nodata_mode not in NODATA_MODES:
        raise EngineError(f"unknown nodata mode {nodata_mode!r}; use one of {', '.join(NODATA_MODES)}")
    reporter = reporter or Reporter(stream=io.StringIO())
    started = time.perf_counter()
    folder = str(folder or tile_folder(products[0].path))
    job = TileJob(str(model_folder), dataclasses.replace(plan, tasks=[]), tuple(products), folder, nodata_mode,
                  background)
    full = dataclasses.replace(job, plan=plan)
    done = prepare_folder(full, manifest_for(full, model_fingerprint(model_folder), plan.tasks), reporter.log)
    todo = [task for task in plan.tasks if task.index not in done]
    if done:
        reporter.log(f"resuming: {len(done)} of {len(plan.tasks)} tile(s) already in {folder}, "
                     f"{len(todo)} to compute")
    shapes = tile_shapes(plan)
    if hasattr(executor, "register_plugin"):
        executor.register_plugin(ModelPlugin(model_folder, shapes))
    skipped = computed = 0
    compute_seconds = 0.0
    for record in executor.map(functools.partial(run_tile, job, shapes=shapes), todo):
        reporter.check_cancelled()
        computed += 1
        skipped += record.skipped
        compute_seconds += record.seconds
        reporter.progress(100.0 * (len(done) + computed) / len(plan.tasks))
    if not done and skipped == computed:
        raise EngineError("every tile is nodata in every source: nothing to serve "
                          "(check the sources' nodata values and the extent)")
    vrts = {}
    for k, product in enumerate(products):
        tiles = [(full.window(task), full.tile_paths(task)[k]) for task in plan.tasks]
        vrts[product.kind] = str(write_vrt(Path(folder) / f"{product_key(product)}.vrt", plan.grid, product, tiles))
        if geotiff:
            geotiff_from_vrt(Path(vrts[product.kind]), plan.grid, product)
    grid = plan.grid
    return {
        "output": products[0].path if geotiff else vrts[products[0].kind],
        "outputs": {p.kind: (p.path if geotiff else vrts[p.kind]) for p in products},
        "vrts": vrts,
        "tiles_folder": folder,
        "grid": {"geotransform": list(grid.geotransform()), "width": grid.width, "height": grid.height,
                 "crs": grid.crs_wkt},
        "tiles": len(plan.tasks),
        "computed_tiles": computed,
        "resumed_tiles": len(done),
        "skipped_tiles": skipped,
        "tile_size": plan.tile,
        "seconds": round(time.perf_counter() - started, 3),
        "compute_seconds": round(compute_seconds, 3),
        "warped_sources": plan.warped_sources,
    }


def serve_model_tiles(model, geometry: ModelGeometry, sources: list[str], output: str, *, model_folder: str,
                      executor: Executor, products: list[Product], reporter: Reporter | None = None,
                      tile: int | None = None, border: str = "reflect", extent=None, mask: MaskSpec | None = None,
                      memory_mb: float | None = None, nodata_mode: str = "skip", background: float | None = None,
                      nodata: list[tuple | None] | None = None, geotiff: bool = True) -> dict:
    """:func:`.serving.serve_model` as tile products: the same arguments and result, plus the
    model's folder (the workers load it from there) and the executor; tiles in :func:`tile_folder`."""
    log = reporter.log if reporter else None
    plan = plan_serving(geometry, sources, tile=tile, memory_mb=memory_mb,
                        bytes_per_reference_pixel=bytes_per_reference_pixel(model), border=border, extent=extent,
                        mask=mask, nodata=nodata, log=log)
    if log:
        log(f"output grid {plan.grid.width} x {plan.grid.height} px; {len(plan.tasks)} tile(s) of {plan.tile} px, "
            f"written as tile products in {tile_folder(output)}")
    return serve_tiles(model_folder, plan, products, executor=executor, reporter=reporter, nodata_mode=nodata_mode,
                       background=background, folder=tile_folder(output), geotiff=geotiff)
