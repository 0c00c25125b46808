"""The ``describe_model`` job: what a model folder holds and what a tile of it reads."""

from __future__ import annotations

from ..autotile import memory_budget_bytes
from ..contract import DescribeModelSpec
from ..modelfolder import check_geometry, describe, load_model_folder
from ..outputs import atomic_output, check_outputs
from ..protocol import Reporter
from ..serving import automatic_tile, describe_serving


def run(spec: dict, reporter: Reporter) -> dict:
    """Describe the model folder ``spec["model"]`` (see :class:`..contract.DescribeModelSpec`).

    Returns ``{"text", "metadata", "derived", "tile", "output"}``; ``tile`` in output pixels.
    """
    spec = DescribeModelSpec.from_dict(spec)
    memory_mb = memory_budget_bytes(spec.memory_mb) / 2**20
    check_outputs([spec.output], [spec.model])
    reporter.progress(5)
    loaded = load_model_folder(spec.model, verify=False)
    reporter.progress(40)
    derived = check_geometry(loaded.model, loaded.metadata, str(loaded.path))
    reporter.progress(90)
    tile = spec.tile_size or automatic_tile(loaded.model, loaded.metadata.geometry, memory_mb)
    lines = describe(loaded) + describe_serving(loaded.metadata.geometry, tile)
    if not spec.tile_size:
        lines.append(f"  (tile size 0: {tile} output px, as Apply model picks it for a {memory_mb:.5g} MB memory "
                     "budget and a large image; a smaller image gets a tile fitted to its size)")
    lines.append(f"Derived from the network: period {derived.extra.get('period')}, regime "
                 f"{derived.extra.get('regime')}, halo {derived.extra.get('halo')} source px (matches the metadata)")
    text = "\n".join(lines)
    for line in lines:
        reporter.log(line)
    if spec.output:
        with atomic_output(spec.output) as temp:
            temp.write_text(text + "\n", encoding="utf-8")
    reporter.progress(100)
    return {"text": text, "metadata": loaded.metadata.to_dict(), "tile": tile,
            "derived": {"ef": derived.ef, "sf": str(derived.sf), "crop": derived.crop,
                        "rf": [s.rf for s in derived.sources], **derived.extra},
            "output": spec.output}
