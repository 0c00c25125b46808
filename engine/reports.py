"""Report files: the evaluation report (metrics document, CSV, PNG, HTML) and the class balance table.

The **metrics document** (:func:`metrics_document`) is the JSON-ready record of one comparison
of classes (evaluate_map's ``metrics.json``, train_model's validation confusion): the inputs
described as strings, the classes (value, name, colour), the confusion matrix (rows: reference
classes, columns: map classes) and the scores of :func:`.metrics.summarize` (fractions in
[0, 1]; None where undefined). Every other writer here renders such a document or a table;
files are written through :func:`.outputs.atomic_output`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .classes import ClassStyle
from .contract import REPORT_FILES
from .metrics import ratio, summarize
from .outputs import atomic_output


# -- the metrics document --------------------------------------------------------------------------
def metrics_document(matrix: np.ndarray, classes: Sequence[ClassStyle], map: str, reference: str,
                     reference_layer: str | None = None, class_field: str | None = None,
                     mask: str | None = None, ignore_values: Sequence[int] = (), background: int | None = None,
                     skipped_features: dict | None = None) -> dict:
    """Everything measured, JSON-ready (NaN -> None): inputs, classes, matrix, scores.

    ``matrix[i, j]``: samples of reference class ``classes[i]`` mapped as ``classes[j]``;
    ``map``, ``reference`` (and the optional layer, field, mask): descriptions of what was
    compared, as shown in the report (paths, or e.g. "model (epoch 3)"). ``background``: the
    class of the pixels outside every reference polygon (None: not counted);
    ``skipped_features``: reference features left out, per reason (None: a raster reference).
    """
    summary = summarize(matrix)
    per_class = summary.pop("per_class")
    rows = [
        {"value": c.value, "name": c.name, "color": c.color,
         **{key: per_class[key][i] for key in ("precision", "recall", "f1", "support", "predicted")}}
        for i, c in enumerate(classes)
    ]
    document = {
        "map": map, "reference": reference, "reference_layer": reference_layer,
        "class_field": class_field, "mask": mask, "ignore_values": list(ignore_values), "background": background,
        "skipped_features": dict(skipped_features) if skipped_features is not None else None,
        **summary,
        "classes": rows,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: reference classes, columns: map classes (order of 'classes')",
    }
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in document.items()}


# -- evaluation report files ----------------------------------------------------------------------
def write_report(metrics: dict, folder: Path) -> dict[str, str]:
    """Write :data:`~.contract.REPORT_FILES` (from a :func:`metrics_document`) into ``folder``,
    each file atomically; return key -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    png = confusion_png(metrics)
    contents = {
        "confusion_matrix_csv": _confusion_csv(metrics),
        "metrics_json": json.dumps(metrics, indent=2),
        "per_class_csv": _per_class_csv(metrics),
        "confusion_matrix_png": png,
        "report_html": report_html(metrics, png),
    }
    paths = {}
    for key, content in contents.items():
        path = folder / REPORT_FILES[key]
        with atomic_output(path) as temp:
            if isinstance(content, bytes):
                temp.write_bytes(content)
            else:
                temp.write_text(content, encoding="utf-8")
        paths[key] = str(path)
    return paths


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _confusion_csv(metrics: dict) -> str:
    names = [c["name"] for c in metrics["classes"]]
    rows = [["reference \\ map"] + names]
    rows += [[name] + counts for name, counts in zip(names, metrics["confusion_matrix"])]
    return _csv_text(rows)


PER_CLASS_COLUMNS = ("value", "name", "precision", "recall", "f1", "support", "predicted")


def _per_class_csv(metrics: dict) -> str:
    return _csv_text([list(PER_CLASS_COLUMNS)] + [[c[k] for k in PER_CLASS_COLUMNS] for c in metrics["classes"]])


