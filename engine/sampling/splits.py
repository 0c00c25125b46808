"""Train/valid/test splits of positions: random (stratified per class) or spatial blocks; the
class balance per split.

Blocks are squares of ``block_size`` map units counted from the raster's top-left corner; a
position whose footprint crosses a block border is dropped, so no footprint of one split
overlaps a footprint of another.
"""

from __future__ import annotations

import numpy as np

from ..contract import SPLITS
from ..errors import InvalidSpec
from ..rasters import RasterInfo
from ..vectors import Positions, write_features
from .footprints import footprint_starts

BLOCKS_LAYER = "blocks"
BLOCK_PATCHES = 8  # automatic block side, in patches
MIN_BLOCKS = 3  # fewer blocks holding positions cannot fill train, valid and test


def resolved_block_size(block_size_map_units: float, info: RasterInfo, patch_size_px: int) -> float:
    """The split blocks' side in map units: ``block_size_map_units``, or when it is 0 automatic:
    :data:`BLOCK_PATCHES` patches a side (x the raster's pixel spacing, whatever the CRS units)."""
    return float(block_size_map_units) or BLOCK_PATCHES * patch_size_px * info.geotransform[1]


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
