"""numba's environment variables, checked before any kernel runs: one line instead of numba's traceback.

numba reads ``NUMBA_NUM_THREADS``, ``NUMBA_DISABLE_JIT`` and ``NUMBA_THREADING_LAYER`` when it is
imported and fails later, deep inside a pack or a training step, when they cannot work: no
threads, kernels run as plain Python (which the pack pipeline's kernels do not support), or a
threading layer that is unknown or not installed (``tbb`` needs Intel TBB). The command line
checks them once at start (:func:`refuse_bad_numba_environment`); the pack and training APIs
call :func:`check_numba_environment`. Importing this module does not import numba.

Example:
    >>> check_numba_environment({"NUMBA_NUM_THREADS": "2"})
    >>> try:
    ...     check_numba_environment({"NUMBA_NUM_THREADS": "0"})
    ... except OptionError as exc:
    ...     print(str(exc).split(";")[0])
    NUMBA_NUM_THREADS=0 is not a number of threads
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from .errors import OptionError

#: numba's threading layers (named backends and the safety levels that pick one) -> the modules they need.
LAYERS = {
    "default": ("tbbpool", "omppool", "workqueue"),
    "tbb": ("tbbpool",),
    "omp": ("omppool",),
    "workqueue": ("workqueue",),
    "safe": ("tbbpool",),
    "threadsafe": ("tbbpool", "omppool"),
    "forksafe": ("tbbpool", "workqueue") if sys.platform.startswith("linux") else ("tbbpool", "omppool", "workqueue"),
}
MAX_THREADS = 1024


def check_numba_environment(environ: Mapping[str, str] | None = None, pack: bool = True) -> None:
    """Raise :class:`~bnncompress.OptionError` (one line naming the variable and what to set) if
    numba's environment cannot run bnncompress's kernels. ``pack`` False allows ``NUMBA_DISABLE_JIT``
    (training works without compiling, slowly). numba's own settings count once it is imported."""
    env = os.environ if environ is None else environ
    # (importlib waits for another thread's import of numba to finish: sys.modules may hold it half made)
    config = importlib.import_module("numba").config if environ is None and "numba" in sys.modules else None
    threads = env.get("NUMBA_NUM_THREADS")
    if threads is not None and config is None:
        try:
            ok = 1 <= int(threads) <= MAX_THREADS
        except ValueError:
            ok = False
        if not ok:
            raise OptionError(
                f"NUMBA_NUM_THREADS={threads} is not a number of threads; "
                f"unset it or set it to a whole number from 1 to {MAX_THREADS}"
            )
    disabled = env.get("NUMBA_DISABLE_JIT", "") if config is None else str(config.DISABLE_JIT)
    try:
        jit = int(disabled or "0") == 0
    except ValueError:  # numba reads a value that is no integer as its default, 0: compiled
        jit = True
    if pack and not jit:
        raise OptionError(
            f"NUMBA_DISABLE_JIT={disabled} asks to run the compiled kernels as plain Python, "
            "which bnncompress does not support; unset NUMBA_DISABLE_JIT"
        )
    layer = str(env.get("NUMBA_THREADING_LAYER", "default") if config is None else config.THREADING_LAYER)
    needs = LAYERS.get(layer.lower())
    if needs is None:
        raise OptionError(
            f"NUMBA_THREADING_LAYER={layer} is not a numba threading layer; unset it or choose one of "
            + ", ".join(LAYERS)
        )
    priority = env.get("NUMBA_THREADING_LAYER_PRIORITY") if config is None else None
    if priority is not None and sorted(priority.split()) != ["omp", "tbb", "workqueue"]:
        raise OptionError(
            f"NUMBA_THREADING_LAYER_PRIORITY={priority} is not an order of numba's threading layers; "
            "unset it or give all three, e.g. 'omp tbb workqueue'"
        )
    if layer.lower() != "default" and not any(_loads(module) for module in needs):
        hint = "pip install tbb, or " if "tbbpool" in needs else ""
        raise OptionError(
            f"NUMBA_THREADING_LAYER={layer} needs a threading library that is not installed; "
            f"{hint}unset NUMBA_THREADING_LAYER"
        )
    # (here, before a kernel module is imported on the pack's threads: one that failed there left the module half
    # made for another thread, whose ImportError, a traceback, came out instead of this line)
    _refuse_unwritable_cache(env.get("NUMBA_CACHE_DIR", "") if config is None else config.CACHE_DIR)


def imported_numba() -> Any:
    """numba; an :class:`~bnncompress.OptionError` if its import fails (it raises a bare ValueError for
    ``NUMBA_NUM_THREADS=0``, which a decode reported as a corrupt archive). The threading layer is checked when
    the thread pool starts (:func:`numba_threads`): single-threaded kernels need none. Kernel modules import
    numba so."""
    try:
        return importlib.import_module("numba")
    except (ValueError, RuntimeError) as exc:
        threads = os.environ.get("NUMBA_NUM_THREADS")
        setting = f" with NUMBA_NUM_THREADS={threads}" if threads is not None else ""
        raise OptionError(
            f"numba cannot start{setting} ({' '.join(str(exc).split())}); unset NUMBA_NUM_THREADS or set it to a "
            f"whole number from 1 to {MAX_THREADS}"
        ) from None


