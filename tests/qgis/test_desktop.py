"""DeepField as a user sees it in QGIS desktop: the toolbox, the algorithms' metadata, styled outputs.

The screenshot test drives the real ``qgis.bin`` under Xvfb (scripts/desktop_screenshot.py) and
publishes the image as docs/screenshot.png (referenced from the README).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ..conftest import REPO

DOCS_SCREENSHOT = REPO / "docs" / "screenshot.png"
MAX_PUBLISHED_BYTES = 300_000


def _load_driver():
    spec = importlib.util.spec_from_file_location("desktop_screenshot", REPO / "scripts" / "desktop_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = _load_driver()
CLASS_NAMES = [name for _, name, _ in driver.NC_CLASSES]


@pytest.fixture(scope="module")
def desktop(tmp_path_factory, data_dir):
    """(screenshot pixels (rows, cols, 3) uint8, its path, the state QGIS reported)."""
    from PIL import Image

    png = tmp_path_factory.mktemp("desktop") / "screenshot.png"
    state = driver.take_screenshot(png, timeout=120)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    return pixels, png, state


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


# -- the desktop screenshot -----------------------------------------------------------------


def test_qgis_ran_the_capture_without_errors(desktop):
    _, _, state = desktop
    assert state["errors"] == []
    assert state["layer_valid"] and state["rendered"]


def test_screenshot_is_a_full_main_window_and_not_blank(desktop):
    pixels, _, _ = desktop
    rows, cols, _ = pixels.shape
    assert (cols, rows) == driver.SCREEN and cols >= 800 and rows >= 600
    distinct = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(distinct) > 200  # widgets, antialiased text, icons and the map: not a blank window


def test_the_class_colours_are_drawn_on_the_canvas(desktop):
    """Nearest-neighbour rendering keeps the palette's exact colours: count the pixels of each."""
    assert_class_colours_drawn(desktop[0])


def assert_class_colours_drawn(pixels):
    flat = pixels.reshape(-1, 3)
    counts = {name: int(np.all(flat == _hex_rgb(color), axis=1).sum()) for _, name, color in driver.NC_CLASSES}
    drawn = [name for name, count in counts.items() if count >= 50]  # more than a legend swatch
    assert len(drawn) >= 5, counts
    assert counts["forest"] > 50_000  # the dominant class fills much of the canvas (107 643 of 216 627 px)


def test_the_class_map_is_loaded_through_processing_with_its_class_names(desktop):
    """Processing's loading path + styles.style_output: the sidecar's 7 classes, not GDAL's 256 entries."""
    assert_class_map_styled(desktop[2])


def assert_class_map_styled(state):
    assert state["renderer"] == "paletted"
    assert [c["label"] for c in state["classes"]] == CLASS_NAMES
    assert [c["color"] for c in state["classes"]] == [color for _, _, color in driver.NC_CLASSES]
    assert [int(c["value"]) for c in state["classes"]] == list(range(1, 8))


def test_the_toolbox_shows_every_deepfield_algorithm_under_its_group(desktop):
    assert_toolbox_lists_the_provider(desktop[2])


def assert_toolbox_lists_the_provider(state):
    assert state["toolbox_visible"] and state["toolbox_filter"] == "deepfield"
    assert "deepfield:checkenvironment" in state["registry_ids"]
    rows = state["toolbox_rows"]
    assert [r["text"] for r in rows if r["depth"] == 0] == ["DeepField"]
    shown = sorted(r["algorithm"] for r in rows if r["algorithm"])
    assert shown == state["registry_ids"]
    groups = [r for r in rows if r["depth"] == 1]
    assert groups and all(r["expanded"] for r in groups)
    assert "Tools" in [r["text"] for r in groups]


