"""The automatic architecture: one pick per dataset kind (from manifest-shaped tasks)."""

import pytest

from deepfield.engine.contract import TrainModelSpec
from deepfield.engine.training.architecture import choose_architecture, resolve_architecture
from deepfield.engine.training.config import Task
from deepfield.models import ZOO


def task(kind, scales=("1",), label_scale=None):
    sources = tuple({"name": f"s{i}", "bands": 3, "scale": s} for i, s in enumerate(scales))
    return Task(kind, sources, {"kind": kind, "scale": label_scale, "classes": [{"value": 1}]})


@pytest.mark.parametrize("kind, scales, label_scale, expected", [
    ("segmentation", ("1",), None, "unet"),
    ("class", ("1",), None, "patch_classifier"),
    ("class", ("1", "2"), None, "patch_classifier"),
    ("segmentation", ("1", "2"), None, "fusion"),
    ("segmentation", ("1", "3/2"), None, "unet"),
    ("image", ("1",), "1/2", "superres"),
    ("image", ("1",), "1", "unet"),
])
def test_each_dataset_kind_gets_its_network(kind, scales, label_scale, expected):
    name, reason = choose_architecture(task(kind, scales, label_scale))
    assert name == expected and name in ZOO and reason


def test_only_automatic_is_resolved_and_the_choice_is_logged():
    said = []
    automatic = TrainModelSpec.from_dict({"dataset": "d", "output": "o", "architecture": "automatic"})
    resolved = resolve_architecture(automatic, task("segmentation"), said.append)
    assert resolved.architecture == "unet" and resolved.epochs == automatic.epochs
    assert said and "unet" in said[0] and "segmentation" in said[0]
    given = TrainModelSpec.from_dict({"dataset": "d", "output": "o", "architecture": "fusion"})
    assert resolve_architecture(given, task("segmentation"), said.append) is given and len(said) == 1
