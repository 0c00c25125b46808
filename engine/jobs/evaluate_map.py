"""The ``evaluate_map`` job: compare a class map with a reference, write the report files."""

from __future__ import annotations

from pathlib import Path

from ..classes import class_styles
from ..contract import REPORT_FILES, EvaluateMapSpec
from ..evaluation import accumulate, class_infos
from ..outputs import check_outputs
from ..protocol import Reporter
from ..rasters import raster_info
from ..reports import metrics_document, write_report


def run(spec: dict, reporter: Reporter) -> dict:
    """Write :data:`..contract.REPORT_FILES` to ``output_folder`` (see
    :class:`..contract.EvaluateMapSpec`). Returns ``{"metrics": {...}, "files": {key: path}}``."""
    job = EvaluateMapSpec.from_dict(spec)
    check_outputs([str(Path(job.output_folder) / name) for name in REPORT_FILES.values()],
                  [job.map, job.reference, job.mask])
    given = list(class_styles(job.classes or (), unnamed="class {}"))
    counts, reference = accumulate(job, raster_info(job.map), reporter)
    classes = class_infos(counts.classes, given, job.map)
    matrix = counts.matrix([c.value for c in classes])
    metrics = metrics_document(matrix, classes, job.map, job.reference, job.reference_layer or None,
                               job.class_field or None, job.mask or None, [int(v) for v in job.ignore_values or ()],
                               reference.background, reference.skipped)
    reporter.log(f"{metrics['samples']} samples, overall accuracy {metrics['overall_accuracy']:.4f}, "
                 f"kappa {metrics['kappa']}, macro F-score {metrics['macro_f1']:.4f}")
    files = write_report(metrics, Path(job.output_folder))
    reporter.progress(100)
    return {"metrics": metrics, "files": files}
