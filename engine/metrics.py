"""Classification scores from a confusion matrix (pure numpy).

``m[i, j]`` counts samples of reference class ``classes[i]`` predicted as ``classes[j]``.
Scores are fractions in [0, 1]; a score whose denominator is 0 is NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Count (reference, predicted) pairs: ``m[i, j]`` = samples of ``classes[i]`` predicted ``classes[j]``.

    ``reference`` and ``predicted`` are integer arrays of the same shape; pairs where either value
    is not in ``classes`` are not counted. Returns an ``int64`` array of shape ``(n, n)``.
    """
    reference = np.asarray(reference).ravel()
    predicted = np.asarray(predicted).ravel()
    if reference.shape != predicted.shape:
        raise ValueError(f"reference has {reference.size} values, predicted {predicted.size}")
    classes = np.asarray(classes, dtype=np.int64)
    n = classes.size
    order = np.argsort(classes, kind="stable")
    ordered = classes[order]
    if n == 0:
        return np.zeros((0, 0), dtype=np.int64)

    def index(values):
        position = np.clip(np.searchsorted(ordered, values), 0, n - 1)
        return order[position], ordered[position] == values

    rows, in_rows = index(reference)
    cols, in_cols = index(predicted)
    keep = in_rows & in_cols
    flat = np.bincount(rows[keep] * n + cols[keep], minlength=n * n)
    return flat.reshape(n, n).astype(np.int64)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per class (one value per row of ``matrix``): precision, recall, F-score, support, predicted.

    ``precision`` = correct / mapped as the class (column sum), ``recall`` = correct / reference
    samples of the class (row sum, the ``support``), ``f1`` = their harmonic mean; ``predicted``
    is the column sum.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    correct = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = ratio(correct, predicted)
    recall = ratio(correct, support)
    return {
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "support": support,
        "predicted": predicted,
    }


def overall_accuracy(matrix: np.ndarray) -> float:
    """Fraction of samples whose mapped class equals the reference class (0 with no sample)."""
    matrix = np.asarray(matrix)
    return float(ratio(np.trace(matrix), matrix.sum()))


def cohen_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)``; ``p_e`` from the row and column marginals.

    NaN when ``p_e == 1`` (a single class in both reference and map), as scikit-learn.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    if total == 0:
        return math.nan
    observed = np.trace(matrix) / total
    expected = float(np.dot(matrix.sum(axis=1), matrix.sum(axis=0))) / total**2
    if expected == 1.0:
        return math.nan
    return float((observed - expected) / (1.0 - expected))


def macro_f1(matrix: np.ndarray) -> float:
    """Unweighted mean of the per-class F-scores (every row of ``matrix`` counts once)."""
    return float(np.mean(class_scores(matrix)["f1"])) if len(matrix) else 0.0


def weighted_f1(matrix: np.ndarray) -> float:
    """Mean of the per-class F-scores weighted by reference support (row sums)."""
    scores = class_scores(matrix)
    return float(ratio(np.dot(scores["f1"], scores["support"]), scores["support"].sum()))


def summarize(matrix: np.ndarray) -> dict:
    """Every score of ``matrix`` as plain floats: OA, kappa, macro and weighted P/R/F, per class lists."""
    scores = class_scores(matrix)
    weights = scores["support"]
    summary = {"samples": int(np.asarray(matrix).sum()), "overall_accuracy": overall_accuracy(matrix),
               "kappa": cohen_kappa(matrix)}
    for name in ("precision", "recall", "f1"):
        values = scores[name]
        summary[f"macro_{name}"] = float(np.mean(values)) if values.size else 0.0
        summary[f"weighted_{name}"] = float(ratio(np.dot(values, weights), weights.sum()))
    summary["per_class"] = {name: values.tolist() for name, values in scores.items()}
    return summary


class ConfusionCounts:
    """A confusion matrix accumulated block by block over class values not known in advance."""

    def __init__(self) -> None:
        self._pairs: Counter = Counter()

    def add(self, reference: np.ndarray, predicted: np.ndarray) -> None:
        """Count the pairs of two integer arrays of the same shape."""
        if reference.size == 0:
            return
        classes = np.union1d(np.unique(reference), np.unique(predicted))
        matrix = confusion_matrix(reference, predicted, classes)
        for i, j in zip(*np.nonzero(matrix)):
            self._pairs[int(classes[i]), int(classes[j])] += int(matrix[i, j])

    @property
    def classes(self) -> list[int]:
        """Sorted class values seen in the reference or the map."""
        return sorted({value for pair in self._pairs for value in pair})

    def matrix(self, classes: Sequence[int] | None = None) -> np.ndarray:
        """The accumulated matrix over ``classes`` (default: :attr:`classes`)."""
        classes = self.classes if classes is None else list(classes)
        index = {value: i for i, value in enumerate(classes)}
        matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for (ref, pred), count in self._pairs.items():
            if ref in index and pred in index:
                matrix[index[ref], index[pred]] += count
        return matrix
