"""Input files a user names (a vocabulary, a directory's .npy files): checked to be regular files, and
inside a posterior directory not a link that leads out of it, before they are opened and again on the
open file (another file or link put at the path between the check and the open is refused, not read:
a FIFO there would block for ever, a link could pull a local file into an archive). Files are opened
without blocking; a file under another process's lease (Samba's oplocks, an NFS server's delegations)
is opened again until the holder lets go, as a plain ``open`` waits."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

from .errors import PosteriorError


def input_file(path: Path, what: str, within: Path | None = None) -> Path:
    """``path`` if it is a regular file, checked before it is opened: reading a FIFO, socket or
    device could block forever. Inside ``within`` (a posterior directory) a symbolic link must
    also stay inside it, so a directory received from elsewhere cannot pull in local files."""
    try:
        if within is not None and path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(within.resolve(strict=True)):
                raise PosteriorError(
                    f"{what} is a symbolic link to '{target}', outside the directory; copy the file in instead"
                )
        st = path.stat()
    except FileNotFoundError:
        raise PosteriorError(f"{what} does not exist (or is a broken link); pass an existing file") from None
    except (OSError, RuntimeError) as exc:  # a link loop, a permission denied
        raise PosteriorError(f"cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PosteriorError(f"{what} is not a regular file (a directory, pipe, socket or device); pass a file")
    return path


def open_input(path: Path, what: str, within: Path | None = None) -> BinaryIO:
    """``path`` opened for reading in binary mode once :func:`input_file` accepts it, and the open file
    checked again: a regular file (opened without blocking: a FIFO put there meanwhile does not hang)
    and, inside ``within``, the very file the path resolves to there.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "v.txt").write_text("king\\n")
        ...     with open_input(Path(d) / "v.txt", "vocabulary", within=Path(d)) as fh:
        ...         fh.read()
        b'king\\n'
    """
    input_file(path, what, within)
    fh = open_readable(path, what)
    try:
        if within is not None and not _names_inside(path, within, os.fstat(fh.fileno())):
            raise PosteriorError(f"{what} changed while it was opened (another file or link at its path now)")
    except BaseException:
        fh.close()
        raise
    return fh


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
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    deadline, pause = None, 0.001
    while True:
        try:
            fd = os.open(path, flags)
            break
        except BlockingIOError:  # (EWOULDBLOCK: a lease being broken; a FIFO opens at once, for reading)
            deadline = deadline or time.monotonic() + _lease_break_seconds() + 1.0
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
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
