"""Image translation: the conditional GAN (L1 + adversarial) against an L1-only generator, same network
and time budget, on NC Landsat-7 rendered as its land-cover map (``make bench BENCH=translation``
writes bench/results/translation.json and translation_quicklook.png).

Both runs are the shipped Translation workflow through ``qgis_process`` (scripts/demo_translation.py,
the ``make demo APP=translation`` chain), on the same spatial-block split; the scores are over the
test blocks' pixels: L1 (0-255 colour units, lower is better), PSNR (dB, peak 255) and the
class-colour accuracy (nearest class colour against strata.tif). ``DEEPFIELD_BENCH_MINUTES``
overrides each run's training time budget (minutes, default the demo's).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

import demo_translation as demo  # noqa: E402

MINUTES = float(os.environ.get("DEEPFIELD_BENCH_MINUTES", demo.SETTINGS["full"]["time_budget"]))


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_translation_") as work:
        load_before = os.getloadavg()
        result = demo.compare(Path(work), minutes=MINUTES)
        png = HERE / "results" / "translation_quicklook.png"
        shutil.copyfile(result["quicklook"], png)
    gan, l1 = result["runs"]["gan"], result["runs"]["l1_only"]
    return {
        "what": "NC Landsat-7 (6 bands, 28.5 m) -> strata.tif rendered in its class colours (RGB); test-block pixels",
        "ratios": {"L1, GAN / L1-only": gan["l1"] / l1["l1"],
                   "PSNR dB, GAN - L1-only": gan["psnr_db"] - l1["psnr_db"],
                   "class colour accuracy, GAN - L1-only": gan["class_colour_accuracy"] - l1["class_colour_accuracy"]},
        "details": {**result["runs"], "settings": result["settings"], "minutes_each": MINUTES,
                    "load_average_before": load_before, "load_average_after": result["load_average"],
                    "quicklook": str(png.relative_to(HERE.parent))},
    }
