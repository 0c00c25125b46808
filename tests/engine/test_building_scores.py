"""scripts/building_scores.py: SpaceNet's object F1 (IoU >= 0.5, one-to-one, greedy by IoU) on
squares whose IoUs are known by hand, and the pixel table on a small map."""

import sys

import numpy as np
import pytest
from osgeo import ogr

from ..conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from building_scores import object_scores, pixel_scores


def square(x, y, side=10.0, height=None):
    height = side if height is None else height
    return ogr.CreateGeometryFromWkt(
        f"POLYGON(({x} {y},{x + side} {y},{x + side} {y + height},{x} {y + height},{x} {y}))")


def test_object_f1_matches_one_to_one_by_decreasing_iou():
    reference = [square(0, 0), square(20, 0)]
    predicted = [
        square(1, 0),    # IoU with the first 9 / 11 = 0.818: matched
        square(2, 0),    # IoU with the first 8 / 12 = 0.667: the first is taken, unmatched
        square(26, 0),   # IoU with the second 4 / 16 = 0.25: below 0.5
        square(50, 50),  # nothing
    ]
    scores = object_scores(predicted, reference)
    assert (scores["matched"], scores["predicted"], scores["reference"]) == (1, 4, 2)
    assert scores["precision"] == 0.25 and scores["recall"] == 0.5
    assert scores["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert scores["mean_iou_of_matches"] == pytest.approx(9 / 11)
    # exactly 0.5 matches: a 10 x 10 square and a 10 x 5 half of it
    assert object_scores([square(0, 0, 10, 5)], [square(0, 0)])["matched"] == 1
    assert object_scores([], reference)["f1"] == 0.0


def test_pixel_table_counts_the_masked_pixels_only():
    reference = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    predicted = np.array([[0, 1, 1, 0], [1, 1, 1, 1]])
    mask = np.array([[True, True, True, True], [False, False, False, False]])
    scores = pixel_scores(predicted, reference, mask)
    background, building = scores["classes"]
    assert (background["support"], building["support"]) == (2, 2)
    assert background["precision"] == 0.5 and background["recall"] == 0.5  # column 0 of 0 and 3; of 0 and 1
    assert building["precision"] == 0.5 and building["recall"] == 0.5
    assert scores["overall_accuracy"] == 0.5
