"""The baseline DeepField's maps are compared with (``make demo``, ``make bench``): a per-pixel
random forest (scikit-learn, a dev/bench dependency) on the same pixels.

Pixels: the NC scene's pixels valid in every band of the image and labelled with a class
(1-7) in ``strata.tif``. **Splits** are per pixel: the demo's split blocks rasterised from
Select samples' ``blocks.gpkg`` (:func:`rasterized_splits`), or the issue's 32 px block split
(:func:`block_split`). The forest (:data:`TREES` trees) learns from at most
:data:`TRAIN_PIXELS` train pixels (band values only) and is scored on every test pixel; DeepField's
class map is scored on the very same test pixels (:func:`map_scores`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / ".build" / "plugins"))

from deepfield.engine.metrics import confusion_matrix, summarize  # noqa: E402

TREES = 200
TRAIN_PIXELS = 60_000
#: Per-pixel split codes (0: in no split).
SPLIT_CODES = {"train": 1, "valid": 2, "test": 3}


def forest_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def scene(image: str, labels: str, classes) -> tuple[np.ndarray, np.ndarray]:
    """Band values ``[rows, cols, bands]`` and the reference ``[rows, cols]``: the class value,
    0 where a band is nodata or the label is not one of ``classes``."""
    dataset = gdal.Open(str(image))
    stack = np.moveaxis(dataset.ReadAsArray().astype(np.float32), 0, -1)
    bad = np.zeros(stack.shape[:2], dtype=bool)
    for b in range(dataset.RasterCount):
        nodata = dataset.GetRasterBand(b + 1).GetNoDataValue()
        bad |= np.isnan(stack[..., b]) | ((stack[..., b] == nodata) if nodata is not None else False)
    reference = gdal.Open(str(labels)).ReadAsArray().astype(np.int64)
    reference = np.where(np.isin(reference, list(classes)) & ~bad, reference, 0)
    return stack, reference


def rasterized_splits(blocks: str, image: str) -> np.ndarray:
    """Per pixel of ``image``: the :data:`SPLIT_CODES` of the block (``split`` field) it lies in."""
    dataset = gdal.Open(str(image))
    target = gdal.GetDriverByName("MEM").Create("", dataset.RasterXSize, dataset.RasterYSize, 1, gdal.GDT_Byte)
    target.SetGeoTransform(dataset.GetGeoTransform())
    target.SetProjection(dataset.GetProjection())
    source = ogr.Open(str(blocks))
    layer = source.GetLayer(0)
    for split, code in SPLIT_CODES.items():
        layer.SetAttributeFilter(f"split = '{split}'")
        gdal.RasterizeLayer(target, [1], layer, burn_values=[code])
    return target.ReadAsArray().astype(np.int64)


def block_split(rows: int, cols: int, block: int = 32, seed: int = 0, train: int = 134, valid: int = 45) -> np.ndarray:
    """The issue's split: ``block`` px blocks, row-major; ``numpy.random.default_rng(seed)
    .permutation(n)``: the first ``train`` blocks train, the next ``valid`` validation, the rest test."""
    block_rows, block_cols = -(-rows // block), -(-cols // block)
    order = np.random.default_rng(seed).permutation(block_rows * block_cols)
    codes = np.empty(block_rows * block_cols, dtype=np.int64)
    codes[order[:train]] = SPLIT_CODES["train"]
    codes[order[train:train + valid]] = SPLIT_CODES["valid"]
    codes[order[train + valid:]] = SPLIT_CODES["test"]
    index = (np.arange(rows)[:, None] // block) * block_cols + np.arange(cols)[None, :] // block
    return codes[index]


def scores(reference: np.ndarray, predicted: np.ndarray, classes) -> dict:
    """OA, kappa, macro F1 ... of ``predicted`` against ``reference`` (class values), over the
    ``classes`` present in the reference or the prediction (scikit-learn's macro average: a class
    neither in the test pixels nor in the map does not count as an F-score of 0). Also
    ``macro_f1_test_classes``: the mean F-score of the classes present in the reference only (a
    class mapped on a few test pixels but absent from them then costs precision, not a whole class)."""
    present = [c for c in classes if (reference == c).any() or (predicted == c).any()]
    summary = summarize(confusion_matrix(reference, predicted, present))
    tested = [present.index(c) for c in present if (reference == c).any()]
    return {"classes": present, **summary,
            "macro_f1_test_classes": float(np.mean(np.array(summary["per_class"]["f1"])[tested]))}


def train_forest(stack: np.ndarray, reference: np.ndarray, splits: np.ndarray, seed: int = 0, trees: int = TREES):
    """The forest of ``trees`` trees fitted on (at most :data:`TRAIN_PIXELS`) labelled (> 0) train
    pixels of the features ``stack`` ``[rows, cols, features]``; returns (forest, number of training pixels)."""
    from sklearn.ensemble import RandomForestClassifier

    train = np.flatnonzero((splits.ravel() == SPLIT_CODES["train"]) & (reference.ravel() > 0))
    rng = np.random.default_rng(seed)
    if len(train) > TRAIN_PIXELS:
        train = np.sort(rng.choice(train, TRAIN_PIXELS, replace=False))
    forest = RandomForestClassifier(n_estimators=trees, n_jobs=2, random_state=seed)
    forest.fit(stack.reshape(-1, stack.shape[-1])[train], reference.ravel()[train])
    return forest, int(len(train))


def forest_scores(stack: np.ndarray, reference: np.ndarray, splits: np.ndarray, classes, seed: int = 0) -> dict:
    """Train the forest on (at most :data:`TRAIN_PIXELS`) labelled train pixels, score it on the
    labelled test pixels."""
    started = time.perf_counter()
    forest, training_pixels = train_forest(stack, reference, splits, seed)
    test = test_pixels(reference, splits)
    predicted = forest.predict(stack.reshape(-1, stack.shape[-1])[test])
    return {**scores(reference.ravel()[test], predicted, classes), "training_pixels": training_pixels,
            "seconds": round(time.perf_counter() - started, 1)}


def neighbourhood_means(stack: np.ndarray, sizes=(3, 7)) -> np.ndarray:
    """``stack`` ``[rows, cols, bands]`` followed by each band's mean over ``size`` x ``size``
    pixels (reflected at the edges) for each of ``sizes``: the issue's neighbourhood features."""
    from scipy.ndimage import uniform_filter

    means = [uniform_filter(stack, size=(size, size, 1), mode="reflect") for size in sizes]
    return np.concatenate([stack, *means], axis=-1)


def test_pixels(reference: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """Flat indices of the labelled pixels (valid in every band) of the test split."""
    return np.flatnonzero((splits.ravel() == SPLIT_CODES["test"]) & (reference.ravel() > 0))


def map_scores(class_map: str, reference: np.ndarray, splits: np.ndarray, classes) -> dict:
    """A DeepField class map scored on the forest's test pixels."""
    mapped = gdal.Open(str(class_map)).ReadAsArray().astype(np.int64).ravel()
    test = test_pixels(reference, splits)
    return scores(reference.ravel()[test], mapped[test], classes)
