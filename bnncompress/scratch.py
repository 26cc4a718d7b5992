"""Scratch space and what this host's processes leave behind: :func:`scratch_directory` (a
temporary directory, locked while in use, removed at the end) and the tests :mod:`.files` uses to
tell a temporary file of a process that no longer runs (:func:`host`, :func:`alive`).

Example:
    >>> with scratch_directory("copy of standard output") as d:
    ...     d.is_dir()
    True
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, so no scratch directory is removed but its own
    fcntl = None  # type: ignore[assignment]

#: How scratch directories start (then ``.HOST.PID.``).
_SCRATCH = "bnncompress-scratch"


def host() -> str:
    """This host's name as temporary names carry it (dots replaced).

    Example:
        >>> "." in host()
        False
    """
    return socket.gethostname().replace(".", "-") or "host"


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters matched literally.

    Example:
        >>> glob_escape("a[1]*.txt")
        'a[[]1[]][*].txt'
    """
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host (and PID namespace) may still run.

    Example:
        >>> alive(os.getpid())
        True
    """
    if pid == os.getpid() or os.name == "nt":  # (Windows: os.kill(pid, 0) sends a Ctrl-C, it tests nothing)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


@contextlib.contextmanager
def scratch_directory(purpose: str) -> Iterator[Path]:
    """A temporary directory, removed at the end; an error about a file in it names ``purpose`` and
    the directory for temporary files, not a path that is gone by the time the user reads it.
    Those this user's processes left when killed outright (SIGKILL) are removed first: a directory
    is removed only if its process no longer runs and nothing holds its lock (a process of another
    PID namespace sharing the directory for temporary files holds it).

    Example:
        >>> with scratch_directory("archive of the sweep") as d:
        ...     (d / "x").write_text("partial") and None
        >>> d.exists()
        False
    """
    prefix = f"{_SCRATCH}.{host()}."
    _remove_stale(Path(tempfile.gettempdir()), prefix)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}.") as directory:
        held = _lock(directory, wait=True)
        try:
            yield Path(directory)
        except OSError as exc:
            if exc.filename is None or not str(exc.filename).startswith(directory):
                raise
            raise OSError(exc.errno, exc.strerror, f"a temporary {purpose} in {tempfile.gettempdir()}") from None
        finally:
            if held is not None:
                os.close(held)


def _remove_stale(directory: Path, prefix: str) -> None:
    try:
        candidates = list(directory.glob(f"{glob_escape(prefix)}*"))
    except OSError:
        return
    for stale in candidates:
        pid = stale.name[len(prefix) :].split(".")[0]
        if not pid.isdigit() or alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            st = os.lstat(stale)
            if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "geteuid") and st.st_uid != os.geteuid()):
                continue
            held = _lock(stale, wait=False)
            if held is None:
                continue
            try:
                shutil.rmtree(stale)
            finally:
                os.close(held)


def _lock(directory: str | Path, wait: bool) -> int | None:
    """A descriptor of ``directory`` holding an exclusive lock on it, or None (no locks here; held
    elsewhere when not ``wait``ing). The lock goes with the process, however it ends."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if wait and exc.errno not in _NO_LOCKS:
            raise
        return None  # (held elsewhere; or a file system without locks: used unlocked, never removed as stale)
    return fd


#: What ``flock`` says where a file system has no locks.
_NO_LOCKS = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EBADF", "EINVAL")}
