"""The base class of DeepField algorithms: translate parameters to a job spec, run it in the engine."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapLayer,
    QgsMessageLog,
    QgsPalettedRasterRenderer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
    QgsProperty,
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


@dataclass(frozen=True)
class RasterInput:
    """A raster parameter's value: the ``path`` the engine opens, a ``name``, and the QGIS
    ``layer`` when the user picked one already open (project or earlier step), else ``None``.

    A raster given as a file path is never loaded into QGIS: a QgsRasterLayer computes
    statistics and histograms for its renderer, which GDAL then saves beside the file
    (``.aux.xml``) or into it (``.vrt``), changing the user's data.
    """

    path: str
    name: str
    layer: QgsMapLayer | None = None


class CheckedWithGdal:
    """For raster parameters: a value is checked and shown without loading it. ``qgis_process``
    and Processing call ``checkValueIsAcceptable`` on every value, and a Processing model logs each
    child's values with ``valueAsPythonString``: QGIS's own versions load a path into a
    QgsRasterLayer (see :class:`RasterInput`). :meth:`EngineAlgorithm.checkParameterValues`
    checks the file with GDAL instead, with a message that names the problem."""

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS API name)
        return bool(raster_values(value)) or bool(self.flags() & QgsProcessingParameterDefinition.FlagOptional)

    def valueAsPythonString(self, value, context):  # noqa: N802 (QGIS API name)
        literals = [QgsProcessingUtils.stringToPythonLiteral(item.source() if isinstance(item, QgsMapLayer) else str(item))
                    for item in raster_values(value)]
        if not literals:
            return "None"
        if isinstance(self, QgsProcessingParameterMultipleLayers):
            return "[" + ", ".join(literals) + "]"
        return literals[0]

    def clone(self):
        copy = type(self)(self.name(), self.description())
        copy.setFlags(self.flags())
        return copy


class RasterLayerParameter(CheckedWithGdal, QgsProcessingParameterRasterLayer):
    """A raster (see :class:`CheckedWithGdal`)."""


class RasterLayersParameter(CheckedWithGdal, QgsProcessingParameterMultipleLayers):
    """Several rasters (see :class:`CheckedWithGdal`)."""

    def __init__(self, name: str, description: str, optional: bool = False):
        super().__init__(name, description, QgsProcessing.TypeRaster, optional=optional)


def is_raster_parameter(definition) -> bool:
    return isinstance(definition, QgsProcessingParameterRasterLayer) or (
        isinstance(definition, QgsProcessingParameterMultipleLayers)
        and definition.layerType() == QgsProcessing.TypeRaster)


def open_raster_layer(value, context) -> QgsMapLayer | None:
    """The raster layer ``value`` is (a layer, or the id/name of one open in the project or the
    context), without ever loading a file; ``None`` for a path."""
    if isinstance(value, QgsMapLayer):
        return value
    layer = QgsProcessingUtils.mapLayerFromString(str(value), context, False, QgsProcessingUtils.LayerHint.Raster)
    return layer if layer is not None and layer.type() == QgsMapLayer.RasterLayer else None


def raster_values(value) -> list:
    """The items of a raster (or multiple rasters) parameter value; [] when not set."""
    if isinstance(value, QgsProperty):
        value = value.staticValue()
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item for item in items if isinstance(item, QgsMapLayer) or (item is not None and str(item).strip())]


def open_readonly(path: str):
    """``path`` opened read-only with GDAL, quietly (nothing is computed or written); None if it cannot be."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError:
        return None
    finally:
        gdal.PopErrorHandler()


def raster_problem(path: str) -> str:
    """Why GDAL cannot read the raster file ``path`` (opened read-only, nothing written), or ''."""
    plain = not (path.lstrip().startswith(("<", "/vsi")) or re.match(r"^[A-Za-z][A-Za-z0-9_]+:", path))
    if plain and not Path(path).exists():
        return f"{path} does not exist"
    if plain and Path(path).is_dir():
        return f"{path} is a folder, not a raster file"
    if plain and Path(path).stat().st_size == 0:
        return f"{path} is an empty file (0 bytes)"
    dataset = open_readonly(path)
    if dataset is None or dataset.RasterCount == 0:
        return f"{path} is not a raster GDAL can read"
    return ""


def raster_crs(path: str) -> QgsCoordinateReferenceSystem:
    """The CRS of the raster file ``path``, read with GDAL (read-only; invalid when it has none)."""
    dataset = open_readonly(path)
    wkt = dataset.GetProjection() if dataset is not None else ""
    return QgsCoordinateReferenceSystem.fromWkt(wkt) if wkt else QgsCoordinateReferenceSystem()


