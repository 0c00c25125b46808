"""Many scenes in one job: one output per scene, a VRT mosaic over them, errors collected.

A **scene** is the list of source rasters one model run takes (the model's input order); every
scene of a job has the same source structure. Scene ``k`` is written to
``<output stem>_<scene name><suffix>`` next to ``output`` (the scene name is its first source's
file stem, made unique), and ``<output stem>.vrt`` mosaics the scenes' first products (one
``<output stem>_<kind>.vrt`` per further product). A scene that fails is reported and skipped:
the others still run, and the job fails only when every scene does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from osgeo import gdal

from .errors import EngineError, JobCancelled
from .outputs import atomic_output
from .protocol import Reporter

gdal.UseExceptions()


class SceneReporter(Reporter):
    """A reporter for scene ``k`` of ``n``: its 0..100 % is mapped onto the job's share of that
    scene; everything else goes to the job's reporter."""

    def __init__(self, parent: Reporter, k: int, n: int):
        super().__init__()
        self.parent, self.k, self.n = parent, k, n

    def emit(self, message: dict) -> None:
        self.parent.emit(message)

    def progress(self, percent: float) -> None:
        self.parent.progress(100.0 * (self.k + max(0.0, min(100.0, percent)) / 100.0) / self.n)

    @property
    def cancelled(self) -> bool:
        return self.parent.cancelled

    def check_cancelled(self) -> None:
        self.parent.check_cancelled()


def scene_outputs(output: str | os.PathLike, scenes: list[list[str]]) -> list[str]:
    """Each scene's output path: ``<output stem>_<first source's stem>.tif`` (``_2``, ... when
    two scenes share a stem)."""
    output = Path(output)
    suffix = output.suffix if output.suffix.lower() in (".tif", ".tiff") else ".tif"
    paths, seen = [], {}
    for sources in scenes:
        stem = re.sub(r"[^\w.-]+", "_", Path(str(sources[0])).stem) or "scene"
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        paths.append(str(output.with_name(f"{output.stem}_{name}{suffix}")))
    return paths


def mosaic_path(output: str | os.PathLike, kind: str | None = None) -> str:
    """The mosaic VRT of the first product (``kind`` None) or of product ``kind``."""
    output = Path(output)
    return str(output.with_name(f"{output.stem}{'_' + kind if kind else ''}.vrt"))


def serve_scenes(scenes: list[list[str]], output: str, serve: Callable[[list[str], str, Reporter], dict],
                 reporter: Reporter) -> dict:
    """Run ``serve(sources, scene_output, scene_reporter)`` (it returns a serving result with
    ``outputs``: kind -> path) for every scene, then mosaic the scenes that succeeded.

    Returns ``scenes`` (per scene: sources, output, result or error), ``mosaics`` (kind -> VRT),
    ``output`` (the first product's mosaic) and ``errors`` (one line per failed scene)."""
    if not scenes:
        raise EngineError("apply_model: 'scenes' is empty; give at least one list of sources")
    outputs = scene_outputs(output, scenes)
    records, errors = [], []
    for k, (sources, scene_output) in enumerate(zip(scenes, outputs)):
        reporter.check_cancelled()
        reporter.log(f"scene {k + 1} of {len(scenes)}: {', '.join(map(str, sources))}")
        try:
            result = serve([str(s) for s in sources], scene_output, SceneReporter(reporter, k, len(scenes)))
        except JobCancelled:
            raise
        except Exception as error:  # one bad scene must not stop the others
            message = f"scene {k + 1} ({sources[0]}): {error}"
            reporter.warning(message)
            errors.append(message)
            records.append({"sources": list(map(str, sources)), "output": None, "error": str(error)})
            continue
        records.append({"sources": list(map(str, sources)), "output": scene_output, "result": result})
    done = [r for r in records if r["output"]]
    if not done:
        raise EngineError(f"every scene failed ({len(scenes)}): " + "; ".join(errors))
    kinds = list(done[0]["result"]["outputs"])
    mosaics = {}
    for i, kind in enumerate(kinds):
        paths = [r["result"]["outputs"][kind] for r in done]
        mosaics[kind] = build_mosaic(mosaic_path(output, None if i == 0 else kind), paths)
    reporter.progress(100)
    if errors:
        reporter.warning(f"{len(errors)} of {len(scenes)} scene(s) failed: " + "; ".join(errors))
    return {"output": mosaics[kinds[0]], "outputs": mosaics, "mosaics": mosaics, "scenes": records,
            "errors": errors}


def build_mosaic(path: str, rasters: list[str]) -> str:
    """A VRT mosaic of ``rasters`` (same CRS and bands; where they overlap, the later one wins)."""
    with atomic_output(path) as temp:
        try:
            gdal.BuildVRT(str(temp), [os.path.abspath(r) for r in rasters])
        except RuntimeError as error:
            raise EngineError(f"cannot mosaic the scene outputs into {path}: {error} (the scenes must share "
                              "a CRS and bands)") from None
    return path
