"""Reference polygons for the Vectorise class map tests, made without the engine: one
``gdal.Polygonize`` over the whole band 1 of a class map, its nodata masked."""

from __future__ import annotations

from osgeo import gdal, ogr


def reference_polygons(path: str, skip=()) -> list[tuple[int, ogr.Geometry]]:
    """(class, polygon) of one gdal.Polygonize over the whole band 1 (nodata masked), ``skip`` dropped."""
    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(1)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = memory.CreateLayer("reference", None, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    return [(f.GetField("value"), f.GetGeometryRef().Clone()) for f in layer if f.GetField("value") not in skip]
