"""Select positions: a sampler's candidates, filtered on the raster, split."""

from __future__ import annotations

import numpy as np

from ..errors import EngineError, InvalidSpec
from ..protocol import Reporter
from ..rasters import RasterInfo
from ..vectors import Positions
from .footprints import filter_on_raster
from .splits import MIN_BLOCKS, block_cells, block_splits, proportions_of, random_splits
from .strategies import Sampler


def select_positions(info: RasterInfo, sampler: Sampler, patch_size_px: int, split: dict | None,
                     split_mode: str, block_size_map_units: float, rng: np.random.Generator,
                     reporter: Reporter) -> tuple[Positions, dict]:
    """Positions of ``sampler`` over the raster ``info``, filtered (:func:`filter_on_raster`),
    with their splits (``split``: proportions; ``split_mode`` random or blocks, see the module
    docstring; ``block_size_map_units``: the blocks' side, see :func:`resolved_block_size`).
    Returns them and the dropped counts by reason."""
    if patch_size_px < 1 or patch_size_px > min(info.width, info.height):
        raise InvalidSpec(f"patch size {patch_size_px} does not fit the image {info.path} "
                          f"({info.width} x {info.height} pixels)")
    positions = sampler.sample(info, rng, reporter)
    reporter.log(f"{sampler.name}: {len(positions)} candidate positions")
    reporter.progress(40)
    positions, dropped = filter_on_raster(info.path, info, positions, patch_size_px, reporter)
    proportions = proportions_of(split)
    if split_mode == "blocks":
        block_size = block_size_map_units
        keep, splits = block_splits(info, positions, patch_size_px, block_size, proportions, rng)
        dropped["block_border"] = int((~keep).sum())
        reporter.log(f"{dropped['block_border']} positions dropped: their patch crosses a block border")
        held = len(np.unique(block_cells(info, positions.subset(keep), patch_size_px, block_size)[1], axis=0))
        if held < MIN_BLOCKS:
            reporter.warning(f"only {held} block(s) of {block_size:g} map units hold positions: the splits cannot "
                             f"all get positions; use a smaller block_size (at least {MIN_BLOCKS} blocks)")
        positions = positions.subset(keep)
        positions.splits = splits
    else:
        positions.splits = random_splits(positions.classes, len(positions), proportions, rng)
    if not len(positions):
        raise EngineError(f"no position left after filtering ({dropped}); check the inputs' overlap, "
                        "nodata and the patch size")
    return positions, dropped
