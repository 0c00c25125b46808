"""The checkpoint folder ``<output>.checkpoint/``: last and best weights, the run state, history.

It holds ``last.npz`` (weights + optimiser state), ``best.npz`` (weights), ``state.json``
(:class:`RunState`), ``history.csv`` and TensorBoard ``logs/``. It survives a cancel or a crash,
and ``resume`` continues from it when the run's :func:`fingerprint` has not changed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..outputs import atomic_output, remove_path
from ..protocol import Reporter
from .config import TrainConfig
from .reports import HISTORY, write_history

CHECKPOINT_SUFFIX = ".checkpoint"
STATE = "state.json"
LAST = "last.npz"
BEST = "best.npz"


def fingerprint(config: TrainConfig) -> dict:
    """What must not change between a checkpoint and a resumed run."""
    return {key: getattr(config, key) for key in
            ("dataset", "architecture", "custom_model", "hyperparameters", "gan", "loss", "ema_momentum")}


def checkpoint_folder(output: str | Path) -> Path:
    """Where a training run keeps its checkpoints: ``<output>.checkpoint``."""
    output = Path(output)
    return output.with_name(output.name + CHECKPOINT_SUFFIX)


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
            if state.fingerprint != fingerprint(config):
                raise EngineError(
                    f"cannot resume from {self.folder}: it was trained with {state.fingerprint}, "
                    f"not {fingerprint(config)}; set resume off to start again"
                )
            self._load(LAST, with_optimizers=True)
            reporter.log(f"resuming after epoch {state.epochs_done} from {self.folder} "
                         f"(best so far: epoch {state.best_epoch})")
            return state
        if config.resume:
            reporter.warning(f"resume asked but {self.folder} holds no checkpoint: training from scratch")
        remove_path(self.folder)
        self.folder.mkdir(parents=True)
        return RunState(fingerprint(config))

    def save(self, state: RunState) -> None:
        """The last epoch: weights, optimizer state, history and run state."""
        self._save(LAST, with_optimizers=True)
        write_history(self.folder / HISTORY, state.history)
        with atomic_output(self.folder / STATE) as temp:
            temp.write_text(json.dumps(asdict(state), default=_plain), encoding="utf-8")

    def save_best(self) -> None:
        """The models' weights as they are now, as the best epoch's."""
        self._save(BEST, with_optimizers=False)

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
