"""The dihedral group of the square: the 8 flips and 90-degree rotations of an image.

Element ``op`` (0..7) acts on the first two axes (rows, columns): ``rot90`` ``op % 4`` times
(counter-clockwise, :func:`numpy.rot90`), then a left-right flip when ``op >= 4``. Training
augments with random elements (:mod:`engine.dataset`); test-time augmentation averages a
network over all of them (:func:`dihedral_mean`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: The number of elements of the group.
OPS = 8


def dihedral(patch: np.ndarray, op: int) -> np.ndarray:
    """Element ``op`` (0..7) of the dihedral group on the first two axes: rot90^(op%4), then a flip if op>=4."""
    rotated = np.rot90(patch, k=op % 4, axes=(0, 1))
    return np.flip(rotated, axis=1) if op >= 4 else rotated


def undo_dihedral(patch: np.ndarray, op: int) -> np.ndarray:
    """The inverse of :func:`dihedral`: ``undo_dihedral(dihedral(x, op), op) == x``."""
    flipped = np.flip(patch, axis=1) if op >= 4 else patch
    return np.rot90(flipped, k=-(op % 4), axes=(0, 1))


def dihedral_mean(infer: Callable[[list[np.ndarray]], list[np.ndarray]]):
    """Test-time augmentation: ``infer`` (per-source ``[rows, cols, bands]`` arrays -> outputs
    ``[1, rows, cols, channels]``) averaged over the 8 elements, each output transformed back.
    Summed in a fixed order in float64, so equal inputs give equal outputs."""

    def averaged(arrays: list[np.ndarray]) -> list[np.ndarray]:
        total = None
        for op in range(OPS):
            outputs = infer([np.ascontiguousarray(dihedral(a, op)) for a in arrays])
            back = [undo_dihedral(out[0], op).astype(np.float64) for out in outputs]
            total = back if total is None else [t + b for t, b in zip(total, back)]
        return [(t / OPS).astype(np.float32)[None] for t in total]

    return averaged
