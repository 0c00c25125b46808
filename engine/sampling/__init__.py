"""Sample positions: where patches are cut, their class, their split (the library of the
``select_samples`` job, :mod:`engine.jobs.select_samples`).

Vocabulary:

- A **position** (:class:`engine.vectors.Positions`) is a point in the map units of the
  *reference raster* (the image patches will be cut from), optionally with a class value (an
  integer) and a split (``train``, ``valid``, ``test``); written by
  :func:`engine.vectors.write_positions`.
- The **footprint** of a position is the ``patch_size`` x ``patch_size`` reference pixels of
  its patch, placed by the patch-centre rule (:func:`engine.geometry.patch_start`).

Strategies (``spec["strategy"]``) are :class:`Sampler` classes in the registry :data:`SAMPLERS`,
all with one signature, ``sample(info, rng, reporter) -> Positions``:

``points``      a point layer with a class field (integers or text), any CRS (reprojected; equivalent
                CRSs, e.g. EPSG:3358 and an unnamed LCC with the same parameters, are not).
``polygons``    a polygon layer with a class field (integers or text): ``samples_per_class`` random pixel
                centres per class, or every ``step``-th pixel centre (``polygon_mode: grid``);
                ``border_distance`` (map units) keeps positions that far inside the polygons.
``label_raster`` a label raster: ``label_strategy`` ``constant`` (``samples`` per class),
                ``total`` (``samples`` spread evenly over the classes), ``smallest`` (as many per
                class as the smallest class has), ``all``; its integer nodata is skipped.
``grid``        a regular grid (``step`` pixels) over the reference raster keeping only
                positions whose whole footprint is valid (no band is nodata) and inside the
                optional ``mask`` raster (non-zero); positions have no class.

Splits (``split``: proportions for train/valid/test): ``split_mode: random`` (stratified per
class) or ``blocks``: square blocks of ``block_size`` map units, from the raster origin, go
wholly to one split and positions whose footprint crosses a block border are dropped, so no
footprint of one split overlaps a footprint of another. The same seed gives the same selection.

Modules: :mod:`.footprints` (footprints, the raster filter), :mod:`.strategies` (the samplers),
:mod:`.splits` (splits, blocks, balance), :mod:`.selection` (all of it in order).
"""

from __future__ import annotations

from .selection import select_positions
from .splits import balance, format_balance, write_blocks
from .strategies import SAMPLERS, GridSampler, LabelRasterSampler, PointSampler, PolygonSampler, Sampler, label_counts

__all__ = ["SAMPLERS", "GridSampler", "LabelRasterSampler", "PointSampler", "PolygonSampler", "Sampler",
           "balance", "format_balance", "label_counts", "select_positions", "write_blocks"]
