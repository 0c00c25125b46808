"""Train/valid/test splits of positions: random (stratified per class) or spatial blocks; the
class balance per split.

Blocks are squares of ``block_size`` map units counted from the raster's top-left corner; a
position whose footprint crosses a block border is dropped, so no footprint of one split
overlaps a footprint of another. The automatic block size (:func:`automatic_block_splits`)
searches block sides and block orders for a split that keeps every class in every split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..contract import SPLITS, split_proportions
from ..errors import InvalidSpec
from ..vectors import Positions, write_features
from .footprints import footprint_starts

BLOCKS_LAYER = "blocks"
#: Automatic block sides tried, in patches, largest first (larger blocks: fewer dropped positions
#: and less spatial leakage; smaller ones: more blocks to share the classes among the splits).
BLOCK_SIDES = (8, 6, 4, 3, 2)
SEED_TRIES = 4  # block orders tried per automatic block side
MIN_BLOCKS = 3  # fewer blocks holding positions cannot fill train, valid and test


def proportions_of(split: dict | None) -> np.ndarray:
    """Train/valid/test proportions (:func:`..contract.split_proportions`), scaled to sum to exactly 1."""
    values = np.array(split_proportions(split))
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


def covering_block_splits(info, positions: Positions, patch_size: int, block_size: float,
                          proportions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Spatially disjoint splits that give every class to every split where the blocks allow:
    returns (kept mask, split per kept position), kept as in :func:`block_splits`.

    First, class by class (the class held by the fewest blocks first), each split with a
    proportion > 0 that lacks the class (train first, then the smaller splits) gets an
    unassigned block holding it (the first in a seeded random order); then the other blocks, in
    that order, go to the split furthest below its proportion of the kept positions.
    """
    keep, cells = block_cells(info, positions, patch_size, block_size)
    blocks, inverse = np.unique(cells[keep], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    classes = np.zeros(len(inverse), np.int64) if positions.classes is None else positions.classes[keep]
    values, class_index = np.unique(classes, return_inverse=True)
    counts = np.zeros((len(blocks), len(values)), np.int64)
    np.add.at(counts, (inverse, class_index.reshape(-1)), 1)
    sizes = counts.sum(axis=1)
    rank = rng.permutation(len(blocks))  # the seeded order that breaks ties
    assigned = np.full(len(blocks), -1)
    targets = proportions * keep.sum()
    active = [s for s in range(len(SPLITS)) if proportions[s] > 0]
    for k in np.argsort((counts > 0).sum(axis=0), kind="stable"):
        for split in sorted(active, key=lambda s: (s != 0, proportions[s])):  # train, then the small splits
            if ((assigned == split) & (counts[:, k] > 0)).any():
                continue
            free = np.flatnonzero((assigned < 0) & (counts[:, k] > 0))
            if len(free):
                assigned[free[np.argmin(rank[free])]] = split
    for b in np.argsort(rank):
        if assigned[b] < 0:
            filled = np.array([sizes[assigned == s].sum() for s in range(len(SPLITS))])
            assigned[b] = max(active, key=lambda s: targets[s] - filled[s])
    return keep, np.array(SPLITS, dtype=object)[assigned[inverse]]


def missing_classes(wanted: np.ndarray | None, classes: np.ndarray | None, splits: np.ndarray,
                    proportions: np.ndarray) -> list[tuple[str, object]]:
    """``(split, class value)`` pairs with no position, for every split whose proportion is > 0.

    ``wanted``: the class values every split should hold (None without classes: then a pair
    ``(split, None)`` is an empty split); ``classes`` and ``splits``: per position."""
    missing = []
    for name, share in zip(SPLITS, proportions):
        if share <= 0:
            continue
        here = splits == name
        if wanted is None:
            missing += [] if here.any() else [(name, None)]
        else:
            present = set(np.unique(classes[here]).tolist())
            missing += [(name, value) for value in wanted.tolist() if value not in present]
    return missing


@dataclass(frozen=True)
class BlockChoice:
    """The automatic block split: ``block_size`` (map units), ``side`` (patches), ``attempt``
    (block order tried at that side), ``tries`` (candidates evaluated), ``missing`` pairs
    (:func:`missing_classes`; empty when every class reached every split), and the result of
    :func:`block_splits` (``keep``, ``splits``)."""

    block_size: float
    side: int
    attempt: int
    tries: int
    missing: list
    keep: np.ndarray
    splits: np.ndarray


def automatic_block_splits(info, positions: Positions, patch_size: int, proportions: np.ndarray,
                           rng: np.random.Generator) -> BlockChoice:
    """Search :data:`BLOCK_SIDES` (x ``patch_size`` x the pixel spacing, map units) and
    :data:`SEED_TRIES` block orders of :func:`covering_block_splits` for a block split that puts
    every class in every split (:func:`missing_classes`): the first that does, largest blocks first; else the one missing
    the fewest (split, class) pairs, then keeping the most positions. Deterministic for ``rng``."""
    wanted = None if positions.classes is None else np.unique(positions.classes)
    base = int(rng.integers(2**32))
    best, tries = None, 0
    for side in BLOCK_SIDES:
        block_size = side * patch_size * info.geotransform[1]
        for attempt in range(SEED_TRIES):
            tries += 1
            keep, splits = covering_block_splits(info, positions, patch_size, block_size, proportions,
                                                 np.random.default_rng([base, side, attempt]))
            kept = positions.subset(keep)
            missing = missing_classes(wanted, kept.classes, splits, proportions)
            choice = BlockChoice(block_size, side, attempt, tries, missing, keep, splits)
            if best is None or (len(missing), -int(keep.sum())) < (len(best.missing), -int(best.keep.sum())):
                best = choice
            if not missing:
                return dataclasses.replace(choice, tries=tries)
    return dataclasses.replace(best, tries=tries)


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
