"""The ``import_model`` job: a network trained elsewhere becomes a DeepField model folder."""

from __future__ import annotations

from pathlib import Path

from ..contract import ImportModelSpec
from ..errors import InvalidSpec
from ..importing import import_network, save_imported
from ..protocol import Reporter


def run(spec: dict, reporter: Reporter) -> dict:
    """Import ``spec.network`` (see :class:`..contract.ImportModelSpec`) into ``spec.output``.

    Returns ``{"output", "metadata"}`` (the folder and its ``deepfield.json`` content).
    """
    job = ImportModelSpec.from_dict(spec)
    network, output = Path(job.network).resolve(), Path(job.output).resolve()
    if output == network or network in output.parents:
        raise InvalidSpec(f"import_model: the model folder {output} would be written into the network {network}; "
                          "choose an output folder outside it")
    reporter.progress(5)
    imported = import_network(job.network, job.sources, job.task, classes=job.classes, classes_file=job.classes_file,
                              expression_field=job.expression_field, spacing_scale=job.spacing_scale,
                              endpoint=job.endpoint, outputs=job.outputs, log=reporter.log)
    reporter.progress(80)
    reporter.check_cancelled()
    save_imported(job.output, imported)
    metadata = imported.metadata
    reporter.log(f"wrote {job.output}: {metadata.task}, EF {metadata.ef}, SF {metadata.sf}, crop {metadata.crop}, RF "
                 + ", ".join(f"{i.name} {i.rf} px" for i in metadata.inputs))
    reporter.progress(100)
    return {"output": job.output, "metadata": metadata.to_dict()}
