"""The training loop: build the models, fit epoch by epoch, keep checkpoints, write the model folder.

:func:`train` is the library's entry point (the ``train_model`` job calls it). Per epoch,
:class:`EpochEnd` validates, logs, saves the last and best checkpoints and stops early. Best
epoch: highest validation macro F1 (classifiers) or PSNR (super-resolution); early stopping
watches the same number. With ``ema_momentum`` the validated and written weights are the moving
average of the trained ones (:mod:`.averaging`). An epoch whose network outputs are not finite
scores NaN (with a warning); when every epoch does, training diverged: :func:`train` fails and
writes no model folder.
Mixed precision: float16 compute with float32 variables, softmax and outputs, and dynamic loss
scaling (:func:`.network.make_optimizer`). A run ends after ``epochs`` or its ``time_budget``,
whichever comes first; the learning rate follows :mod:`.schedule` over the same span.
``jit_compile`` compiles the training step (and validation's forward pass) with XLA; without it
Keras decides (XLA on GPUs).

Repeatability: ``seed`` seeds Python, numpy, TensorFlow, the shuffling and the augmentation;
on a CPU TensorFlow's kernels are made deterministic (XLA's, with ``jit_compile``, are without
being asked), so a seeded run repeats exactly (a resumed run restarts the shuffling order, so it
does not repeat an uninterrupted one).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..dataset import open_dataset
from ..errors import EngineError, JobCancelled
from ..fields import derive_geometry
from ..protocol import Reporter
from .architecture import resolve_architecture
from .averaging import averaged_weights
from .checkpoints import Checkpoint, RunState, checkpoint_folder
from .config import Task, TrainConfig, check_dataset
from .export import training_info, write_model_folder
from .network import build_network, class_weights, load_discriminator, make_loss, make_optimizer
from .reports import HISTORY, LOGS, write_scalars
from .schedule import RunClock, schedule_callback
from .validation import VALIDATION_SCALARS, validate
from .view import TrainingView, label_mapper, training_view

TRAIN_PROGRESS = 95.0  # percent of the job spent training; the rest writes the model folder


class EpochEnd:
    """Per epoch: validate, log, keep the last and best checkpoints, stop early (a Keras callback body)."""

    def __init__(self, config: TrainConfig, task: Task, view: TrainingView, checkpoint: Checkpoint,
                 state: RunState, valid_batches, loss, reporter: Reporter):
        self.config, self.task, self.view = config, task, view
        self.checkpoint, self.state = checkpoint, state
        self.valid_batches, self.loss, self.reporter = valid_batches, loss, reporter
        self.started = time.monotonic()

    def __call__(self, epoch: int, logs: dict) -> None:
        if self.reporter.cancelled:
            return  # a partial epoch: keep the last complete one
        state = self.state
        with averaged_weights(self.view.model.optimizer):
            metrics = validate(self.view, self.valid_batches, self.task, self.loss)
            value = metrics[self.task.score]
            improved = value > state.best_value
            if improved:
                self.checkpoint.save_best()
        scalars = {f"val_{k}": float(metrics[k]) for k in VALIDATION_SCALARS if k in metrics}
        logs.update(scalars)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
               "learning_rate": float(self.view.model.optimizer.learning_rate.numpy()),
               "seconds": round(time.monotonic() - self.started, 3)}
        self.started = time.monotonic()
        state.history.append(row)
        if math.isnan(value):
            self.reporter.warning(f"epoch {epoch + 1}: the validation {self.task.score} is NaN (the network's outputs "
                                  f"are not finite: training diverged); lower the learning rate "
                                  f"(now {self.config.learning_rate:g})")
        if improved:
            state.best_epoch, state.best_value, state.wait = epoch + 1, value, 0
            state.best_metrics = {**scalars, **({"confusion": metrics["confusion"].tolist()}
                                                if "confusion" in metrics else {})}
        else:
            state.wait += 1
        state.epochs_done = epoch + 1
        self.checkpoint.save(state)
        write_scalars(self.checkpoint.folder / LOGS, epoch + 1, row)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
        self.reporter.log(f"epoch {epoch + 1}/{self.config.epochs}: {shown}" + (" (best)" if improved else ""))
        patience = self.config.early_stopping_patience
        if patience and state.wait >= patience:
            self.reporter.log(f"early stopping: no improvement for {patience} epochs (best: epoch {state.best_epoch})")
            self.view.model.stop_training = True


def progress_callback(model, reporter: Reporter, clock: RunClock):
    """Progress per batch (steps or time budget, whichever is further); a cancel stops after the
    current batch."""
    import keras

    def batch_end(batch, logs=None):
        reporter.progress(TRAIN_PROGRESS * min(clock.progress, 1.0))
        if reporter.cancelled:
            model.stop_training = True

    return keras.callbacks.LambdaCallback(on_train_batch_end=batch_end)


def distribution_strategy():
    """MirroredStrategy over every GPU when there are several, else the default strategy."""
    from ..device import gpu_names, tensorflow

    tf = tensorflow()
    return tf.distribute.MirroredStrategy() if len(gpu_names()) > 1 else tf.distribute.get_strategy()


def set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow."""
    from ..device import tensorflow

    tensorflow()
    import keras

    keras.utils.set_random_seed(seed)


