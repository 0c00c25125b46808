"""``make demo APP=translation``: image translation (pix2pix) on real data, headless, through ``qgis_process.bin``.

NC Landsat-7 (6 bands, 28.5 m) translated to a rendering of its land-cover map ``strata.tif`` in
the class colours (:func:`demo_data.render_classes`, RGB, written into the output folder). The
shipped Translation workflow (processing_models/translation_workflow.model3) runs twice on the same
spatial-block split, with the same network and time budget: once with the conditional GAN loss
(L1 + adversarial), once L1 only. Both translated images are scored on the test blocks' pixels (no
training or validation patch covers them): L1 (mean absolute error, 0-255 colour units), PSNR
(dB, peak 255) and the class-colour accuracy (each pixel's nearest class colour against
strata.tif). ``quicklook.png`` shows input / target / L1-only / GAN on a test block.
``--quick`` runs a small version (for tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import NC_CLASSES, nc_landsat_folder, render_classes
from qgis_headless import REPO, QgisProcess

import forest_baseline as forest

WORKFLOW = REPO / "processing_models" / "translation_workflow.model3"
#: The runs compared: output sub-folder -> the workflow's ``adversarial`` input.
RUNS = {"l1_only": False, "gan": True}
#: Workflow inputs of the demo and of bench/bench_translation.py (``time_budget`` in minutes,
#: ``block_size`` in metres: 96 or 128 NC pixels).
SETTINGS = {
    "full": {"patch_size": 48, "grid_step": 16, "block_size": 96 * 28.5, "epochs": 1000, "time_budget": 8.0,
             "adversarial_weight": 1e-2, "hyperparameters": {"depth": 4, "width": 16}},
    "quick": {"patch_size": 32, "grid_step": 32, "block_size": 128 * 28.5, "epochs": 2, "time_budget": 0.0,
              "adversarial_weight": 1e-2,
              "hyperparameters": {"depth": 2, "width": 8, "discriminator_width": 8, "discriminator_levels": 2}},
}
PEAK = 255.0  # the rendering's colour range (Byte)
FALSE_COLOUR = (4, 3, 2)  # Landsat-7 bands 4, 3, 2 (NIR, red, green): bands 4, 3, 2 of the 6-band stack


def run_workflows(out: Path, settings: dict, log=print) -> dict:
    """The rendering, then the workflow once per :data:`RUNS` entry: ``{run: {"folder", "seconds",
    "results"}}`` plus ``"target"`` (the rendering's path)."""
    data = nc_landsat_folder()
    image = data / "lsat7_2000_6band.vrt"
    out.mkdir(parents=True, exist_ok=True)
    target = render_classes(data / "strata.tif", out / "strata_rendered.tif")
    qgis = QgisProcess(out / "qgis-home")
    runs: dict = {"target": target}
    for name, adversarial in RUNS.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        log(f"[{time.strftime('%H:%M:%S')}] translation workflow, {name} ({settings['time_budget']:g} min budget) ...")
        started = time.monotonic()
        results = qgis.run(str(WORKFLOW), {
            "image": image, "target": target, "output_folder": folder, "adversarial": adversarial,
            **{k: v for k, v in settings.items() if k != "hyperparameters"},
            "hyperparameters": json.dumps(settings["hyperparameters"])}, timeout=7200)
        runs[name] = {"folder": folder, "seconds": round(time.monotonic() - started, 1), "results": results}
        log(f"    done in {runs[name]['seconds']:.0f} s")
    return runs


def held_out_mask(blocks: Path, image: Path) -> np.ndarray:
    """Pixels (rows x columns of ``image``) inside the test blocks."""
    return forest.rasterized_splits(str(blocks), str(image)) == forest.SPLIT_CODES["test"]


def nearest_class(rgb: np.ndarray) -> np.ndarray:
    """Per pixel of ``rgb`` (bands first), the value of the class whose colour is nearest."""
    colours = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for _, _, c in NC_CLASSES], np.float64)
    distances = ((rgb.reshape(3, -1).T[:, None, :] - colours[None]) ** 2).sum(axis=-1)
    return np.array([v for v, _, _ in NC_CLASSES])[distances.argmin(axis=1)].reshape(rgb.shape[1:])


def read(path: Path) -> tuple[np.ndarray, float | None]:
    """A raster's bands (float64) and its first band's nodata."""
    dataset = gdal.Open(str(path))
    return dataset.ReadAsArray().astype(np.float64), dataset.GetRasterBand(1).GetNoDataValue()


def scores(translated: Path, target: Path, classes: Path, mask: np.ndarray) -> dict:
    """L1, PSNR and class-colour accuracy of ``translated`` against ``target`` on ``mask``'s pixels
    (valid in both; ``classes``: the land-cover raster the target renders)."""
    (predicted, nodata), (reference, _), (labels, no_class) = (read(path) for path in (translated, target, classes))
    keep = mask & (labels != no_class) & np.isfinite(predicted).all(axis=0)
    if nodata is not None:
        keep &= (predicted != nodata).all(axis=0)
    error = predicted[:, keep] - reference[:, keep]
    mse = float(np.mean(error ** 2))
    return {"l1": float(np.mean(np.abs(error))), "psnr_db": 10 * math.log10(PEAK ** 2 / mse),
            "class_colour_accuracy": float(np.mean(nearest_class(np.clip(predicted, 0, 255))[keep] == labels[keep])),
            "pixels": int(keep.sum())}


