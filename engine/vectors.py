"""Vector layers: open one by path and name, and the GeoPackage layers the engine writes.

A vector input is a path (any OGR format) plus an optional layer name; without a name the
first layer is used. Errors name the file and, for a missing layer, the layers it has.
"""

from __future__ import annotations

from osgeo import gdal, ogr

from .errors import EngineError

gdal.UseExceptions()
ogr.UseExceptions()


def open_layer(path, layer: str | None = None, what: str = "vector file"):
    """``(dataset, layer)`` of the vector file ``path`` (the layer called ``layer``, or the first).

    ``path`` may also be an open GDAL vector dataset (its layer is looked up the same way).
    ``what`` names the input in errors ("mask", "reference"). Keep ``dataset`` alive while the
    layer is used. Raises :class:`EngineError` when the file is not a vector dataset or has no
    such layer.
    """
    if isinstance(path, gdal.Dataset):
        dataset, path = path, path.GetDescription()
    else:
        try:
            dataset = gdal.OpenEx(str(path), gdal.OF_VECTOR)
        except RuntimeError as error:
            raise EngineError(f"cannot open the {what} {path} as a vector layer: {error}") from None
    if dataset is None or dataset.GetLayerCount() == 0:
        raise EngineError(f"the {what} {path} holds no vector layer")
    found = dataset.GetLayerByName(layer) if layer else dataset.GetLayer(0)
    if found is None:
        names = [dataset.GetLayer(i).GetName() for i in range(dataset.GetLayerCount())]
        raise EngineError(f"the {what} {path} has no layer {layer!r}; layers: {', '.join(names)}")
    return dataset, found


def layer_crs_wkt(layer) -> str:
    """The layer's CRS as WKT, or ``""`` when it has none."""
    srs = layer.GetSpatialRef()
    return srs.ExportToWkt() if srs is not None else ""
