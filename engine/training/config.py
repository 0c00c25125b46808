"""What a run trains: its configuration (the ``train_model`` spec) and the dataset's task."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..contract import TrainModelSpec
from ..errors import EngineError

#: A training run's configuration is the ``train_model`` job spec (:mod:`..contract`): field
#: names are the spec's keys, :meth:`TrainModelSpec.validate` checks the values.
TrainConfig = TrainModelSpec

#: Label kinds whose network is a classifier (a softmax over the dataset's classes).
CLASSIFIER_KINDS = ("class", "segmentation")


@dataclass(frozen=True)
class Task:
    """What the dataset asks the network to learn (from its manifest)."""

    kind: str
    sources: tuple
    label: dict

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Task":
        return cls(manifest["label"]["kind"], tuple(manifest["sources"]), manifest["label"])

    @property
    def is_classifier(self) -> bool:
        return self.kind in CLASSIFIER_KINDS

    @property
    def score(self) -> str:
        """The validation score that picks the best epoch (higher is better)."""
        return "macro_f1" if self.is_classifier else "psnr"

    @property
    def classes(self) -> list[dict]:
        return list(self.label.get("classes") or [])

    @property
    def scales(self) -> list[Fraction]:
        """Each source's spacing over the first source's."""
        return [Fraction(str(source.get("scale", "1"))) for source in self.sources]


def check_dataset(reader, task: Task, config: TrainConfig) -> None:
    """Refuse a dataset the run cannot train on (before any model is built)."""
    reader.check_files()
    for split in ("train", "valid"):
        if reader.size(split) == 0:
            raise EngineError(f"dataset {config.dataset} has no {split!r} patches: extract patches with a "
                              f"{split} proportion above 0")
    if config.gan and task.kind != "image":
        raise EngineError(f"'gan' is for image datasets (label kind 'image': super-resolution, translation), "
                          f"not {task.kind!r}")
    if float(config.gain_jitter) and task.kind == "image":
        raise EngineError("'gain_jitter' changes the sources' radiometry and not the target image's: use it with "
                          "class or segmentation labels, or set it to 0")
    if task.is_classifier and not task.classes:
        raise EngineError(f"dataset {config.dataset}: the manifest lists no classes")
