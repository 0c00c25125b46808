"""Coordinate reference systems: equivalence, point and bounds transformations.

CRSs travel as WKT strings. Two CRSs that define the same coordinates (same projection,
parameters and ellipsoid, whatever their datum names) are *equivalent*: data in one is never
reprojected into the other, which would shift it by a datum transformation it never went through.
Coordinates are always (x, y) = (easting or longitude, northing or latitude).
"""

from __future__ import annotations

import warnings

import numpy as np
from osgeo import osr

from .projdata import ensure_proj_data

osr.UseExceptions()


def pyproj_crs(wkt: str):
    """A pyproj CRS from WKT (the source CRS of a bound CRS: towgs84 clauses are not a CRS)."""
    ensure_proj_data()
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    return crs.source_crs if crs.is_bound else crs


def crs_equivalent(wkt_a: str, wkt_b: str) -> bool:
    """True when two CRSs define the same coordinates (same projection, parameters, ellipsoid).

    Datum names and towgs84 clauses are ignored: an unnamed LCC on GRS80 with EPSG:3358's
    parameters is EPSG:3358 (the NC sample data), and reprojecting between them would shift
    points by a datum transformation that the data never went through.
    """
    a, b = pyproj_crs(wkt_a), pyproj_crs(wkt_b)
    if a.equals(b, ignore_axis_order=True):
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proj_a, proj_b = a.to_proj4(), b.to_proj4()
    return _proj_terms(proj_a) == _proj_terms(proj_b)


def _proj_terms(proj4: str) -> set[str]:
    ignored = ("+towgs84", "+no_defs", "+type", "+datum", "+wktext")
    terms = {t for t in proj4.split() if not t.startswith(ignored)}
    datums = {"+datum=WGS84": "+ellps=WGS84", "+datum=NAD83": "+ellps=GRS80"}
    for term in proj4.split():
        if term in datums:
            terms.add(datums[term])
    return terms


def crs_transform(source_wkt: str, target_wkt: str):
    """An OSR transformation (x = easting/longitude) from ``source_wkt`` to ``target_wkt``, or
    ``None`` when either CRS is unknown or they are equivalent (:func:`crs_equivalent`: no datum
    shift that the data never went through)."""
    if not source_wkt or not target_wkt or crs_equivalent(source_wkt, target_wkt):
        return None
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromWkt(source_wkt)
    target.ImportFromWkt(target_wkt)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(source, target)


def bounds_in(bounds, source_wkt: str, target_wkt: str, steps: int = 21):
    """``bounds`` (xmin, ymin, xmax, ymax) in ``source_wkt`` -> their bounding box in ``target_wkt``
    (edges densified by ``steps`` points); ``None`` when no point transforms."""
    if not source_wkt or not target_wkt or crs_equivalent(source_wkt, target_wkt):
        return tuple(bounds)
    xmin, ymin, xmax, ymax = bounds
    t = np.linspace(0.0, 1.0, steps)
    along_x, along_y = xmin + t * (xmax - xmin), ymin + t * (ymax - ymin)
    xs = np.concatenate([along_x, np.full(steps, xmax), along_x[::-1], np.full(steps, xmin)])
    ys = np.concatenate([np.full(steps, ymin), along_y, np.full(steps, ymax), along_y[::-1]])
    points = np.column_stack(transform_xy(xs, ys, source_wkt, target_wkt))
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return None
    return points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()


def transform_xy(x: np.ndarray, y: np.ndarray, src_wkt: str, dst_wkt: str) -> tuple[np.ndarray, np.ndarray]:
    """Reproject coordinates (x = easting/longitude) unless the CRSs are equivalent."""
    if not src_wkt or not dst_wkt or crs_equivalent(src_wkt, dst_wkt):
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    from pyproj import Transformer

    transformer = Transformer.from_crs(pyproj_crs(src_wkt), pyproj_crs(dst_wkt), always_xy=True)
    tx, ty = transformer.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return np.asarray(tx), np.asarray(ty)
