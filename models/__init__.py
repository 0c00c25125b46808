"""The model zoo: builders ``build(spec) -> keras.Model`` by name, and user builders from a file.

Every builder returns a fully convolutional model (inputs ``(None, None, bands)``, one per
source, in source order) whose geometry :func:`deepfield.engine.fields.derive_geometry`
derives; see :mod:`.spec` for what ``spec`` holds. TensorFlow is imported only when a
builder runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from ..engine.protocol import EngineError
from . import fusion, patch_classifier, superres, translation, unet
from .spec import ModelInput, ModelSpec, SourceSpec

ZOO: dict[str, Callable] = {
    "patch_classifier": patch_classifier.build,
    "unet": unet.build,
    "fusion": fusion.build,
    "superres": superres.build,
    "translation": translation.build,
}
#: When to pick each zoo builder, one line each (Train model's help shows them).
WHEN_TO_USE: dict[str, str] = {
    "patch_classifier": "one class per 4 x 4 pixels from 16-pixel patches: point or polygon samples, "
                        "coarse maps, the fastest to train",
    "unet": "a class for every pixel (segmentation) from a label raster: sharp boundaries; patch sizes "
            "a multiple of its period 2**depth (8 with the default depth 3)",
    "fusion": "two sources at two resolutions (a panchromatic band and a coarser multispectral image) "
              "mapped at the fine resolution",
    "superres": "a sharper image (x2 or x4) learned from a target image: super-resolution, not classes",
    "translation": "an image on the same grid rendered like a target image (a map rendered from styled vectors, "
                   "another sensor): pix2pix's U-Net, with 'gan' its conditional PatchGAN; patch sizes a "
                   "multiple of 2**depth (16 with the default depth 4)",
}
#: The critic of an adversarial ('gan') run, by zoo name; other networks get the super-resolution one.
#: A critic with more inputs than the image is conditional: it sees the sources first (source order).
DISCRIMINATORS: dict[str, Callable] = {"translation": translation.build_discriminator}

__all__ = ["DISCRIMINATORS", "WHEN_TO_USE", "ZOO",
           "ModelInput", "ModelSpec", "SourceSpec", "import_python_file", "load_custom_builder"]


def import_python_file(py_file, what: str) -> ModuleType:
    """Import a user's Python file as a module, afresh (``what`` names it in errors: "custom model").

    The module is registered in ``sys.modules`` under a name unique to the file's path before it
    runs (dataclasses and Keras serialisation look their classes up there); removed if it fails.
    """
    path = Path(py_file)
    if not path.is_file():
        raise EngineError(f"{what} file not found: {path}")
    name = f"deepfield_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EngineError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise EngineError(f"{path}: importing the {what} failed ({type(error).__name__}: {error})") from None
    return module


def load_custom_builder(py_file) -> Callable:
    """The ``build(spec) -> keras.Model`` function of a user's Python file."""
    build = getattr(import_python_file(py_file, "custom model"), "build", None)
    if not callable(build):
        raise EngineError(f"{py_file}: defines no function build(spec) -> keras.Model")
    return build
