"""Larger real images for the benchmarks: VRT mosaics of copies of one raster (no pixels written)."""

from __future__ import annotations

from pathlib import Path


def mosaic(path: Path, copies: int, source_path: Path, origin: tuple[float, float] | None = None) -> str:
    """A VRT of ``copies`` x ``copies`` copies of the UInt16 raster ``source_path`` side by side (real pixels);
    ``origin``: its upper-left corner (default the source's)."""
    from osgeo import gdal

    source = gdal.Open(str(source_path))
    width, height, gt = source.RasterXSize, source.RasterYSize, list(source.GetGeoTransform())
    if origin:
        gt[0], gt[3] = origin
    bands = []
    for b in range(1, source.RasterCount + 1):
        tiles = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{source_path}</SourceFilename>"
            f"<SourceBand>{b}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{width}\" ySize=\"{height}\"/>"
            f"<DstRect xOff=\"{i * width}\" yOff=\"{j * height}\" xSize=\"{width}\" ySize=\"{height}\"/></SimpleSource>"
            for i in range(copies) for j in range(copies))
        bands.append(f"<VRTRasterBand dataType=\"UInt16\" band=\"{b}\">{tiles}</VRTRasterBand>")
    path.write_text(
        f"<VRTDataset rasterXSize=\"{width * copies}\" rasterYSize=\"{height * copies}\">"
        f"<SRS>{source.GetProjection()}</SRS><GeoTransform>{', '.join(map(str, gt))}</GeoTransform>"
        + "".join(bands) + "</VRTDataset>")
    return str(path)
