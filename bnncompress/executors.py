"""Where the pack's tasks run: threads of this process, or a Dask cluster (:mod:`bnncompress.clusters`), behind one
interface.

A *task* is a module-level function and its arguments (a range of whole coding blocks of one
tensor, see :mod:`bnncompress.pipeline`). An :class:`Executor` runs many tasks and yields
their results in submission order; results that later tasks need again (the grid indices of
a histogram pass, coded in the final pass) can stay where they were computed
(:meth:`Executor.map_keep`). Every task runs numba single-threaded: the executor runs one
task per core.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Protocol

from .numbaenv import numba_threads

#: Weights per task (rounded to whole coding blocks): ~16 MiB of float32 loc + scale.
TASK_SYMBOLS = 1 << 21
#: Results kept for a later task (uint16 grid indices: 2 bytes per weight), per process or worker.
KEEP_BYTES = 1 << 29


class Executor(Protocol):
    """What the pipeline needs from an executor."""

    #: Parallel slots (threads or worker processes): the pipeline makes at least 2 tasks per slot.
    slots: int
    #: Largest task, in weights.
    task_symbols: int
    #: Bytes of kept results (``map_keep``) this executor can hold.
    keep_bytes: int

    def scatter(self, obj: Any) -> Any:
        """A handle to ``obj`` that tasks may take as an argument (sent once to a cluster)."""

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        """``fn(*args)`` for every ``args`` in ``tasks``, yielded in order."""

    def map_keep(self, fn: Callable[..., tuple[Any, Any]], tasks: Sequence[tuple]) -> Iterator[tuple[Any, Any]]:
        """Tasks return ``(result, kept)``: yields ``result`` and a handle to ``kept`` that later
        tasks may take as an argument (here or on the worker that holds it)."""


class LocalExecutor:
    """Runs tasks on ``threads`` threads of this process (default: one per core), each task
    single-threaded; reading files and the numba kernels release the GIL, so tasks overlap
    I/O and computing. At most ``threads + 1`` tasks are in flight (bounded memory). The threads
    are started on the first map and kept until :meth:`close` (a pack maps a few dozen times);
    use it as a context manager.

    Example:
        >>> with LocalExecutor(2) as executor:
        ...     list(executor.map(pow, [(2, 3), (3, 2)]))
        [8, 9]
    """

    task_symbols = TASK_SYMBOLS

    def __init__(self, threads: int | None = None):
        self.slots = max(1, threads or os.cpu_count() or 1)
        self.keep_bytes = KEEP_BYTES
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the threads (after the tasks in flight)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None

    def scatter(self, obj: Any) -> Any:
        return obj

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        if len(tasks) == 1:  # one task: run it here, numba on every core
            yield fn(*tasks[0])
            return
        if self.slots == 1:
            for args in tasks:
                yield single_threaded(fn, *args)
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.slots, thread_name_prefix="bnncompress")
        pending: deque = deque()
        try:
            for args in tasks:
                pending.append(self._threads.submit(single_threaded, fn, *args))
                if len(pending) > self.slots:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # abandoned (a task failed, or the caller stopped): no task of this map runs on after it
            for future in pending:
                future.cancel()
            wait(pending)

    def map_keep(self, fn: Callable[..., tuple[Any, Any]], tasks: Sequence[tuple]) -> Iterator[tuple[Any, Any]]:
        return self.map(fn, tasks)


def single_threaded(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a task with numba on one thread (the executor runs one task per core)."""
    import numba

    previous = numba_threads()  # the setting is per thread: restore it for the caller
    numba.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(previous)
