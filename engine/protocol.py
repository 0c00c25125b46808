"""The worker protocol: a job spec (JSON) in, JSON lines out.

Every line the engine prints on standard output is one JSON object with a ``type``:

``{"type": "progress", "percent": 0..100}``
``{"type": "log", "level": "info"|"warning"|"error", "message": str}``
``{"type": "result", "result": {...}}``       the job's return value, once, at the end
``{"type": "error", "kind": str, "message": str, "traceback": str}``
``{"type": "cancelled"}``

A job is a function ``job(spec: dict, reporter: Reporter) -> dict``. It raises
:class:`EngineError` for a problem the user can act on (bad input, broken model
folder); its message is shown as it is. It calls :meth:`Reporter.check_cancelled`
between units of work; SIGTERM (sent by QGIS on cancel) makes that raise
:class:`JobCancelled`.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import IO, Any

from .errors import EngineError, JobCancelled
from .outputs import remove_unfinished

__all__ = ["EngineError", "JobCancelled", "Reporter"]


#: Seconds an orphaned worker has to stop cleanly before it exits anyway; its exit code then.
PARENT_GRACE_S = 3.0
EXIT_ORPHANED = 4
#: Seconds after the grace period at which the kernel ends an orphaned worker that could not end
#: itself (a thread holding the GIL in C code, an interpreter exit that hangs).
HARD_STOP_MARGIN_S = 2.0
#: The environment variable holding the pid of the process the worker serves (set by the plugin's
#: runner): a parent that dies before the worker arms its watch is seen too, even where orphans are
#: adopted by a subreaper rather than by pid 1.
PARENT_PID_ENV = "DEEPFIELD_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _end_after(seconds: float) -> None:
    """Have the kernel end this process in ``seconds`` (SIGALRM's default action), whatever its
    threads hold; no-op where there is no ``setitimer`` (Windows)."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, seconds)


class Reporter:
    """Writes protocol lines; thread-safe; rate-limits progress lines."""

    def __init__(self, stream: IO[str] | None = None, min_interval_s: float = 0.1):
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()
        self._cancelled = False  # a plain flag: set from signal handlers, which must take no lock
        self._min_interval_s = min_interval_s
        self._last_progress = (-1.0, 0.0)  # (percent, time)
        self._parent: int | None = None  # set by exit_with_parent
        self._grace_s = PARENT_GRACE_S
        self._hard_stop_armed = False

    # -- output -----------------------------------------------------------
    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, default=_jsonable)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def progress(self, percent: float) -> None:
        """Report progress in percent (0..100); repeated or too frequent values are dropped."""
        percent = max(0.0, min(100.0, float(percent)))
        last, when = self._last_progress
        now = time.monotonic()
        if percent == last or (percent < 100.0 and now - when < self._min_interval_s):
            return
        self._last_progress = (percent, now)
        self.emit({"type": "progress", "percent": round(percent, 2)})

    def log(self, message: str, level: str = "info") -> None:
        self.emit({"type": "log", "level": level, "message": str(message)})

    def warning(self, message: str) -> None:
        self.log(message, "warning")

    def result(self, result: dict[str, Any]) -> None:
        self.emit({"type": "result", "result": result})

    # -- cancellation -----------------------------------------------------
    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was asked to stop."""
        if self._cancelled:
            raise JobCancelled("cancelled")

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask the job to stop at its next check."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop_requested())

    def _stop_requested(self) -> None:
        self.cancel()
        if self._orphaned():  # the parent-death signal
            self._stop_orphan()

    def _orphaned(self) -> bool:
        """The process :meth:`exit_with_parent` watches has died."""
        return self._parent is not None and os.getppid() != self._parent

    def _stop_orphan(self) -> None:
        """The parent died: ask the job to stop, and have the kernel end the process if the job
        and the watch cannot (C code holding the GIL, an interpreter exit that hangs)."""
        if not self._hard_stop_armed:  # no lock: a signal handler may run while one is held
            self._hard_stop_armed = True
            _end_after(self._grace_s + HARD_STOP_MARGIN_S)
        self.cancel()

    def exit_with_parent(self, grace_s: float = PARENT_GRACE_S, poll_s: float = 0.2) -> None:
        """Stop when the process that started the worker dies (``qgis_process`` killed, QGIS crashed).

        On Linux the kernel sends SIGTERM at the parent's death (``PR_SET_PDEATHSIG``); everywhere,
        a daemon thread sees the parent change. Either asks the job to stop (so its ``.part``
        outputs are removed); a job that has not stopped ``grace_s`` seconds later is ended (its
        ``.part`` outputs removed first), by the kernel ``HARD_STOP_MARGIN_S`` later still if the
        watch itself cannot run then.
        """
        announced = os.environ.pop(PARENT_PID_ENV, "")  # popped: not the worker's children's
        parent = int(announced or os.getppid())
        self._parent, self._grace_s = parent, grace_s
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # _end_after's alarm ends the process
        _set_parent_death_signal(signal.SIGTERM)
        if self._orphaned() or (not announced and parent == 1):  # it died before the signal was armed
            self._stop_orphan()

        def watch() -> None:
            while not self._orphaned():
                time.sleep(poll_s)
            self._stop_orphan()
            time.sleep(grace_s)
            remove_unfinished()  # the job did not unwind: its .part outputs would outlive it
            os._exit(EXIT_ORPHANED)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, paths and dataclasses."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
