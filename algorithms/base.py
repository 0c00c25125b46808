"""The base class of DeepField algorithms: translate parameters to a job spec, run it in the engine."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsPalettedRasterRenderer,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
)
from qgis.PyQt.QtGui import QIcon

from .runner import EngineJobCancelled, EngineJobError, default_python, run_job

ICONS = Path(__file__).parent.parent / "icons"
README_URL = "https://github.com/deepfield-gis/deepfield#readme"
ENGINE_PYTHON_SETTING = "DEEPFIELD_ENGINE_PYTHON"
#: Vector formats the engine (OGR) reads as they are; other layers are exported to a GeoPackage.
VECTOR_FORMATS = ["shp", "gpkg", "geojson", "json", "fgb", "sqlite", "gml", "kml", "tab", "mif", "csv"]


def engine_python() -> str:
    """The engine interpreter from Processing options, or the default (see runner.default_python)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        configured = ProcessingConfig.getSetting(ENGINE_PYTHON_SETTING)
    except ImportError:  # Processing's Python plugin is not loaded
        configured = None
    return configured or default_python()


def raster_path(layer, what: str) -> str:
    """The file a raster layer reads (the engine opens it with GDAL); a clear error otherwise."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(f"The {what} {layer.name()} is not a file raster "
                                     f"(provider {layer.providerType()}); save it as a GeoTIFF first.")
    return layer.source()


def renderer_classes(layer) -> list[dict]:
    """The class values, names and colours of a paletted raster style (what the user sees), else []."""
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return []
    return [{"value": int(c.value), "name": c.label or f"class {int(c.value)}", "color": c.color.name()}
            for c in renderer.classes()]


def parse_classes(text: str) -> list[dict]:
    """Classes from ``"1=developed:#e31a1c, 2=agriculture"`` (value=name, optional :#colour)."""
    classes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, _, rest = item.partition("=")
        name, _, color = rest.partition(":")
        try:
            entry = {"value": int(value), "name": name.strip() or value.strip()}
        except ValueError:
            raise QgsProcessingException(
                f"Class {item!r}: write classes as value=name or value=name:#rrggbb, separated by commas") from None
        if color.strip():
            entry["color"] = color.strip()
        classes.append(entry)
    return classes


def default_text(parameter) -> str:
    """A parameter's default as the dialog shows it: an enum's option, yes/no, or what happens without one."""
    value = parameter.defaultValue()
    if value is None or value == "":
        if parameter.isDestination():
            return "a temporary output"
        optional = parameter.flags() & QgsProcessingParameterDefinition.FlagOptional
        return "not set" if optional else "required"
    if isinstance(parameter, QgsProcessingParameterEnum):
        options = parameter.options()
        indices = value if isinstance(value, list) else [value]
        return ", ".join(options[int(index)] for index in indices)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def parameter_defaults(parameters) -> list[str]:
    """``description (NAME): default`` for every visible parameter (QGIS 3.22's ``qgis_process help``
    shows no defaults, so the help string carries them)."""
    return [f"{p.description()} ({p.name()}): {default_text(p)}" for p in parameters
            if not p.flags() & QgsProcessingParameterDefinition.FlagHidden]


class EngineAlgorithm(QgsProcessingAlgorithm):
    """A Processing algorithm whose work is one engine job.

    Subclasses define ``ALG_ID``, ``DISPLAY_NAME``, ``GROUP_ID``, ``HELP``,
    ``initAlgorithm`` and ``build_job(parameters, context, feedback) -> (spec, outputs)``
    where ``outputs`` are the paths the job writes, and optionally
    ``make_results(result, parameters, context, feedback) -> dict``.
    """

    ALG_ID = ""
    DISPLAY_NAME = ""
    GROUP_ID = "tools"
    GROUPS = {"tools": "Tools", "sampling": "Sampling", "training": "Training",
              "serving": "Serving", "evaluation": "Evaluation", "workflows": "Workflows"}
    HELP = ""
    ICON = "deepfield.svg"

    def name(self):
        return self.ALG_ID

    def displayName(self):  # noqa: N802
        return self.DISPLAY_NAME

    def group(self):
        return self.GROUPS[self.GROUP_ID]

    def groupId(self):  # noqa: N802
        return self.GROUP_ID

    def shortHelpString(self):  # noqa: N802
        defaults = "\n".join(f"- {line}" for line in parameter_defaults(self.parameterDefinitions()))
        parameters = f"\n\nParameters (default):\n{defaults}" if defaults else ""
        return f"{self.HELP}{parameters}\n\nFull documentation: {README_URL}"

    def helpUrl(self):  # noqa: N802
        return README_URL

    def icon(self):
        return QIcon(str(ICONS / self.ICON))

    def createInstance(self):  # noqa: N802
        return type(self)()

    def build_job(self, parameters, context, feedback):
        raise NotImplementedError

    def add_advanced(self, *parameters) -> None:
        """Add parameters under the dialog's "Advanced parameters" section."""
        for parameter in parameters:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def vector_path(self, parameters, name, context, feedback) -> tuple[str, str | None]:
        """(path, layer name) of a vector input; memory and database layers become a GeoPackage."""
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, name, context, VECTOR_FORMATS, "gpkg", feedback)
        return path, layer or None

    def make_results(self, result, parameters, context, feedback):
        return result

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        spec, outputs = self.build_job(parameters, context, feedback)
        python = engine_python()
        feedback.pushDebugInfo(f"DeepField engine: {python}, job {spec.get('job')}")
        try:
            result = run_job(spec, feedback, python=python, outputs=outputs)
        except EngineJobCancelled as cancelled:
            feedback.reportError(str(cancelled))
            return {}
        except EngineJobError as error:
            if error.details:
                feedback.pushDebugInfo(error.details)
            raise QgsProcessingException(str(error)) from None
        return self.make_results(result, parameters, context, feedback)
