"""The learning-rate schedule and the time budget of a run.

A run ends after ``epochs`` epochs or ``time_budget`` minutes, whichever comes first. Its
**progress** (0 to 1) is the larger of the fraction of steps done and the fraction of the budget
spent, so a cosine schedule reaches its end when the run does, however fast the machine is.
"""

from __future__ import annotations

import math
import time

#: Fraction of the run spent warming the learning rate up linearly from 0 (cosine schedule).
WARMUP = 0.03


def learning_rate_at(base: float, progress: float, schedule: str) -> float:
    """The learning rate at ``progress`` (0..1) of a run: ``constant``: ``base``; ``cosine``:
    linear warm-up over :data:`WARMUP`, then half a cosine from ``base`` down to 0."""
    if schedule == "constant":
        return base
    progress = min(max(progress, 0.0), 1.0)
    if progress < WARMUP:
        return base * (progress + 1e-3) / WARMUP
    return base * 0.5 * (1.0 + math.cos(math.pi * (progress - WARMUP) / (1.0 - WARMUP)))


def run_progress(step: int, total_steps: int, seconds: float, budget_seconds: float) -> float:
    """Progress of a run: the larger of ``step / total_steps`` and ``seconds / budget_seconds``
    (a budget of 0 is no budget)."""
    done = step / total_steps if total_steps else 0.0
    return max(done, seconds / budget_seconds) if budget_seconds > 0 else done


class RunClock:
    """Steps and wall-clock seconds of a run against its ``epochs x steps`` and time budget
    (minutes; 0 = none). ``first_step``: steps already done (a resumed run)."""

    def __init__(self, total_steps: int, budget_minutes: float, first_step: int = 0):
        self.total_steps = max(1, int(total_steps))
        self.budget_seconds = 60.0 * float(budget_minutes)
        self.step = int(first_step)
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def progress(self) -> float:
        return run_progress(self.step, self.total_steps, self.seconds, self.budget_seconds)

    @property
    def out_of_time(self) -> bool:
        return self.budget_seconds > 0 and self.seconds >= self.budget_seconds


def schedule_callback(model, clock: RunClock, base: float, schedule: str, log):
    """A Keras callback: set the learning rate before every step; stop when the budget is spent
    (after the current step: the epoch is validated as usual)."""
    import keras

    def batch_begin(batch, logs=None):
        model.optimizer.learning_rate.assign(learning_rate_at(base, clock.progress, schedule))

    def batch_end(batch, logs=None):
        clock.step += 1
        if clock.out_of_time and not model.stop_training:
            log(f"time budget of {clock.budget_seconds / 60:g} min spent after {clock.step} steps: stopping")
            model.stop_training = True

    return keras.callbacks.LambdaCallback(on_train_batch_begin=batch_begin, on_train_batch_end=batch_end)
