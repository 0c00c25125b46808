"""Registration of segmentation labels to their image: the whole-pixel shift that best lines up
the labels' class boundaries with the image's edges.

A label raster made from another date's imagery or digitised on another base map can sit a pixel
or two away from the image it labels. A network trained with flips and rotations cannot learn such
a shift (each flip reverses it), so it maps the image's boundaries where the labels have them a
pixel away, and every boundary pixel of the map disagrees with the labels. On the NC Landsat scene
(``landclass96`` on the 2000 image) the labels' boundaries match the image's edges best one pixel
down and one to the right of where they are.

:class:`ShiftScores` accumulates, patch by patch, the correlation between the image's edge
strength (:func:`edge_strength`) and the labels' boundaries (:func:`class_boundaries`) for every
shift of the labels within ``max_shift`` pixels; :meth:`ShiftScores.best` says which shift
lines them up best. Shifts are in the image's pixels: ``rows`` > 0 moves the labels down,
``cols`` > 0 to the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .image_scores import gradient_magnitude

#: A shift is reported when its correlation beats the unshifted labels' by this factor.
CLEAR_GAIN = 1.1


def edge_strength(image: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Per pixel, the sum over the bands of ``image`` (rows x cols x bands) of the gradient
    magnitude (:func:`.image_scores.gradient_magnitude`) divided by the band's standard deviation
    over the valid pixels; NaN on ``invalid`` pixels and beside them (4 neighbours)."""
    image = np.where(invalid[..., None], np.nan, np.asarray(image, dtype=np.float64))
    if invalid.all():
        return image[..., 0]
    spread = np.nanstd(image, axis=(0, 1))
    varies = spread > 0
    total = (gradient_magnitude(image)[..., varies] / spread[varies]).sum(axis=-1)  # NaN beside invalid
    return np.where(invalid, np.nan, total)


def class_boundaries(labels: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Float 1 where a labelled pixel has a labelled 4-neighbour of another class, else 0."""
    labels = np.asarray(labels)
    boundary = np.zeros(labels.shape, dtype=bool)
    down = (labels[1:] != labels[:-1]) & labelled[1:] & labelled[:-1]
    boundary[1:] |= down
    boundary[:-1] |= down
    right = (labels[:, 1:] != labels[:, :-1]) & labelled[:, 1:] & labelled[:, :-1]
    boundary[:, 1:] |= right
    boundary[:, :-1] |= right
    return boundary.astype(np.float64)


def _with_neighbours(valid: np.ndarray) -> np.ndarray:
    """``valid`` pixels whose 4 neighbours (inside the array) are valid too."""
    kept = valid.copy()
    kept[1:] &= valid[:-1]
    kept[:-1] &= valid[1:]
    kept[:, 1:] &= valid[:, :-1]
    kept[:, :-1] &= valid[:, 1:]
    return kept


@dataclass(frozen=True)
class LabelShift:
    """The labels' best shift (image pixels: ``rows`` down, ``cols`` right) and the correlation
    of their boundaries with the image's edges there (``score``) and unshifted (``unshifted``)."""

    rows: int
    cols: int
    score: float
    unshifted: float

    @property
    def clear(self) -> bool:
        """A shift other than none that beats the unshifted labels by :data:`CLEAR_GAIN`."""
        return (self.rows, self.cols) != (0, 0) and self.score > CLEAR_GAIN * max(self.unshifted, 0.0)

    def description(self, labels: str, image: str, geotransform) -> str:
        """The shift in pixels and map units (``geotransform``: the image's) and its correlations."""
        east, north = self.cols * geotransform[1], self.rows * geotransform[5]
        moves = [f"{abs(self.rows)} px {'down' if self.rows > 0 else 'up'}" if self.rows else "",
                 f"{abs(self.cols)} px {'right' if self.cols > 0 else 'left'}" if self.cols else ""]
        return (f"labels {labels}: their class boundaries line up best with the edges of {image} when moved "
                f"{' and '.join(m for m in moves if m)} ({east:+g} map units east, {north:+g} north): "
                f"correlation {self.score:.3f} against {self.unshifted:.3f} where they are")

    def advice(self, labels: str, image: str, geotransform) -> str:
        """A warning: :meth:`description`, why it matters and what to do about it."""
        return (f"{self.description(labels, image, geotransform)}. A network trained with flips and rotations "
                "cannot learn such a shift, so the map's boundaries will sit that far from the labels'. Co-register "
                "image to labels (deepfield:coregisterimage) writes the image moved onto the labels by whole "
                "pixels; use its output in every step (patches, the map). If the labels are the misregistered "
                "ones, give a copy of them shifted instead (e.g. gdal_translate -a_ullr with every corner moved)")


class ShiftScores:
    """Sums for the correlation of edge strength and shifted label boundaries, every shift of
    ``-max_shift..max_shift`` pixels on both axes, over the pixels of the patches added."""

    def __init__(self, max_shift: int = 2):
        self.max_shift = int(max_shift)
        size = 2 * self.max_shift + 1
        self.sums = np.zeros((size, size, 6))  # n, Σe, Σb, Σeb, Σe², Σb²
        self.patches = 0

    def add(self, image: np.ndarray, invalid: np.ndarray, labels: np.ndarray, labelled: np.ndarray) -> None:
        """One patch: ``image`` (rows x cols x bands) with its ``invalid`` pixels, ``labels`` on
        the same pixels with their ``labelled`` mask."""
        k = self.max_shift
        rows, cols = labels.shape
        if rows <= 2 * k or cols <= 2 * k:
            return
        self.patches += 1
        inner = np.s_[k:rows - k, k:cols - k]  # image pixels every shift compares
        edges = edge_strength(image, invalid)[inner]
        valid = np.isfinite(edges)
        boundaries, known = class_boundaries(labels, labelled), _with_neighbours(labelled)
        for i, dy in enumerate(range(-k, k + 1)):
            for j, dx in enumerate(range(-k, k + 1)):
                # image pixel (r, c) against label pixel (r - dy, c - dx): the labels moved by (dy, dx)
                moved = np.s_[k - dy:rows - k - dy, k - dx:cols - k - dx]
                use = valid & known[moved]
                e, b = edges[use], boundaries[moved][use]
                self.sums[i, j] += (e.size, e.sum(), b.sum(), (e * b).sum(), (e * e).sum(), (b * b).sum())

    def correlations(self) -> np.ndarray:
        """Pearson correlation per shift (``[dy + k, dx + k]``); NaN without variance."""
        n, e, b, eb, ee, bb = np.moveaxis(self.sums, -1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            covariance = eb / n - (e / n) * (b / n)
            return covariance / np.sqrt((ee / n - (e / n) ** 2) * (bb / n - (b / n) ** 2))

    def best(self) -> LabelShift | None:
        """The shift of highest correlation, or None when no patch had boundaries and edges."""
        scores = self.correlations()
        if not np.isfinite(scores).any():
            return None
        i, j = np.unravel_index(np.nanargmax(scores), scores.shape)
        k = self.max_shift
        return LabelShift(int(i) - k, int(j) - k, float(scores[i, j]), float(scores[k, k]))
