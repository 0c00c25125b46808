"""The ``apply_model`` job: serve a model folder over sources, tile by tile (docs/architecture.md)."""

from __future__ import annotations

from ..contract import ApplyModelSpec
from ..device import compute_device
from ..modelfolder import load_model_folder
from ..protocol import Reporter
from ..serving import MaskSpec, products_for, serve_model


def run(spec: dict, reporter: Reporter) -> dict:
    """Serve ``spec["model"]`` over ``spec["sources"]`` (see :class:`..contract.ApplyModelSpec`);
    returns :func:`..serving.serve_model`'s result."""
    spec = ApplyModelSpec.from_dict(spec)
    loaded = load_model_folder(spec.model)
    metadata = loaded.metadata
    products = products_for(metadata, spec.output, spec.outputs, spec.stack_outputs)
    mask = MaskSpec(str(spec.mask), spec.mask_layer) if spec.mask else None
    reporter.log(f"serving on {compute_device()}")
    result = serve_model(
        loaded.model, metadata.geometry, [str(p) for p in spec.sources], spec.output, products=products,
        tile=spec.tile_size or None, border=spec.border, extent=spec.extent, mask=mask, memory_mb=spec.memory_mb,
        nodata_mode=spec.nodata_mode, background=spec.background, nodata=[info.nodata for info in metadata.inputs],
        reporter=reporter, precision=spec.precision, jit_compile=spec.jit_compile,
    )
    reporter.log(f"wrote {', '.join(result['outputs'].values())} ({result['tiles']} tiles, {result['seconds']} s)")
    return result
