"""Footprints of positions on the reference raster, and the filter that keeps the usable ones.

The **footprint** of a position is the ``patch_size`` x ``patch_size`` reference pixels of its
patch, placed by the patch-centre rule (:func:`engine.geometry.patch_start`). Rasters are read
in strips of whole rows of at most :data:`READ_BUDGET_BYTES`.
"""

from __future__ import annotations

import numpy as np

from ..errors import NoOverlap
from ..geometry import patch_start
from ..protocol import Reporter
from ..rasters import invalid_pixels
from ..vectors import Positions

READ_BUDGET_BYTES = 64 * 2**20


def footprint_starts(info, x, y, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First column and row of each position's ``patch_size`` patch (patch-centre rule)."""
    u, v = info.grid.pixel(x, y)
    cols = np.array([patch_start(a, patch_size) for a in u], dtype=np.int64)
    rows = np.array([patch_start(b, patch_size) for b in v], dtype=np.int64)
    return cols, rows


def strip_rows(width: int, bands: int, itemsize: int = 8) -> int:
    """Rows of a ``width`` x ``bands`` raster read at once (:data:`READ_BUDGET_BYTES` as float64)."""
    return max(1, READ_BUDGET_BYTES // max(1, width * bands * itemsize))


def pixels_valid(path: str, info, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether pixel ``(col, row)`` (inside the raster) has no nodata band, read strip by strip."""
    from osgeo import gdal

    valid = np.zeros(len(cols), dtype=bool)
    if not len(cols):
        return valid
    dataset = gdal.Open(str(path))
    step = strip_rows(info.width, info.bands)
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
