"""Styles of DeepField outputs when Processing loads them into the project.

Processing loads a raster output with GDAL's colour table but without its ``.qml`` sidecar
(``QgsProcessingUtils.mapLayerFromString`` does not load default styles), so an algorithm
names what each output is, in ``processAlgorithm`` (``build_job``/``make_results``)::

    style_output(context, path, CLASS_MAP)               # the engine's <path>.qml: class colours, names
    style_output(context, path, PROBABILITIES)           # band 1 on a 0..1 colour ramp
    style_output(context, path, IMAGE, source=layer)     # the input layer's band rendering
    style_output(context, sibling, CONFIDENCE, load_as="Confidence")  # an extra file, loaded too
    style_output(context, path, CLASS_POLYGONS)          # a GeoPackage's own default style (layer_styles)

``path`` is the output as ``parameterAsOutputLayer`` returned it. Nothing happens when the user
chose not to open the output, or without a project (``qgis_process``).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
)
from qgis.PyQt.QtXml import QDomDocument

CLASS_MAP, PROBABILITIES, CONFIDENCE, IMAGE = "class_map", "probabilities", "confidence", "image"
CLASS_POLYGONS = "class_polygons"
KINDS = (CLASS_MAP, PROBABILITIES, CONFIDENCE, IMAGE, CLASS_POLYGONS)
PROBABILITY_RAMP = "Viridis"  # QGIS default style's ramp for values 0..1 (probabilities, confidence)

# Processing keeps only a C++ pointer to a post-processor: Python must keep it alive until loaded.
_KEEP_ALIVE: dict[str, "OutputStyle"] = {}


class OutputStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies :func:`apply_style` to a layer Processing has just loaded (on the main thread)."""

    def __init__(self, kind: str, source_style: str = ""):
        super().__init__()
        self.kind = kind
        self.source_style = source_style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        if not apply_style(layer, self.kind, self.source_style):
            feedback.pushWarning(f"DeepField: no {self.kind.replace('_', ' ')} style for {layer.source()}")


def style_output(context: QgsProcessingContext, path: str, kind: str, source: QgsMapLayer | None = None,
                 load_as: str = "") -> None:
    """Style output ``path`` as ``kind`` when Processing loads it; ``load_as`` (a layer name) also
    loads a file that is not an output parameter. ``source``: the layer an ``IMAGE`` looks like."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; use one of {', '.join(KINDS)}")
    if load_as and context.project() is not None and not context.willLoadLayerOnCompletion(path):
        context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(load_as, context.project(), load_as))
    if not context.willLoadLayerOnCompletion(path):
        return
    processor = OutputStyle(kind, layer_style(source) if source is not None else "")
    _KEEP_ALIVE[path] = processor
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)


def layer_style(layer: QgsMapLayer) -> str:
    """A layer's symbology (its renderer: bands, contrast) as QML text."""
    doc = QDomDocument()
    layer.exportNamedStyle(doc, categories=QgsMapLayer.Symbology)
    return doc.toString()


def apply_style(layer: QgsMapLayer, kind: str, source_style: str = "") -> bool:
    """Style a loaded output layer; ``False`` when there is nothing to apply (no sidecar, no source)."""
    if kind == CLASS_MAP:
        sidecar = Path(layer.source()).with_suffix(".qml")
        applied = sidecar.exists() and layer.loadNamedStyle(str(sidecar))[1]
    elif kind == CLASS_POLYGONS:  # the default style stored in the GeoPackage (engine/layer_styles.py)
        applied = layer.loadDefaultStyle()[1]
    elif kind in (PROBABILITIES, CONFIDENCE):
        layer.setRenderer(probability_renderer(layer))
        applied = True
    else:
        doc = QDomDocument()
        applied = bool(source_style) and doc.setContent(source_style) and layer.importNamedStyle(
            doc, QgsMapLayer.Symbology)[0]
    if applied:
        layer.triggerRepaint()
        layer.emitStyleChanged()
    return applied


def probability_renderer(layer, band: int = 1) -> QgsSingleBandPseudoColorRenderer:
    """Band ``band`` on the :data:`PROBABILITY_RAMP` from 0 to 1, interpolated."""
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    renderer.createShader(QgsStyle.defaultStyle().colorRamp(PROBABILITY_RAMP))
    return renderer
