"""How good a building map is on held-out ground (``make demo APP=buildings``, ``make bench``): the
talk's per-class pixel table and SpaceNet's object-level F1 of the footprints.

- **Pixels**: a class map (1 building, 0 background) against the footprints burnt on its grid
  (pixel centres inside a footprint: building; elsewhere background), on the pixels of the test
  blocks (Select samples' ``blocks.gpkg``, field ``split`` = ``test``): per-class precision / recall /
  F-score, overall accuracy, kappa (:func:`deepfield.engine.metrics.summarize`).
- **Objects** (SpaceNet's metric): a predicted footprint matches a reference footprint when their
  intersection over union is at least :data:`IOU`; matches are one-to-one, made greedily by
  decreasing IoU; precision = matches / predicted, recall = matches / reference, F1 their harmonic
  mean. Held out: the footprints (of either set) whose centroid lies in a test block.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / ".build" / "plugins"))

from deepfield.engine.metrics import confusion_matrix, ratio, summarize  # noqa: E402

IOU = 0.5
BACKGROUND, BUILDING = 0, 1
NAMES = {BACKGROUND: "background", BUILDING: "building"}


def polygons(path: str, where: str | None = None) -> list:
    """The geometries of the first layer of ``path`` (``where``: an OGR attribute filter)."""
    source = ogr.Open(str(path))
    layer = source.GetLayer(0)
    if where:
        layer.SetAttributeFilter(where)
    return [feature.GetGeometryRef().Clone() for feature in layer]


def test_blocks(blocks: str) -> list:
    return polygons(blocks, "split = 'test'")


def held_out(geometries: list, blocks: list) -> list:
    """The geometries whose centroid lies in one of ``blocks``."""
    return [g for g in geometries if any(block.Contains(g.Centroid()) for block in blocks)]


def burn(like: str, geometries: list, value: int = 1) -> np.ndarray:
    """``geometries`` burnt on the grid of the raster ``like`` (pixel centres inside): ``value``, else 0."""
    grid = gdal.Open(str(like))
    target = gdal.GetDriverByName("MEM").Create("", grid.RasterXSize, grid.RasterYSize, 1, gdal.GDT_Byte)
    target.SetGeoTransform(grid.GetGeoTransform())
    target.SetProjection(grid.GetProjection())
    layer_source = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = layer_source.CreateLayer("burn", grid.GetSpatialRef())
    for geometry in geometries:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
    gdal.RasterizeLayer(target, [1], layer, burn_values=[value])
    return target.ReadAsArray()


def pixel_scores(predicted: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict:
    """Per-class and overall scores of ``predicted`` against ``reference`` (class values) on ``mask``."""
    classes = [BACKGROUND, BUILDING]
    summary = summarize(confusion_matrix(reference[mask], predicted[mask], classes))
    summary["classes"] = [{"value": c, "name": NAMES[c], **{k: summary["per_class"][k][i] for k in
                                                           ("precision", "recall", "f1", "support")}}
                          for i, c in enumerate(classes)]
    return summary


def object_scores(predicted: list, reference: list, iou: float = IOU) -> dict:
    """SpaceNet's object F1: greedy one-to-one matching by decreasing IoU (>= ``iou``)."""
    pairs = []
    for i, p in enumerate(predicted):
        for j, r in enumerate(reference):
            if p.Intersects(r):
                union = p.Union(r).GetArea()
                overlap = p.Intersection(r).GetArea() / union if union else 0.0
                if overlap >= iou:
                    pairs.append((overlap, i, j))
    used_p, used_r, matched = set(), set(), []
    for overlap, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            matched.append(overlap)
    precision, recall = float(ratio(len(matched), len(predicted))), float(ratio(len(matched), len(reference)))
    return {"predicted": len(predicted), "reference": len(reference), "matched": len(matched),
            "precision": precision, "recall": recall, "f1": float(ratio(2 * precision * recall, precision + recall)),
            "mean_iou_of_matches": float(np.mean(matched)) if matched else 0.0}


def score_map(class_map: str, footprints: str, buildings: str, blocks: str) -> dict:
    """Pixel scores of ``class_map`` and object scores of its ``footprints`` against ``buildings``
    on the test blocks of ``blocks``."""
    held = test_blocks(blocks)
    mask = burn(class_map, held).astype(bool)
    reference = burn(class_map, polygons(buildings), BUILDING)
    predicted = gdal.Open(str(class_map)).ReadAsArray()
    return {"pixels": pixel_scores(predicted, reference, mask),
            "objects": object_scores(held_out(polygons(footprints, f"class = {BUILDING}"), held),
                                     held_out(polygons(buildings), held))}


def table(rows: dict[str, dict]) -> str:
    """The talk's table per map (name -> :func:`score_map` result) as text, percent."""
    lines = [f"{'map':<34}{'class':<12}{'precision':>10}{'recall':>8}{'F-score':>9}"]
    for name, scores in rows.items():
        for row in scores["pixels"]["classes"]:
            lines.append(f"{name:<34}{row['name']:<12}{100 * row['precision']:>10.1f}{100 * row['recall']:>8.1f}"
                         f"{100 * row['f1']:>9.1f}")
        objects = scores.get("objects")
        if objects:
            lines.append(f"{'':<34}{'footprints':<12}{100 * objects['precision']:>10.1f}"
                         f"{100 * objects['recall']:>8.1f}{100 * objects['f1']:>9.1f}   object F1 (IoU >= {IOU}): "
                         f"{objects['matched']} matched of {objects['predicted']} predicted, "
                         f"{objects['reference']} reference")
    return "\n".join(lines)
