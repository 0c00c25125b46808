"""The ``coregister_image`` job: an image moved by whole pixels onto its label raster (a VRT)."""

from __future__ import annotations

from ..contract import CoregisterImageSpec
from ..coregistration import coregister_image
from ..outputs import check_outputs
from ..protocol import Reporter


def run(spec: dict, reporter: Reporter) -> dict:
    job = CoregisterImageSpec.from_dict(spec)
    check_outputs([job.output], [job.image, job.labels])
    return coregister_image(job.image, job.labels, job.output, reporter, max_shift=job.max_shift)