def test_screenshot_is_published_in_docs_and_referenced_from_the_readme(desktop):
    """Only a screenshot that passes every check above replaces docs/screenshot.png.

    It is replaced when ``DEEPFIELD_UPDATE_SCREENSHOT=1`` (``make screenshot``), so that a test
    run leaves the checkout as it was.
    """
    pixels, png, state = desktop
    assert state["errors"] == []
    assert_class_colours_drawn(pixels)
    assert_class_map_styled(state)
    assert_toolbox_lists_the_provider(state)
    assert 20_000 < png.stat().st_size < MAX_PUBLISHED_BYTES
    if os.environ.get("DEEPFIELD_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(png, DOCS_SCREENSHOT)
    assert 20_000 < DOCS_SCREENSHOT.stat().st_size < MAX_PUBLISHED_BYTES
    assert "![DeepField in QGIS](docs/screenshot.png)" in (REPO / "README.md").read_text()


# -- every algorithm's metadata (in-process) ------------------------------------------------


def test_every_algorithm_has_an_icon_a_group_and_help(qgis_app):
    from qgis.core import QgsApplication

    from deepfield.algorithms.base import EngineAlgorithm

    algorithms = QgsApplication.processingRegistry().providerById("deepfield").algorithms()
    assert algorithms
    for algorithm in algorithms:
        where = algorithm.id()
        assert not algorithm.icon().pixmap(16, 16).isNull(), where
        assert algorithm.group() and algorithm.groupId(), where
        assert algorithm.group() in EngineAlgorithm.GROUPS.values(), where
        assert algorithm.displayName() and algorithm.name() == algorithm.name().lower(), where
        own_help = algorithm.shortHelpString().split("Full documentation")[0].strip()
        assert len(own_help) > 40, where
        assert algorithm.helpUrl(), where


# -- outputs styled when Processing loads them ----------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir):
    """Rasters as engine jobs write them (engine GeoTiffWriter): a class map with its sidecars,
    2-band probabilities in 0..1, and a 3-band image."""
    from osgeo import gdal

    from deepfield.engine.geometry import Grid, Window
    from deepfield.engine.rasters import GeoTiffWriter

    folder = tmp_path_factory.mktemp("prepared")
    class_map = driver.write_class_map(folder / "classes.tif")
    grid = Grid(630534.0, 228114.0, 28.5, 28.5, 64, 48, gdal.Open(str(class_map)).GetProjection())
    rng = np.random.default_rng(0)
    p = rng.random((48, 64, 1), dtype=np.float32)
    paths = {"class_map": class_map, "probabilities": folder / "probabilities.tif", "image": folder / "image.tif"}
    with GeoTiffWriter(paths["probabilities"], grid, 2, "float32", nodata=-9999.0) as writer:
        writer.write(Window(0, 0, 64, 48), np.concatenate([p, 1 - p], axis=-1))
    with GeoTiffWriter(paths["image"], grid, 3, "uint8") as writer:
        writer.write(Window(0, 0, 64, 48), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return paths


def _styled_output_algorithm():
    """A real Processing algorithm that writes its output as an engine job does (file + sidecars
    at the destination) and styles it with styles.style_output, like DeepField's algorithms."""
    from qgis.core import (QgsProcessingAlgorithm, QgsProcessingParameterFile, QgsProcessingParameterRasterDestination,
                           QgsProcessingParameterRasterLayer, QgsProcessingParameterString)

    from deepfield.algorithms.styles import CONFIDENCE, style_output

    class WriteStyledOutput(QgsProcessingAlgorithm):
        def name(self):
            return "writestyledoutput"

        def displayName(self):  # noqa: N802
            return "Write styled output"

        def createInstance(self):  # noqa: N802
            return WriteStyledOutput()

        def initAlgorithm(self, config=None):  # noqa: N802
            self.addParameter(QgsProcessingParameterFile("PREPARED", "Prepared raster"))
            self.addParameter(QgsProcessingParameterString("KIND", "Output kind"))
            self.addParameter(QgsProcessingParameterRasterLayer("SOURCE", "Styled like", optional=True))
            self.addParameter(QgsProcessingParameterString("EXTRA", "Extra file to load", optional=True))
            self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Output"))

        def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
            prepared = Path(self.parameterAsFile(parameters, "PREPARED", context))
            output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
            shutil.copyfile(prepared, output)
            for sidecar in (prepared.with_suffix(".qml"), Path(f"{prepared}.aux.xml")):
                if sidecar.exists():
                    shutil.copyfile(sidecar, Path(output).with_suffix(".qml") if sidecar.suffix == ".qml"
                                    else f"{output}.aux.xml")
            kind = self.parameterAsString(parameters, "KIND", context)
            style_output(context, output, kind, source=self.parameterAsRasterLayer(parameters, "SOURCE", context))
            extra = self.parameterAsString(parameters, "EXTRA", context)
            if extra:
                style_output(context, extra, CONFIDENCE, load_as="Confidence")
            return {"OUTPUT": output}

    return WriteStyledOutput()


@pytest.fixture
def project(qgis_app):
    from qgis.core import QgsProject

    yield QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()


def _run_and_load(prepared_path, kind, output, **extra):
    import processing

    algorithm = _styled_output_algorithm()
    algorithm.initAlgorithm()
    return processing.runAndLoadResults(algorithm, {"PREPARED": str(prepared_path), "KIND": kind,
                                                    "OUTPUT": str(output), **extra})


def _loaded(project, path):
    layers = [layer for layer in project.mapLayers().values() if Path(layer.source()) == Path(path)]
    assert len(layers) == 1, [layer.source() for layer in project.mapLayers().values()]
    return layers[0]


def test_a_loaded_class_map_gets_the_class_colours_and_names(project, prepared, tmp_path):
    output = tmp_path / "map.tif"
    _run_and_load(prepared["class_map"], "class_map", output)
    renderer = _loaded(project, output).renderer()
    assert renderer.type() == "paletted"
    assert [(int(c.value), c.label, c.color.name()) for c in renderer.classes()] == list(driver.NC_CLASSES)


def test_loaded_probabilities_and_an_extra_confidence_file_get_a_0_to_1_colour_ramp(project, prepared, tmp_path):
    from qgis.core import QgsStyle

    from deepfield.algorithms.styles import PROBABILITY_RAMP

    output, confidence = tmp_path / "p.tif", tmp_path / "p_confidence.tif"
    shutil.copyfile(prepared["probabilities"], confidence)
    _run_and_load(prepared["probabilities"], "probabilities", output, EXTRA=str(confidence))
    ramp = QgsStyle.defaultStyle().colorRamp(PROBABILITY_RAMP)
    for path in (output, confidence):
        renderer = _loaded(project, path).renderer()
        assert renderer.type() == "singlebandpseudocolor"
        assert (renderer.band(), renderer.classificationMin(), renderer.classificationMax()) == (1, 0.0, 1.0)
        items = renderer.shader().rasterShaderFunction().colorRampItemList()
        assert items[0].color.name() == ramp.color(0).name() and items[-1].color.name() == ramp.color(1).name()
    assert _loaded(project, confidence).name() == "Confidence"


def test_a_loaded_image_gets_the_input_layers_band_rendering(project, prepared, tmp_path):
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer, QgsRasterLayer

    source = QgsRasterLayer(str(prepared["image"]), "input")
    renderer = QgsMultiBandColorRenderer(source.dataProvider(), 3, 1, 2)
    stretch = QgsContrastEnhancement(source.dataProvider().dataType(3))
    stretch.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    stretch.setMinimumValue(17)
    stretch.setMaximumValue(211)
    renderer.setRedContrastEnhancement(stretch)
    source.setRenderer(renderer)
    project.addMapLayer(source)
    output = tmp_path / "superresolved.tif"
    _run_and_load(prepared["image"], "image", output, SOURCE=source.id())
    styled = _loaded(project, output).renderer()
    assert styled.type() == "multibandcolor"
    assert (styled.redBand(), styled.greenBand(), styled.blueBand()) == (3, 1, 2)
    red = styled.redContrastEnhancement()
    assert (red.minimumValue(), red.maximumValue()) == (17, 211)


def test_an_output_not_opened_is_left_alone(qgis_app, project, prepared, tmp_path):
    import processing

    algorithm = _styled_output_algorithm()
    algorithm.initAlgorithm()
    output = tmp_path / "map.tif"
    processing.run(algorithm, {"PREPARED": str(prepared["class_map"]), "KIND": "class_map", "OUTPUT": str(output)})
    assert output.exists() and not project.mapLayers()


def test_an_unknown_output_kind_is_refused(qgis_app):
    from qgis.core import QgsProcessingContext

    from deepfield.algorithms.styles import style_output

    with pytest.raises(ValueError, match="unknown output kind 'mask'.*class_map"):
        style_output(QgsProcessingContext(), "/tmp/x.tif", "mask")
