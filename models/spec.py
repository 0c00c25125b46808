"""What a model builder receives (:class:`ModelSpec`) and the pieces every zoo model shares.

A builder is ``build(spec) -> keras.Model``: a fully convolutional network with one input per
source, ``keras.Input((None, None, bands), name=source name)``, in source order (a list of
inputs, or the single input), whose geometry :func:`deepfield.engine.fields.derive_geometry`
derives. ``spec`` is a :class:`ModelSpec` or the plain dict the training job passes::

    {"task": "class" | "segmentation" | "image", "sources": [{"name", "bands", "scale",
     "patch_size", "mean", "std"}], "classes": 4, "out_bands": 3, "factor": 2, **hyper-parameters}

When a source carries ``mean``/``std``, the model normalises it inside (a ``Normalization``
layer); without them (the training job normalises around the builder's model) it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ..engine.protocol import EngineError

SPEC_KEYS = ("task", "sources", "classes", "n_classes", "out_bands", "factor")


@dataclass(frozen=True)
class ModelInput:
    """One input of the model to build, as the builder sees it: the source's name, bands, spacing
    scale (its spacing / the first source's), statistics (per band) and patch size (pixels)."""

    name: str
    bands: int
    scale: Fraction = Fraction(1)
    mean: tuple | None = None
    std: tuple | None = None
    patch_size: int | None = None


#: The 0.1 name of :class:`ModelInput`, kept for custom builders that import it.
SourceSpec = ModelInput


@dataclass(frozen=True)
class ModelSpec:
    """What to build: sources, classes (classifiers) or output bands, and hyper-parameters.

    ``n_classes > 0``: a softmax over the classes; else ``out_bands`` linear outputs.
    ``factor``: super-resolution factor (output pixels per source-0 pixel, per axis).
    """

    sources: tuple[ModelInput, ...]
    n_classes: int = 0
    out_bands: int = 0
    factor: int = 1
    task: str = ""
    params: dict = field(default_factory=dict)

    @classmethod
    def coerce(cls, spec) -> "ModelSpec":
        """A :class:`ModelSpec` from itself or the training job's dict (see the module docstring)."""
        if isinstance(spec, ModelSpec):
            return spec
        if not isinstance(spec, dict) or not spec.get("sources"):
            raise EngineError("a model spec needs 'sources': [{name, bands, scale}]")
        sources = []
        for k, source in enumerate(spec["sources"]):
            if "name" not in source or "bands" not in source:
                raise EngineError(f"model spec sources[{k}] needs 'name' and 'bands'")
            stats = {key: tuple(float(v) for v in source[key]) if source.get(key) is not None else None
                     for key in ("mean", "std")}
            sources.append(ModelInput(str(source["name"]), int(source["bands"]), Fraction(str(source.get("scale", 1))),
                                      patch_size=source.get("patch_size"), **stats))
        classes = spec.get("n_classes", spec.get("classes", 0))
        classes = len(classes) if isinstance(classes, (list, tuple)) else int(classes or 0)
        params = {key: value for key, value in spec.items() if key not in SPEC_KEYS}
        return cls(tuple(sources), classes, int(spec.get("out_bands") or 0), int(spec.get("factor") or 1),
                   str(spec.get("task") or ""), params)

    def param(self, name: str, default):
        """A hyper-parameter, converted to the type of its default."""
        value = self.params.get(name, default)
        if isinstance(default, bool) and isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes")
        try:
            return type(default)(value) if default is not None else value
        except (TypeError, ValueError):
            raise EngineError(f"hyper-parameter {name!r} must be of type {type(default).__name__}, not {value!r}") from None

    @property
    def channels_out(self) -> int:
        if self.n_classes < 1 and self.out_bands < 1:
            raise EngineError("the model spec needs 'classes' (a classifier) or 'out_bands' (an image output)")
        return self.n_classes if self.n_classes > 0 else self.out_bands


def keras():
    """Keras, imported after TensorFlow is configured (engine.device)."""
    from ..engine.device import tensorflow

    tensorflow()
    import keras as keras_module

    return keras_module


def source_inputs(spec: ModelSpec) -> tuple[list, list]:
    """``(inputs, tensors)``: one Input per source, and each normalised if it has statistics."""
    k = keras()
    inputs, tensors = [], []
    for source in spec.sources:
        x = k.Input((None, None, source.bands), name=source.name)
        inputs.append(x)
        if source.mean is not None and source.std is not None:
            variance = [max(s, 1e-12) ** 2 for s in source.std]
            x = k.layers.Normalization(mean=list(source.mean), variance=variance, name=f"normalise_{source.name}")(x)
        tensors.append(x)
    return inputs, tensors


def head(x, spec: ModelSpec, kernel: int = 1, padding: str = "same", name: str = "output"):
    """The output layer: softmax over the classes, or linear bands.

    The softmax is its own float32 layer (``name``) after the logits convolution, so that under a
    mixed-precision policy it is computed in float32 (the Keras mixed-precision guide's rule).
    """
    k = keras()
    if spec.n_classes > 0:
        logits = k.layers.Conv2D(spec.n_classes, kernel, padding=padding, name=f"{name}_logits")(x)
        return k.layers.Activation("softmax", dtype="float32", name=name)(logits)
    return k.layers.Conv2D(spec.channels_out, kernel, padding=padding, name=name)(x)


def conv(x, width: int, kernel: int = 3, strides: int = 1, padding: str = "same", activation: str = "relu"):
    return keras().layers.Conv2D(width, kernel, strides=strides, padding=padding, activation=activation)(x)


def model(inputs: list, output, name: str):
    """The Keras model: a single input stays single, several stay a list (source order)."""
    return keras().Model(inputs if len(inputs) > 1 else inputs[0], output, name=name)


def integer_scale(spec: ModelSpec, index: int, model_name: str) -> int:
    """Source ``index``'s scale as a whole number >= 1, or a clear error."""
    scale = spec.sources[index].scale
    if scale.denominator != 1 or scale < 1:
        raise EngineError(f"{model_name}: source {spec.sources[index].name!r} has scale {scale}; this model "
                          "needs a whole-number scale >= 1 (a coarser source than the reference)")
    return int(scale)
