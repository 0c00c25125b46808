"""The Processing models shipped with the plugin (DeepField > Workflows), one module per application.

Each module of :data:`WORKFLOWS` defines ``definition() -> Workflow``: the model's inputs, its child
algorithms and where their products go. :func:`assemble` turns a :class:`Workflow` into a
``QgsProcessingModelAlgorithm``; ``scripts/build_model3.py`` writes every one to
``processing_models/<file>`` and the provider loads them all (algorithms/provider.py), as
``deepfield:<file stem without underscores>``.

A child's parameter sources are tagged tuples, so that a definition is plain data:
``("input", name)`` a model input (its default when QGIS 3.22 passes nothing), ``("output", child,
name)`` another child's output, ``("static", value)`` a fixed value, ``("product", file)`` a file or
folder of that name in the model's output folder (input ``output_folder``). A list of tagged
tuples gives a parameter several sources (the layers of a multiple-layers parameter, in order).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

#: Workflow modules of this package, in toolbox order.
WORKFLOWS = ("landcover", "buildings", "translation", "enhancement")

#: Raster inputs are *files*: a raster layer input would be loaded into QGIS to be checked, and QGIS
#: saves the statistics it computes beside the file (.aux.xml) or into it (.vrt).
RASTER_FILES = "Rasters (*.tif *.tiff *.vrt *.img *.jp2 *.nc);;All files (*)"
VECTOR_FILES = "Vectors (*.gpkg *.shp *.geojson *.json *.sqlite *.fgb);;All files (*)"
GROUP, GROUP_ID = "Workflows", "workflows"


@dataclass
class Child:
    """One algorithm of the chain: ``sources`` maps its parameters to tagged sources (module doc)."""

    algorithm: str
    id: str
    description: str
    sources: dict


@dataclass
class Workflow:
    """A shipped model: ``inputs`` are QgsProcessingParameterDefinitions (those named in ``advanced``
    get the advanced flag), ``help`` the model's help content (``ALG_DESC``, one entry per input)."""

    file: str
    name: str
    inputs: list
    children: list[Child]
    help: dict
    advanced: tuple[str, ...] = field(default=())


def grid_samples_and_patches(label_kind: str, label_input: str | None, what: str, *, image: str | tuple = "image",
                             extract: dict | None = None) -> list[Child]:
    """Select samples (a grid of ``patch_size`` patches every ``grid_step`` px of ``image``, split by
    spatial blocks of ``block_size``, the blocks written) -> Extract patches (patches of ``image``,
    ``label_kind`` labels from the raster input ``label_input``; ``what`` names them): the first two
    children of a workflow (after any child making ``image``). ``image``: a model input's name, or a
    tagged source (another child's output). ``extract`` adds Extract patches parameters or replaces
    those of the same name (several sources, polygon labels: then ``label_input`` is None, no label
    raster)."""
    from deepfield.engine.contract import LABEL_KINDS, SAMPLING_STRATEGIES, SPLIT_MODES

    image = ("input", image) if isinstance(image, str) else image
    patches = {
        "SOURCES": image, "PATCH_SIZES": ("input", "patch_size"),
        "POSITIONS": ("output", "selectsamples", "OUTPUT"), "LABEL_KIND": ("static", LABEL_KINDS.index(label_kind)),
        "OUTPUT": ("product", "dataset")}
    if label_input is not None:
        patches["LABEL_RASTER"] = ("input", label_input)
    patches.update(extract or {})
    return [
        Child("deepfield:selectsamples", "selectsamples", "Select samples (grid, spatial blocks)", {
            "INPUT": image, "STRATEGY": ("static", SAMPLING_STRATEGIES.index("grid")),
            "PATCH_SIZE": ("input", "patch_size"), "STEP": ("input", "grid_step"),
            "SPLIT_MODE": ("static", SPLIT_MODES.index("blocks")), "BLOCK_SIZE": ("input", "block_size"),
            "OUTPUT": ("product", "samples.gpkg"), "REPORT": ("product", "samples_balance.csv"),
            "BLOCKS": ("product", "blocks.gpkg")}),
        Child("deepfield:extractpatches", "extractpatches", f"Extract patches ({what})", patches),
    ]


def definitions() -> list[Workflow]:
    """Every shipped workflow (needs a running QgsApplication with Processing initialised)."""
    return [importlib.import_module(f"{__name__}.{name}").definition() for name in WORKFLOWS]


def assemble(workflow: Workflow):
    """The workflow as a ``QgsProcessingModelAlgorithm``."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelParameter,
        QgsProcessingParameterDefinition,
    )
    from qgis.PyQt.QtCore import QPointF

    from deepfield.algorithms.base import README_URL

    model = QgsProcessingModelAlgorithm(workflow.name, GROUP, GROUP_ID)
    defaults = {}
    for row, parameter in enumerate(workflow.inputs):
        if parameter.name() in workflow.advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        component = QgsProcessingModelParameter(parameter.name())
        component.setPosition(QPointF(120, 60 + 70 * row))
        model.addModelParameter(parameter, component)
        defaults[parameter.name()] = parameter.defaultValue()

    def source(tag, *args):
        if tag == "input":
            (name,) = args
            if defaults[name] in (None, ""):
                return Source.fromModelParameter(name)
            return Source.fromExpression(f"coalesce(@{name}, {defaults[name]!r})")
        if tag == "output":
            return Source.fromChildOutput(*args)
        if tag == "static":
            return Source.fromStaticValue(*args)
        if tag == "product":
            return Source.fromExpression(f"@output_folder || '/{args[0]}'")
        raise ValueError(f"unknown source tag {tag!r}")

    for column, child_spec in enumerate(workflow.children):
        child = QgsProcessingModelChildAlgorithm(child_spec.algorithm)
        child.setChildId(child_spec.id)
        child.setDescription(child_spec.description)
        child.setPosition(QPointF(420 + 260 * column, 120 + 60 * (column % 2)))
        for parameter, tagged in child_spec.sources.items():
            child.addParameterSources(parameter, [source(*t) for t in (tagged if isinstance(tagged, list) else [tagged])])
        model.addChildAlgorithm(child)
    model.setHelpContent({**workflow.help, "ALG_CREATOR": "DeepField", "HELP_URL": README_URL})
    return model
