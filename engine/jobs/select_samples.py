"""The ``select_samples`` job: sample positions (GeoPackage) and their class balance table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..contract import SelectSamplesSpec
from ..outputs import atomic_output, check_outputs
from ..protocol import Reporter
from ..rasters import raster_info
from ..reports import write_balance
from ..sampling import SAMPLERS, balance, format_balance, select_positions, write_blocks
from ..vectors import write_positions


def run(spec: dict, reporter: Reporter) -> dict:
    """Write the positions GeoPackage ``output``, the balance table ``report`` (.csv or .json)
    and, with ``blocks``, the split blocks (see :class:`..contract.SelectSamplesSpec`).

    Result: {output, report, count, balance, dropped, blocks (path or None), block_size (map
    units, None for a random split), classes
    ([{value, name, color}]: a text class field's names get the values 1..K in sorted order),
    skipped (features without geometry or with a null or unknown class, per reason)}.
    """
    job = SelectSamplesSpec.from_dict(spec)
    check_outputs([job.output, job.report, job.blocks], [job.raster, job.vector, job.label_raster, job.mask])
    info = raster_info(job.raster)
    patch_size = int(job.patch_size)
    sampler = SAMPLERS[job.strategy].from_spec(job)
    positions, dropped, block_size = select_positions(info, sampler, patch_size, job.split, job.split_mode,
                                                      job.block_size, np.random.default_rng(int(job.seed)), reporter)
    reporter.check_cancelled()
    reporter.progress(80)
    if positions.class_styles:
        reporter.log("classes: " + ", ".join(f"{c.value}={c.name}" for c in positions.class_styles))
    table = balance(positions)
    reporter.log("class balance per split: " + format_balance(table))
    output = Path(job.output)
    report = job.report or str(output.with_name(output.stem + "_balance.csv"))
    with atomic_output(output) as temp:
        write_positions(temp, positions, info.crs_wkt)
    write_balance(report, table)
    if job.blocks:
        with atomic_output(job.blocks) as temp:
            count = write_blocks(temp, info, positions, patch_size, block_size)
        reporter.log(f"{count} split blocks written to {job.blocks}")
    reporter.progress(100)
    return {"output": str(job.output), "report": str(report), "count": len(positions),
            "balance": table, "dropped": dropped, "blocks": job.blocks or None, "block_size": block_size,
            "classes": [dataclasses.asdict(c) for c in positions.class_styles], "skipped": positions.skipped}
