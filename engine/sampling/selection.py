"""Select positions: a sampler's candidates, filtered on the raster, split."""

from __future__ import annotations

import numpy as np

from ..errors import EngineError, InvalidSpec
from ..protocol import Reporter
from ..rasters import RasterInfo
from ..vectors import Positions
from .footprints import filter_on_raster
from .splits import (
    MIN_BLOCKS,
    automatic_block_splits,
    block_cells,
    block_splits,
    missing_classes,
    proportions_of,
    random_splits,
)
from .strategies import Sampler


def select_positions(info: RasterInfo, sampler: Sampler, patch_size_px: int, split: dict | None,
                     split_mode: str, block_size_map_units: float, rng: np.random.Generator,
                     reporter: Reporter) -> tuple[Positions, dict, float | None]:
    """Positions of ``sampler`` over the raster ``info``, filtered (:func:`filter_on_raster`),
    with their splits (``split``: proportions; ``split_mode`` random or blocks, see the module
    docstring; ``block_size_map_units``: the blocks' side, 0 = automatic, see
    :func:`automatic_block_splits`). A class missing from a split is warned about.
    Returns them, the dropped counts by reason and the block size used (None: random split)."""
    if patch_size_px < 1 or patch_size_px > min(info.width, info.height):
        raise InvalidSpec(f"patch size {patch_size_px} does not fit the image {info.path} "
                          f"({info.width} x {info.height} pixels)")
    proportions = proportions_of(split)  # checked before any position is read
    positions = sampler.sample(info, rng, reporter)
    if not len(positions):
        where = getattr(sampler, "vector", None) or getattr(sampler, "label_raster", None) or info.path
        raise EngineError(f"the {sampler.name} strategy found no candidate position in {where}: it holds no usable "
                          f"{'point' if sampler.name == 'points' else 'sample'} (an empty layer, or features without "
                          "geometry or class); give a layer with samples")
    reporter.log(f"{sampler.name}: {len(positions)} candidate positions")
    reporter.progress(40)
    positions, dropped = filter_on_raster(info.path, info, positions, patch_size_px, reporter)
    wanted = None if positions.classes is None else np.unique(positions.classes)
    block_size = None
    if split_mode == "blocks":
        if block_size_map_units:
            block_size = float(block_size_map_units)
            keep, splits = block_splits(info, positions, patch_size_px, block_size, proportions, rng)
        else:
            choice = automatic_block_splits(info, positions, patch_size_px, proportions, rng)
            block_size, keep, splits = choice.block_size, choice.keep, choice.splits
            reporter.log(f"automatic block size: {choice.side} patches = {block_size:g} map units (block order "
                         f"{choice.attempt + 1}, {choice.tries} candidate(s) tried): "
                         + ("every class in every split" if not choice.missing
                            else f"the fewest (split, class) gaps the data allow ({len(choice.missing)})"))
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
    names = {c.value: c.name for c in positions.class_styles}
    for split_name, value in missing_classes(wanted, positions.classes, positions.splits, proportions):
        if value is None:
            reporter.warning(f"the {split_name} split has no position")
        else:
            name = f" ({names[value]})" if value in names else ""
            reporter.warning(f"class {value}{name} has no position in the {split_name} split")
    return positions, dropped, block_size
