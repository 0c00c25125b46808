"""Multi-worker training: a custom ``MultiWorkerMirroredStrategy`` loop across processes.

Keras 3 ``fit`` does not run under ``MultiWorkerMirroredStrategy`` on the TensorFlow backend
(keras#20585), so each worker runs the loop here: ``strategy.run`` of a ``GradientTape`` step on
its share of every global batch, gradients all-reduced by the strategy. The cluster comes from
``TF_CONFIG`` (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker",
"index": k}}``); worker 0 (the chief) reports progress and writes the model folder.

:func:`launch_local` starts ``workers`` such processes on this host (loopback ports) and relays
the chief's protocol lines; on several hosts, set ``TF_CONFIG`` on each and run the
``train_model_worker`` job there. Single-host multi-GPU training keeps ``MirroredStrategy`` and
``fit`` (:mod:`.training`). Batch size: ``batch_size`` patches per worker and step (the global
batch is ``workers`` times larger); ``epochs`` passes of ``ceil(train patches / global batch)``
steps each, or fewer when the ``time_budget`` is spent; random crops (``crop_size``) and the
learning-rate schedule as in a one-process run. The workers agree on the run's progress at every
step (the mean of their own, all-reduced with the gradients), so they set the same learning rate
and stop after the same step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ..dataset import open_dataset
from ..device import tensorflow
from ..fields import derive_geometry
from ..modelfolder import ModelMetadata, save_model_folder
from ..protocol import EngineError, JobCancelled, Reporter
from .config import Task, TrainConfig, check_dataset
from .loop import check_crop, deterministic_kernels, set_seed
from .network import build_network, class_weights, make_optimizer, pixel_crossentropy
from .schedule import RunClock, learning_rate_at
from .view import label_mapper, training_view

#: ``python -m deepfield.engine``: the worker processes run the engine's command line.
ENGINE_MODULE = __package__.rsplit(".", 1)[0]
#: Seconds the other workers get to finish once the chief has (then they are killed).
WORKER_GRACE_S = 60


def tf_config(addresses: list[str], index: int) -> dict:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``addresses`` (``host:port``)."""
    return {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": int(index)}}


def loopback_addresses(count: int) -> list[str]:
    """``count`` free ``127.0.0.1:port`` addresses (ports the OS hands out, released at once)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


def per_example_loss(task: Task, config: TrainConfig, outputs, labels, weights):
    """One loss value per patch (mean over its pixels): :func:`.network.pixel_crossentropy`
    weighted by the label weights (0 = ignored label) for classifiers, L1/L2 for images."""
    tf = tensorflow()

    if task.is_classifier:
        per_pixel = pixel_crossentropy(labels, outputs, config.focal_gamma)
        if weights is not None:
            per_pixel = per_pixel * weights
            return tf.reduce_sum(per_pixel, [1, 2]) / tf.maximum(tf.reduce_sum(weights, [1, 2]), 1e-6)
        return tf.reduce_mean(per_pixel, [1, 2])
    error = outputs - tf.cast(labels, outputs.dtype)
    per_pixel = tf.abs(error) if config.loss == "l1" else tf.square(error)
    return tf.reduce_mean(per_pixel, [1, 2, 3])


def train_worker(spec: dict, reporter: Reporter) -> dict:
    """One worker of a multi-worker run (``TF_CONFIG`` set): train, and on the chief write the
    model folder. Returns ``{"output", "epochs_done", "losses", "workers", "best_epoch", "best"}``
    (``losses``: mean training loss per epoch; without validation the last epoch is the best)."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if not cluster.get("cluster", {}).get("worker"):
        raise EngineError("train_model_worker: TF_CONFIG must list the workers (see engine/multiworker.py)")
    config = TrainConfig.from_dict(spec)
    if config.gan or config.resume or config.mixed_precision:
        raise EngineError("multi-worker training does not support gan, resume or mixed_precision yet; "
                          "train with workers 1 for those")
    chief = int(cluster["task"]["index"]) == 0
    if chief and (float(config.ema_momentum) or config.jit_compile):
        reporter.log("ema_momentum, jit_compile: multi-worker runs write their last weights and are not "
                     "compiled with XLA")
    tf = tensorflow()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow work
    workers = strategy.num_replicas_in_sync
    reader = open_dataset(config.dataset)
    task = Task.from_manifest(reader.manifest)
    check_dataset(reader, task, config)
    set_seed(int(config.seed))
    deterministic_kernels()
    with strategy.scope():
        network = build_network(task, config)
        geometry = derive_geometry(network, task.scales)
        view = training_view(network, task, geometry)
        optimizer = make_optimizer(config)
        optimizer.build(view.model.trainable_variables)
    check_crop(config, task, view, geometry)
    weights = (class_weights(reader.manifest["class_counts"]["train"], config.class_weighting)
               if task.is_classifier else None)
    global_batch = config.batch_size * workers
    batches = reader.tf_dataset("train", global_batch, shuffle=True, seed=int(config.seed), augment=config.augment,
                                repeat=True, crop=int(config.crop_size),
                                gain_jitter=float(config.gain_jitter)).map(label_mapper(task, view, weights))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(batches.with_options(options)))
    model = view.model

    def replica_step(batch, progress):
        inputs, labels = batch[0], batch[1]
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            per_example = per_example_loss(task, config, outputs, labels, batch[2] if len(batch) > 2 else None)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss, progress

    @tf.function
    def step(iterator, progress):
        """One global step; returns the summed loss and the workers' mean ``progress`` (0..1)."""
        loss, progress = strategy.run(replica_step, args=(next(iterator), progress))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, None),
                strategy.reduce(tf.distribute.ReduceOp.MEAN, progress, None))

    steps = math.ceil(reader.size("train") / global_batch)
    clock = RunClock(config.epochs * steps, config.time_budget)
    losses, progress, epochs_done = [], 0.0, 0
    while epochs_done < config.epochs and progress < 1.0:
        total, done = 0.0, 0
        while done < steps and progress < 1.0:
            optimizer.learning_rate.assign(learning_rate_at(float(config.learning_rate), progress, config.schedule))
            loss, agreed = step(iterator, tf.constant(clock.progress, tf.float32))
            total, done, progress = total + float(loss), done + 1, float(agreed)
            clock.step += 1
            if chief:
                reporter.progress(95.0 * min(clock.progress, 1.0))
        losses.append(total / done)
        epochs_done += 1
        if chief:
            reporter.log(f"epoch {epochs_done}/{config.epochs}: training loss {losses[-1]:.4f} ({workers} workers)")
    if chief and epochs_done < config.epochs:
        reporter.log(f"time budget of {config.time_budget:g} min spent after {clock.step} steps: stopping")
    result = {"output": str(config.output), "epochs_done": epochs_done, "losses": losses, "workers": workers,
              "best_epoch": epochs_done, "best": {"loss": losses[-1]}}  # no validation: the last epoch
    if chief:
        metadata = ModelMetadata.for_model(network, task.kind, geometry=geometry, classes=task.classes,
                                           sources=list(task.sources),
                                           training={"workers": workers, "losses": losses})
        save_model_folder(config.output, network, metadata)
        reporter.progress(100)
    return result


