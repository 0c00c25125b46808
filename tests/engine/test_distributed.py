"""Serving beyond one process: Dask executors, tile products, resume, many scenes.

Every Dask cluster here is a ``LocalCluster`` on the loopback interface. The reference is the
threaded single-file path (``executor: threads``), itself tested against one whole-image model
run in test_serving.py; the Dask outputs must equal it bit for bit.
"""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.geometry import ModelGeometry, SourceGeometry
from deepfield.engine.jobs import get_job
from deepfield.engine.protocol import EngineError, Reporter

keras = pytest.importorskip("keras")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)

NC = "nc_landsat7_landcover/lsat7_2000_6band.vrt"
CLASSES = [{"value": v, "name": n, "color": c} for v, n, c in
           [(1, "developed", "#ff0000"), (2, "agriculture", "#ffff00"), (5, "forest", "#00aa00"), (6, "water", "#0000ff")]]
#: Output tiles of 11 px (the classifier reads 56 x 56 source px for one): 7 x 7 = 49 tasks on
#: the 300 x 300 px crop (75 x 75 output px), enough for a run to be interrupted in its middle.
TILE = 11
TASKS = 49


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory):
    """A saved classifier folder (RF 16, EF 1, SF 4) and real Landsat crops (float32)."""
    from deepfield.engine.modelfolder import ModelMetadata, save_model_folder

    tmp = tmp_path_factory.mktemp("distributed")
    keras.utils.set_random_seed(2)
    x = keras.Input((None, None, 6))
    y = keras.layers.Rescaling(1 / 255)(x)
    y = keras.layers.Conv2D(8, 5, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(y)
    model = keras.Model(x, keras.layers.Conv2D(4, 2, activation="softmax")(y))
    geometry = ModelGeometry((SourceGeometry("landsat", 6, 16),), ef=1, sf=Fraction(4))
    metadata = ModelMetadata.for_model(model, "segmentation", geometry=geometry, classes=CLASSES)
    paths = {"model": str(save_model_folder(tmp / "model", model, metadata))}
    for name, window in {"scene": (100, 60, 300, 300), "west": (0, 0, 160, 120), "east": (160, 0, 160, 120)}.items():
        paths[name] = str(tmp / f"{name}.tif")
        gdal.Translate(paths[name], str(data_dir / NC), srcWin=list(window), outputType=gdal.GDT_Float32)
    return paths


@pytest.fixture(scope="module")
def cluster():
    """Two local worker processes, shared by the tests that need a running scheduler."""
    from deepfield.engine.executors import DaskExecutor

    with DaskExecutor(workers=2) as executor:
        yield executor


def apply(data, output, reporter=None, **execution):
    spec = {"job": "apply_model", "model": data["model"], "sources": [data["scene"]], "output": str(output),
            "outputs": ["class_map", "confidence"], "tile_size": TILE, **execution}
    return get_job("apply_model")(spec, reporter or Reporter(io.StringIO()))


def read(path):
    return gdal.Open(str(path)).ReadAsArray()


@pytest.fixture(scope="module")
def threaded(data, tmp_path_factory):
    """The reference: the threaded executor's class map and confidence."""
    output = tmp_path_factory.mktemp("threaded") / "map.tif"
    result = apply(data, output)
    assert result["tiles"] == TASKS
    return {kind: read(path) for kind, path in result["outputs"].items()}


def assert_identical(result, threaded, rounding: float = 0.0):
    """The same outputs as the threaded reference: class maps equal, confidences equal (or within
    ``rounding``, relative: another tile size lets oneDNN round the last bit differently on CPUs
    without AVX-512)."""
    for kind, path in result["outputs"].items():
        array = read(path)
        assert array.dtype == threaded[kind].dtype
        if rounding and array.dtype.kind == "f":
            np.testing.assert_allclose(array, threaded[kind], rtol=rounding, atol=0)
        else:
            np.testing.assert_array_equal(array, threaded[kind])


def tile_files(folder):
    return sorted(Path(folder).glob("class_map/*.tif"))


def done_tiles(folder):
    """The tasks done: every product's tile in place (tiles are renamed only when whole)."""
    return [p for p in tile_files(folder) if (Path(folder) / "confidence" / p.name).exists()]


def test_one_dask_worker_is_identical_to_threads(data, threaded, tmp_path):
    result = apply(data, tmp_path / "map.tif", executor="dask", workers=1)
    assert result["computed_tiles"] == TASKS and result["resumed_tiles"] == 0
    assert_identical(result, threaded)
    class_map = gdal.Open(result["outputs"]["class_map"])
    assert class_map.GetRasterBand(1).GetColorTable().GetColorEntry(5)[:3] == (0, 170, 0)
    assert (tmp_path / "map.qml").exists()
    # the VRT over the tiles holds the same pixels, and its tiles sit at their own places
    vrt = result["vrts"]["class_map"]
    np.testing.assert_array_equal(read(vrt), threaded["class_map"])
    assert len(tile_files(result["tiles_folder"])) == TASKS


def test_two_workers_at_a_scheduler_address_are_identical(data, threaded, cluster, tmp_path):
    result = apply(data, tmp_path / "map.tif", executor="dask", scheduler=cluster.client.scheduler.address)
    assert result["computed_tiles"] == TASKS
    assert_identical(result, threaded)


def test_a_worker_killed_mid_job_is_replaced_and_the_output_identical(data, threaded, cluster, tmp_path):
    folder = tmp_path / "map.tiles"
    before = cluster.worker_pids()
    victim = sorted(before.values())[0]
    seen = []

    def kill_when_started():
        while len(tile_files(folder)) < 15:
            time.sleep(0.002)
        seen.append(len(tile_files(folder)))
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    result = apply(data, tmp_path / "map.tif", executor="dask", scheduler=cluster.client.scheduler.address)
    killer.join(5)
    assert seen and seen[0] < TASKS  # killed while tiles were still missing
    assert_identical(result, threaded)
    deadline = time.time() + 60
    while len(cluster.worker_pids()) < 2 and time.time() < deadline:  # the nanny restarts it
        time.sleep(0.2)
    after = cluster.worker_pids()
    assert victim not in after.values() and len(after) == 2


def test_an_interrupted_run_resumes_with_only_the_missing_tiles(data, threaded, cluster, tmp_path):
    output = tmp_path / "map.tif"
    spec = {"job": "apply_model", "model": data["model"], "sources": [data["scene"]], "output": str(output),
            "outputs": ["class_map", "confidence"], "tile_size": TILE, "executor": "dask",
            "scheduler": cluster.client.scheduler.address}
    process = subprocess.Popen([sys.executable, "-m", "deepfield.engine", json.dumps(spec)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tmp_path / "map.tiles"
    try:
        deadline = time.time() + 90
        while len(done_tiles(folder)) < 15 and process.poll() is None and time.time() < deadline:
            time.sleep(0.002)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the job (a client of the cluster: its tasks are dropped)
        process.wait()
    # the tasks running when the client died still finish their tile (a thread is not interrupted)
    deadline = time.time() + 30
    while any(cluster.client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
        assert time.time() < deadline
        time.sleep(0.05)
    assert not output.exists()
    done = done_tiles(folder)
    assert 15 <= len(done) < TASKS
    stream = io.StringIO()
    result = apply(data, output, Reporter(stream), executor="dask", scheduler=cluster.client.scheduler.address)
    assert result["resumed_tiles"] == len(done)
    assert result["computed_tiles"] == TASKS - len(done)
    assert "resuming: " in stream.getvalue()
    assert_identical(result, threaded)


def test_a_changed_job_starts_over_with_a_message(data, threaded, tmp_path):
    """Tile products with the threaded executor; a second run with another tile size restarts."""
    from deepfield.engine.executors import ThreadExecutor
    from deepfield.engine.modelfolder import load_model_folder
    from deepfield.engine.serving import products_for
    from deepfield.engine.tiles import serve_model_tiles

    loaded = load_model_folder(data["model"])
    output = str(tmp_path / "map.tif")
    products = products_for(loaded.metadata, output, ["class_map", "confidence"])
    runs = []
    for tile in (TILE, 16):
        stream = io.StringIO()
        with ThreadExecutor(workers=2, lookahead=4) as executor:
            runs.append(serve_model_tiles(loaded.model, loaded.metadata.geometry, [data["scene"]], output,
                                          model_folder=data["model"], executor=executor, products=products,
                                          reporter=Reporter(stream), tile=tile))
        assert_identical(runs[-1], threaded, rounding=0.0 if tile == TILE else 1e-6)
    assert "holds tiles of another job (tile, tiles differ): starting over" in stream.getvalue()
    assert runs[1]["resumed_tiles"] == 0 and runs[1]["computed_tiles"] == 5 * 5
    assert len(tile_files(runs[1]["tiles_folder"])) == 25  # the 11 px tiles are gone


def test_three_scenes_with_a_broken_one(data, cluster, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a GeoTIFF")
    stream = io.StringIO()
    output = tmp_path / "maps" / "map.tif"
    result = get_job("apply_model")(
        {"job": "apply_model", "model": data["model"], "output": str(output), "tile_size": 8,
         "scenes": [[data["west"]], [str(broken)], [data["east"]]], "executor": "dask",
         "scheduler": cluster.client.scheduler.address}, Reporter(stream))
    west, east = tmp_path / "maps" / "map_west.tif", tmp_path / "maps" / "map_east.tif"
    assert west.exists() and east.exists() and not (tmp_path / "maps" / "map_broken.tif").exists()
    assert len(result["errors"]) == 1 and str(broken) in result["errors"][0] and "scene 2" in result["errors"][0]
    warnings = [json.loads(line)["message"] for line in stream.getvalue().splitlines()
                if json.loads(line).get("level") == "warning"]
    assert any(str(broken) in message for message in warnings)
    progress = [json.loads(line)["percent"] for line in stream.getvalue().splitlines()
                if json.loads(line)["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100
    # the mosaic: 160 + 160 source px side by side, at SF 4 = 80 x 30 output px, each scene in place
    mosaic = gdal.Open(result["output"])
    assert result["output"] == str(tmp_path / "maps" / "map.vrt")
    assert (mosaic.RasterXSize, mosaic.RasterYSize) == (80, 30)
    pixels = mosaic.ReadAsArray()
    np.testing.assert_array_equal(pixels[:, :40], read(west))
    np.testing.assert_array_equal(pixels[:, 40:], read(east))


def test_every_scene_failing_is_an_error(data, tmp_path):
    with pytest.raises(EngineError, match="every scene failed"):
        get_job("apply_model")({"job": "apply_model", "model": data["model"], "output": str(tmp_path / "m.tif"),
                                "scenes": [[str(tmp_path / "missing.tif")]]}, Reporter(io.StringIO()))


def test_the_dask_choice_without_dask_says_what_to_install(monkeypatch):
    """``distributed`` made unimportable (a None entry in sys.modules): the message names the package."""
    from deepfield.engine.executors import make_executor

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(EngineError, match=r"pip install 'dask\[distributed\]==2026\.8\.0'"):
        make_executor("dask", 2)
    with make_executor("threads", 2) as executor:
        assert list(executor.map(abs, [-1, -2])) == [1, 2]


# -- multi-worker training ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmentation_dataset(data_dir, tmp_path_factory):
    """16-px patches of the NC image (6 bands) labelled by strata.tif (7 classes): 48 train, 8 valid."""
    from deepfield.engine.dataset import DatasetWriter

    image = gdal.Open(str(data_dir / NC)).ReadAsArray().astype(np.float32).transpose(1, 2, 0)
    strata = gdal.Open(str(data_dir / "nc_landsat7_landcover" / "strata.tif")).ReadAsArray()
    names = ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment")
    folder = tmp_path_factory.mktemp("mwms") / "dataset"
    writer = DatasetWriter(folder, [{"name": "landsat", "bands": 6, "patch_size": 16, "dtype": "float32"}],
                           {"kind": "segmentation", "patch_size": 16, "bands": 1,
                            "classes": [{"index": i, "value": i + 1, "name": n, "color": "#808080"}
                                        for i, n in enumerate(names)]})
    for k in range(56):
        row, col = 120 + 16 * (k // 8), 100 + 16 * (k % 8)
        labels = strata[row:row + 16, col:col + 16].astype(np.int64) - 1  # values 1..7 -> indices, 0 -> -1
        writer.add("train" if k < 48 else "valid", {"landsat": image[row:row + 16, col:col + 16]}, labels)
    writer.close()
    return folder


#: Two TensorFlow processes start per run: on a loaded 2-core machine that alone takes over a minute.
MULTI_WORKER_TIMEOUT = pytest.mark.timeout(300)


@MULTI_WORKER_TIMEOUT
def test_two_worker_processes_train_with_a_decreasing_loss(segmentation_dataset, tmp_path):
    stream = io.StringIO()
    output = tmp_path / "model"
    result = get_job("train_model")(
        {"job": "train_model", "dataset": str(segmentation_dataset), "output": str(output), "architecture": "unet",
         "hyperparameters": {"depth": 1, "width": 4}, "epochs": 4, "batch_size": 8, "learning_rate": 0.01,
         "augment": False, "workers": 2}, Reporter(stream))
    assert result["workers"] == 2 and len(result["losses"]) == 4 and result["best_epoch"] == 4
    assert all(np.isfinite(result["losses"]))
    assert result["losses"][-1] < result["losses"][0]
    assert "2 worker processes" in stream.getvalue()
    from deepfield.engine.modelfolder import load_model_folder

    loaded = load_model_folder(output)
    assert loaded.metadata.training["workers"] == 2 and loaded.metadata.ef == 2



@MULTI_WORKER_TIMEOUT
def test_two_workers_train_on_random_crops_and_stop_together_when_the_time_budget_is_spent(
        segmentation_dataset, tmp_path):
    """1000 epochs asked, a 3-second budget: both workers stop after the same step (a worker left
    alone in an all-reduce would hang the run), with 8 px random crops of the 16 px patches."""
    stream = io.StringIO()
    spec = {"job": "train_model", "dataset": str(segmentation_dataset), "output": str(tmp_path / "model"),
            "architecture": "unet", "hyperparameters": {"depth": 1, "width": 4}, "epochs": 1000, "batch_size": 8,
            "crop_size": 8, "time_budget": 0.05, "workers": 2}
    result = get_job("train_model")(spec, Reporter(stream))
    assert 1 <= result["epochs_done"] < 1000 and len(result["losses"]) == result["epochs_done"]
    assert all(np.isfinite(result["losses"]))
    assert "time budget of 0.05 min spent after" in stream.getvalue()


@MULTI_WORKER_TIMEOUT
def test_two_workers_refuse_a_crop_larger_than_the_patches(segmentation_dataset, tmp_path):
    spec = {"job": "train_model", "dataset": str(segmentation_dataset), "output": str(tmp_path / "model"),
            "architecture": "unet", "hyperparameters": {"depth": 1, "width": 4}, "crop_size": 17, "workers": 2}
    with pytest.raises(EngineError, match="crop_size 17 px: use a multiple of the network's expression field"):
        get_job("train_model")(spec, Reporter(io.StringIO()))

def test_scene_outputs_are_named_after_their_first_source_and_unique():
    from deepfield.engine.scenes import mosaic_path, scene_outputs

    scenes = [["/a/T31TCJ.tif", "/a/dem.tif"], ["/b/T31TCJ.tif", "/b/dem.tif"], ["/c/my scene.tif"]]
    assert scene_outputs("/out/map.tif", scenes) == ["/out/map_T31TCJ.tif", "/out/map_T31TCJ_2.tif",
                                                      "/out/map_my_scene.tif"]
    assert mosaic_path("/out/map.tif") == "/out/map.vrt"
    assert mosaic_path("/out/map.tif", "confidence") == "/out/map_confidence.vrt"
