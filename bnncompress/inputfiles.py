"""Input files a user names (a vocabulary, a directory's .npy files): checked to be regular files, and
inside a posterior directory not a link that leads out of it. Inside a directory the kernel opens the file
beneath it where it can (:func:`~bnncompress.openbeneath.open_beneath`: nothing swapped in meanwhile leads
out); elsewhere a file is checked before it is opened and again on the open file (another file or link put
at the path between the check and the open is refused, not read: a FIFO there would block for ever, a link
could pull a local file into an archive). Files are opened without blocking; a file under another process's
lease (Samba's oplocks, an NFS server's delegations) is opened again until the holder lets go, as a plain
``open`` waits."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import PosteriorError
from .openbeneath import open_beneath

_NOT_REGULAR = "is not a regular file (a directory, pipe, socket or device); pass a file"
_OUTSIDE = "outside the directory; copy the file in instead"
#: How input files are opened: for reading, without waiting for a FIFO's writer, never as a terminal.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def input_file(path: Path, what: str, within: Path | None = None) -> Path:
    """``path`` if it is a regular file, checked before it is opened: reading a FIFO, socket or
    device could block forever. Inside ``within`` (a posterior directory) a symbolic link must
    also stay inside it, so a directory received from elsewhere cannot pull in local files."""
    try:
        if within is not None and path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(within.resolve(strict=True)):
                raise PosteriorError(f"{what} is a symbolic link to '{target}', {_OUTSIDE}")
        st = path.stat()
    except FileNotFoundError:
        raise PosteriorError(f"{what} does not exist (or is a broken link); pass an existing file") from None
    except (OSError, RuntimeError) as exc:  # a link loop, a permission denied
        raise PosteriorError(f"cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PosteriorError(f"{what} {_NOT_REGULAR}")
    return path


def open_input(path: Path, what: str, within: Path | None = None) -> BinaryIO:
    """``path`` opened for reading in binary mode, a regular file (opened without blocking: a FIFO put there
    meanwhile does not hang). Inside ``within`` the kernel opens it beneath the directory where it can
    (:func:`_open_inside`); elsewhere once :func:`input_file` accepts it, and the open file is checked again:
    inside ``within``, the very file the path resolves to there.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "v.txt").write_text("king\\n")
        ...     with open_input(Path(d) / "v.txt", "vocabulary", within=Path(d)) as fh:
        ...         fh.read()
        b'king\\n'
    """
    if within is not None:
        inside = _open_inside(path, what, within)
        if inside is not None:
            return inside
    input_file(path, what, within)
    fh = open_readable(path, what)
    try:
        if within is not None and not _names_inside(path, within, os.fstat(fh.fileno())):
            raise PosteriorError(f"{what} changed while it was opened (another file or link at its path now)")
    except BaseException:
        fh.close()
        raise
    return fh


def _open_inside(path: Path, what: str, within: Path) -> BinaryIO | None:
    """``path`` (``within / name``) opened by the kernel beneath ``within``, following links only while they
    stay inside; a link whose target names a file inside by an absolute path or through ``..`` is opened as
    that file's path relative to the directory, beneath it again. ``None`` where the kernel cannot."""
    try:
        name = path.relative_to(within)
    except ValueError:
        return None
    try:
        try:
            fd = _open_waiting(lambda: open_beneath(within, name, _READ_FLAGS))
        except OSError as exc:
            inner = _named_inside(path, within) if exc.errno == errno.EXDEV else None
            if inner is None:
                raise
            fd = _open_waiting(lambda: open_beneath(within, inner, _READ_FLAGS))
        if fd is None:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PosteriorError(f"{what} {_NOT_REGULAR}")
        return os.fdopen(fd, "rb")
    except FileNotFoundError:
        raise PosteriorError(f"{what} does not exist (or is a broken link); pass an existing file") from None
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise PosteriorError(f"{what} is a symbolic link to '{_shown_target(path)}', {_OUTSIDE}") from None
        raise PosteriorError(f"cannot read {what} ({exc.strerror})") from None


def _shown_target(link: Path) -> str:
    """Where ``link`` leads, for a message (its path if a link on the way changes while it is read)."""
    try:
        return os.path.realpath(link)
    except OSError:
        return os.fspath(link)


def _named_inside(link: Path, within: Path) -> str | None:
    """The path relative to ``within`` of the file ``link``'s target names (read as text, ``..`` taken
    lexically), or ``None`` if that is not inside ``within`` (by its name or its real path)."""
    target = os.path.join(os.path.dirname(os.path.abspath(link)), os.readlink(link))
    target = os.path.normpath(target)
    for base in {os.path.abspath(within), os.path.realpath(within)}:
        if target.startswith(base.rstrip(os.sep) + os.sep):
            return os.path.relpath(target, base)
    return None


def _names_inside(path: Path, within: Path, opened: os.stat_result) -> bool:
    """Whether ``opened`` is the file ``path`` names now, inside ``within``: the directory's own entry
    (a regular file, no link: one ``lstat``, which also holds where ``realpath`` misreads a
    ``/proc/PID/root`` link as ``/``), or a link whose target ``realpath`` finds inside it, the file there."""
    try:
        if Path(path).parent == Path(within):
            entry = os.lstat(path)
            if stat.S_ISREG(entry.st_mode):
                return (entry.st_dev, entry.st_ino) == (opened.st_dev, opened.st_ino)
        real = os.path.realpath(path)  # (the file realpath names, not the kernel's: a link there must agree)
        if not Path(real).is_relative_to(os.path.realpath(within)):
            return False
        now = os.stat(real)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def open_readable(path: str | os.PathLike, what: str) -> BinaryIO:
    """:func:`open_nonblocking`, its ``OSError`` one :class:`PosteriorError` naming ``what``."""
    try:
        return open_nonblocking(path)
    except OSError as exc:
        raise PosteriorError(f"cannot read {what} ({exc.strerror})") from None


def open_nonblocking(path: str | os.PathLike) -> BinaryIO:
    """``open(path, "rb")`` of a regular file that does not wait for a writer if ``path`` is a FIFO: an
    ``OSError`` for anything but a regular file (checked on the open file, so nothing put at the path
    after an earlier check gets past it). A file under another process's lease is opened again until
    the holder releases it (the kernel breaks the lease within ``/proc/sys/fs/lease-break-time``)."""
    return _regular(_open_waiting(lambda: os.open(path, _READ_FLAGS)), path)


def _open_waiting(open_fd: Callable[[], int | None]) -> int | None:
    """``open_fd()``, called again while the file is under a lease being broken (``EWOULDBLOCK``; a FIFO
    opens at once, for reading), for at most the kernel's lease-break time and a second."""
    deadline, pause = None, 0.001
    while True:
        try:
            return open_fd()
        except BlockingIOError:
            deadline = deadline or time.monotonic() + _lease_break_seconds() + 1.0
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.05)


def _regular(fd: int, path: str | os.PathLike) -> BinaryIO:
    """The open file ``fd`` as a binary file object if it is a regular file, else ``OSError`` (closed)."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a directory, pipe, socket or device)", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _lease_break_seconds() -> float:
    """How long the kernel lets a lease holder take to release it (``/proc/sys/fs/lease-break-time``,
    45 s by default)."""
    try:
        with open("/proc/sys/fs/lease-break-time", "rb") as fh:
            return float(fh.read().strip() or 45)
    except (OSError, ValueError):
        return 45.0
