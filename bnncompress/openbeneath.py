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
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_openat2 = _syscall()


def open_beneath(directory: Path, name: str | os.PathLike, flags: int) -> int | None:
    """A descriptor of ``name`` (relative) opened with ``flags`` beneath ``directory``; ``OSError`` as
    ``os.open`` raises it (``EXDEV``: a link or ``..`` that leads out of the directory, or an absolute link),
    or ``None`` where the kernel cannot (no openat2, or a sandbox that forbids it): then nothing was opened."""
    global _openat2
    if _openat2 is None:
        return None
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        how = _OpenHow(flags | getattr(os, "O_CLOEXEC", 0), 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
        fd = _openat2(_SYS_OPENAT2, dir_fd, os.fsencode(name), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM):  # (an older kernel, a seccomp filter: never again here)
            _openat2 = None
            return None
        raise OSError(code, os.strerror(code), os.fspath(name))
    finally:
        os.close(dir_fd)