def launch_local(spec: dict, workers: int, reporter: Reporter) -> dict:
    """Run ``workers`` :func:`train_worker` processes on this host, each with its ``TF_CONFIG`` and
    one share of the CPU; relay the chief's progress and messages; the chief's result."""
    addresses = loopback_addresses(workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    job = json.dumps({**spec, "job": "train_model_worker"})
    with tempfile.TemporaryDirectory(prefix="deepfield-workers-") as logs, contextlib.ExitStack() as files:
        processes = []
        for index in range(workers):
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config(addresses, index)),
                   "DEEPFIELD_TF_THREADS": str(threads)}
            out = subprocess.PIPE if index == 0 else files.enter_context(open(Path(logs) / f"worker{index}.jsonl", "w"))
            processes.append(subprocess.Popen([sys.executable, "-m", ENGINE_MODULE, job], stdout=out,
                                              stderr=subprocess.DEVNULL, env=env, text=True))
        reporter.log(f"multi-worker training: {workers} worker processes at {', '.join(addresses)}")
        try:
            result, error = None, None
            for line in processes[0].stdout:
                message = json.loads(line)
                if message["type"] == "result":
                    result = message["result"]
                elif message["type"] == "error":
                    error = message["message"]
                elif message["type"] in ("progress", "log"):
                    reporter.emit(message)
                reporter.check_cancelled()
            codes = [processes[0].wait()] + [_wait_or_kill(p, WORKER_GRACE_S) for p in processes[1:]]
        except JobCancelled:
            for p in processes:
                p.kill()
            raise
        if error or any(codes):
            others = [(Path(logs) / f"worker{k}.jsonl").read_text() for k in range(1, workers)]
            details = error or next((json.loads(line)["message"] for text in others for line in text.splitlines()
                                     if '"type": "error"' in line), f"exit codes {codes}")
            raise EngineError(f"multi-worker training failed: {details}")
    return result



def _wait_or_kill(process: subprocess.Popen, seconds: float) -> int:
    """The process's exit code; killed (code -9) if it is still running after ``seconds``."""
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
