"""Co-registration of an image to its label raster: the whole-pixel shift that lines them up
(:mod:`.registration`), measured over the scene, and the image moved by it.

:func:`measure_shift` reads the image and the labels tile by tile on the image's grid and adds
every tile to a :class:`.registration.ShiftScores`. :func:`coregister_image` writes the image
moved by the labels' clear shift, on the image's own grid (same size, same geotransform; a VRT
or a GeoTIFF copy): its pixel (row, col) holds the image's pixel (row + rows, col + cols), so
each pixel lands under the label it shows. Whole pixels only: no value is resampled, and the strip the image no longer
covers (``rows`` x ``cols`` pixels wide, at one edge each) is nodata. Every step of a chain then
uses the moved image (patches, the map), and the map lines up with the labels.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
from osgeo import gdal

from .errors import EngineError
from .geometry import Window
from .outputs import atomic_output
from .protocol import Reporter
from .rasters import align_source, invalid_pixels, raster_info, read_window, resampling_for, write_options
from .registration import LabelShift, ShiftScores

#: Tiles (image pixels a side) the shift is measured on, and how many at most (spread evenly
#: over the image): 64 tiles of 256 px, 4 Mpx, are plenty for a clear estimate.
TILE = 256
MAX_TILES = 64


def tiles(width: int, height: int, tile: int = TILE, most: int = MAX_TILES) -> list[Window]:
    """Windows of ``tile`` px covering a ``width`` x ``height`` grid (the last ones clipped),
    at most ``most`` of them, evenly spread over the list in row-major order."""
    every = [Window(c, r, min(tile, width - c), min(tile, height - r))
             for r in range(0, height, tile) for c in range(0, width, tile)]
    if len(every) <= most:
        return every
    return [every[i] for i in np.unique(np.linspace(0, len(every) - 1, most).round().astype(int))]


def measure_shift(image: str, labels: str, reporter: Reporter, max_shift: int = 2, tile: int = TILE,
                  most: int = MAX_TILES) -> tuple[LabelShift | None, int]:
    """The labels' best whole-pixel shift onto ``image`` (:meth:`.ShiftScores.best`: ``rows`` down,
    ``cols`` right, image pixels) and the number of tiles measured. ``labels`` is read on the
    image's grid (warped there, nearest neighbour, when its grid differs); its nodata and pixels
    outside it (read as NaN) are unlabelled."""
    info, label_info = raster_info(image), raster_info(labels)
    grid = info.grid
    aligned = align_source(label_info, grid, Fraction(1), resampling_for("classes"), reporter.log)
    col0, row0 = aligned.offset(grid)  # the image's origin in the (aligned) labels' pixels
    scores = ShiftScores(max_shift)
    windows = tiles(info.width, info.height, tile, most)
    for number, window in enumerate(windows):
        reporter.check_cancelled()
        reporter.progress(90.0 * number / len(windows))
        there = Window(window.col_off + col0, window.row_off + row0, window.width, window.height)
        values = read_window(aligned.path, there, mode="constant", fill=np.nan, dtype=np.float32)
        labelled = ~invalid_pixels(values, aligned.nodata[:1])
        if not labelled.any():
            continue
        pixels = read_window(image, window, mode="constant", fill=np.nan, dtype=np.float32)
        scores.add(pixels, invalid_pixels(pixels, info.nodata), values[..., 0], labelled)
    return scores.best(), scores.patches


def coregister_image(image: str, labels: str, output: str, reporter: Reporter, max_shift: int = 2,
                     tile: int = TILE, most: int = MAX_TILES) -> dict:
    """Write ``image`` moved onto ``labels`` (on the image's grid; ``output``: a VRT when it ends in
    ``.vrt``, else a GeoTIFF) when the labels' best shift is clear (:attr:`.LabelShift.clear`),
    else unmoved; ``max_shift`` 0: unmoved, nothing measured (score and unshifted None).

    Returns {output, rows, cols (the labels' shift, image pixels; the image moved the other way),
    score, unshifted (correlations), clear, moved, tiles}.
    """
    shift, measured = measure_shift(image, labels, reporter, max_shift, tile, most) if max_shift else (None, 0)
    if max_shift and shift is None:
        raise EngineError(f"labels {labels}: no class boundary next to a valid pixel of {image} in the {measured} "
                          "tile(s) measured, so no shift can be measured; check that the label raster covers "
                          "the image and holds more than one class")
    info = raster_info(image)
    moved = shift is not None and shift.clear
    rows, cols = (shift.rows, shift.cols) if moved else (0, 0)
    if moved:
        reporter.log(shift.description(labels, image, info.geotransform))
        reporter.log(f"the image is moved the other way: pixel (r, c) of {output} holds its pixel "
                     f"(r {rows:+d}, c {cols:+d})")
    elif shift is not None:
        reporter.log(f"no clear shift of the labels (best {shift.rows:+d} rows, {shift.cols:+d} cols: correlation "
                     f"{shift.score:.3f} against {shift.unshifted:.3f} unshifted): the image is written unmoved")
    filled = [b for b, value in enumerate(info.nodata) if value is None]
    moved_image = gdal.Translate("", image, format="VRT", srcWin=[cols, rows, info.width, info.height])
    moved_image.SetGeoTransform(info.geotransform)
    if moved:
        for b in filled:  # the strip the image no longer covers must read as nodata
            moved_image.GetRasterBand(b + 1).SetNoDataValue(0)
    with atomic_output(output) as temp:
        if str(output).lower().endswith(".vrt"):
            gdal.GetDriverByName("VRT").CreateCopy(str(temp), moved_image)
        else:
            try:
                gdal.Translate(str(temp), moved_image, format="GTiff",
                               creationOptions=write_options(np.dtype(info.dtype)), callback=_progress(reporter))
            except RuntimeError:
                reporter.check_cancelled()  # GDAL stopped by the callback
                raise
    moved_image = None
    if moved and filled:
        reporter.warning(f"{image}: band(s) {', '.join(str(b + 1) for b in filled)} declare no nodata; in {output} "
                         "they declare 0, so the strip the moved image no longer covers is nodata (and so is any 0 "
                         "they hold)")
    reporter.progress(100)
    found = dataclasses.asdict(shift) if shift is not None else {"rows": 0, "cols": 0, "score": None, "unshifted": None}
    return {"output": output, **found, "clear": shift is not None and shift.clear, "moved": moved, "tiles": measured}


def _progress(reporter: Reporter):
    """A GDAL progress callback forwarding 90-100 % to ``reporter``; it stops GDAL on cancel."""
    def callback(fraction, _message, _data):
        reporter.progress(90.0 + 10.0 * fraction)
        return 0 if reporter.cancelled else 1
    return callback
