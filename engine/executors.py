"""Executors: run a function over task descriptors, yield the results in task order.

A task is a small picklable descriptor (an output window and the source windows it needs,
never a Keras model), so the same plan runs in threads or on a Dask cluster: an executor only
has to offer :meth:`Executor.map`. Both executors keep at most ``lookahead`` tasks in flight,
so memory stays flat however many tasks there are.

- :class:`ThreadExecutor`: local, in-process threads (the default; no extra dependency).
- :class:`DaskExecutor`: a Dask ``LocalCluster`` of worker *processes* with one thread each, or
  an existing scheduler address (dask-jobqueue on SLURM/PBS, dask-kubernetes, a cloud Dask
  service). Needs the optional ``dask[distributed]``; what the workers need besides the task
  (a loaded model) comes from a worker plugin (:meth:`DaskExecutor.register_plugin`), never
  from the task graph. A lost worker's tasks are recomputed by the scheduler, so ``fn`` must
  be idempotent.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from .contract import EXECUTORS
from .errors import EngineError

T = TypeVar("T")
R = TypeVar("R")


class Executor:
    """Runs ``fn`` over ``tasks``; results come back in task order."""

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def bounded_map(submit: Callable, tasks: Iterable[T], lookahead: int) -> Iterator:
    """Results of ``submit(task)`` futures in task order, with at most ``lookahead`` submitted and
    not yet taken; if the consumer stops early, the futures not taken are cancelled."""
    pending: collections.deque = collections.deque()
    try:
        for task in tasks:
            if len(pending) >= lookahead:
                yield pending.popleft().result()
            pending.append(submit(task))
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


class ThreadExecutor(Executor):
    """Local threads with bounded look-ahead: at most ``lookahead`` tasks started and not yet taken.

    If the consumer stops early (an error, a cancellation), the tasks in flight finish and
    their results are dropped; no new task starts.
    """

    def __init__(self, workers: int = 2, lookahead: int = 2):
        self.lookahead = max(1, lookahead)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="deepfield")

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        return bounded_map(lambda task: self._pool.submit(fn, task), tasks, self.lookahead)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


#: The ``dask[distributed]`` version DeepField is tested with (requirements.txt).
DASK_REQUIREMENT = "dask[distributed]==2026.8.0"


def distributed():
    """Import ``distributed``; an :class:`EngineError` says what to install when it is missing."""
    try:
        import distributed
    except ImportError as error:
        import sys

        raise EngineError(
            f"the Dask executor needs dask.distributed, which the engine interpreter {sys.executable} cannot "
            f"import ({error}); install it there with pip install '{DASK_REQUIREMENT}', or choose the "
            "'threads' executor") from None
    return distributed


class DaskExecutor(Executor):
    """Tasks on Dask workers: a new ``LocalCluster`` of ``workers`` processes (loopback only, one
    thread each, TensorFlow limited to that thread before its first use), or the scheduler at
    ``address`` (``tcp://host:port``) whose workers already run. Results come back in task order;
    at most ``lookahead`` tasks (default 4 per worker) are submitted and not yet taken."""

    def __init__(self, workers: int = 2, address: str | None = None, lookahead: int | None = None,
                 memory_limit: str | float = "auto"):
        dd = distributed()
        self.cluster = None
        if address:
            try:
                self.client = dd.Client(address, timeout="20s")
            except (OSError, TimeoutError) as error:
                raise EngineError(f"cannot reach the Dask scheduler at {address!r} ({error}); start it, or "
                                  "leave the scheduler address empty to run a local cluster") from None
        else:
            self.cluster = dd.LocalCluster(
                n_workers=max(1, workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, memory_limit=memory_limit, silence_logs=40,
                env={"DEEPFIELD_TF_THREADS": "1", "OMP_NUM_THREADS": "1",
                     "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
            self.client = dd.Client(self.cluster)
        self.lookahead = lookahead or 4 * max(1, self.worker_count)

    @property
    def worker_count(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> process id (to watch them, or to kill one in a test)."""
        return self.client.run(os.getpid)

    def register_plugin(self, plugin) -> None:
        """Install a ``distributed.WorkerPlugin`` on every worker, present and future (a restarted
        worker runs its ``setup`` again)."""
        self.client.register_plugin(plugin)

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        return bounded_map(lambda task: self.client.submit(fn, task, pure=False), tasks, self.lookahead)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def make_executor(kind: str = "threads", workers: int = 1, address: str | None = None) -> Executor:
    """The executor a job asks for: ``threads`` (``workers`` reading threads) or ``dask``
    (a local cluster of ``workers`` processes, or the scheduler at ``address``)."""
    if kind == "threads":
        return ThreadExecutor(workers=max(1, workers), lookahead=2 * max(1, workers))
    if kind == "dask":
        return DaskExecutor(workers=max(1, workers), address=address or None)
    raise EngineError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")
