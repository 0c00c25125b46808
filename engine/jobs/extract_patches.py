"""The ``extract_patches`` job: patches of co-registered sources at positions, into a dataset folder."""

from __future__ import annotations

from ..contract import ExtractPatchesSpec
from ..errors import EngineError
from ..outputs import check_outputs
from ..patches import extract_patches, read_positions
from ..protocol import Reporter
from ..rasters import raster_info


def run(spec: dict, reporter: Reporter) -> dict:
    """Write the dataset folder ``output`` (see :class:`..contract.ExtractPatchesSpec`).

    Result: {output, splits {split: n}, rejected {reason: n}, class_counts, classes (the
    manifest's class table), skipped (position features without geometry or class, per reason)}.
    """
    job = ExtractPatchesSpec.from_dict(spec)
    check_outputs([job.output], [*(s.path for s in job.sources), job.label.path, job.positions, job.split_zones],
                  folder=True)
    reference = raster_info(job.sources[0].path)
    positions = read_positions(job.positions, job.layer, reference.crs_wkt, job.class_field or None,
                               job.split_field, reporter.warning, job.label.classes)
    if not len(positions):
        raise EngineError(f"no positions in {job.positions}: the layer is empty or its points have no "
                          "geometry; give the points Select samples wrote")
    return extract_patches(job.sources, job.label, positions, job.output, reporter, job.shard_size, job.read_tile,
                           float(job.max_nodata), job.split_zones, job.split_field, job.split_zones_layer)
