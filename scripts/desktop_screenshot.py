"""A screenshot of DeepField in the real QGIS desktop: the Processing toolbox and a styled class map.

Run (from the checkout, with the venv's Python)::

    .venv/bin/python scripts/desktop_screenshot.py docs/screenshot.png

The driver (:func:`take_screenshot`, run outside QGIS) writes a class map with the engine's
GeoTIFF writer (colour table, category names, ``.qml`` sidecar), starts ``Xvfb`` on a free
display and ``qgis.bin`` in a private profile with the plugin enabled, and runs
:func:`capture` inside QGIS (``--code``). :func:`capture` opens the class map, shows the
Processing toolbox filtered on DeepField with its groups expanded, zooms the map canvas to the
class map, waits for the rendering, saves the main window as a PNG and writes
``<png>.json`` (the layer's renderer and classes, the provider's algorithms, the toolbox rows).
The whole run is killed (process group) after ``timeout`` seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINPATH = REPO / ".build" / "plugins"
for _folder in (PLUGINPATH, Path(__file__).parent):  # the deepfield package; demo_data next to this file
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
SCREEN = (1280, 800)  # pixels: the Xvfb screen and the main window
RENDER_TIMEOUT_MS = 30_000  # inside QGIS: grab anyway if the canvas never reports a finished render
from demo_data import NC_CLASSES  # noqa: E402


# -- outside QGIS ---------------------------------------------------------------------------


def write_class_map(path: Path, source: Path | None = None) -> Path:
    """Write ``source`` (land-cover values 1..7, float; default: the NC sample data's
    ``strata.tif``) as a Byte class map (nodata 0) through the engine's :class:`GeoTiffWriter`,
    which adds the colour table, the category names and the ``.qml`` sidecar."""
    import numpy as np
    from demo_data import nc_landsat_folder
    from osgeo import gdal

    from deepfield.engine.geometry import Window
    from deepfield.engine.classes import ClassStyle
    from deepfield.engine.rasters import GeoTiffWriter, raster_info

    source = source or nc_landsat_folder() / "strata.tif"
    info = raster_info(source)
    values = gdal.Open(str(source)).ReadAsArray()
    known = np.isin(values, [value for value, _, _ in NC_CLASSES])
    classes = np.where(known, values, 0).astype(np.uint8)
    styles = tuple(ClassStyle(value, name, color) for value, name, color in NC_CLASSES)
    with GeoTiffWriter(path, info.grid, 1, "uint8", nodata=0, descriptions=("class",), classes=styles) as writer:
        writer.write(Window(0, 0, info.width, info.height), classes[:, :, None])
    return path


def start_xvfb(size: tuple[int, int] = SCREEN) -> tuple[subprocess.Popen, str]:
    """Start ``Xvfb`` on a display number it picks itself (``-displayfd``); return it and ``:N``."""
    if shutil.which("Xvfb") is None:
        raise RuntimeError("Xvfb not found: apt-get install xvfb (make setup installs it)")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size[0]}x{size[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        xvfb.kill()
        raise RuntimeError("Xvfb did not start (no display number reported)")
    return xvfb, f":{number}"


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """Terminate a process started with ``start_new_session`` and its group; kill it if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def private_profile(home: Path) -> Path:
    """A fresh QGIS profile folder with the DeepField and Processing plugins enabled."""
    settings = home / "profiles" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text("[PythonPlugins]\ndeepfield=true\nprocessing=true\n\n"
                        "[qgis]\ncheckVersion=false\nshowTips=false\n", encoding="utf-8")
    return home / "profiles"


