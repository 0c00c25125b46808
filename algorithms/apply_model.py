"""Apply model: serve a trained model over whole images, tile by tile, exactly."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from ..engine.contract import CLASSIFIER_PRODUCTS, EXECUTORS, PRECISIONS, SERVING_BORDERS, sibling_output
from .base import EngineAlgorithm, RasterLayersParameter, raster_crs
from .styles import CLASS_MAP, CONFIDENCE, IMAGE, PROBABILITIES, style_output

BORDER_LABELS = ("Reflect (mirror without repeating the edge pixel)", "Symmetric (mirror with the edge pixel)",
                 "Edge (repeat the edge pixel)", "Constant (zeros)",
                 "Shrink (no padding: keep only pixels whose whole receptive field is inside the image)")
PRECISION_LABELS = ("float32 (default)", "bfloat16 (native on CPUs with AVX512_BF16/AMX and on recent GPUs; "
                    "about 3 significant digits)")
OUTPUT_LABELS = ("Class map", "Confidence (highest probability)", "Probabilities (one band per class)")
STYLES = {"class_map": CLASS_MAP, "confidence": CONFIDENCE, "probabilities": PROBABILITIES}
#: The engine writes GeoTIFF only. QGIS 3.22 cannot narrow a raster destination's file filter per
#: parameter (it lists the provider's formats; the default extension is already .tif), so
#: build_job refuses other names instead of writing a GeoTIFF under a misleading one.
GEOTIFF_SUFFIXES = (".tif", ".tiff")
EXECUTOR_LABELS = ("Threads in the engine process", "Dask (a local cluster of worker processes, or a scheduler)")


class ApplyModel(EngineAlgorithm):
    ALG_ID = "applymodel"
    DISPLAY_NAME = "Apply model"
    GROUP_ID = "serving"
    HELP = (
        "Runs a trained DeepField model folder over whole images and writes a GeoTIFF. Give the "
        "sources in the model's input order (Describe model lists them); the first one is the "
        "reference: the output uses its CRS and its pixel grid (times the model's output scale). "
        "Sources in another CRS or on another grid are warped on the fly.\n\n"
        "How it works: to compute one output pixel the network looks at a square of input pixels "
        "around it, its receptive field (RF). Networks with pooling or strides only repeat themselves "
        "every few pixels, the expression field (EF). The image is processed in square tiles of "
        "TILE SIZE output pixels (rounded up to a multiple of EF); each tile also reads the "
        "receptive-field margin around it, so the result is exactly the same as running the model "
        "once on the whole image: no seams. Larger tiles waste less time on margins but need more "
        "memory; 0 picks the tile that costs least for this image within half the memory available.\n\n"
        "Faster compute (advanced, opt-in): bfloat16 arithmetic and XLA compilation; the result stays "
        "seamless, exact to the precision chosen.\n\n"
        "At the image edges the missing margin is filled by the border mode (reflect by default), "
        "or, with Shrink, the output is cropped to the pixels that need no padding.\n\n"
        "Classifiers write a class map (coloured, with class names), and on request a confidence "
        "raster and the class probabilities, next to the output (name_confidence.tif, "
        "name_probabilities.tif). Other models write their outputs as float bands. Tiles that are "
        "nodata (or NaN) in every source are not computed: they are written as nodata, never as a "
        "class or a probability of 0; a pixel whose own inputs are nodata in any band is nodata. Nodata is filled "
        "the way training filled it, whatever its value. The optional extent and mask polygons limit the "
        "area; pixels outside the mask are nodata.\n\n"
        "Test-time augmentation averages the network over the 8 flips and 90-degree rotations of every tile: "
        "smoother maps and, on NC Landsat (make bench), up to one point more overall accuracy and macro "
        "F-score, for 8 times the compute; still exact (tiles "
        "stitch like one pass).\n\n"
        "Execution (advanced): the Dask executor serves the tiles on worker processes (or on the "
        "cluster of a Dask scheduler address) as resumable tile files next to the output "
        "(<name>.tiles/, assembled by a VRT; running the same job again keeps the tiles already "
        "done); it needs dask[distributed] in the engine interpreter. More scenes: each replaces the "
        "first source in turn; every scene gets its own output (<name>_<scene>.tif) and the result is "
        "a VRT mosaic (<name>.vrt); a scene that fails is reported and the others still run."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model folder", behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(RasterLayersParameter("SOURCES", "Source images (in the model's input order)"))
        self.addParameter(QgsProcessingParameterEnum(
            "OUTPUTS", "Outputs (classifiers)", OUTPUT_LABELS, allowMultiple=True, defaultValue=[0]))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Extent (default: all sources)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "MASK", "Mask polygons (outside: nodata)", [QgsProcessing.TypeVectorPolygon], optional=True))
        advanced = [
            QgsProcessingParameterNumber("TILE_SIZE", "Tile size (output pixels, 0 = automatic)",
                                         defaultValue=0, minValue=0),
            QgsProcessingParameterEnum("BORDER", "Border mode", BORDER_LABELS, defaultValue=0),
            QgsProcessingParameterBoolean("TTA", "Test-time augmentation (average of 8 flips/rotations)",
                                          defaultValue=False),
            RasterLayersParameter(
                "SCENES", "More scenes (each replaces the first source; one output each and a VRT mosaic)",
                optional=True),
            QgsProcessingParameterEnum("EXECUTOR", "Execution: executor", EXECUTOR_LABELS, defaultValue=0),
            QgsProcessingParameterNumber("WORKERS", "Execution: workers (threads or local Dask processes)",
                                         defaultValue=1, minValue=1),
            QgsProcessingParameterString("SCHEDULER", "Execution: Dask scheduler address (empty: a local cluster)",
                                         optional=True),
            QgsProcessingParameterEnum("PRECISION", "Compute precision", PRECISION_LABELS, defaultValue=0),
            QgsProcessingParameterBoolean("JIT_COMPILE", "Compile the network with XLA", defaultValue=False),
        ]
        self.add_advanced(*advanced)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Output"))
        # the extra products, <output>_confidence.tif and <output>_probabilities.tif, for the modeler
        for kind in CLASSIFIER_PRODUCTS[1:]:
            self.addOutput(QgsProcessingOutputRasterLayer(kind.upper(), OUTPUT_LABELS[CLASSIFIER_PRODUCTS.index(kind)]))

    def build_job(self, parameters, context, feedback):
        sources = [source.path for source in self.raster_inputs(parameters, "SOURCES", context)]
        if not sources:
            raise QgsProcessingException("Give at least one source image (SOURCES).")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(output).suffix.lower() not in GEOTIFF_SUFFIXES:
            raise QgsProcessingException(f"Apply model writes GeoTIFF files: name the output *.tif, not {output}")
        kinds = [CLASSIFIER_PRODUCTS[k] for k in self.parameterAsEnums(parameters, "OUTPUTS", context)] or ["class_map"]
        spec = {
            "job": "apply_model",
            "model": self.parameterAsFile(parameters, "MODEL", context),
            "sources": sources,
            "output": output,
            "outputs": kinds,
            "tile_size": self.parameterAsInt(parameters, "TILE_SIZE", context) or None,
            "border": SERVING_BORDERS[self.parameterAsEnum(parameters, "BORDER", context)],
            "tta": self.parameterAsBoolean(parameters, "TTA", context),
            "extent": None,
            "precision": PRECISIONS[self.parameterAsEnum(parameters, "PRECISION", context)],
            "jit_compile": self.parameterAsBool(parameters, "JIT_COMPILE", context),
        }
        if parameters.get("EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context, raster_crs(sources[0]))
            spec["extent"] = [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]
        if parameters.get("MASK"):
            spec["mask"], spec["mask_layer"] = self.vector_path(parameters, "MASK", context, feedback)
        spec.update(executor=EXECUTORS[self.parameterAsEnum(parameters, "EXECUTOR", context)],
                    workers=self.parameterAsInt(parameters, "WORKERS", context) or 1,
                    scheduler=self.parameterAsString(parameters, "SCHEDULER", context).strip() or None)
        scenes = self.raster_inputs(parameters, "SCENES", context)
        if scenes:
            spec["scenes"] = [sources] + [[scene.path] + sources[1:] for scene in scenes]
        return spec, [output] + [sibling_output(output, kind) for kind in kinds[1:]]

    def make_results(self, result, parameters, context, feedback):
        for kind, path in result.get("outputs", {}).items():
            if kind in STYLES:
                load_as = "" if path == result["output"] else OUTPUT_LABELS[CLASSIFIER_PRODUCTS.index(kind)]
                style_output(context, path, STYLES[kind], load_as=load_as)
        if not any(kind in STYLES for kind in result.get("outputs", {})):
            # an image or regression output: rendered like the first source (an open layer) when it has its bands
            source = self.raster_inputs(parameters, "SOURCES", context)[0].layer
            if source is not None and QgsRasterLayer(result["output"], "output", "gdal").bandCount() == source.bandCount():
                style_output(context, result["output"], IMAGE, source=source)
        for name in result.get("warped_sources", []):
            feedback.pushInfo(f"{name} was warped on the fly onto the reference grid")
        extras = {kind.upper(): path for kind, path in result.get("outputs", {}).items() if kind in CLASSIFIER_PRODUCTS[1:]}
        return {"OUTPUT": result["output"], **extras}