def deterministic_kernels(enabled: bool = True) -> None:
    """On a CPU, switch TensorFlow's op determinism (process-wide): on for TensorFlow's kernels,
    off for XLA-compiled runs (the switch refuses XLA's pooling gradients, and XLA's CPU kernels
    are deterministic without it). Keras compiles without XLA while it is on."""
    from ..device import gpu_names, tensorflow

    if gpu_names():
        return
    if enabled:
        tensorflow().config.experimental.enable_op_determinism()
    else:
        from tensorflow.python.framework import config  # the switch's off side is not public

        config.disable_op_determinism()


@dataclass
class Models:
    """What one run trains: the network, its geometry and training view, the loss, and the models
    and optimizers a checkpoint holds (network [+ critic], optimizer [+ critic optimizer])."""

    network: object
    geometry: object
    view: TrainingView
    loss: object
    saved: list
    optimizers: list


def build_models(config: TrainConfig, task: Task, reporter: Reporter) -> Models:
    """Build and compile under the distribution strategy, in mixed precision when asked."""
    from ..device import compute_device, tensorflow

    tensorflow()
    import keras

    if config.mixed_precision:
        if compute_device() == "/CPU:0":
            reporter.warning("mixed precision on the CPU is slow; it pays off on recent GPUs only")
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with distribution_strategy().scope():
            network = build_network(task, config)
            geometry = derive_geometry(network, task.scales)
            loss = make_loss(task, config)
            view = training_view(network, task, geometry)
            if config.gan:
                from .gan import adversarial_view  # imports TensorFlow: only for adversarial runs

                view = adversarial_view(network, load_discriminator(task, config), task, config)
                return Models(network, geometry, view, loss, [network, view.model.critic],
                              [view.model.optimizer, view.model.critic_optimizer])
            view.model.compile(optimizer=make_optimizer(config, averaged=True), loss=loss,
                               jit_compile=True if config.jit_compile else "auto")  # auto: XLA on GPUs
            if config.jit_compile and not view.model.jit_compile:
                reporter.log("jit_compile: a layer of this network does not support XLA; trained without it")
            view.model.optimizer.build(view.model.trainable_variables)
            return Models(network, geometry, view, loss, [network], [view.model.optimizer])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def train(config: TrainConfig, reporter: Reporter) -> dict:
    """Train a model on ``config.dataset`` and write the model folder ``config.output``.

    Returns ``{"output", "checkpoint", "epochs_done", "best_epoch", "best": {val_metric: value}}``;
    raises :class:`..errors.JobCancelled` when ``reporter`` was cancelled (after writing the best
    model so far, if any epoch finished).
    """
    from ..device import compute_device

    config.validate()
    reader = open_dataset(config.dataset)
    task = Task.from_manifest(reader.manifest)
    config = resolve_architecture(config, task, reporter.log)
    check_dataset(reader, task, config)
    if config.gan and (float(config.ema_momentum) or config.jit_compile):
        reporter.log("ema_momentum, jit_compile: adversarial runs keep their raw weights and are not compiled "
                     "with XLA")
    set_seed(int(config.seed))
    xla = config.jit_compile and not config.gan
    deterministic_kernels(not xla)
    import keras

    reporter.log(f"training on {compute_device()} with {reader.size('train')} training and "
                 f"{reader.size('valid')} validation patches ({task.kind})")
    models = build_models(config, task, reporter)
    if xla and not models.view.model.jit_compile:  # a layer without XLA
        deterministic_kernels()
    checkpoint = Checkpoint(checkpoint_folder(config.output), models.saved, models.optimizers)
    state = checkpoint.start(config, reporter)
    weights = None
    if task.is_classifier:
        weights = class_weights(reader.manifest["class_counts"]["train"], config.class_weighting)
        if config.class_weighting != "none":
            reporter.log("class weights: " + ", ".join(
                f"{c.get('name', c['value'])} {w:.3f}" for c, w in zip(task.classes, weights)))
    check_crop(config, task, models.view, models.geometry)
    mapper = label_mapper(task, models.view, weights)
    train_batches = reader.tf_dataset("train", config.batch_size, shuffle=True, seed=int(config.seed),
                                      augment=config.augment, crop=int(config.crop_size),
                                      gain_jitter=float(config.gain_jitter)).map(mapper)
    valid_batches = reader.tf_dataset("valid", config.batch_size, shuffle=False).map(mapper)
    steps = math.ceil(reader.size("train") / config.batch_size)
    model = models.view.model
    clock = RunClock(config.epochs * steps, config.time_budget, state.epochs_done * steps)
    callbacks = [
        schedule_callback(model, clock, float(config.learning_rate), config.schedule, reporter.log),
        progress_callback(model, reporter, clock),
        keras.callbacks.LambdaCallback(on_epoch_end=EpochEnd(config, task, models.view, checkpoint, state,
                                                             valid_batches, models.loss, reporter)),
    ]
    stopped_early = config.early_stopping_patience and state.wait >= config.early_stopping_patience
    if state.epochs_done < config.epochs and not stopped_early:
        model.fit(train_batches, epochs=config.epochs, initial_epoch=state.epochs_done,
                  callbacks=callbacks, shuffle=False, verbose=0)  # the dataset shuffles
    return finish(config, task, models, checkpoint, state, reporter)


