"""The ``apply_model`` job: :func:`..serving.apply_model_job`, run by the chosen executor, over
one scene or many.

Execution keys of the spec (besides serving's): ``executor`` (``threads``, the default, or
``dask``), ``workers`` (reading threads, or local Dask worker processes), ``scheduler`` (an
existing Dask scheduler address: its workers are used instead of a local cluster), ``geotiff``
(Dask: also write each product's GeoTIFF from its tile VRT; default true), ``scenes`` (a list of
source lists: one output per scene and a VRT mosaic, see :mod:`..scenes`; ``sources`` is then
not needed).
"""

from __future__ import annotations

import functools

from ..executors import ThreadExecutor, make_executor
from ..protocol import Reporter
from ..scenes import serve_scenes
from ..serving import apply_model_job, serve_model
from ..tiles import serve_model_tiles

EXECUTION_KEYS = ("executor", "workers", "scheduler", "geotiff", "scenes")


def run(spec: dict, reporter: Reporter) -> dict:
    serving = {key: value for key, value in spec.items() if key not in EXECUTION_KEYS}
    with make_executor(spec.get("executor", "threads"), int(spec.get("workers") or 1), spec.get("scheduler")) as executor:
        if isinstance(executor, ThreadExecutor):
            serve = functools.partial(serve_model, executor=executor)
        else:
            serve = functools.partial(serve_model_tiles, model_folder=str(spec.get("model")), executor=executor,
                                      geotiff=spec.get("geotiff", True))
        if not spec.get("scenes"):
            return apply_model_job(serving, reporter, serve)
        return serve_scenes(spec["scenes"], str(spec.get("output")),
                            lambda sources, output, scene: apply_model_job(
                                {**serving, "sources": sources, "output": output}, scene, serve), reporter)
