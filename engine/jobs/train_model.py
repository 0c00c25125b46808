"""The ``train_model`` job: train a zoo or custom model on a dataset folder, write a model folder;
with ``workers`` > 1, the multi-worker loop of :mod:`..training.multiworker` in that many local
processes (each one runs the ``train_model_worker`` job)."""

from __future__ import annotations

from ..contract import TrainModelSpec
from ..protocol import Reporter
from ..training import train
from ..training.multiworker import launch_local


def run(spec: dict, reporter: Reporter) -> dict:
    """Parse ``spec`` (:class:`..contract.TrainModelSpec`) and train (:func:`..training.train`)."""
    config = TrainModelSpec.from_dict(spec)
    if config.workers > 1:
        return launch_local(config.to_dict(), config.workers, reporter)
    return train(config, reporter)
