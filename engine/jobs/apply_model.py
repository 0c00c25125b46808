"""The ``apply_model`` job: serve a model folder over sources, tile by tile (docs/architecture.md),
on local threads or Dask workers, over one scene or many."""

from __future__ import annotations

import functools

from ..contract import ApplyModelSpec
from ..device import compute_device
from ..executors import ThreadExecutor, make_executor
from ..modelfolder import load_model_folder
from ..outputs import check_outputs
from ..protocol import Reporter
from ..rasters import raster_info
from ..scenes import serve_scenes
from ..serving import MaskSpec, products_for, serve_model, warn_spacing
from ..tiles import serve_model_tiles


def run(spec: dict, reporter: Reporter) -> dict:
    """Serve ``spec["model"]`` over ``spec["sources"]`` (or each of ``spec["scenes"]``; see
    :class:`..contract.ApplyModelSpec`); returns :func:`..serving.serve_model`'s result, or
    :func:`..scenes.serve_scenes`' for several scenes."""
    spec = ApplyModelSpec.from_dict(spec)
    inputs = [*(spec.sources or ()), *(path for scene in spec.scenes or () for path in scene), spec.model, spec.mask]
    check_outputs([spec.output], inputs)  # before TensorFlow loads: a wrong output fails at once
    if not spec.scenes:
        for path in spec.sources:  # so does a source that is no georeferenced raster
            raster_info(str(path))
    loaded = load_model_folder(spec.model)
    metadata = loaded.metadata
    mask = MaskSpec(str(spec.mask), spec.mask_layer) if spec.mask else None
    reporter.log(f"serving on {compute_device()}")
    with make_executor(spec.executor, spec.workers, spec.scheduler) as executor:
        if isinstance(executor, ThreadExecutor):
            serve = functools.partial(serve_model, executor=executor, tta=spec.tta, precision=spec.precision,
                                      jit_compile=spec.jit_compile)
        else:
            serve = functools.partial(serve_model_tiles, model_folder=str(spec.model), executor=executor,
                                      geotiff=spec.geotiff)

        def serve_scene(sources: list, output: str, scene_reporter: Reporter) -> dict:
            products = products_for(metadata, output, spec.outputs, spec.stack_outputs)
            check_outputs([p.path for p in products], inputs)
            warn_spacing(metadata.inputs, [raster_info(str(p)) for p in sources], scene_reporter.warning)
            result = serve(
                loaded.model, metadata.geometry, [str(p) for p in sources], output, products=products,
                tile=spec.tile_size or None, border=spec.border, extent=spec.extent, mask=mask,
                memory_mb=spec.memory_mb, nodata_mode=spec.nodata_mode, background=spec.background,
                nodata=[info.nodata for info in metadata.inputs], reporter=scene_reporter,
            )
            scene_reporter.log(f"wrote {', '.join(result['outputs'].values())} ({result['tiles']} tiles, "
                               f"{result['seconds']} s)")
            return result

        if spec.scenes:
            return serve_scenes(spec.scenes, spec.output, serve_scene, reporter)
        return serve_scene(spec.sources, spec.output, reporter)
