"""The ``train_model`` job: :func:`..training.train_model_job` in this process, or, with
``workers`` > 1, the multi-worker loop of :mod:`..multiworker` in that many local processes;
``train_model_worker`` is one such process (``TF_CONFIG`` set; also how other hosts join)."""

from __future__ import annotations

from ..multiworker import launch_local, train_worker
from ..protocol import Reporter
from ..training import train_model_job


def run(spec: dict, reporter: Reporter) -> dict:
    workers = int(spec.get("workers") or 1)
    training = {key: value for key, value in spec.items() if key != "workers"}
    if workers > 1:
        return launch_local(training, workers, reporter)
    return train_model_job(training, reporter)


def worker(spec: dict, reporter: Reporter) -> dict:
    return train_worker({key: value for key, value in spec.items() if key != "workers"}, reporter)
