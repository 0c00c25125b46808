"""Class map to polygons, streamed by tiles, with no seam at tile borders.

Vocabulary:

- A **region** is a set of 4-connected pixels of one class (pixels sharing an edge, as
  ``gdal.Polygonize`` connects them by default); each region becomes one polygon with its
  class value and name.
- A **tile** is a window of the class map (``tile_size`` pixels square, the last ones clipped);
  tiles are read row of tiles by row of tiles, left to right.
- A **piece** is what ``gdal.Polygonize`` makes of a region inside one tile. A region cut by tile
  borders has several pieces; its polygon is their union.

Method (exact, and memory flat as the map grows taller): each tile is polygonized in integer
pixel coordinates (``x = col``, ``y = -row``), so the pieces of a region share bit-identical
vertices along tile borders and their union is exact. The pieces are rasterised back onto their
tile (pixel centres) to know which piece holds each border pixel; two pixels facing each other
across a tile border, of the same class and both valid, put their pieces in one region
(union-find). After a row of tiles, a region with no piece on that row's bottom border can grow
no more: its pieces are unioned (see :func:`region_rings`), moved to map coordinates with GDAL's
own arithmetic (``x = gt[0] + col * gt[1]``, ``y = gt[3] + row * gt[5]``, so the vertices are
those of one polygonize of the whole map), filtered by area, simplified and written. Memory holds
the pixels of one tile, the pieces of one row of tiles and the regions still open across its
bottom border, whatever the number of rows (a row of tiles spans ``width x tile_size`` pixels:
very wide maps want smaller tiles).

Why not polygonize, then dissolve by class with OGR: a dissolve also joins regions that touch
only at a corner (8-connected) or are separate, and it needs every polygon of a class at once.

Pixels that are nodata (the band's nodata, NaN) or of a class to skip belong to no polygon.
Areas are in squared map units, the simplification tolerance in map units (of the map's CRS).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from osgeo import gdal, ogr, osr

from .classes import ClassStyle, class_color
from .errors import EngineError, InvalidSpec
from .evaluation import map_classes
from .geometry import Window
from .layer_styles import categorized_polygons_qml, store_default_style
from .outputs import atomic_output
from .protocol import Reporter
from .rasters import RasterInfo, invalid_pixels, raster_info, read_window
from .vectors import create_gpkg_layer

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

#: The polygon layer of the output GeoPackage, and its fields.
LAYER = "class_polygons"
CLASS_FIELD, NAME_FIELD = "class", "name"
#: Default tile side (pixels): a row of tiles of a 40 000 px wide map reads 40 000 x 1 024 pixels.
TILE_SIZE = 1024
#: The largest class value polygonize handles (it reads values as 32-bit integers).
MAX_CLASS_VALUE = 2**31 - 1
#: The CRS of pieces and their tiles: pixel-edge coordinates (rasterising pieces back needs one).
PIXELS = osr.SpatialReference()
PIXELS.SetLocalCS("pixels of the class map (x = col, y = -row)")


@dataclass
class ClassTally:
    """Polygons written for one class value: how many, and their area (squared map units)."""

    polygons: int = 0
    area: float = 0.0


@dataclass
class _Region:
    """A region still being assembled: its class value and its pieces (pixel coordinates)."""

    value: int
    pieces: list


class _Regions:
    """Union-find over pieces: piece id -> region, with the pieces of each region (at its root)."""

    def __init__(self):
        self.parent: dict[int, int] = {}
        self.regions: dict[int, _Region] = {}

    def add(self, piece: int, value: int, geometry) -> None:
        self.parent[piece] = piece
        self.regions[piece] = _Region(value, [geometry])

    def root(self, piece: int) -> int:
        while self.parent[piece] != piece:
            self.parent[piece] = self.parent[self.parent[piece]]
            piece = self.parent[piece]
        return piece

    def join(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[rb] = ra
            self.regions[ra].pieces.extend(self.regions.pop(rb).pieces)

    def close_all_but(self, open_pieces: np.ndarray) -> list[_Region]:
        """Remove and return the regions holding none of ``open_pieces``; forget every piece id
        but the roots of the regions kept (``open_pieces`` must be renamed with :meth:`root` first)."""
        keep = {int(p) for p in open_pieces}
        closed = [region for root, region in self.regions.items() if root not in keep]
        self.regions = {root: region for root, region in self.regions.items() if root in keep}
        self.parent = {root: root for root in self.regions}
        return closed


def tile_rows(width: int, height: int, size: int) -> Iterator[list[Window]]:
    """Rows of tiles of ``size`` pixels covering a ``width`` x ``height`` raster (last ones clipped)."""
    for row in range(0, height, size):
        yield [Window(col, row, min(size, width - col), min(size, height - row)) for col in range(0, width, size)]


def polygonize_tile(values: np.ndarray, valid: np.ndarray, window: Window) -> tuple[list, np.ndarray]:
    """Pieces of one tile: ``([(class value, polygon in pixel coordinates)], piece index per pixel)``.

    ``values``: int32 class values of the tile's pixels; ``valid``: pixels that belong to a polygon.
    Polygons are in pixel-edge coordinates of the whole map, ``x = col`` and ``y = -row``;
    the index array is -1 where ``valid`` is false.
    """
    rows, cols = values.shape
    raster = gdal.GetDriverByName("MEM").Create("", cols, rows, 3, gdal.GDT_Int32)
    raster.SetGeoTransform((window.col_off, 1, 0, -window.row_off, 0, -1))
    raster.SetSpatialRef(PIXELS)
    raster.GetRasterBand(1).WriteArray(values)
    raster.GetRasterBand(2).WriteArray(valid.astype(np.int32))
    vectors = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = vectors.CreateLayer("pieces", PIXELS, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("piece", ogr.OFTInteger))
    gdal.Polygonize(raster.GetRasterBand(1), raster.GetRasterBand(2), layer, 0)
    pieces = []
    for index, feature in enumerate(list(layer)):
        feature.SetField(1, index)  # the "piece" field
        layer.SetFeature(feature)
        pieces.append((feature.GetField(0), feature.GetGeometryRef().Clone()))
    index_band = raster.GetRasterBand(3)
    index_band.Fill(-1)
    gdal.RasterizeLayer(raster, [3], layer, options=["ATTRIBUTE=piece"])
    return pieces, index_band.ReadAsArray()


def _join_across(regions: _Regions, ids_a: np.ndarray, values_a: np.ndarray,
                 ids_b: np.ndarray, values_b: np.ndarray) -> None:
    """Join the regions of pixels facing each other (element by element) across a tile border."""
    facing = (ids_a >= 0) & (ids_b >= 0) & (values_a == values_b)
    for a, b in np.unique(np.stack([ids_a[facing], ids_b[facing]], axis=1), axis=0):
        regions.join(int(a), int(b))


def read_classes(info: RasterInfo, window: Window, skip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int32 class values, valid)`` of a window of the class map (band 1).

    Invalid: nodata (the band's nodata, NaN) or a value in ``skip``. A float map must hold whole
    numbers: :class:`EngineError` otherwise.
    """
    raw = read_window(info.path, window)[:, :, :1]
    valid = ~invalid_pixels(raw, info.nodata[:1])
    raw = raw[:, :, 0]
    if raw.dtype.kind == "f" and np.any(raw[valid] != np.floor(raw[valid])):
        example = raw[valid][raw[valid] != np.floor(raw[valid])][0]
        raise EngineError(f"the class map {info.path} holds non-integer values (e.g. {example}); "
                          "class values must be whole numbers")
    values = np.where(valid, raw, 0).astype(np.int64)
    valid &= ~np.isin(values, skip)
    if np.any(np.abs(values[valid]) > MAX_CLASS_VALUE):
        raise EngineError(f"the class map {info.path} holds class values beyond {MAX_CLASS_VALUE}")
    return values.astype(np.int32), valid


