"""Scores of an image against a target image on the same grid (pure numpy): PSNR and edge sharpness.

Images are ``(rows, cols)`` or ``(rows, cols, bands)`` arrays in target units (e.g. reflectance
x 1e4); ``mask`` (``(rows, cols)`` booleans) selects the pixels scored. Gradients are central
differences (:func:`numpy.gradient`, one-sided at the image border) in target units per pixel,
taken on the whole image before the mask selects pixels, so a masked pixel's gradient sees its
neighbours as they are (a pixel next to a NaN one, nodata, has no gradient and is left out of the
gradient scores).
"""

from __future__ import annotations

import math

import numpy as np


def psnr(mse: float, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error and a data range (target units);
    NaN for a non-finite error (a diverged network)."""
    if not math.isfinite(mse):
        return math.nan
    if mse <= 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _bands(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image[..., None] if image.ndim == 2 else image


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """``|grad|`` per pixel and band, ``(rows, cols, bands)``: the hypotenuse of the central
    differences along rows and columns (target units per pixel)."""
    bands = _bands(image)
    rows, cols = np.gradient(bands, axis=(0, 1))
    return np.hypot(rows, cols)


def image_scores(predicted: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict:
    """Scores of ``predicted`` against ``target`` over ``mask``:

    - ``psnr`` (dB): data range = target max - min over the mask, MSE over the mask and bands;
    - ``sharpness``: mean ``|grad predicted|`` / mean ``|grad target|`` over the mask (1: edges as
      strong as the target's; below 1: blurrier, above 1: more edge energy than the target);
    - ``edge_correlation``: Pearson correlation of the two gradient magnitudes over the mask
      (whether the edges are where the target's are; NaN when either is constant);
    - ``mae`` (target units) and ``pixels`` (mask count).
    """
    predicted, target = _bands(predicted), _bands(target)
    mask = np.asarray(mask, dtype=bool)
    if predicted.shape != target.shape or mask.shape != target.shape[:2]:
        raise ValueError(f"shapes differ: predicted {predicted.shape}, target {target.shape}, mask {mask.shape}")
    if not mask.any():
        raise ValueError("the mask selects no pixel")
    error = (predicted - target)[mask]
    values = target[mask]
    g_predicted, g_target = gradient_magnitude(predicted), gradient_magnitude(target)
    edges = mask[..., None] & np.isfinite(g_predicted) & np.isfinite(g_target)  # no NaN neighbour
    g_predicted, g_target = g_predicted[edges], g_target[edges]
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = float(np.corrcoef(g_predicted, g_target)[0, 1])
    return {
        "psnr": psnr(float(np.mean(error**2)), float(values.max() - values.min())),
        "sharpness": float(g_predicted.mean() / g_target.mean()),
        "edge_correlation": correlation,
        "mae": float(np.mean(np.abs(error))),
        "pixels": int(mask.sum()),
    }