def take_screenshot(png: Path, class_map: Path | None = None, timeout: float = 120) -> dict:
    """Run QGIS desktop under Xvfb and return the state :func:`capture` wrote next to ``png``.

    Raises ``RuntimeError`` with QGIS's output when no screenshot was written or QGIS hangs.
    """
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    state_path = png.with_suffix(".json")
    for stale in (png, state_path):
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepfield-desktop-") as tmp:
        home = Path(tmp)
        class_map = Path(class_map) if class_map else write_class_map(home / "landcover_classes.tif")
        config = {"class_map": str(class_map), "png": str(png), "state": str(state_path), "size": SCREEN}
        (home / "config.json").write_text(json.dumps(config), encoding="utf-8")
        startup = home / "startup.py"
        startup.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                           f"import desktop_screenshot\ndesktop_screenshot.capture({str(home / 'config.json')!r})\n",
                           encoding="utf-8")
        env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(home / "run"), QT_QPA_PLATFORM="xcb",
                   QGIS_PLUGINPATH=str(PLUGINPATH), DEEPFIELD_PYTHON=str(REPO / ".venv" / "bin" / "python"))
        env.pop("QGIS_CUSTOM_CONFIG_PATH", None)  # a test process's start_app() profile: not ours
        (home / "run").mkdir(mode=0o700)
        xvfb, env["DISPLAY"] = start_xvfb()
        try:
            qgis = subprocess.Popen(["qgis.bin", "--nologo", "--noversioncheck", "--profiles-path",
                                     str(private_profile(home)), "--code", str(startup)],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            try:
                output, _ = qgis.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(qgis.pid, signal.SIGKILL)
                output, _ = qgis.communicate()
                raise RuntimeError(f"QGIS did not finish in {timeout:.0f} s; its output:\n{output[-4000:]}") from None
        finally:
            stop(xvfb)
    if not (png.exists() and state_path.exists()):
        raise RuntimeError(f"QGIS exited ({qgis.returncode}) without a screenshot; its output:\n{output[-4000:]}")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    state["qgis_returncode"] = qgis.returncode
    return state


# -- inside QGIS (qgis.bin --code) ------------------------------------------------------------


def capture(config_path: str) -> None:
    """Stage the main window and grab it once the canvas has rendered the class map, then quit."""
    from qgis.core import QgsApplication, QgsProject
    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QDockWidget
    from qgis.utils import iface, plugins

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    window = iface.mainWindow()
    canvas = iface.mapCanvas()
    state: dict = {"errors": []}

    def finish():
        if state.get("finished"):
            return
        state["finished"] = True
        try:
            window.grab().save(config["png"], "PNG")
            state.update(toolbox_state(plugins["processing"].toolbox))
        except Exception as error:
            state["errors"].append(repr(error))
        Path(config["state"]).write_text(json.dumps(state, indent=1), encoding="utf-8")
        QgsProject.instance().setDirty(False)  # no "save the project?" question on exit
        QgsApplication.exit(0)

    def rendered():
        canvas.mapCanvasRefreshed.disconnect(rendered)
        state["rendered"] = True
        QTimer.singleShot(500, finish)  # let the toolbox and legend repaint

    def stage():
        try:
            window.setGeometry(0, 0, *config["size"])
            browser = window.findChild(QDockWidget, "Browser")
            if browser is not None:
                browser.hide()  # leave the Layers panel the room for the class legend
            layer = load_like_processing(config["class_map"], "Land cover (class map)")
            state.update(layer_state(layer))
            toolbox = plugins["processing"].toolbox
            toolbox.setUserVisible(True)
            toolbox.searchBox.setText("deepfield")
            toolbox.algorithmTree.expandAll()
            toolbox.algorithmTree.clearSelection()
            canvas.mapCanvasRefreshed.connect(rendered)
            canvas.setExtent(layer.extent())
            canvas.refresh()
        except Exception as error:
            state["errors"].append(repr(error))
            finish()

    QTimer.singleShot(1000, stage)  # after the startup event loop has shown the window
    QTimer.singleShot(RENDER_TIMEOUT_MS, finish)  # never wait forever for a render signal


def load_like_processing(path: str, name: str):
    """Load ``path`` as Processing loads an algorithm's class map output: through
    ``handleAlgorithmResults``, styled by :func:`deepfield.algorithms.styles.style_output`."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    from deepfield.algorithms.styles import CLASS_MAP, style_output

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    style_output(context, path, CLASS_MAP, load_as=name)
    # Any algorithm will do: Processing only reads its id and output names to pick a style.
    algorithm = QgsApplication.processingRegistry().algorithmById("deepfield:checkenvironment")
    if not handleAlgorithmResults(algorithm, context):
        raise RuntimeError(f"Processing could not load {path}")
    return QgsProject.instance().mapLayersByName(name)[0]


def layer_state(layer) -> dict:
    """The loaded layer's renderer type and classes (value, label, colour)."""
    renderer = layer.renderer()
    classes = [{"value": c.value, "label": c.label, "color": c.color.name()}
               for c in getattr(renderer, "classes", lambda: [])()]
    return {"layer_valid": layer.isValid(), "renderer": renderer.type(), "classes": classes}


def toolbox_state(toolbox) -> dict:
    """The provider's algorithms in the registry, and what the toolbox tree shows (visible rows)."""
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("deepfield")
    registry_ids = sorted(a.id() for a in provider.algorithms()) if provider else []
    tree = toolbox.algorithmTree
    model = tree.model()
    rows = []

    def walk(parent, depth):
        for row in range(model.rowCount(parent)):
            index = model.index(row, 0, parent)
            algorithm = tree.algorithmForIndex(index)
            rows.append({"depth": depth, "text": index.data(), "expanded": tree.isExpanded(index),
                         "algorithm": algorithm.id() if algorithm else None})
            walk(index, depth + 1)

    walk(tree.rootIndex(), 0)
    return {"registry_ids": registry_ids, "toolbox_visible": toolbox.isVisible(),
            "toolbox_filter": toolbox.searchBox.text(), "toolbox_rows": rows}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshot.png"
    print(json.dumps(take_screenshot(target), indent=1))
