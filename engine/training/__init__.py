"""Training: fit a zoo or custom network on a dataset folder and write a model folder.

Vocabulary:

- **task** (:mod:`.config`): the dataset's label kind: ``class`` (one class per patch),
  ``segmentation`` (a class per pixel, ``-1`` = ignore) or ``image`` (a target image:
  super-resolution, translation).
- **architecture** (:mod:`.architecture`): ``automatic`` picks the zoo network from the dataset
  (and logs why).
- **network** (:mod:`.network`): the Keras model that is saved and served, normalising its inputs
  (and de-normalising an ``image`` output) around the builder's model.
- **training view** (:mod:`.view`): the network as the loss sees it, and how label patches are
  cut to its output; :mod:`.gan` gives image targets an adversarial one.
- **validation** (:mod:`.validation`): the scores of each epoch on the validation split.
- **checkpoint folder** ``<output>.checkpoint/`` (:mod:`.checkpoints`): last and best weights,
  run state, history and TensorBoard logs; it survives a cancel or a crash and ``resume``
  continues from it.
- **model folder** ``<output>`` (:mod:`.export`, reports from :mod:`.reports`): written once,
  atomically, from the best weights.
- **the loop** (:mod:`.loop`): :func:`train`, epoch by epoch.

``train(TrainConfig(dataset=..., output=..., architecture="unet"), reporter)`` is the whole
public surface; the ``train_model`` job (:mod:`..jobs.train_model`) parses its spec into a
:class:`TrainConfig` and calls it.
"""

from __future__ import annotations

from .checkpoints import checkpoint_folder
from .config import Task, TrainConfig
from .loop import train

__all__ = ["Task", "TrainConfig", "checkpoint_folder", "train"]
