"""A pack's D x D decompositions on one BLAS thread (threadpoolctl), when no other thread can tell.

OpenBLAS splits even a 100 x 100 ``eigh`` or ``inv`` into many small parallel steps, and each
waits for its second thread: on a 2-core machine with other jobs running, the ``eigh`` and ``inv`` of
a pack of P1 (two 100 x 100 covariances) took 25-771 ms on two threads against 1.7-2.9 ms on one,
up to longer than the rest of the pack. A pack's large work runs in its own tasks, one per core, so
:func:`eigh`, :func:`inv` and :func:`qr_raw` run on one BLAS thread.

That limit is process-wide: another thread doing BLAS meanwhile would run on one thread, and
another limiter (threadpoolctl's ``threadpool_limits``, which scikit-learn uses) overlapping it would
take the one thread for the process's own setting and put it back for good. So the limit is set
only while the process has no Python thread but the caller, bnncompress's own pool and rich's
progress refresh; otherwise (a notebook's kernel threads, a Dask worker, the caller's threads) the
decompositions run on the process's BLAS threads as they are. Sections run one at a time.

Example:
    >>> import numpy as np
    >>> eigh(np.eye(3))[0].tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

import numpy as np
from threadpoolctl import ThreadpoolController

from .forksafe import renew_after_fork

_lock = threading.RLock()  # one section at a time (a section may hold another)
_controller: ThreadpoolController | None = None  # the BLAS libraries loaded (numpy's, imported before any section)


def _after_fork() -> None:  # a child forked during another thread's section would wait on the lock forever
    global _lock
    _lock = threading.RLock()


renew_after_fork(sys.modules[__name__])


def eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh(a)`` on one BLAS thread (see the module's docstring)."""
    with one_blas_thread():
        return np.linalg.eigh(a)


def inv(a: np.ndarray) -> np.ndarray:
    """``np.linalg.inv(a)`` on one BLAS thread."""
    with one_blas_thread():
        return np.linalg.inv(a)


def qr_raw(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.qr(a, mode="raw")`` (LAPACK's Householder reflectors) on one BLAS thread."""
    with one_blas_thread():
        return np.linalg.qr(a, mode="raw")


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with the process's BLAS libraries on one thread, then restore their limits, if no
    other thread of the process could do BLAS or set limits meanwhile; else run it as it is."""
    global _controller
    with _lock:
        if not _alone():
            yield
            return
        _controller = _controller or ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            yield


def _alone() -> bool:
    """No Python thread but this one, bnncompress's pool threads and rich's progress refresh."""
    here = threading.current_thread()
    ours = ("bnncompress", "_RefreshThread")
    return all(t is here or t.name.startswith(ours[0]) or type(t).__name__ == ours[1] for t in threading.enumerate())