def regions_of(info: RasterInfo, skip: tuple[int, ...] = (), tile_size: int = TILE_SIZE,
               reporter: Reporter | None = None) -> Iterator[tuple[int, ogr.Geometry]]:
    """``(class value, polygon in map coordinates)`` of every region of the class map, streamed.

    Regions are yielded as soon as they are complete (after the row of tiles where they end).
    ``reporter``: cancellation checked and progress (0..95 %) reported after every tile.
    """
    if tile_size < 1:
        raise InvalidSpec(f"the tile size must be at least 1 pixel, got {tile_size}")
    skip_values = np.asarray(skip, dtype=np.int64)
    regions = _Regions()
    above_ids = np.full(info.width, -1, dtype=np.int64)
    above_values = np.zeros(info.width, dtype=np.int32)
    next_piece = 0
    total, done = math.ceil(info.width / tile_size) * math.ceil(info.height / tile_size), 0
    for row in tile_rows(info.width, info.height, tile_size):
        left_ids = left_values = None
        for window in row:
            values, valid = read_classes(info, window, skip_values)
            pieces, index = polygonize_tile(values, valid, window)
            ids = np.where(index >= 0, index + next_piece, -1)
            for offset, (value, geometry) in enumerate(pieces):
                regions.add(next_piece + offset, value, geometry)
            next_piece += len(pieces)
            columns = slice(window.col_off, window.col_end)
            _join_across(regions, above_ids[columns], above_values[columns], ids[0], values[0])
            if left_ids is not None:
                _join_across(regions, left_ids, left_values, ids[:, 0], values[:, 0])
            left_ids, left_values = ids[:, -1], values[:, -1]
            above_ids[columns], above_values[columns] = ids[-1], values[-1]
            done += 1
            if reporter is not None:
                reporter.check_cancelled()
                reporter.progress(95.0 * done / total)
        open_ids = above_ids >= 0
        above_ids[open_ids] = [regions.root(int(p)) for p in above_ids[open_ids]]
        for region in regions.close_all_but(np.unique(above_ids[open_ids])):
            yield region.value, _map_polygon(region, info.geotransform)
    for region in regions.close_all_but(np.empty(0)):
        yield region.value, _map_polygon(region, info.geotransform)


