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
_MISSING = "does not exist (or is a broken link); pass an existing file"
#: How input files are opened: for reading, without waiting for a FIFO's writer, never as a terminal.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
#: How a file inside a directory is found before it is opened: a descriptor of its path only (Linux).
_FIND_FLAGS = getattr(os, "O_PATH", _READ_FLAGS)


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
        raise PosteriorError(f"{what} {_MISSING}") from None
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
    stay inside; a link the kernel will not follow from there (an absolute one, one through ``..``) is opened as
    the path inside that ``realpath`` finds for it, beneath the directory again. The file is found first without
    being opened for reading (``O_PATH``: a FIFO's writer is not released), then opened and compared with it.
    ``None`` where the kernel cannot."""
    try:
        name = path.relative_to(within)
    except ValueError:
        return None
    try:
        try:
            found = _open_waiting(lambda: open_beneath(within, name, _FIND_FLAGS))
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            name, found = _find_inside(path, within, exc)
        if found is None:
            return None
        try:
            seen = os.fstat(found)
            if not stat.S_ISREG(seen.st_mode):
                raise PosteriorError(f"{what} {_NOT_REGULAR}")
            fd = _open_waiting(lambda: _reopen(found, within, name))
        finally:
            os.close(found)
        if fd is None:  # (openat2 refused from now on: a sandbox)
            return None
        opened = _regular(fd, path)
    except FileNotFoundError:
        raise PosteriorError(f"{what} {_MISSING}") from None
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            if not os.path.exists(path):
                raise PosteriorError(f"{what} {_MISSING}") from None
            raise PosteriorError(f"{what} is a symbolic link to '{_shown_target(path)}', {_OUTSIDE}") from None
        raise PosteriorError(f"cannot read {what} ({exc.strerror})") from None
    now = os.fstat(opened.fileno())
    if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
        opened.close()
        raise PosteriorError(f"{what} changed while it was opened (another file or link at its path now)")
    return opened


def _shown_target(link: Path) -> str:
    """Where ``link`` leads, for a message; its own path if a link on the way is swapped while ``realpath``
    reads it (``realpath`` then raises EINVAL: a link that is a directory by the time it is read)."""
    try:
        return os.path.realpath(link)
    except OSError:
        return os.fspath(link)


def _reopen(found: int, within: Path, name: str) -> int | None:
    """The file ``found`` (an ``O_PATH`` descriptor) opened for reading: that very file through
    ``/proc/self/fd`` (nothing swapped in at its path meanwhile is opened), or where /proc is missing
    by ``name`` beneath ``within`` again (then compared with it)."""
    try:
        return os.open(f"/proc/self/fd/{found}", _READ_FLAGS)
    except FileNotFoundError:
        return open_beneath(within, name, _READ_FLAGS)


def _find_inside(link: Path, within: Path, refused: OSError) -> tuple[str, int | None]:
    """A name inside ``within`` for the file ``link`` leads to, found (``O_PATH``) beneath it: the rest of
    ``link``'s ``realpath`` after the directory's, else of its target as written (through ``/proc/PID/root``
    ``realpath`` resolves on this side of the namespace), ``..`` and links in it left to the kernel beneath
    the directory; ``refused`` if neither is inside or opens there."""
    names = []
    for resolved in (os.path.realpath(link), os.path.join(os.path.abspath(link.parent), os.readlink(link))):
        for base in (os.path.realpath(within), os.path.abspath(within)):
            prefix = base.rstrip(os.sep) + os.sep
            if resolved.startswith(prefix) and len(resolved) > len(prefix):
                names.append(resolved[len(prefix) :])
    for name in dict.fromkeys(names):
        try:
            return name, _open_waiting(lambda n=name: open_beneath(within, n, _FIND_FLAGS))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EXDEV):
                raise
    raise refused


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