def unacceptable(definition, value) -> str:
    """A message naming parameter ``definition``, the value and what it accepts."""
    what = f"{definition.description()} ({definition.name()})"
    if value is None or value == "":
        return f"{what} is required: give a value"
    if isinstance(definition, QgsProcessingParameterNumber):
        low, high = definition.minimum(), definition.maximum()
        accepted = f"a number >= {low:g}" if high > 1e300 else f"a number from {low:g} to {high:g}"
        return f"{what}: {value} is not accepted: give {accepted}"
    if isinstance(definition, QgsProcessingParameterEnum):
        options = ", ".join(f"{k} = {option}" for k, option in enumerate(definition.options()))
        return f"{what}: {value} is not one of the choices ({options})"
    if isinstance(value, str) and ("/" in value or "\\" in value) and not Path(value.split("|")[0]).exists():
        return f"{what}: {value} does not exist"
    if isinstance(definition, QgsProcessingParameterFeatureSource):
        return f"{what}: {value} is not a vector layer QGIS can open (give points or polygons)"
    if isinstance(definition, QgsProcessingParameterFile) and definition.extension():
        return f"{what}: {value} is not accepted: give a .{definition.extension()} file"
    return f"{what}: {value} is not accepted"


def renderer_classes(layer) -> list[dict]:
    """The class values, names and colours of a paletted raster style (what the user sees), else []."""
    if layer is None:
        return []
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return []
    return [{"value": int(c.value), "name": c.label or f"class {int(c.value)}", "color": c.color.name()}
            for c in renderer.classes()]


def parse_integers(text: str, what: str) -> list[int]:
    """Integers separated by commas or semicolons; ``what`` (the parameter's label) names them in the error."""
    try:
        return [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise QgsProcessingException(f"{what} must be integers separated by commas, got {text!r}") from None


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


def processing_error(message: str) -> QgsProcessingException:
    """The exception that reports ``message`` once. ``qgis_process`` prints an algorithm's
    exception twice (its message log, then its feedback): there the message goes to the log
    alone and the exception is left empty; in QGIS and ``processing.run`` it carries the message."""
    if QgsApplication.platform() != "qgis_process":
        return QgsProcessingException(message)
    QgsMessageLog.logMessage(message, "Processing", Qgis.Critical)
    return QgsProcessingException("")


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

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Processing's checks, except that raster files are checked with GDAL instead of being
        loaded into QGIS (see :class:`RasterInput`); every message names the parameter."""
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if is_raster_parameter(definition):
                items = raster_values(value)
                if not items and not definition.flags() & QgsProcessingParameterDefinition.FlagOptional:
                    return False, f"{definition.description()} ({definition.name()}) is required: give a raster"
                for item in items:
                    problem = "" if open_raster_layer(item, context) is not None else raster_problem(str(item))
                    if problem:
                        return False, f"{definition.description()} ({definition.name()}): {problem}"
            elif not definition.checkValueIsAcceptable(value, context):
                return False, unacceptable(definition, value)
        return True, ""

    def validateInputCrs(self, parameters, context):  # noqa: N802
        """Inputs in different CRSs are fine: the engine aligns them. (Processing's check would load
        every raster given as a path into QGIS, see :class:`RasterInput`.)"""
        return True

    def raster_inputs(self, parameters, name, context) -> list[RasterInput]:
        """The rasters of parameter ``name`` (see :class:`RasterInput`), in order."""
        inputs = []
        for item in raster_values(parameters.get(name)):
            layer = open_raster_layer(item, context)
            if layer is not None:
                inputs.append(RasterInput(raster_path(layer, name), layer.name(), layer))
            else:
                path = str(item).strip()
                inputs.append(RasterInput(path, Path(path).stem))
        return inputs

    def raster_input(self, parameters, name, context) -> RasterInput | None:
        """The raster of parameter ``name``, or ``None`` when it is not set."""
        inputs = self.raster_inputs(parameters, name, context)
        return inputs[0] if inputs else None

    def vector_path(self, parameters, name, context, feedback) -> tuple[str, str | None]:
        """(path, layer name) of a vector input; memory and database layers become a GeoPackage."""
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, name, context, VECTOR_FORMATS, "gpkg", feedback)
        return path, layer or None

    def make_results(self, result, parameters, context, feedback):
        return result

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        try:
            spec, outputs = self.build_job(parameters, context, feedback)
        except QgsProcessingException as error:
            raise processing_error(str(error)) from None
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
            raise processing_error(str(error)) from None
        return self.make_results(result, parameters, context, feedback)
