"""Executors: run a function over task descriptors, yield the results in task order.

A task is a small picklable descriptor (an output window and the source windows it needs,
never a Keras model), so the same plan can later run on a Dask cluster: an executor only has
to offer :meth:`Executor.map`. :class:`ThreadExecutor` is the local, in-process default: it
keeps at most ``lookahead`` tasks in flight, so memory stays flat however many tasks there are.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

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


class ThreadExecutor(Executor):
    """Local threads with bounded look-ahead: at most ``lookahead`` tasks started and not yet taken.

    If the consumer stops early (an error, a cancellation), the tasks in flight finish and
    their results are dropped; no new task starts.
    """

    def __init__(self, workers: int = 2, lookahead: int = 2):
        self.lookahead = max(1, lookahead)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="deepfield")

    def map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        pending: collections.deque = collections.deque()
        iterator = iter(tasks)
        try:
            for task in iterator:
                if len(pending) >= self.lookahead:
                    yield pending.popleft().result()
                pending.append(self._pool.submit(fn, task))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