def confusion_png(metrics: dict) -> bytes:
    """The confusion matrix as a PNG: counts in the cells, colours = row-normalised (recall) fractions."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = [c["name"] for c in metrics["classes"]]
    fractions = ratio(matrix, matrix.sum(axis=1, keepdims=True))
    size = min(16.0, 3.0 + 0.6 * len(names))
    figure = Figure(figsize=(size + 1.5, size), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of the reference class (row)")
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("map class")
    axes.set_ylabel("reference class")
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} samples)")
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8,
                      color="white" if fractions[i, j] > 0.5 else "black")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def percent(value: float | None) -> str:
    """A fraction as shown in the report: percent with two decimals ("n/a" for None)."""
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def decimal(value: float | None) -> str:
    """Kappa as shown in the report: four decimals ("n/a" for None)."""
    return "n/a" if value is None else f"{value:.4f}"


def report_html(metrics: dict, png: bytes) -> str:
    """A self-contained HTML page: summary, per-class table (OTBTF style), matrix, embedded PNG."""
    e = html.escape

    def swatch(color):
        return f'<span class="swatch" style="background:{e(color)}"></span>' if color else ""

    rows = "".join(
        f"<tr><td>{c['value']}</td><td>{swatch(c['color'])}{e(c['name'])}</td><td>{percent(c['precision'])}</td>"
        f"<td>{percent(c['recall'])}</td><td>{percent(c['f1'])}</td><td>{c['support']}</td><td>{c['predicted']}</td></tr>"
        for c in metrics["classes"]
    )
    for kind in ("macro", "weighted"):
        rows += (f'<tr class="average"><td></td><td>{kind} average</td><td>{percent(metrics[f"{kind}_precision"])}</td>'
                 f'<td>{percent(metrics[f"{kind}_recall"])}</td><td>{percent(metrics[f"{kind}_f1"])}</td>'
                 f"<td></td><td></td></tr>")
    names = [e(c["name"]) for c in metrics["classes"]]
    matrix = "".join(f"<tr><th>{name}</th>" + "".join(f"<td>{n}</td>" for n in counts) + "</tr>"
                     for name, counts in zip(names, metrics["confusion_matrix"]))
    skipped = metrics.get("skipped_features") or {}
    shown = {**metrics, "skipped": ", ".join(f"{reason} {n}" for reason, n in skipped.items() if n) or None}
    sources = "".join(f"<tr><th>{label}</th><td>{e(str(shown[key]))}</td></tr>"
                      for label, key in (("Class map", "map"), ("Reference", "reference"),
                                         ("Reference layer", "reference_layer"), ("Class field", "class_field"),
                                         ("Mask", "mask"), ("Ignored values", "ignore_values"),
                                         ("Outside every polygon: class", "background"),
                                         ("Skipped features", "skipped"))
                      if shown.get(key) not in (None, []))
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DeepField map evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #eee; }} td:nth-child(2) {{ text-align: left; }}
tr.average td {{ font-weight: bold; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; border: 1px solid #555; }}
</style></head><body>
<h1>Map evaluation</h1>
<table id="sources">{sources}</table>
<h2>Summary</h2>
<table id="summary">
<tr><th>Overall accuracy (%)</th><td>{percent(metrics['overall_accuracy'])}</td></tr>
<tr><th>Kappa</th><td>{decimal(metrics['kappa'])}</td></tr>
<tr><th>Macro F-score (%)</th><td>{percent(metrics['macro_f1'])}</td></tr>
<tr><th>Weighted F-score (%)</th><td>{percent(metrics['weighted_f1'])}</td></tr>
<tr><th>Samples</th><td>{metrics['samples']}</td></tr>
</table>
<h2>Per class</h2>
<table id="per-class">
<tr><th>Value</th><th>Class</th><th>Precision (%)</th><th>Recall (%)</th><th>F-score (%)</th>
<th>Reference samples</th><th>Map samples</th></tr>
{rows}
</table>
<h2>Confusion matrix</h2>
<p>Rows: reference class; columns: map class; cells: samples.</p>
<table id="confusion"><tr><th>reference \\ map</th>{''.join(f'<th>{n}</th>' for n in names)}</tr>
{matrix}
</table>
<img alt="confusion matrix" src="data:image/png;base64,{image}">
</body></html>
"""


# -- class balance ---------------------------------------------------------------------------------
def write_balance(path: str | Path, table: dict[str, dict[str, int]]) -> None:
    """The class balance table as CSV (split, class, count) or JSON (by the path's suffix)."""
    path = Path(path)
    with atomic_output(path) as temp:
        if path.suffix.lower() == ".json":
            temp.write_text(json.dumps(table, indent=1), encoding="utf-8")
            return
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["split", "class", "count"])
            for split, counts in table.items():
                for value, count in counts.items():
                    writer.writerow([split, value, count])
