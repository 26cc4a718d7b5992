"""Open a file beneath a directory, following links only while they stay inside it: Linux's ``openat2``
with ``RESOLVE_BENEATH`` (kernel 5.6 and later), which Python's ``os`` does not offer. The kernel resolves
the whole path against the directory's descriptor at once, so no rename or link swapped in meanwhile (another
user's process racing a check) can lead the open out of the directory.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "w.txt").write_text("inside")
    ...     (Path(d) / "link").symlink_to("w.txt")
    ...     fd = open_beneath(Path(d), "link", os.O_RDONLY)
    ...     os.read(fd, 6) if fd is not None else b"inside"  # (None: a kernel without openat2)
    b'inside'
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from pathlib import Path

#: openat2's number where new system calls share one numbering (all but alpha, ia64 and mips).
_SYS_OPENAT2 = 437
_MACHINES = {"x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "armv7l", "armv6l", "ppc64le", "ppc64",
             "s390x", "riscv64", "loongarch64"}  # fmt: skip
#: resolve flags: no escape above the directory (``..``, absolute links), no /proc "magic" links.
_RESOLVE_BENEATH, _RESOLVE_NO_MAGICLINKS = 0x08, 0x02


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux") or platform.machine().lower() not in _MACHINES:
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    call.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_OpenHow), ctypes.c_size_t]
    return call


_openat2 = _syscall()
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: A descriptor of a directory to resolve beneath: no read permission needed (a ``--x`` directory).
_DIRECTORY = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | _CLOEXEC


def _call(dir_fd: int, name: bytes, flags: int) -> int:
    how = _OpenHow(flags | _CLOEXEC, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    return _openat2(_SYS_OPENAT2, dir_fd, name, ctypes.byref(how), ctypes.sizeof(how))


def _refused_itself(dir_fd: int) -> bool:
    """Whether openat2 is refused as such (a seccomp filter's EPERM), not for one file (a fanotify deny)."""
    probe = _call(dir_fd, b".", _DIRECTORY)
    if probe >= 0:
        os.close(probe)
    return probe < 0


def open_beneath(directory: Path, name: str | os.PathLike, flags: int) -> int | None:
    """A descriptor of ``name`` (relative) opened with ``flags`` beneath ``directory``; ``OSError`` as
    ``os.open`` raises it (``EXDEV``: a link or ``..`` that leads out of the directory, or an absolute link),
    or ``None`` where the kernel cannot (no openat2, or a sandbox that forbids it): then nothing was opened."""
    global _openat2
    if _openat2 is None:
        return None
    dir_fd = os.open(directory, _DIRECTORY)
    try:
        fd = _call(dir_fd, os.fsencode(name), flags)
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code == errno.ENOSYS or (code == errno.EPERM and _refused_itself(dir_fd)):
            _openat2 = None  # (an older kernel, or a sandbox that refuses openat2 itself: never again here)
            return None
        raise OSError(code, os.strerror(code), os.fspath(name))
    finally:
        os.close(dir_fd)
