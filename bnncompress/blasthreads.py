"""A pack's D x D decompositions on one BLAS thread (threadpoolctl): the same bits on every route, and fast.

OpenBLAS splits even a 100 x 100 ``eigh`` or ``inv`` into many small parallel steps, and each
waits for its second thread: on a 2-core machine with other jobs running, the ``eigh`` and ``inv`` of
a pack of P1 (two 100 x 100 covariances) took 25-771 ms on two threads against 1.7-2.9 ms on one,
up to longer than the rest of the pack. And the result depends on the thread count where the
eigenvalues repeat: a 256 x 256 covariance of rank 32 has eigenvectors up to 0.95 apart on one and on
two threads, which would make an archive depend on how many threads the process had. So
:func:`eigh`, :func:`inv` and :func:`qr_raw` always run on one BLAS thread.

OpenBLAS's limit is process-wide: while a section runs (a millisecond or a few per tensor), another
thread's BLAS runs on one thread too, and another limiter entered meanwhile in another thread (such as
threadpoolctl's ``threadpool_limits``, which scikit-learn uses) takes the one thread for the process's
setting and puts it back when it ends. Sections run one at a time and restore what they found.

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
    """Run the block with the process's BLAS libraries on one thread, then restore their limits."""
    global _controller
    with _lock:
        _controller = _controller or ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            yield
