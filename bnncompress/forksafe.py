"""Objects a forked child renews: a lock another thread of the parent held at the fork would stay
held forever in the child (a torch DataLoader worker hung on its first lookup), and what that
thread was changing may be half changed. Each object registered here has an ``_after_fork()``.

Locks of other libraries cannot be renewed, so a fork waits for them instead: while another thread
imports numba or one of the package's kernel modules, or numba compiles or starts its thread pool
(a process's first lookup: 1-2 s), a child forked then hung on that import or lock. And a forked
child runs no parallel kernel (:func:`in_forked_child`): its parent's OpenMP threads (numba's or
torch's: both use the system's GNU OpenMP) do not exist in it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from typing import Any

_RENEWED: weakref.WeakSet[Any] = weakref.WeakSet()


def renew_after_fork(obj: Any) -> None:
    """Call ``obj._after_fork()`` in every child this process forks from now on (while ``obj`` lives)."""
    _RENEWED.add(obj)


def _renew() -> None:
    for obj in list(_RENEWED):
        obj._after_fork()


_FORKED = [False]
_HELD: list[Any] = []


def in_forked_child() -> bool:
    """True in a process forked from one that had imported bnncompress (a DataLoader worker, a fork Pool)."""
    return _FORKED[0]


def runs_alone() -> bool:
    """Whether this thread is the program's only one but daemons (Dask's) and bnncompress's task threads: a
    random state saved and given back then undoes no other thread's draws (they would come again)."""
    here = threading.current_thread()
    return all(t is here or t.daemon or t.name.startswith("bnncompress") for t in threading.enumerate())


def _wait_for_kernels() -> None:
    """Before a fork: let other threads finish the imports they are in (a child would wait on their import
    locks forever), and hold numba's compiler and thread-pool locks (no thread compiles or starts the pool)
    until the fork is done; up to 30 s, then the fork goes ahead."""
    deadline = time.monotonic() + 30
    while True:
        while _importing_elsewhere() and time.monotonic() < deadline:
            time.sleep(0.001)
        for lock, by_child in _numba_locks():
            if lock.acquire(timeout=max(deadline - time.monotonic(), 0.001)):
                _HELD.append((lock, by_child))
        if not _importing_elsewhere() or time.monotonic() >= deadline:  # (a compile may have begun an import)
            return
        _release()


def _numba_locks() -> list[tuple[Any, bool]]:
    """numba's and llvmlite's locks as they are now (imported since the fork began to wait, maybe), in the
    order numba takes them: a compile starts the thread pool while it holds the compiler lock, LLVM's lock is
    innermost; with whether the child releases it (the pool's process lock is a semaphore the child shares:
    the parent alone releases it)."""
    compiler = sys.modules.get("numba.core.compiler_lock")
    pool = sys.modules.get("numba.np.ufunc.parallel")
    llvm = getattr(sys.modules.get("llvmlite.binding.ffi"), "lib", None)
    found = [getattr(compiler, "global_compiler_lock", None), getattr(pool, "_backend_init_process_lock", None)]
    found += [getattr(pool, "_backend_init_thread_lock", None), getattr(llvm, "_lock", None)]
    found = [getattr(lock, "_lock", lock) for lock in found]  # (numba's and llvmlite's wrappers of an RLock)
    return [(lock, i != 1) for i, lock in enumerate(found) if hasattr(lock, "acquire")]


#: Packages whose imports a first lookup, pack or training step makes (numba's first compile imports numpy.ma).
_KERNEL_PACKAGES = ("numba", "llvmlite", "numpy", "scipy", "bnncompress")


def _importing_elsewhere() -> bool:
    """Whether another thread holds the import lock of a module of :data:`_KERNEL_PACKAGES` (importing it;
    a thread importing the user's own module and waiting for a forking thread is not waited for); read
    from importlib's table of module locks (CPython's, 3.10-3.13), else False."""
    locks = getattr(sys.modules.get("importlib._bootstrap"), "_module_locks", None)
    me = threading.get_ident()
    try:
        held = [(name, getattr(ref(), "owner", None)) for name, ref in list((locks or {}).items())]
        return any(owner not in (None, me) and name.split(".")[0] in _KERNEL_PACKAGES for name, owner in held)
    except Exception:  # (another Python's table)
        return False


def _release(in_child: bool = False) -> None:
    while _HELD:
        lock, by_child = _HELD.pop()
        if by_child or not in_child:
            lock.release()


def _in_child() -> None:
    _FORKED[0] = True
    _release(in_child=True)
    _renew()


os.register_at_fork(before=_wait_for_kernels, after_in_parent=_release, after_in_child=_in_child)
