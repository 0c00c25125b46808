"""The ``vectorize_class_map`` job: a class map to class polygons in a styled GeoPackage."""

from __future__ import annotations

from ..classes import class_styles
from ..contract import VectorizeClassMapSpec
from ..outputs import check_outputs
from ..protocol import Reporter
from ..vectorize import LAYER, vectorize_class_map


def run(spec: dict, reporter: Reporter) -> dict:
    job = VectorizeClassMapSpec.from_dict(spec)
    check_outputs([job.output], [job.map])
    classes = class_styles(job.classes, unnamed="class {}")
    summary = vectorize_class_map(job.map, job.output, min_area=job.min_area, simplify=job.simplify,
                                  skip=tuple(job.skip_values), classes=classes, tile_size=job.tile_size,
                                  reporter=reporter)
    polygons = sum(c["polygons"] for c in summary)
    reporter.log(f"{polygons} polygon(s) of {len(summary)} class(es) written to {job.output}")
    if not polygons:
        reporter.warning(f"no polygon written: every pixel of {job.map} is nodata, skipped or in a region "
                         f"smaller than the minimum area {job.min_area}")
    reporter.progress(100)
    return {"output": job.output, "layer": LAYER, "polygons": polygons, "classes": summary}
