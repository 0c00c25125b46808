"""The automatic tile size: as large as the memory actually available allows, sized to the image.

Tiled serving recomputes each tile's halo (the receptive-field margin, docs/architecture.md) and
computes the overhang of the last tile column and row, dropped at write time. Larger tiles
spend less on halos, but the first read and the last write of a run overlap no compute, and a
tile that barely sticks out of the image wastes most of its last column. :func:`choose_tile`
minimises the pixels a run costs, in reference-source pixels:

    tiles x window²  +  IO_SHARE x window²  +  TILE_OVERHEAD x tiles

over every EF multiple whose window fits the memory budget. The budget is the memory available
now (``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``) times :data:`SAFETY`, unless
the caller gives one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .geometry import ModelGeometry, round_up

#: Share of the available memory a run may plan for (TensorFlow's allocator, the read-ahead and
#: write-behind tiles and other programs need the rest).
SAFETY = 0.5
#: Reading plus writing a tile, relative to computing it (seconds per pixel; an estimate, about
#: 0.1 each way for the zoo U-Net and a class map: bench/bench_serving.py checks the tile it gives
#: against fixed tiles). The first read and the last write overlap no compute.
IO_SHARE = 0.2
#: Fixed cost of one tile (a TensorFlow call, a GDAL write, queue hand-offs) in reference pixels.
TILE_OVERHEAD = 4096
#: Largest tile side considered (output pixels): beyond it, halos cost under 3 % for usual fields.
LARGEST_TILE = 8192


def available_memory_bytes() -> int:
    """Memory available to a new allocation now (bytes): ``MemAvailable`` (Linux), else free
    physical pages (``os.sysconf``)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget_bytes(memory_mb: float | None) -> float:
    """``memory_mb`` (MB) when given, else :data:`SAFETY` x the available memory."""
    return memory_mb * 2**20 if memory_mb else SAFETY * available_memory_bytes()


def window_side(geometry: ModelGeometry, tile: int) -> float:
    """Side (reference-source pixels) of the window a tile of ``tile`` output pixels reads."""
    return float(tile * geometry.ratio(0) + geometry.sources[0].rf - geometry.footprint(0))


def run_cost(geometry: ModelGeometry, width: int, height: int, tile: int) -> float:
    """What serving a ``width`` x ``height`` output grid in tiles of ``tile`` output pixels costs,
    in reference-source pixels (see the module docstring)."""
    count = math.ceil(width / tile) * math.ceil(height / tile)
    window = window_side(geometry, tile) ** 2
    return count * window + IO_SHARE * window + TILE_OVERHEAD * count


def choose_tile(geometry: ModelGeometry, width: int, height: int, budget_bytes: float,
                bytes_per_reference_pixel: float) -> int:
    """The tile (output pixels, a multiple of EF) of least :func:`run_cost` for a ``width`` x
    ``height`` output grid among those whose reference window fits ``budget_bytes``; EF when
    none fits."""
    ef = geometry.ef
    largest = min(round_up(max(width, height, 1), ef), round_up(LARGEST_TILE, ef))
    best, best_cost = ef, math.inf
    for tile in range(ef, largest + 1, ef):
        if window_side(geometry, tile) ** 2 * bytes_per_reference_pixel > budget_bytes:
            break
        cost = run_cost(geometry, width, height, tile)
        if cost < best_cost:
            best, best_cost = tile, cost
    return best
