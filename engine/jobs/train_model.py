"""The ``train_model`` job: train a zoo or custom model on a dataset folder, write a model folder."""

from __future__ import annotations

from ..contract import TrainModelSpec
from ..protocol import Reporter
from ..training import train


def run(spec: dict, reporter: Reporter) -> dict:
    """Parse ``spec`` (:class:`..contract.TrainModelSpec`) and train (:func:`..training.train`)."""
    return train(TrainModelSpec.from_dict(spec), reporter)
