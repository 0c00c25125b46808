"""Building map from two resolutions against one (issue 15 item 1) and against a random forest
(issue 11's second scene), on SpaceNet Atlanta (``make bench BENCH=buildings`` writes
bench/results/buildings.json).

Runs ``make demo APP=buildings``'s chains (scripts/demo_buildings.py, through qgis_process.bin): the
building workflow at its defaults with the pan image and the pan averaged to 2 m (Atlanta has no
multispectral image), the default single-source chain on the pan image, and the random forest on
the pan value and on the value with neighbourhood means; all on the same spatial split, scored on
the test blocks: per-class pixel precision / recall / F and the footprints' object F1 (IoU >= 0.5).
``DEEPFIELD_BENCH_MINUTES`` overrides the training time budget of both networks (default 10).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

import demo_buildings as demo  # noqa: E402

MINUTES = float(os.environ["DEEPFIELD_BENCH_MINUTES"]) if "DEEPFIELD_BENCH_MINUTES" in os.environ else None
TWO, PAN, FOREST, FOREST_MEANS = demo.MAPS


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = demo.run_chains(Path(tmp), minutes=MINUTES)
    scores = result["scores"]
    for entry in scores.values():  # the files were in the temporary folder
        entry.pop("map"), entry.pop("footprints")

    def building_f1(name):
        return scores[name]["pixels"]["classes"][1]["f1"]

    ratios = {"building pixel F, two sources - pan only": round(building_f1(TWO) - building_f1(PAN), 4),
              "object F1, two sources - pan only": round(scores[TWO]["objects"]["f1"] - scores[PAN]["objects"]["f1"], 4)}
    for name in (FOREST, FOREST_MEANS):
        if name in scores:
            ratios[f"building pixel F, pan only - {name}"] = round(building_f1(PAN) - building_f1(name), 4)
            ratios[f"macro F, pan only - {name}"] = round(
                scores[PAN]["pixels"]["macro_f1"] - scores[name]["pixels"]["macro_f1"], 4)
    print(demo.scoring.table(scores), flush=True)
    return {"ratios": ratios, "targets": {k: "> 0" for k in ratios},
            "details": {**result, "load_average": os.getloadavg()}}