def _map_polygon(region: _Region, geotransform) -> ogr.Geometry:
    return polygon([to_map(ring, geotransform) for ring in region_rings(region.pieces)])


def region_rings(pieces: list) -> list[np.ndarray]:
    """The rings (pixel coordinates, exterior first) of the union of a region's pieces.

    Only the exteriors are unioned: a piece's hole lies inside its tile and no other piece of the
    region can be in it (it would be 4-connected to that piece inside the tile), so the holes of
    the pieces are holes of the union as they are, added after the (much cheaper) union of the
    exteriors. Vertices the tile borders left in the middle of straight edges are dropped.
    """
    if len(pieces) == 1:
        return rings(pieces[0])
    exteriors = ogr.Geometry(ogr.wkbMultiPolygon)
    holes = []
    for piece in pieces:
        exterior, *inner = rings(piece)
        exteriors.AddGeometry(polygon([exterior]))
        holes += inner
    return [drop_straight_vertices(ring) for ring in rings(exteriors.UnionCascaded())] + holes


def rings(geometry: ogr.Geometry) -> list[np.ndarray]:
    """The rings of a polygon (exterior first) as closed ``(n, 2)`` arrays of ``(x, y)``."""
    wkb = geometry.ExportToIsoWkb(ogr.wkbNDR)
    kind, count = struct.unpack_from("<II", wkb, 1)
    if kind != ogr.wkbPolygon:
        raise ValueError(f"a region's pieces must union to one polygon, not a geometry of WKB type {kind}")
    offset, found = 9, []
    for _ in range(count):
        (points,) = struct.unpack_from("<I", wkb, offset)
        found.append(np.frombuffer(wkb, dtype="<f8", count=2 * points, offset=offset + 4).reshape(points, 2))
        offset += 4 + 16 * points
    return found


def polygon(ring_list: list[np.ndarray]) -> ogr.Geometry:
    """A polygon from closed rings (exterior first)."""
    parts = [struct.pack("<BII", 1, ogr.wkbPolygon, len(ring_list))]
    for ring in ring_list:
        parts += [struct.pack("<I", len(ring)), np.ascontiguousarray(ring, dtype="<f8").tobytes()]
    return ogr.CreateGeometryFromWkb(b"".join(parts))


def drop_straight_vertices(ring: np.ndarray) -> np.ndarray:
    """A closed ring of horizontal and vertical edges without its vertices in the middle of an edge."""
    points = ring[:-1]
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    kept = points[~np.any((before == points) & (points == after), axis=1)]
    return np.vstack([kept, kept[:1]])


def to_map(ring: np.ndarray, geotransform) -> np.ndarray:
    """A ring in pixel coordinates (``x = col``, ``y = -row``) in map coordinates of the north-up
    ``geotransform``, bit for bit as GDAL computes pixel corners (``gt[0] + col * gt[1]``,
    ``gt[3] + row * gt[5]``: IEEE sums commute and negation is exact)."""
    return ring * np.array([geotransform[1], -geotransform[5]]) + np.array([geotransform[0], geotransform[3]])


def class_name(known: dict[int, ClassStyle], value: int) -> str:
    """The name of class ``value``: its known name, else ``class <value>``."""
    return known[value].name if value in known else f"class {value}"


