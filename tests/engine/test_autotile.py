"""The automatic tile: the cheapest run that fits the memory budget, fitted to the image."""

import math
import os
from fractions import Fraction

import pytest

from deepfield.engine.autotile import available_memory_bytes, choose_tile, memory_budget_bytes, run_cost
from deepfield.engine.geometry import ModelGeometry, SourceGeometry

#: The zoo U-Net's geometry (depth 3: RF 104, EF 8, crop 48).
UNET = ModelGeometry((SourceGeometry("s2", 4, 104),), ef=8, sf=Fraction(1), crop=48)
FIXED = (256, 512, 1024, 2048)


def side(tile):
    """Reference window of a same-padded network: tile + RF - EF (computed here, not by the module)."""
    return tile + 104 - 8


@pytest.mark.parametrize("width, height", [(3866, 3894), (1000, 700), (8192, 8192), (300, 5000)])
def test_never_costs_more_than_a_fixed_tile_and_fits_the_budget(width, height):
    per_pixel, budget = 1024, 8 * 2**30
    tile = choose_tile(UNET, width, height, budget, per_pixel)
    assert tile % 8 == 0
    assert side(tile) ** 2 * per_pixel <= budget
    assert run_cost(UNET, width, height, tile) <= min(run_cost(UNET, width, height, t) for t in FIXED)
    # no mostly empty last column or row of tiles (a thin strip trades that for fewer halos)
    for length in (width, height) if min(width, height) >= 700 else ():
        assert math.ceil(length / tile) * tile - length < max(tile / 2, 8)


def test_a_small_budget_gives_a_smaller_tile():
    large = choose_tile(UNET, 8192, 8192, 8 * 2**30, 1024)
    small = choose_tile(UNET, 8192, 8192, 64 * 2**20, 1024)
    assert small < large
    assert side(small) ** 2 * 1024 <= 64 * 2**20 < side(small + 8 * 8) ** 2 * 1024
    assert choose_tile(UNET, 8192, 8192, 1, 1024) == 8


def test_budget_is_the_memory_available_now():
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = available_memory_bytes()
    assert 0 < available <= pages
    assert memory_budget_bytes(None) == pytest.approx(0.5 * available, rel=0.2)
    assert memory_budget_bytes(100) == 100 * 2**20
