"""Extract patches: cut co-registered patches from several rasters at sample positions (a dataset folder)."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..engine.contract import LABEL_KINDS, as_source_name
from .base import EngineAlgorithm, RasterLayerParameter, RasterLayersParameter, parse_classes, renderer_classes

LABEL_KIND_LABELS = ("Class of each position (patch classification)",
                     "Label raster or polygon patches (segmentation)",
                     "Target image patches (regression / super-resolution)")


class ExtractPatches(EngineAlgorithm):
    ALG_ID = "extractpatches"
    DISPLAY_NAME = "Extract patches"
    GROUP_ID = "sampling"
    HELP = (
        "Cuts, at every sample position, one patch per source raster, in the source's own pixels and "
        "centred on the same point (snapped to the coarsest raster's pixel centre or corner), so a 0.5 m "
        "and a 1 m source give co-registered patches. The first source is the reference. A raster whose CRS "
        "or grid does not line up with the reference's (spacing not a simple multiple of it, pixel corners off "
        "its grid) is warped on the fly onto it, exactly as Apply model will read it (logged). Patch sizes: "
        "one integer per source, comma-separated (e.g. 64,32), or one for the first source: every other source then "
        "gets the same ground (64 px at 0.5 m -> 32 px at 1 m); names likewise (default: layer names). "
        "Labels: the positions' class field (integers or text; text names become the values 1..K in sorted "
        "order), patches of a label raster (segmentation; class values become indices, nodata = ignore), "
        "segmentation polygons with a class field (integers or text), rasterised per patch on the first "
        "source's grid (pixels outside every polygon are ignored in the loss and the scores, or, with a "
        "background class name, are that class: e.g. building footprints with background = background), or "
        "patches of a target image. Class names: value=name pairs such as "
        "1=developed:#e31a1c,2=agriculture (colours optional); without them, the label raster's paletted "
        "style in QGIS, else the values; only listed classes are learnt. Positions whose patches leave a source, "
        "are more than MAX NODATA nodata, or have no label are rejected and counted in the log. Split zones "
        "(optional, segmentation): polygons with a text field 'split' (train, valid or test), such as Select "
        "samples' blocks or zones you draw; a patch's label pixels outside the zones of its own split are "
        "ignored, so patches larger than the zones, or crossing their borders, never learn or validate on "
        "another split's labels. Patches partly nodata are kept as they are: training and Apply model treat "
        "nodata alike (filled after normalisation), so the map has no edge effect along nodata borders; label "
        "pixels on nodata are not learnt. A label raster on the first source's grid is checked against it: when its "
        "class boundaries line up clearly better with the image's edges a pixel or two away (labels made from "
        "other imagery or another base map), the log warns with the shift in pixels and map units, since a "
        "network trained with flips and rotations cannot learn it (Co-register image to labels moves the image "
        "onto them). The output folder is a DeepField "
        "dataset (manifest.json, .npy shards per split, positions.gpkg) for Train model."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(RasterLayersParameter("SOURCES", "Source rasters (the first is the reference)"))
        self.addParameter(QgsProcessingParameterString(
            "PATCH_SIZES", "Patch size per source (pixels, comma-separated; one = the first source's, the same "
            "ground for the others)", defaultValue="32"))
        self.addParameter(QgsProcessingParameterString(
            "NAMES", "Source names (comma-separated; default: layer names)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "POSITIONS", "Sample positions (points, e.g. from Select samples)", [QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterEnum("LABEL_KIND", "Labels", LABEL_KIND_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", "Class field (class labels)", defaultValue="class", parentLayerParameterName="POSITIONS",
            optional=True))
        self.addParameter(RasterLayerParameter(
            "LABEL_RASTER", "Label raster or target image", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABEL_POLYGONS", "Segmentation polygons (instead of a label raster)", [QgsProcessing.TypeVectorPolygon],
            optional=True))
        self.addParameter(QgsProcessingParameterField(
            "LABEL_POLYGON_FIELD", "Segmentation polygons: class field (integers or text)",
            parentLayerParameterName="LABEL_POLYGONS", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "LABEL_BACKGROUND", "Segmentation polygons: class of the pixels outside every polygon (a name, e.g. "
            "background; empty: those pixels are not learnt)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "LABEL_PATCH_SIZE", "Label patch size (label raster pixels; 0 = the first source's patch size x its "
            "spacing / the label's spacing, rounded: the same ground area)", defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterString(
            "CLASSES", "Class names (value=name or value=name:#colour, comma-separated; "
            "default: the label raster's paletted style, else the values)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "SPLIT_ZONES", "Split zones (segmentation: polygons whose 'split' field is train, valid or test; a patch "
            "learns only the labels inside its own split's zones)", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_NODATA", "Max nodata per patch (fraction of its pixels, 0-1)", QgsProcessingParameterNumber.Double,
            defaultValue=0.5, minValue=0.0, maxValue=1.0))
        shard = QgsProcessingParameterNumber("SHARD_SIZE", "Patches per shard file", defaultValue=1024, minValue=1)
        self.add_advanced(shard)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Dataset folder"))
        self.addOutput(QgsProcessingOutputFile("MANIFEST", "Dataset manifest"))
        self.addOutput(QgsProcessingOutputVectorLayer("ACCEPTED", "Accepted positions", QgsProcessing.TypeVectorPoint))
        for split in ("TRAIN", "VALID", "TEST"):
            self.addOutput(QgsProcessingOutputNumber(split, f"{split.lower()} patches"))

    def build_job(self, parameters, context, feedback):
        layers = self.raster_inputs(parameters, "SOURCES", context)
        if not layers:
            raise QgsProcessingException("Give at least one source raster (SOURCES).")
        sizes = _split(self.parameterAsString(parameters, "PATCH_SIZES", context))
        if len(sizes) != len(layers) and len(sizes) != 1:
            raise QgsProcessingException(f"{len(layers)} sources but {len(sizes)} patch sizes; give one per source.")
        try:
            sizes = [int(size) for size in sizes]
        except ValueError:
            raise QgsProcessingException(f"Patch sizes must be integers: {sizes}") from None
        sizes += [None] * (len(layers) - len(sizes))  # one size: the first source's ground for every source
        names = _split(self.parameterAsString(parameters, "NAMES", context)) or [as_source_name(layer.name) for layer in layers]
        if len(names) != len(layers):
            raise QgsProcessingException(f"{len(layers)} sources but {len(names)} names; give one per source.")
        output = self.parameterAsString(parameters, "OUTPUT", context)
        positions, layer = self.vector_path(parameters, "POSITIONS", context, feedback)
        kind = LABEL_KINDS[self.parameterAsEnum(parameters, "LABEL_KIND", context)]
        label, raster = {"kind": kind}, None
        if kind == "class":
            class_field = self.parameterAsString(parameters, "CLASS_FIELD", context)
            if not class_field:
                raise QgsProcessingException("Class labels need the positions' class field.")
        elif kind == "segmentation" and parameters.get("LABEL_POLYGONS"):
            label["path"], label["layer"] = self.vector_path(parameters, "LABEL_POLYGONS", context, feedback)
            label["class_field"] = self.parameterAsString(parameters, "LABEL_POLYGON_FIELD", context)
            if not label["class_field"]:
                raise QgsProcessingException("Segmentation polygons need their class field.")
            label["background"] = self.parameterAsString(parameters, "LABEL_BACKGROUND", context).strip() or None
            label["patch_size"] = self.parameterAsInt(parameters, "LABEL_PATCH_SIZE", context) or None
            class_field = None
        else:
            raster = self.raster_input(parameters, "LABEL_RASTER", context)
            if raster is None:
                raise QgsProcessingException(f"{kind} labels need a label raster or target image (LABEL_RASTER)"
                                             + (" or segmentation polygons (LABEL_POLYGONS)." if kind == "segmentation"
                                                else "."))
            if self.parameterAsString(parameters, "LABEL_BACKGROUND", context).strip():
                raise QgsProcessingException(
                    "The class of the pixels outside every polygon (LABEL_BACKGROUND) is for segmentation "
                    "polygons (LABEL_POLYGONS); a label raster's unlabelled pixels are its nodata: leave it empty.")
            label["path"] = raster.path
            label["patch_size"] = self.parameterAsInt(parameters, "LABEL_PATCH_SIZE", context) or None
            class_field = None
        classes = parse_classes(self.parameterAsString(parameters, "CLASSES", context) or "")
        if not classes and raster is not None:
            classes = renderer_classes(raster.layer)
        if classes and kind != "image":
            label["classes"] = classes
        spec = {
            "job": "extract_patches",
            "sources": [{"path": layer.path, "patch_size": s, "name": n}
                        for layer, s, n in zip(layers, sizes, names)],
            "positions": positions,
            "layer": layer,
            "class_field": class_field,
            "label": label,
            "shard_size": self.parameterAsInt(parameters, "SHARD_SIZE", context),
            "max_nodata": self.parameterAsDouble(parameters, "MAX_NODATA", context),
            "output": output,
        }
        if parameters.get("SPLIT_ZONES"):
            spec["split_zones"], spec["split_zones_layer"] = self.vector_path(parameters, "SPLIT_ZONES", context,
                                                                              feedback)
        return spec, [output]

    def make_results(self, result, parameters, context, feedback):
        folder = Path(result["output"])
        splits = result["splits"]
        return {"OUTPUT": str(folder), "MANIFEST": str(folder / "manifest.json"),
                "ACCEPTED": str(folder / "positions.gpkg"),
                "TRAIN": splits.get("train", 0), "VALID": splits.get("valid", 0), "TEST": splits.get("test", 0)}


def _split(text: str) -> list:
    return [part.strip() for part in (text or "").replace(";", ",").split(",") if part.strip()]