def class_styles(values, known: dict[int, ClassStyle]) -> tuple[ClassStyle, ...]:
    """Name and colour of each class value (sorted): the ``known`` ones; a missing colour is the
    palette's colour of that value (:func:`.classes.class_color`), whatever else is written."""
    return tuple(ClassStyle(value, class_name(known, value), value in known and known[value].color
                            or class_color(value)) for value in sorted(values))


def _create_part_gpkg(temp: Path, crs_wkt: str):
    """``(dataset, layer)``: the temporary GeoPackage with the empty polygon layer :data:`LAYER`.

    Its SQLite journal is kept in memory: a killed worker leaves only ``<output>.part`` (which the
    QGIS side removes), never a ``<output>.part-journal``; a failed ``.part`` is discarded anyway.
    """
    previous = gdal.GetConfigOption("OGR_SQLITE_JOURNAL")
    gdal.SetConfigOption("OGR_SQLITE_JOURNAL", "MEMORY")  # read when the file is opened
    try:
        return create_gpkg_layer(temp, LAYER, crs_wkt, ogr.wkbPolygon)
    finally:
        gdal.SetConfigOption("OGR_SQLITE_JOURNAL", previous)


def vectorize_class_map(map_path: str, output: str | os.PathLike, min_area: float = 0.0, simplify: float = 0.0,
                        skip: tuple[int, ...] = (), classes: tuple[ClassStyle, ...] = (),
                        tile_size: int = TILE_SIZE, reporter: Reporter | None = None) -> list[dict]:
    """Write the regions of the class map ``map_path`` (band 1) as polygons to the GeoPackage ``output``.

    Layer :data:`LAYER`, fields ``class`` (value) and ``name``, the map's CRS, and the class
    colours as its default QGIS style. ``min_area`` (squared map units): smaller regions are
    dropped (not merged into a neighbour); ``simplify`` (map units): Douglas-Peucker tolerance,
    each polygon's topology preserved (neighbours are simplified independently); ``skip``: class
    values that get no polygon; ``classes``: names and colours (default: those stored with the
    map, see :func:`.evaluation.map_classes`). Returns, per class written (by value):
    ``{"value", "name", "color", "polygons", "area"}`` (area of the unsimplified polygons).
    """
    info = raster_info(map_path)
    output = Path(output)
    if output.suffix.lower() != ".gpkg":
        raise InvalidSpec(f"the output {output} must be a GeoPackage (.gpkg)")
    if output.resolve() == Path(map_path).resolve():
        raise InvalidSpec(f"the output {output} is the class map itself; choose another file")
    if np.dtype(info.dtype).kind not in "iuf":
        raise EngineError(f"the class map {map_path} is {info.dtype}; class values must be integers")
    if min_area < 0 or simplify < 0:
        raise InvalidSpec(f"the minimum area ({min_area}) and the simplification tolerance ({simplify}) "
                          "must be 0 or more")
    known = {c.value: c for c in classes} if classes else map_classes(map_path)
    tally: dict[int, ClassTally] = {}
    with atomic_output(output) as temp:
        dataset, layer = _create_part_gpkg(temp, info.crs_wkt)
        try:
            layer.CreateField(ogr.FieldDefn(CLASS_FIELD, ogr.OFTInteger))
            layer.CreateField(ogr.FieldDefn(NAME_FIELD, ogr.OFTString))
            dataset.StartTransaction()
            for value, polygon in regions_of(info, tuple(skip), tile_size, reporter):
                area = polygon.GetArea()
                if area < min_area:
                    continue
                feature = ogr.Feature(layer.GetLayerDefn())
                feature.SetField(0, value)  # CLASS_FIELD
                feature.SetField(1, class_name(known, value))  # NAME_FIELD
                feature.SetGeometryDirectly(polygon.SimplifyPreserveTopology(simplify) if simplify > 0 else polygon)
                layer.CreateFeature(feature)
                counts = tally.setdefault(value, ClassTally())
                counts.polygons += 1
                counts.area += area
            styles = class_styles(tally, known)
            store_default_style(dataset, layer, categorized_polygons_qml(styles, CLASS_FIELD), output.stem)
            dataset.CommitTransaction()
        finally:
            dataset = layer = None  # closed before the atomic output renames or removes the file
    return [{"value": s.value, "name": s.name, "color": s.color, "polygons": tally[s.value].polygons,
             "area": tally[s.value].area} for s in styles]
