"""The automatic architecture: the model-zoo network a dataset calls for, and why.

Rules, in order (from the dataset manifest, :class:`.config.Task`):

- an ``image`` target at a finer spacing than the first source (label scale < 1): ``superres``;
  an ``image`` target at the sources' spacing: ``unet`` (regression);
- ``class`` labels (one class per patch): ``patch_classifier`` (it takes several sources);
- ``segmentation`` labels with two sources, the second coarser by a whole factor (pan + MS):
  ``fusion``; other segmentation datasets: ``unet``.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from ..contract import AUTOMATIC_ARCHITECTURE
from .config import TrainConfig, Task


def choose_architecture(task: Task) -> tuple[str, str]:
    """``(zoo name, reason)`` of the network for ``task`` (see the module docstring)."""
    if task.kind == "image":
        scale = Fraction(str(task.label.get("scale") or 1))
        if scale < 1:
            return "superres", f"the target image is at a finer spacing than the first source (scale {scale})"
        return "unet", "the target image is at the sources' spacing (per-pixel regression)"
    if task.kind == "class":
        return "patch_classifier", "the labels are one class per patch"
    scales = task.scales
    if len(scales) == 2 and scales[1] >= 2 and scales[1].denominator == 1:
        return "fusion", (f"two sources, the second {scales[1]} x coarser than the first, with segmentation "
                          "labels")
    return "unet", "the labels are segmentation patches"


def resolve_architecture(config: TrainConfig, task: Task, log) -> TrainConfig:
    """``config`` with an ``automatic`` architecture replaced by :func:`choose_architecture`'s
    pick (``log`` tells which and why); any other config unchanged."""
    if config.architecture != AUTOMATIC_ARCHITECTURE:
        return config
    name, reason = choose_architecture(task)
    log(f"architecture (automatic): {name}, because {reason}")
    return dataclasses.replace(config, architecture=name)
