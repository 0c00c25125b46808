"""The ``train_model_worker`` job: one process of a multi-worker training run (``TF_CONFIG`` set;
started by the ``train_model`` job with ``workers`` > 1, or by hand on each host of a cluster)."""

from __future__ import annotations

from ..protocol import Reporter
from ..training.multiworker import train_worker


def run(spec: dict, reporter: Reporter) -> dict:
    return train_worker(spec, reporter)