def held_out_windows(blocks: Path, image: Path) -> list[tuple[int, int, int, int]]:
    """``(col, row, width, height)`` of every test block, in ``image``'s pixels (clipped to it)."""
    dataset = gdal.Open(str(image))
    gt = dataset.GetGeoTransform()
    source = ogr.Open(str(blocks))
    layer = source.GetLayer(0)
    layer.SetAttributeFilter("split = 'test'")
    windows = []
    for feature in layer:
        left, right, bottom, top = feature.GetGeometryRef().GetEnvelope()
        col, row = max(round((left - gt[0]) / gt[1]), 0), max(round((top - gt[3]) / gt[5]), 0)
        end_col = min(round((right - gt[0]) / gt[1]), dataset.RasterXSize)
        end_row = min(round((bottom - gt[3]) / gt[5]), dataset.RasterYSize)
        windows.append((col, row, end_col - col, end_row - row))
    return windows


def false_colour(image: Path, window) -> np.ndarray:
    """Bands :data:`FALSE_COLOUR` of ``window``, each stretched from its 2nd to 98th percentile to 0-1
    (nodata: 0, black)."""
    source = gdal.Open(str(image))
    bands = []
    for number in FALSE_COLOUR:
        band = source.GetRasterBand(number)
        values = band.ReadAsArray(*window).astype(np.float64)
        values[values == band.GetNoDataValue()] = np.nan
        bands.append(values)
    bands = np.stack(bands)
    low, high = np.nanpercentile(bands, 2, axis=(1, 2)), np.nanpercentile(bands, 98, axis=(1, 2))
    return np.nan_to_num(np.clip((bands - low[:, None, None]) / (high - low)[:, None, None], 0, 1))


def quicklook(png: Path, image: Path, target: Path, translated: dict, blocks: Path, captions: dict) -> Path:
    """Input (false colour) / target / each translated image, side by side on the test block with
    the most valid input pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = held_out_windows(blocks, image)
    window = max(windows, key=lambda w: int((false_colour(image, w).sum(axis=0) > 0).sum()))
    panels = {"input (Landsat-7 bands 4-3-2)": false_colour(image, window)}
    panels["target (strata.tif rendered)"] = gdal.Open(str(target)).ReadAsArray(*window) / PEAK
    for name, path in translated.items():
        panels[captions[name]] = np.clip(gdal.Open(str(path)).ReadAsArray(*window), 0, PEAK) / PEAK
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for axis, (title, rgb) in zip(axes, panels.items()):
        axis.imshow(np.moveaxis(rgb, 0, -1), interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"NC Landsat-7 to its land-cover rendering, a test block ({window[2]} x {window[3]} px)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png


def compare(out: Path, quick: bool = False, minutes: float | None = None, log=print) -> dict:
    """Both runs, their test-block scores and the quick-look (``minutes``: the time budget of each)."""
    settings = dict(SETTINGS["quick" if quick else "full"])
    if minutes is not None:
        settings["time_budget"] = minutes
    runs = run_workflows(out, settings, log)
    data = nc_landsat_folder()
    image, target = data / "lsat7_2000_6band.vrt", runs["target"]
    blocks = runs["gan"]["folder"] / "blocks.gpkg"
    mask = held_out_mask(blocks, image)
    result = {"settings": settings, "load_average": os.getloadavg(), "runs": {}}
    for name in RUNS:
        folder = runs[name]["folder"]
        metadata = json.loads((folder / "model" / "deepfield.json").read_text())
        result["runs"][name] = {
            **scores(folder / "translated.tif", target, data / "strata.tif", mask),
            "epochs_done": metadata["training"]["epochs_done"], "best_epoch": metadata["training"]["best_epoch"],
            "val_psnr_db": metadata["training"]["best"].get("val_psnr"), "workflow_seconds": runs[name]["seconds"]}
    captions = {name: f"{name.replace('_', '-')}: L1 {r['l1']:.1f}, {r['psnr_db']:.1f} dB"
                for name, r in result["runs"].items()}
    result["quicklook"] = str(quicklook(out / "quicklook.png", image, target,
                                        {name: runs[name]["folder"] / "translated.tif" for name in RUNS},
                                        blocks, captions))
    return result


def score_table(result: dict) -> str:
    lines = [f"{'run':<10}{'L1':>8}{'PSNR dB':>10}{'class colour acc. %':>21}{'epochs':>8}{'pixels':>9}"]
    for name, r in result["runs"].items():
        lines.append(f"{name:<10}{r['l1']:>8.2f}{r['psnr_db']:>10.2f}{100 * r['class_colour_accuracy']:>21.1f}"
                     f"{r['epochs_done']:>8}{r['pixels']:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast settings (tests)")
    parser.add_argument("--out", type=Path, default=REPO / ".build" / "demo-translation", help="output folder")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = compare(args.out, quick=args.quick)
    budget = result["settings"]["time_budget"]
    print(f"\nTranslation scores on the test blocks (target: strata.tif rendered in its class colours; same network, "
          f"{budget:g} min budget each{'' if budget else ', no budget'}; load average "
          f"{result['load_average'][0]:.1f}):")
    print(score_table(result))
    print(f"\nOutputs in {args.out}:")
    for name in ("strata_rendered.tif", "gan/translated.tif", "gan/model", "l1_only/translated.tif", "quicklook.png"):
        print(f"  {args.out / name}")
    print(f"Finished in {(time.monotonic() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
