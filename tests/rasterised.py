"""Reference pixels for the evaluation tests, made without the engine: one ``gdal.Rasterize`` of
polygons on the grid of a raster (the pixels whose centre is inside)."""

from __future__ import annotations

import numpy as np
from osgeo import gdal


def burnt(like, vector, where: str | None = None) -> np.ndarray:
    """The pixels of the grid of ``like`` (a raster path or open dataset) whose centre is inside a
    polygon of the vector file ``vector`` (``where``: an SQL filter of its features), as booleans."""
    grid = like if isinstance(like, gdal.Dataset) else gdal.Open(str(like))
    target = gdal.GetDriverByName("MEM").Create("", grid.RasterXSize, grid.RasterYSize, 1, gdal.GDT_Byte)
    target.SetGeoTransform(grid.GetGeoTransform())
    target.SetProjection(grid.GetProjection())
    gdal.Rasterize(target, str(vector), burnValues=[1], where=where)
    return target.ReadAsArray().astype(bool)
