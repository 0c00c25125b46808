"""Scores of super-resolved images on the test split, next to bicubic upsampling (``make demo
APP=enhancement``, bench/bench_enhancement.py), and a quick-look PNG.

Everything is compared on the grid of the served map (Apply model's output): the target raster
and the low-resolution input are read onto it with GDAL (the target by nearest neighbour, exact
when its pixels coincide with the map's, as Sentinel-2 10 m pixels do with a x2 map of the 20 m
bands; the input by GDAL's cubic convolution: the **bicubic** baseline). Bicubic is also given
a per-band gain and offset fitted by least squares on the train blocks (**bicubic + linear fit**):
the input band is not the target band (B8A is not B08), and a plain upsampling would lose PSNR to
the radiometric difference alone. Pixels are the test blocks' (Select samples' ``blocks.gpkg``,
``split = 'test'``: ground no training patch saw) where the target, the input and every map hold
data. Scores: :func:`deepfield.engine.image_scores.image_scores` (PSNR, edge sharpness = mean
gradient magnitude over the target's, edge correlation, MAE).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from osgeo import gdal

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / ".build" / "plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deepfield.engine.image_scores import image_scores  # noqa: E402
from forest_baseline import SPLIT_CODES, rasterized_splits  # noqa: E402

BICUBIC, FITTED = "bicubic", "bicubic + linear fit"


def on_grid(path: str, like: str, resampling: str) -> np.ndarray:
    """``path`` read onto the grid of the raster ``like``: ``(rows, cols, bands)`` float64, NaN
    where it has no data."""
    grid = gdal.Open(str(like))
    gt = grid.GetGeoTransform()
    bounds = (gt[0], gt[3] + grid.RasterYSize * gt[5], gt[0] + grid.RasterXSize * gt[1], gt[3])
    warped = gdal.Warp("", str(path), format="MEM", outputBounds=bounds, xRes=gt[1], yRes=-gt[5],
                       dstSRS=grid.GetProjection(), resampleAlg=resampling, outputType=gdal.GDT_Float64,
                       dstNodata=float("nan"))
    return read(warped)


def read(dataset) -> np.ndarray:
    """A raster (path or dataset) as ``(rows, cols, bands)`` float64, its nodata as NaN."""
    dataset = gdal.Open(str(dataset)) if isinstance(dataset, (str, Path)) else dataset
    bands = []
    for k in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(k)
        values = band.ReadAsArray().astype(np.float64)
        if band.GetNoDataValue() is not None:
            values[values == band.GetNoDataValue()] = np.nan
        bands.append(values)
    return np.stack(bands, axis=-1)


def linear_fit(image: np.ndarray, target: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``image`` with a per-band gain and offset fitted by least squares to ``target`` over ``pixels``."""
    fitted = np.empty_like(image)
    for band in range(image.shape[-1]):
        gain, offset = np.polyfit(image[..., band][pixels], target[..., band][pixels], 1)
        fitted[..., band] = gain * image[..., band] + offset
    return fitted


def scene_images(maps: dict[str, str], low: str, target: str, blocks: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """``(images by name, target, test pixels)`` on the grid of the first map: the bicubic
    baselines first, then ``maps`` (name -> served map file)."""
    like = next(iter(maps.values()))
    reference = on_grid(target, like, "near")
    bicubic = on_grid(low, like, "cubic")
    images = {name: read(path) for name, path in maps.items()}
    valid = np.isfinite(reference).all(-1) & np.isfinite(bicubic).all(-1)
    for image in images.values():
        valid &= np.isfinite(image).all(-1)
    splits = rasterized_splits(blocks, like)
    fitted = linear_fit(bicubic, reference, valid & (splits == SPLIT_CODES["train"]))
    return {BICUBIC: bicubic, FITTED: fitted, **images}, reference, valid & (splits == SPLIT_CODES["test"])


def scene_scores(maps: dict[str, str], low: str, target: str, blocks: str) -> dict:
    """Per image (bicubic, bicubic + linear fit, then each map): its scores on the test pixels."""
    images, reference, test = scene_images(maps, low, target, blocks)
    return {name: image_scores(image, reference, test) for name, image in images.items()}


def score_table(scores: dict) -> str:
    """The scores as a text table, one row per image."""
    lines = [f"{'image':<24}{'PSNR dB':>9}{'sharpness':>11}{'edge corr':>11}{'MAE':>9}"]
    for name, row in scores.items():
        lines.append(f"{name:<24}{row['psnr']:>9.2f}{row['sharpness']:>11.3f}{row['edge_correlation']:>11.3f}"
                     f"{row['mae']:>9.1f}")
    pixels = next(iter(scores.values()))["pixels"]
    return "\n".join(lines + [f"({pixels} test pixels; sharpness: mean gradient magnitude / the target's, 1 = "
                              "as sharp as the target)"])


def quicklook(png: str, maps: dict[str, str], low: str, target: str, blocks: str, size: int = 160) -> tuple:
    """A PNG of one test window of ``size`` map pixels: input upsampled (bicubic), target, then each
    map, on one grey stretch (the target's 2-98 %). Returns the window ``(col, row, size)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, reference, test = scene_images(maps, low, target, blocks)
    row, col = _densest_window(test, size)
    panels = {"input (bicubic)": images[BICUBIC], "target": reference,
              **{name: images[name] for name in maps}}
    window = reference[row:row + size, col:col + size, 0]
    low_value, high_value = np.nanpercentile(window, [2, 98])
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for axis, (name, image) in zip(axes, panels.items()):
        axis.imshow(image[row:row + size, col:col + size, 0], cmap="gray", vmin=low_value, vmax=high_value,
                    interpolation="nearest")
        axis.set_title(name, fontsize=10)
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return col, row, size


def _densest_window(pixels: np.ndarray, size: int) -> tuple[int, int]:
    """``(row, col)`` of a ``size`` window holding the most ``pixels`` (on a ``size // 4`` lattice)."""
    step = max(size // 4, 1)
    best, where = -1, (0, 0)
    for row in range(0, max(pixels.shape[0] - size, 0) + 1, step):
        for col in range(0, max(pixels.shape[1] - size, 0) + 1, step):
            count = int(pixels[row:row + size, col:col + size].sum())
            if count > best:
                best, where = count, (row, col)
    return where
