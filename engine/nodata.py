"""Nodata as the network sees it: the same in training and in serving, whatever the nodata value.

Vocabulary:

- A pixel is **invalid** when any of its bands is NaN or equals that band's declared nodata
  (:func:`engine.rasters.invalid_pixels`, the one test).
- Both the dataset reader (training) and serving turn every band of an invalid pixel into NaN
  (:func:`to_nan`) before the network sees it, so the nodata *value* (-99999, -32768, ...) never
  reaches the network.
- The network fills NaN with 0 right after its normalisation layer, i.e. with the band's
  training mean (:class:`NodataFill`, the ``nodata_fill`` layer), and can be given a
  **validity channel** (1 valid, 0 invalid) per source.

Serving writes nodata where an output pixel's own footprint holds an invalid source pixel.
"""

from __future__ import annotations

import functools

import numpy as np

from .rasters import invalid_pixels

#: Keras' registration package of DeepField's layers (``"deepfield>NodataFill"``).
LAYER_PACKAGE = "deepfield"


def to_nan(array: np.ndarray, nodata, band_axis: int = -1) -> np.ndarray:
    """``array`` as float32 with every band of its invalid pixels set to NaN (in place when it is
    already a float32 array). ``nodata``: one value or ``None`` per band (see
    :func:`engine.rasters.invalid_pixels`)."""
    array = np.asarray(array, dtype=np.float32)
    bad = invalid_pixels(array, list(nodata or []), band_axis)
    if bad.any():
        np.moveaxis(array, band_axis, -1)[bad] = np.nan
    return array


@functools.lru_cache(maxsize=None)
def nodata_fill_class():
    """The :class:`NodataFill` Keras layer class, registered with Keras (defined on first use, as
    it needs TensorFlow). Loading a model folder calls this before ``keras.saving.load_model``."""
    from .device import tensorflow

    tensorflow()
    import keras

    @keras.saving.register_keras_serializable(package=LAYER_PACKAGE)
    class NodataFill(keras.layers.Layer):
        """NaN -> 0 (after normalisation: the band's mean); ``validity``: one more channel, 1 where
        every band is finite, 0 elsewhere."""

        def __init__(self, validity: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.validity = bool(validity)

        def call(self, x):
            ops = keras.ops
            missing = ops.isnan(x)
            filled = ops.where(missing, ops.zeros_like(x), x)
            if not self.validity:
                return filled
            valid = 1.0 - ops.cast(ops.any(missing, axis=-1, keepdims=True), x.dtype)
            return ops.concatenate([filled, valid], axis=-1)

        def compute_output_shape(self, input_shape):
            bands = input_shape[-1]
            if self.validity and bands is not None:
                bands += 1
            return tuple(input_shape[:-1]) + (bands,)

        def get_config(self):
            return {**super().get_config(), "validity": self.validity}

    return NodataFill


def nodata_fill(validity: bool = False, name: str | None = None):
    """A :class:`NodataFill` layer (see :func:`nodata_fill_class`)."""
    return nodata_fill_class()(validity=validity, name=name)
