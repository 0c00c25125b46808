"""The ``train_model`` job: train a zoo or custom model on a dataset folder, write a model folder.

Vocabulary:

- **task**: the dataset's label kind: ``class`` (one class per patch), ``segmentation`` (a class
  per pixel, ``-1`` = ignore) or ``image`` (a target image: super-resolution).
- **network**: the Keras model that is saved and served: one input per dataset source (named
  like it, spatial size ``None``), normalised inside the model with the manifest's per-band
  mean/std; an ``image`` network's output is de-normalised (:func:`output_statistics`).
- **training view**: the network as the loss sees it; for ``class`` its output is cut to the
  one output pixel covering the patch centre (``[B, 1, 1, K]``), and for ``segmentation``
  the label patches are cut to the output pixels a "valid" network emits.
- **checkpoint folder** ``<output>.checkpoint/``: last and best weights (+ optimizer state),
  ``state.json``, ``history.csv`` and TensorBoard logs. It survives a cancel or a crash, and
  ``resume`` continues from it. The model folder ``<output>`` is written once, atomically,
  from the best weights: ``model`` + metadata, ``history.csv``, ``training_curves.png``,
  ``confusion_matrix.json/.png`` (classifiers), ``logs/`` (TensorBoard).

Best epoch: highest validation macro F1 (classifiers) or PSNR (super-resolution); early
stopping watches the same number. An epoch whose network outputs are not finite scores NaN (with a
warning); when every epoch does, training diverged: the job fails and writes no model folder.
Mixed precision: float16 compute with float32 variables, softmax and outputs, and dynamic loss
scaling (:func:`make_optimizer`). ``history.csv`` has one row per epoch: ``epoch``, the
training losses (``loss``; with ``gan`` also ``adversarial``, ``discriminator_loss``), the
validation scores (``val_loss``, ``val_overall_accuracy``, ``val_kappa``, ``val_macro_f1``;
or ``val_psnr``, ``val_psnr_bicubic`` in dB), ``learning_rate`` and ``seconds`` (wall time of
the epoch with its validation).

Repeatability: ``seed`` seeds Python, numpy, TensorFlow, the shuffling and the augmentation;
on a CPU TensorFlow's kernels are made deterministic, so a seeded run repeats exactly (a
resumed run restarts the shuffling order, so it does not repeat an uninterrupted one).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .dataset import open_dataset
from .fields import derive_geometry, pack_inputs
from .outputs import atomic_output, check_outputs, remove_path
from .protocol import EngineError, JobCancelled, Reporter

CLASSIFIER_KINDS = ("class", "segmentation")
CLASS_WEIGHTING = ("none", "balanced")
IMAGE_LOSSES = ("l1", "l2")
CHECKPOINT_SUFFIX = ".checkpoint"
STATE = "state.json"
LAST = "last.npz"
BEST = "best.npz"
HISTORY = "history.csv"
CURVES = "training_curves.png"
CONFUSION = "confusion_matrix"
LOGS = "logs"
VALIDATION_SCALARS = ("loss", "overall_accuracy", "kappa", "macro_f1", "psnr", "psnr_bicubic")
TRAIN_PROGRESS = 95.0  # percent of the job spent training; the rest writes the model folder


# -- the job spec --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """A ``train_model`` job spec (see the module docstring; sizes in patches, rates per step).

    ``early_stopping_patience``: epochs without improvement before stopping (0: never).
    ``loss`` (``image`` task): ``l1`` or ``l2``. ``gan`` (``image`` task): add an adversarial
    loss, weighted ``adversarial_weight``, against the zoo's patch discriminator.
    ``hyperparameters`` go to the model builder unchanged.
    """

    dataset: str
    output: str
    architecture: str | None = None
    custom_model: str | None = None
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    class_weighting: str = "none"
    augment: bool = True
    seed: int = 0
    resume: bool = False
    early_stopping_patience: int = 0
    mixed_precision: bool = False
    gan: bool = False
    loss: str = "l1"
    adversarial_weight: float = 1e-3
    hyperparameters: dict = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: dict) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - known - {"job"})
        if unknown:
            raise EngineError(f"train_model: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {key: spec[key] for key in known if spec.get(key) is not None}
        for key in ("dataset", "output"):
            if not values.get(key):
                raise EngineError(f"train_model: {key!r} is required")
        if bool(values.get("architecture")) == bool(values.get("custom_model")):
            raise EngineError("train_model: give exactly one of 'architecture' (a zoo name) and "
                              "'custom_model' (a .py file)")
        for key in ("epochs", "batch_size"):
            if key in values and (not isinstance(values[key], int) or values[key] < 1):
                raise EngineError(f"train_model: {key!r} must be a positive integer, got {values[key]!r}")
        if float(values.get("learning_rate", 1e-3)) <= 0:
            raise EngineError(f"train_model: 'learning_rate' must be > 0, got {values['learning_rate']!r}")
        if int(values.get("early_stopping_patience", 0)) < 0:
            raise EngineError("train_model: 'early_stopping_patience' must be >= 0")
        if values.get("class_weighting", "none") not in CLASS_WEIGHTING:
            raise EngineError(f"train_model: 'class_weighting' must be one of {', '.join(CLASS_WEIGHTING)}")
        if values.get("loss", "l1") not in IMAGE_LOSSES:
            raise EngineError(f"train_model: 'loss' must be one of {', '.join(IMAGE_LOSSES)}")
        if not isinstance(values.get("hyperparameters", {}), dict):
            raise EngineError("train_model: 'hyperparameters' must be an object (name -> value)")
        return cls(**values)

    def fingerprint(self) -> dict:
        """What must not change between a checkpoint and a resumed run."""
        return {key: getattr(self, key) for key in
                ("dataset", "architecture", "custom_model", "hyperparameters", "gan", "loss")}


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


# -- pure helpers --------------------------------------------------------------------------------

def class_weights(counts, mode: str) -> np.ndarray:
    """Per-class loss weights from training label counts.

    ``none``: all 1. ``balanced``: ``total / (K * count)`` (scikit-learn's rule), 0 for classes
    absent from the training split.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return np.ones(len(counts), dtype=np.float32)
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def psnr(mse: float, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error and a data range (target units);
    NaN for a non-finite error (a diverged network)."""
    if not math.isfinite(mse):
        return math.nan
    if mse <= 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def centre_output_pixel(patch_size: int, before: int, crop: int, ratio: Fraction, out_size: int) -> int:
    """Index (one axis) of the output pixel whose footprint holds a patch's centre node.

    The patch's centre node is ``patch_size // 2`` (architecture.md, patch centre); output
    pixel ``j`` covers source pixels from ``before + (j - crop) * ratio``, ``ratio`` wide.
    """
    index = math.floor((patch_size // 2 - before) / ratio) + crop
    return min(max(index, 0), out_size - 1)


# -- model construction ----------------------------------------------------------------------------

def builder_spec(task: Task, config: TrainConfig) -> dict:
    """The spec a zoo/custom ``build(spec)`` receives."""
    spec = {
        "task": task.kind,
        "sources": [{"name": s["name"], "bands": int(s["bands"]), "patch_size": int(s["patch_size"]),
                     "scale": str(s.get("scale", "1"))} for s in task.sources],
        "classes": len(task.classes),
        **config.hyperparameters,
    }
    if task.kind == "image":
        spec.update(out_bands=int(task.label["bands"]), factor=int(1 / Fraction(str(task.label.get("scale") or 1))))
    return spec


def load_builder(config: TrainConfig):
    """The ``build(spec) -> keras.Model`` function named by the config."""
    from .. import models

    if config.custom_model:
        return models.load_custom_builder(config.custom_model)
    try:
        return models.ZOO[config.architecture]
    except KeyError:
        raise EngineError(
            f"unknown architecture {config.architecture!r}; the model zoo has: {', '.join(sorted(models.ZOO))}"
        ) from None


def load_discriminator(task: Task, config: TrainConfig):
    """The zoo's patch discriminator for the super-resolution target (logits per patch cell)."""
    from ..models import superres

    return superres.build_discriminator(builder_spec(task, config))


def output_statistics(task: Task) -> tuple[list, list]:
    """Mean/std an ``image`` network's output is de-normalised with: the first source's when it has
    the target's bands (an identity-initialised network then passes its input through), else the
    target's own."""
    first = task.sources[0]
    if int(first["bands"]) == int(task.label["bands"]):
        return first["mean"], first["std"]
    return task.label["mean"], task.label["std"]


def build_network(task: Task, config: TrainConfig):
    """The network to train and serve: normalisation + the builder's model (+ de-normalisation)."""
    from .device import tensorflow

    tensorflow()
    import keras

    core = load_builder(config)(builder_spec(task, config))
    inputs = [keras.Input((None, None, int(s["bands"])), name=s["name"]) for s in task.sources]
    normalised = [
        keras.layers.Normalization(mean=s["mean"], variance=variance(s["std"]), name=f"normalise_{s['name']}")(x)
        for s, x in zip(task.sources, inputs)
    ]
    output = core(pack_inputs(core, normalised))  # a user's builder may take a dict of inputs
    if task.kind == "image":
        mean, std = output_statistics(task)
        output = keras.layers.Normalization(mean=mean, variance=variance(std), invert=True, dtype="float32",
                                            name="denormalise")(output)
    output = keras.layers.Activation("linear", dtype="float32", name="output")(output)
    return keras.Model(model_inputs(task, inputs), output, name=core.name)


def variance(std) -> np.ndarray:
    """Per-band variance for a Normalization layer; a constant band (std 0) is only centred."""
    std = np.asarray(std, dtype=np.float64)
    return np.where(std > 0, std, 1.0) ** 2


def model_inputs(task: Task, values):
    """Per-source values (a list in source order, or a dict by source name) in the structure the
    network takes, as serving calls it: the array itself for one source, a tuple for several."""
    if isinstance(values, dict):
        values = [values[s["name"]] for s in task.sources]
    return tuple(values) if len(values) > 1 else values[0]


@dataclass(frozen=True)
class TrainingView:
    """The network as the loss sees it, and how label patches are cut to its output.

    ``label_window``: ``(row, col, height, width)`` of the label patch the output covers
    (``segmentation``/``image``; ``None`` when they have the same size).
    """

    model: object
    label_window: tuple | None


def training_view(network, task: Task, geometry) -> TrainingView:
    """Probe the network on one zero patch per source and line its output up with the labels."""
    import keras

    probe = model_inputs(task, [np.zeros((1, int(s["patch_size"]), int(s["patch_size"]), int(s["bands"])), np.float32)
                                for s in task.sources])
    height, width = (int(n) for n in network(probe, training=False).shape[1:3])
    ratio = geometry.ratio(0)
    if task.kind == "class":
        if (height, width) == (1, 1):
            return TrainingView(network, None)
        size = int(task.sources[0]["patch_size"])
        row = centre_output_pixel(size, geometry.before(0), geometry.crop, ratio, height)
        col = centre_output_pixel(size, geometry.before(0), geometry.crop, ratio, width)
        cut = keras.layers.Cropping2D(((row, height - row - 1), (col, width - col - 1)))(network.output)
        return TrainingView(keras.Model(network.input, cut), None)
    size = int(task.label["patch_size"])
    if (height, width) == (size, size):
        return TrainingView(network, None)
    offset = geometry.before(0) - geometry.crop
    if task.kind == "segmentation" and ratio == 1 and 0 <= offset and offset + max(height, width) <= size:
        return TrainingView(network, (offset, offset, height, width))
    raise EngineError(
        f"the model's output for {task.sources[0]['patch_size']}-pixel patches is {height} x {width} pixels, "
        f"which does not line up with the dataset's {size}-pixel label patches; extract patches whose "
        f"label patch matches the model output, or use a model with the same output size"
    )


def label_mapper(task: Task, view: TrainingView, weights: np.ndarray | None):
    """A tf.data map: cut labels to the output; classifiers get per-label sample weights (0 = ignore)."""
    from .device import tensorflow

    tf = tensorflow()
    table = None if weights is None else tf.constant(weights, tf.float32)

    def mapper(inputs, labels):
        inputs = model_inputs(task, inputs)
        if task.kind == "class":
            labels = tf.reshape(labels, (-1, 1, 1))
        elif view.label_window is not None:
            row, col, height, width = view.label_window
            labels = labels[:, row:row + height, col:col + width]
        if table is None:
            return inputs, labels
        valid = labels >= 0
        clean = tf.where(valid, labels, 0)
        return inputs, clean, tf.where(valid, tf.gather(table, clean), 0.0)

    return mapper


def make_loss(task: Task, config: TrainConfig):
    import keras

    if task.is_classifier:
        return keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
    return keras.losses.MeanAbsoluteError() if config.loss == "l1" else keras.losses.MeanSquaredError()


def make_optimizer(config: TrainConfig):
    """Adam at the configured learning rate; in mixed precision wrapped in a ``LossScaleOptimizer``
    (dynamic loss scaling against float16 gradient underflow: a custom train step must scale its
    loss with ``optimizer.scale_loss`` before taking gradients; ``apply_gradients`` unscales them)."""
    import keras

    optimizer = keras.optimizers.Adam(config.learning_rate)
    return keras.optimizers.LossScaleOptimizer(optimizer) if config.mixed_precision else optimizer


def adversarial_view(network, discriminator, task: Task, config: TrainConfig) -> TrainingView:
    """A super-resolution training view with a custom train step: content loss + adversarial loss.

    ``discriminator`` (a zoo patch discriminator, logits) sees normalised target images; the
    generator minimises ``content + adversarial_weight * BCE(D(G(x)), real)`` and the
    discriminator ``BCE(D(y), real) + BCE(D(G(x)), fake)``. Logged: ``loss`` (content),
    ``adversarial`` and ``discriminator_loss``.
    """
    from .device import tensorflow

    tf = tensorflow()
    import keras

    target = keras.Input((None, None, int(task.label["bands"])), name="target")
    normalised = keras.layers.Normalization(mean=task.label["mean"], variance=variance(task.label["std"]))(target)
    critic = keras.Model(target, discriminator(normalised), name="critic")
    content_loss = make_loss(task, config)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    weight = float(config.adversarial_weight)

    class AdversarialTrainer(keras.Model):
        def __init__(self):
            super().__init__(name="adversarial_trainer")
            self.generator, self.critic = network, critic
            self.critic_optimizer = make_optimizer(config)
            self.trackers = {name: keras.metrics.Mean(name=name)
                             for name in ("loss", "adversarial", "discriminator_loss")}

        @property
        def metrics(self):
            return list(self.trackers.values())  # reset by Keras at each epoch start

        def call(self, inputs, training=False):
            return self.generator(inputs, training=training)

        def train_step(self, data):
            inputs, target = data
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                fake = self.generator(inputs, training=True)
                real_score = self.critic(target, training=True)
                fake_score = self.critic(fake, training=True)
                content = content_loss(target, fake)
                adversarial = bce(tf.ones_like(fake_score), fake_score)
                d_loss = bce(tf.ones_like(real_score), real_score) + bce(tf.zeros_like(fake_score), fake_score)
                g_scaled = self.optimizer.scale_loss(content + weight * adversarial)  # mixed precision
                d_scaled = self.critic_optimizer.scale_loss(d_loss)
            for tape, loss_value, model, optimizer in ((g_tape, g_scaled, self.generator, self.optimizer),
                                                       (d_tape, d_scaled, self.critic, self.critic_optimizer)):
                variables = model.trainable_variables
                optimizer.apply_gradients(zip(tape.gradient(loss_value, variables), variables))
            for name, value in (("loss", content), ("adversarial", adversarial), ("discriminator_loss", d_loss)):
                self.trackers[name].update_state(value)
            return {name: tracker.result() for name, tracker in self.trackers.items()}

    trainer = AdversarialTrainer()
    trainer.compile(optimizer=make_optimizer(config))
    trainer.optimizer.build(network.trainable_variables)
    trainer.critic_optimizer.build(critic.trainable_variables)
    return TrainingView(trainer, None)


# -- validation ------------------------------------------------------------------------------------

def validate(view: TrainingView, batches, task: Task, loss) -> dict:
    """Metrics of the training view over ``batches`` (mapped by :func:`label_mapper`).

    Classifiers: ``loss`` (weighted like training), ``overall_accuracy``, ``macro_f1``,
    ``confusion`` (reference rows x predicted columns, class indices) and per-class scores.
    Images: ``loss``, ``psnr`` (dB, data range = target max - min over the split) and
    ``psnr_bicubic`` (the first source upsampled bicubically, when its band count matches).
    """
    if task.is_classifier:
        return _validate_classifier(view, batches, task, loss)
    return _validate_image(view, batches, task, loss)


def _validate_classifier(view, batches, task, loss) -> dict:
    from .metrics import confusion_matrix, summarize

    n_classes = len(task.classes)
    matrix = np.zeros((n_classes, n_classes), np.int64)
    loss_sum = weight_sum = 0.0
    finite = True
    for inputs, labels, weights in batches:
        probabilities = view.model.predict_on_batch(inputs)
        finite = finite and bool(np.all(np.isfinite(probabilities)))
        batch_weight = float(np.sum(weights))
        loss_sum += float(loss(labels, probabilities, sample_weight=weights)) * batch_weight
        weight_sum += batch_weight
        keep = np.asarray(weights) > 0
        predicted = np.argmax(probabilities, axis=-1)
        matrix += confusion_matrix(np.asarray(labels)[keep], predicted[keep], range(n_classes))
    metrics = {"loss": loss_sum / weight_sum if weight_sum else math.nan, "confusion": matrix, **summarize(matrix)}
    if not finite:  # a diverged network: the argmax of NaN probabilities is no prediction
        metrics.update(overall_accuracy=math.nan, kappa=math.nan, macro_f1=math.nan)
    return metrics


def _validate_image(view, batches, task, loss) -> dict:
    from .device import tensorflow

    tf = tensorflow()
    first = task.sources[0]
    bicubic = int(first["bands"]) == int(task.label["bands"])
    sse = sse_bicubic = loss_sum = 0.0
    count = batches_seen = 0
    low, high = math.inf, -math.inf
    for inputs, target in batches:
        target = np.asarray(target, np.float64)
        predicted = np.asarray(view.model.predict_on_batch(inputs), np.float64)
        loss_sum += float(loss(target, predicted))
        batches_seen += 1
        sse += float(np.sum((predicted - target) ** 2))
        count += target.size
        low, high = min(low, target.min()), max(high, target.max())
        if bicubic:
            coarse = inputs[0] if isinstance(inputs, tuple) else inputs
            upsampled = tf.image.resize(coarse, target.shape[1:3], method="bicubic")
            sse_bicubic += float(np.sum((upsampled.numpy() - target) ** 2))
    data_range = high - low
    metrics = {"loss": loss_sum / batches_seen, "psnr": psnr(sse / count, data_range)}
    if bicubic:
        metrics["psnr_bicubic"] = psnr(sse_bicubic / count, data_range)
    return metrics


# -- checkpoints -------------------------------------------------------------------------------------

@dataclass
class RunState:
    """The checkpoint folder's ``state.json``: progress, best epoch, history rows (1-based epochs)."""

    fingerprint: dict
    epochs_done: int = 0
    best_epoch: int = 0
    best_value: float = -math.inf
    best_metrics: dict = field(default_factory=dict)
    wait: int = 0
    history: list = field(default_factory=list)


def checkpoint_folder(output: str | Path) -> Path:
    """Where a training run keeps its checkpoints: ``<output>.checkpoint``."""
    output = Path(output)
    return output.with_name(output.name + CHECKPOINT_SUFFIX)


class Checkpoint:
    """Weights (and optimizer state) of the last and the best epoch, and the run state.

    Arrays are stored in ``.npz`` files as ``m<i>_<j>`` (weight ``j`` of model ``i``) and
    ``o<i>_<j>`` (variable ``j`` of optimizer ``i``); every file is written atomically.
    """

    def __init__(self, folder: Path, models: list, optimizers: list):
        self.folder = Path(folder)
        self.models = models
        self.optimizers = optimizers

    def start(self, config: TrainConfig, reporter: Reporter) -> RunState:
        """Resume from the last checkpoint if asked and present, else start afresh (removing it)."""
        path = self.folder / STATE
        if config.resume and path.is_file():
            state = RunState(**json.loads(path.read_text(encoding="utf-8")))
            if state.fingerprint != config.fingerprint():
                raise EngineError(
                    f"cannot resume from {self.folder}: it was trained with {state.fingerprint}, "
                    f"not {config.fingerprint()}; set resume off to start again"
                )
            self._load(LAST, with_optimizers=True)
            reporter.log(f"resuming after epoch {state.epochs_done} from {self.folder} "
                         f"(best so far: epoch {state.best_epoch})")
            return state
        if config.resume:
            reporter.warning(f"resume asked but {self.folder} holds no checkpoint: training from scratch")
        remove_path(self.folder)
        self.folder.mkdir(parents=True)
        return RunState(config.fingerprint())

    def save(self, state: RunState, best: bool) -> None:
        self._save(LAST, with_optimizers=True)
        if best:
            self._save(BEST, with_optimizers=False)
        write_history(self.folder / HISTORY, state.history)
        with atomic_output(self.folder / STATE) as temp:
            temp.write_text(json.dumps(asdict(state), default=_plain), encoding="utf-8")

    def restore_best(self) -> None:
        self._load(BEST, with_optimizers=False)

    def _save(self, name: str, with_optimizers: bool) -> None:
        arrays = {f"m{i}_{j}": w for i, m in enumerate(self.models) for j, w in enumerate(m.get_weights())}
        if with_optimizers:
            arrays.update({f"o{i}_{j}": np.asarray(v.numpy()) for i, o in enumerate(self.optimizers)
                           for j, v in enumerate(o.variables)})
        with atomic_output(self.folder / name) as temp, open(temp, "wb") as handle:
            np.savez(handle, **arrays)

    def _load(self, name: str, with_optimizers: bool) -> None:
        with np.load(self.folder / name) as arrays:
            for i, model in enumerate(self.models):
                model.set_weights([arrays[f"m{i}_{j}"] for j in range(len(model.get_weights()))])
            if with_optimizers:
                for i, optimizer in enumerate(self.optimizers):
                    for j, variable in enumerate(optimizer.variables):
                        variable.assign(arrays[f"o{i}_{j}"])


def _plain(value):
    """JSON fallback for numpy values in the run state."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


# -- report files ------------------------------------------------------------------------------------

def write_history(path: Path, rows: list[dict]) -> None:
    """``history.csv``: one row per epoch; columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_output(path) as temp, open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_curves(path: Path, rows: list[dict], task: Task) -> None:
    """``training_curves.png``: losses per epoch, and the validation scores."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    losses, scores = figure.subplots(1, 2)
    for key in ("loss", "val_loss"):
        losses.plot(epochs, [row[key] for row in rows], marker="o", label=key)
    losses.set(xlabel="epoch", ylabel="loss", title="Loss")
    keys = ("val_overall_accuracy", "val_macro_f1") if task.is_classifier else ("val_psnr", "val_psnr_bicubic")
    for key in keys:
        if key in rows[0]:
            scores.plot(epochs, [row[key] for row in rows], marker="o", label=key)
    scores.set(xlabel="epoch", ylabel="dB" if task.kind == "image" else "fraction", title="Validation")
    for axes in (losses, scores):
        axes.legend()
        axes.grid(alpha=0.3)
    with atomic_output(path) as temp:
        figure.savefig(temp, format="png")


def write_scalars(folder: Path, step: int, row: dict) -> None:
    """Append one epoch's scalars to TensorBoard event files in ``train/`` and ``validation/``.

    Written with TensorFlow's core summary op (the ``tensorboard`` package is not needed to
    write, only to view: ``tensorboard --logdir <model folder>/logs``).
    """
    from .device import tensorflow

    tf = tensorflow()
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    groups = {"train": {k: v for k, v in row.items() if not k.startswith("val_")},
              "validation": {k[len("val_"):]: v for k, v in row.items() if k.startswith("val_")}}
    for name, scalars in groups.items():
        writer = tf.summary.create_file_writer(str(folder / name))
        with writer.as_default():
            for tag, value in scalars.items():
                if tag != "epoch":
                    tf.summary.write(f"epoch_{tag}", tf.constant(float(value)), step=step, metadata=metadata)
        writer.close()


def confusion_document(matrix, task: Task, config: TrainConfig, epoch: int) -> dict:
    """The final validation's confusion matrix, in ``evaluate_map``'s metrics.json schema."""
    from .classes import ClassStyle
    from .evaluation import EvaluationSpec, metrics_document

    classes = [ClassStyle(int(c["value"]), str(c.get("name") or c["value"]), str(c.get("color") or ""))
               for c in task.classes]
    source = EvaluationSpec(map=f"{config.output} (epoch {epoch})",
                            reference=f"{config.dataset} (valid split)", output_folder=config.output)
    return metrics_document(np.asarray(matrix, np.int64), classes, source)


def write_confusion(folder: Path, document: dict) -> None:
    from .evaluation import confusion_png

    (folder / f"{CONFUSION}.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    (folder / f"{CONFUSION}.png").write_bytes(confusion_png(document))


# -- the training loop -------------------------------------------------------------------------------

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
        metrics = validate(self.view, self.valid_batches, self.task, self.loss)
        scalars = {f"val_{k}": float(metrics[k]) for k in VALIDATION_SCALARS if k in metrics}
        logs.update(scalars)
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
               "learning_rate": float(self.view.model.optimizer.learning_rate.numpy()),
               "seconds": round(time.monotonic() - self.started, 3)}
        self.started = time.monotonic()
        state = self.state
        state.history.append(row)
        value = metrics[self.task.score]
        if math.isnan(value):
            self.reporter.warning(f"epoch {epoch + 1}: the validation {self.task.score} is NaN (the network's outputs "
                                  f"are not finite: training diverged); lower the learning rate "
                                  f"(now {self.config.learning_rate:g})")
        improved = value > state.best_value
        if improved:
            state.best_epoch, state.best_value, state.wait = epoch + 1, value, 0
            state.best_metrics = {**scalars, **({"confusion": metrics["confusion"].tolist()}
                                                if "confusion" in metrics else {})}
        else:
            state.wait += 1
        state.epochs_done = epoch + 1
        self.checkpoint.save(state, best=improved)
        write_scalars(self.checkpoint.folder / LOGS, epoch + 1, row)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
        self.reporter.log(f"epoch {epoch + 1}/{self.config.epochs}: {shown}" + (" (best)" if improved else ""))
        patience = self.config.early_stopping_patience
        if patience and state.wait >= patience:
            self.reporter.log(f"early stopping: no improvement for {patience} epochs (best: epoch {state.best_epoch})")
            self.view.model.stop_training = True


def progress_callback(model, reporter: Reporter, first_epoch: int, epochs: int, steps: int):
    """Progress per batch over the epochs still to run; a cancel stops after the current batch."""
    import keras

    current = {"epoch": first_epoch}
    total = max(1, (epochs - first_epoch) * steps)

    def batch_end(batch, logs=None):
        done = (current["epoch"] - first_epoch) * steps + batch + 1
        reporter.progress(TRAIN_PROGRESS * min(done, total) / total)
        if reporter.cancelled:
            model.stop_training = True

    return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: current.update(epoch=epoch),
                                          on_train_batch_end=batch_end)


def distribution_strategy():
    """MirroredStrategy over every GPU when there are several, else the default strategy."""
    from .device import gpu_names, tensorflow

    tf = tensorflow()
    return tf.distribute.MirroredStrategy() if len(gpu_names()) > 1 else tf.distribute.get_strategy()


def set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow; on CPU also make TensorFlow's kernels deterministic."""
    from .device import gpu_names, tensorflow

    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    if not gpu_names():
        tf.config.experimental.enable_op_determinism()


def check_dataset(reader, task: Task, config: TrainConfig) -> None:
    check_outputs([config.output], [config.dataset, config.custom_model], folder=True)
    reader.check_files()
    for split in ("train", "valid"):
        if reader.size(split) == 0:
            raise EngineError(f"dataset {config.dataset} has no {split!r} patches: extract patches with a "
                              f"{split} proportion above 0")
    if config.gan and task.kind != "image":
        raise EngineError(f"'gan' is for super-resolution datasets (label kind 'image'), not {task.kind!r}")
    if task.is_classifier and not task.classes:
        raise EngineError(f"dataset {config.dataset}: the manifest lists no classes")


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
    from .device import compute_device, tensorflow

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
                view = adversarial_view(network, load_discriminator(task, config), task, config)
                return Models(network, geometry, view, loss, [network, view.model.critic],
                              [view.model.optimizer, view.model.critic_optimizer])
            view.model.compile(optimizer=make_optimizer(config), loss=loss)
            view.model.optimizer.build(view.model.trainable_variables)
            return Models(network, geometry, view, loss, [network], [view.model.optimizer])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def train_model_job(spec: dict, reporter: Reporter) -> dict:
    """Train a model on a dataset folder and write a model folder (see the module docstring).

    Returns ``{"output", "checkpoint", "epochs_done", "best_epoch", "best": {val_metric: value}}``.
    """
    config = TrainConfig.from_spec(spec)
    reader = open_dataset(config.dataset)
    task = Task.from_manifest(reader.manifest)
    check_dataset(reader, task, config)
    from .device import compute_device

    set_seed(int(config.seed))
    import keras

    reporter.log(f"training on {compute_device()} with {reader.size('train')} training and "
                 f"{reader.size('valid')} validation patches ({task.kind})")
    models = build_models(config, task, reporter)
    checkpoint = Checkpoint(checkpoint_folder(config.output), models.saved, models.optimizers)
    state = checkpoint.start(config, reporter)
    weights = None
    if task.is_classifier:
        weights = class_weights(reader.manifest["class_counts"]["train"], config.class_weighting)
        if config.class_weighting != "none":
            reporter.log("class weights: " + ", ".join(
                f"{c.get('name', c['value'])} {w:.3f}" for c, w in zip(task.classes, weights)))
    mapper = label_mapper(task, models.view, weights)
    train_batches = reader.tf_dataset("train", config.batch_size, shuffle=True, seed=int(config.seed),
                                      augment=config.augment).map(mapper)
    valid_batches = reader.tf_dataset("valid", config.batch_size, shuffle=False).map(mapper)
    steps = math.ceil(reader.size("train") / config.batch_size)
    model = models.view.model
    callbacks = [
        progress_callback(model, reporter, state.epochs_done, config.epochs, steps),
        keras.callbacks.LambdaCallback(on_epoch_end=EpochEnd(config, task, models.view, checkpoint, state,
                                                             valid_batches, models.loss, reporter)),
    ]
    stopped_early = config.early_stopping_patience and state.wait >= config.early_stopping_patience
    if state.epochs_done < config.epochs and not stopped_early:
        model.fit(train_batches, epochs=config.epochs, initial_epoch=state.epochs_done,
                  callbacks=callbacks, shuffle=False, verbose=0)  # the dataset shuffles
    return finish(config, task, models, checkpoint, state, reporter)


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


def write_model_folder(config: TrainConfig, task: Task, network, geometry, checkpoint: Checkpoint,
                       state: RunState) -> None:
    """The model folder, atomically: model + metadata, history, curves, confusion matrix, logs."""
    from .modelfolder import ModelMetadata, write_model_files

    metadata = ModelMetadata.for_model(network, task.kind, geometry=geometry, classes=task.classes,
                                       sources=list(task.sources), training=training_info(config, state))
    with atomic_output(config.output, folder=True) as folder:
        write_model_files(folder, network, metadata, custom_code=config.custom_model)
        write_history(folder / HISTORY, state.history)
        write_curves(folder / CURVES, state.history, task)
        if "confusion" in state.best_metrics:
            write_confusion(folder, confusion_document(state.best_metrics["confusion"], task, config,
                                                      state.best_epoch))
        if (checkpoint.folder / LOGS).is_dir():
            shutil.copytree(checkpoint.folder / LOGS, folder / LOGS)


def training_info(config: TrainConfig, state: RunState) -> dict:
    """What the metadata records about the run."""
    best = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in state.best_metrics.items() if k != "confusion"}
    return {"config": asdict(config), "epochs_done": state.epochs_done, "best_epoch": state.best_epoch, "best": best}