def check_crop(config: TrainConfig, task: Task, view: TrainingView, geometry) -> None:
    """Refuse a ``crop_size`` the dataset or the network (its training ``view`` and ``geometry``)
    cannot train on (before the first step)."""
    size = int(config.crop_size)
    if not size:
        return
    patch = int(task.sources[0]["patch_size"])
    same_grid = (task.kind == "segmentation" and view.label_window is None
                 and all(int(s["patch_size"]) == patch and str(s.get("scale", "1")) == "1" for s in task.sources)
                 and int(task.label.get("patch_size") or 0) == patch)
    if not same_grid:
        raise EngineError(f"crop_size {size}: random crops need a segmentation dataset whose sources and labels "
                          f"share one grid and one patch size, and a network whose output matches its input; "
                          f"set crop_size to 0 (whole patches)")
    ef = geometry.ef
    if size > patch or size % ef:
        raise EngineError(f"crop_size {size} px: use a multiple of the network's expression field ({ef} px) "
                          f"no larger than the dataset's {patch}-pixel patches (or 0: whole patches)")


def finish(config: TrainConfig, task: Task, models: Models, checkpoint: Checkpoint, state: RunState,
           reporter: Reporter) -> dict:
    """Write the model folder from the best checkpoint; on cancel, say what the output holds."""
    if state.best_epoch == 0:  # no epoch gave a finite validation score (or none finished)
        if reporter.cancelled:
            when = (f"after {state.epochs_done} epoch(s) without a finite validation score" if state.epochs_done
                    else "before the first epoch finished")
            reporter.warning(f"cancelled {when}: no model written to {config.output}")
            raise JobCancelled("cancelled")
        raise EngineError(
            f"training diverged: the validation {task.score} was NaN in every epoch ({state.epochs_done} of "
            f"{config.epochs}; see {checkpoint.folder / HISTORY}), so no model was written to {config.output}; "
            f"lower the learning rate (it was {config.learning_rate:g}; try 10 times less) and train again "
            "with resume off")
    checkpoint.restore_best()
    network = models.network
    if config.mixed_precision:  # serve in float32: the same weights in a float32 network
        network = build_network(task, config)
        network.set_weights(models.network.get_weights())
    write_model_folder(config, task, network, models.geometry, checkpoint, state)
    info = training_info(config, state)
    result = {"output": str(Path(config.output)), "checkpoint": str(checkpoint.folder),
              "epochs_done": state.epochs_done, "best_epoch": state.best_epoch, "best": info["best"]}
    if reporter.cancelled:
        reporter.warning(f"cancelled during epoch {state.epochs_done + 1}: {config.output} holds the best model so "
                         f"far (epoch {state.best_epoch}); resume continues from {checkpoint.folder}")
        raise JobCancelled("cancelled")
    reporter.progress(100)
    return result