_THREADS = [False]  # numba's thread pool launched (by numba_threads)


def numba_threads() -> int:
    """``numba.get_num_threads()``, its first call (which starts numba's thread pool) leaving
    multiprocessing's start method unset if it was: numba reads it without ``allow_none``, which fixed
    it to 'fork', and the caller's later ``multiprocessing.set_start_method`` failed."""
    import numba

    if not _THREADS[0]:
        import multiprocessing

        check_numba_environment(pack=False)  # (a threading layer that cannot load: one line, not "corrupt")
        unset = multiprocessing.get_start_method(allow_none=True) is None
        try:
            threads = numba.get_num_threads()
        except (ValueError, RuntimeError) as exc:  # (not the archive's fault: callers take these for damage)
            raise OptionError(
                f"numba's thread pool did not start ({' '.join(str(exc).split())}); "
                "unset NUMBA_NUM_THREADS and NUMBA_THREADING_LAYER, or set them to values that work here"
            ) from None
        if unset:
            with contextlib.suppress(AttributeError):  # (multiprocessing's own: what get_start_method() sets)
                multiprocessing.context._default_context._actual_context = None
        _THREADS[0] = True
        return threads
    return numba.get_num_threads()


def _loads(module: str) -> bool:
    """Whether numba's threading-layer extension ``module`` loads (``tbbpool`` needs libtbb)."""
    try:
        importlib.import_module(f"numba.np.ufunc.{module}")
    except ImportError:
        return False
    return True


def refuse_bad_numba_environment() -> None:
    """For the command line, once at start: print :func:`check_numba_environment`'s error as one
    line ``error: ...`` on stderr and exit with code 2."""
    try:
        check_numba_environment(pack=True)
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def writable_cache(places: list[str]) -> str | None:
    """Where numba can keep compiled kernels: None if one of ``places`` (beside the modules, the user's
    cache) takes a file, else a directory of this user's own in the temporary directory, set as numba's cache (a
    read-only install and home raised "cannot cache function" on every kernel, and a lookup called the archive
    corrupt). A ``NUMBA_CACHE_DIR`` that cannot take a file is an :class:`~bnncompress.OptionError`.

    Example:
        >>> writable_cache([tempfile.gettempdir()]) is None
        True
    """
    import numba

    if numba.config.CACHE_DIR:
        _refuse_unwritable_cache(numba.config.CACHE_DIR)
        return None
    if any(_takes_files(place) for place in places):
        return None
    numba.config.CACHE_DIR = private_directory(f"bnncompress-numba-{os.getuid()}")
    return numba.config.CACHE_DIR


def _refuse_unwritable_cache(cache: str) -> None:
    """A ``NUMBA_CACHE_DIR`` (numba reads '' as unset) that cannot take a file: one :class:`OptionError` line."""
    if cache and not _takes_files(cache):
        raise OptionError(
            f"NUMBA_CACHE_DIR={cache} is not a directory numba can write its compiled kernels to; point it at a "
            "writable directory or unset it"
        )


def _takes_files(place: str) -> bool:
    try:
        os.makedirs(place, exist_ok=True)
        with tempfile.TemporaryFile(dir=place):
            return True
    except OSError:
        return False


def private_directory(name: str) -> str:
    """``name`` in the temporary directory if it is a directory of this user's that no one else can write to
    (made so if it is not there; one of ours others could write to, as an older release left it under umask 002, is
    made again), else a new directory of a random name: numba unpickles the index files it finds in its cache, so a
    directory another user made first (the name is easy to guess) would run their code as ours."""
    try:
        path = os.path.join(tempfile.gettempdir(), name)
        with contextlib.suppress(OSError):
            found = os.lstat(path)  # (not a symbolic link's target)
            if stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and found.st_mode & 0o022:
                aside = f"{path}.old-{os.getpid()}"  # (ours, but what others may have put in it is not run; moved
                os.rename(path, aside)  # aside first: another process may be making the new one meanwhile)
                if os.lstat(aside).st_ino == found.st_ino:
                    shutil.rmtree(aside)
                else:  # (that was the other process's new one: given back)
                    os.rename(aside, path)
        with contextlib.suppress(OSError):
            os.mkdir(path, 0o700)
        with contextlib.suppress(OSError):
            found = os.lstat(path)
            if stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & 0o022:
                if _takes_files(path):
                    return path
        fresh = tempfile.mkdtemp(prefix=name + "-")  # (kernels compiled again in each process: slower, never another's)
    except OSError as exc:  # (no usable temporary directory at all: gettempdir's FileNotFoundError too)
        raise OptionError(
            f"numba has no directory to keep compiled kernels in ({exc.strerror or exc}); "
            "set NUMBA_CACHE_DIR to a writable directory"
        ) from None
    atexit.register(_remove_if_made_here, fresh, os.getpid())  # (a forked child's exit leaves it to its parent)
    return fresh


def _remove_if_made_here(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def user_cache() -> str:
    """numba's user-wide cache directory (its _UserWideCacheLocator's)."""
    from numba.misc.appdirs import AppDirs

    return AppDirs(appname="numba", appauthor=False).user_cache_dir
