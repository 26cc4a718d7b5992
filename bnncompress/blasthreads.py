"""BLAS work of many small steps on one thread (threadpoolctl), whatever the rest of the process uses.

OpenBLAS splits even a 100 x 100 ``eigh`` or ``inv`` into many small parallel steps. On a machine
whose other cores are busy (another job, a notebook, a second pack), every step waits for a time
slice: the decomposition of a transform's covariance took 100-400 ms on 2 threads against 1 ms on
one, longer than the rest of the pack; gensim's analogy evaluation, a vector product and a sort per
question, took 30 s against 7. So a pack's few D x D decompositions (its large work runs in its own
tasks, one per core) and an evaluation run inside :func:`one_blas_thread`. OpenBLAS's limit is
process-wide, and threadpoolctl lets one thread at a time set it, so sections run one at a time (a
pack's take a millisecond, an evaluation's seconds), each entered and left in its thread, which gives
the control back: the process's limit and threadpoolctl's state are as they were after each
section. (A thread of the caller's own that holds a ``threadpool_limits`` meanwhile keeps its limit:
the section then runs on it.)

Example:
    >>> import numpy as np
    >>> with one_blas_thread():
    ...     values = np.linalg.eigvalsh(np.eye(3))
    >>> values.tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

from .forksafe import renew_after_fork

_lock = threading.RLock()  # one section at a time (a section may call another)
_controller: ThreadpoolController | None = None  # the BLAS libraries loaded (numpy's, imported before any section)


def _after_fork() -> None:  # a child forked during another thread's section would wait on the lock forever
    global _lock
    _lock = threading.RLock()


renew_after_fork(sys.modules[__name__])


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with the process's BLAS libraries on one thread, then restore their limits."""
    global _controller
    with _lock:
        _controller = _controller or ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            yield
