"""Keras layers that make a network trained elsewhere servable: the ``custom.py`` of imported models.

Import model (:mod:`.importing`) copies this file into the model folder as ``custom.py``, which
:func:`.modelfolder.load_model_folder` imports before loading ``model.keras``; the file only
needs Keras and TensorFlow, so an imported folder also loads in plain Keras after
``exec(open("custom.py").read())``. It is never imported as a module of the engine package
(it imports Keras at its top, which engine modules never do).

- :class:`SavedModelNetwork`: one call signature of a TensorFlow SavedModel (e.g. written by
  OTBTF's Python API or ``tf.saved_model.save``) as a layer. The SavedModel is kept, as it is,
  in the ``savedmodel/`` folder next to this file; ``filepath`` in the layer's config is relative
  to this file's folder, so the model folder can be moved.
- :class:`SlidingWindows`: a network with a fixed input size (``window`` x ``window`` pixels,
  e.g. a patch classifier ending in ``Flatten`` + ``Dense``) run on every window of a larger
  image, ``step`` pixels apart, each window exactly ``window`` pixels. Every window gives the
  network's output block (``block`` x ``block`` pixels; a vector output is one pixel), and the
  blocks are laid side by side. The layer states its own pixel map
  (:meth:`SlidingWindows.deepfield_layer_map`), which :mod:`.fields` reads instead of probing.
"""

from pathlib import Path

import keras
import tensorflow as tf

#: The folder of this file: in a model folder, where ``savedmodel/`` is.
FOLDER = Path(__file__).resolve().parent


@keras.saving.register_keras_serializable(package="deepfield")
class SavedModelNetwork(keras.layers.Layer):
    """The ``endpoint`` signature of a SavedModel, called with one image tensor.

    ``filepath``: the SavedModel folder, relative to this file's folder (what the config stores);
    ``load_from``: where to read it now instead (Import model: the user's SavedModel, before it is
    copied into the model folder). ``input_name``: the signature's image argument;
    ``output_names``: the signature's outputs, in the order the layer returns them (one tensor
    when there is a single one).
    """

    def __init__(self, filepath="savedmodel", endpoint="serving_default", input_name="", output_names=(),
                 load_from=None, **kwargs):
        super().__init__(**kwargs)
        self.filepath = str(filepath)
        self.endpoint = endpoint
        self.input_name = input_name
        self.output_names = list(output_names)
        self._loaded = tf.saved_model.load(str(load_from or FOLDER / self.filepath))
        self._function = self._loaded.signatures[endpoint]

    def call(self, inputs):
        dtype = self._function.structured_input_signature[1][self.input_name].dtype
        outputs = self._function(**{self.input_name: tf.cast(inputs, dtype)})
        values = [outputs[name] for name in self.output_names]
        return values[0] if len(values) == 1 else values

    def get_config(self):
        return {**super().get_config(), "filepath": self.filepath, "endpoint": self.endpoint,
                "input_name": self.input_name, "output_names": self.output_names}


@keras.saving.register_keras_serializable(package="deepfield")
class SlidingWindows(keras.layers.Layer):
    """Run ``network`` (fixed input ``window`` x ``window`` pixels) on the windows of an image.

    Windows start every ``step`` input pixels (the first at pixel 0); the output of window
    ``(k, l)`` (``block`` x ``block`` pixels, a vector output counts as 1 x 1) is placed at
    output pixels ``[k * block, (k + 1) * block)``. An image of ``n`` pixels holds
    ``(n - window) // step + 1`` windows per axis. ``outputs``: how many tensors the network
    returns (each becomes one output, float32).
    """

    def __init__(self, network, window, step, block, outputs=1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        self.network = network
        self.window, self.step, self.block, self.outputs = int(window), int(step), int(block), int(outputs)

    def call(self, inputs):
        """Row of windows by row of windows (memory: one row's windows at a time)."""
        batch, bands = tf.shape(inputs)[0], inputs.shape[-1]
        rows = (tf.shape(inputs)[1] - self.window) // self.step + 1

        def row(k):
            strip = inputs[:, k * self.step:k * self.step + self.window]
            patches = tf.image.extract_patches(strip, sizes=[1, self.window, self.window, 1],
                                               strides=[1, self.step, self.step, 1], rates=[1, 1, 1, 1],
                                               padding="VALID")  # (batch, 1, cols, window * window * bands)
            outputs = self.network(tf.reshape(patches, (-1, self.window, self.window, bands)))
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return [self._side_by_side(tf.cast(out, tf.float32), batch, tf.shape(patches)[2]) for out in outputs]

        strips = tf.map_fn(row, tf.range(rows), fn_output_signature=[tf.TensorSpec(None, tf.float32)] * self.outputs)
        values = []
        for strip in strips:  # (rows, batch, block, cols * block, C)
            shape = tf.shape(strip)
            values.append(tf.reshape(tf.transpose(strip, (1, 0, 2, 3, 4)),
                                     (batch, rows * self.block, shape[3], strip.shape[-1])))
        return values[0] if len(values) == 1 else values

    def _side_by_side(self, out, batch, cols):
        """One row's window outputs ``(batch * cols, block, block, C)`` (or ``(batch * cols, C)``) as
        ``(batch, block, cols * block, C)``."""
        channels = out.shape[-1]
        out = tf.reshape(out, (batch, cols, self.block, self.block, channels))
        out = tf.transpose(out, (0, 2, 1, 3, 4))
        return tf.reshape(out, (batch, self.block, cols * self.block, channels))

    def deepfield_layer_map(self):
        """The layer along one axis (both alike), as :class:`deepfield.engine.fields.LayerMap`'s
        fields: output pixel ``q = k * block + phase`` reads input pixels
        ``[k * step, k * step + window - 1]``, and ``n_in = (step / block) * n_out + window - step``
        (the input sizes that hold whole windows only: a tile's window then measures exactly
        ``window`` pixels when the tile is one block, so RF = ``window``)."""
        return {"a": self.step, "b": self.block, "lo": (0,) * self.block, "hi": (self.window - 1,) * self.block,
                "c_lo": self.window - self.step, "c_hi": self.window - self.step}

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "window": self.window, "step": self.step, "block": self.block, "outputs": self.outputs}
