"""Crash-safe output files: write a temporary file beside the target, check it, then rename.

Every output (archives, unpacked vectors, trained posteriors) goes through
:func:`atomic_output`, so a failed, interrupted or killed command never leaves a partial
file where the user expects a result, and never replaces a good file with a bad one:

- the destination must be absent or a regular file (a device, FIFO, directory or symbolic
  link is refused), and an existing one is replaced only with ``force``;
- the temporary file gets the destination's permission bits (or the umask's for a new file);
- every write error (``No space left on device`` ...) is raised as an :class:`OSError`
  naming the destination; the temporary file is then removed and the destination untouched;
- the finished temporary file is fsynced and, if the caller gives a ``verify`` function,
  checked before it is renamed over the destination;
- temporary files are named ``.NAME.HOST.PID.XXXX.bnctmp`` (NAME shortened, with a hash of the
  whole name, where that would exceed the file system's name limit): one left behind by a killed
  process (SIGKILL cannot be caught) is removed by the next write to the same destination.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import ArgumentTypeError, OptionError
from .scratch import alive, glob_escape, host

TEMP_SUFFIX = ".bnctmp"


def check_output_path(path: str | os.PathLike, force: bool = True, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that ``path`` can be written as a regular file; return it as a Path.

    Raises :class:`OptionError` if its directory is missing or cannot be written (a file is made
    there and removed: said before the work, e.g. a training run of minutes, not when the result
    is written), or it exists and is not a regular file, or it is one of the ``inputs`` (by name,
    or the same file through a link), or it exists and ``force`` is False.

    Example:
        >>> import tempfile, pathlib
        >>> check_output_path(pathlib.Path(tempfile.mkdtemp()) / "new.bnc", force=False).name
        'new.bnc'
    """
    target = _check_target(path, force, inputs)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bnc-probe.", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise OptionError(
            f"cannot write in the output directory '{directory}' ({exc.strerror or exc}); choose another output path"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return target


def _check_target(path: str | os.PathLike, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """:func:`check_output_path` but for the directory's write test (where a file is made next anyway)."""
    if not isinstance(force, bool):  # force="no" would overwrite
        raise ArgumentTypeError(f"«force» must be True or False, not {force!r:.40}")
    if ends_with_slash(path):
        raise OptionError(f"the output '{os.fspath(path)}' names a directory (a final / or /.); give a file's path")
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        if directory.exists():  # (-o archive.bnc/x.bnc)
            raise OptionError(f"'{directory}' in the output path is a file, not a directory; give another path")
        raise OptionError(f"output directory '{directory}' does not exist; create it first")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    for given in inputs:
        if _same_file(target, st, Path(given)):
            raise OptionError(f"the output '{target}' is the input '{given}' itself; choose another output path")
        if st is not None and Path(given).is_dir() and _same_file(target.parent, st, Path(given)):
            raise OptionError(
                f"the output '{target}' is a file of the input directory '{given}' (the posterior or its "
                "vocabulary); choose another output path"
            )
    if st is None:
        return target
    if stat.S_ISDIR(st.st_mode):
        raise OptionError(f"output '{target}' is a directory; give a file name")
    if stat.S_ISLNK(st.st_mode):
        raise OptionError(f"output '{target}' is a symbolic link; give the path of a regular file")
    if not stat.S_ISREG(st.st_mode):
        raise OptionError(f"output '{target}' exists and is not a regular file (a device or pipe); choose another path")
    if not force:
        raise OptionError(f"output '{target}' already exists; pass «force=True» to overwrite it")
    return target


def ends_with_slash(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a directory by a trailing slash or ``/.`` (``out/``, ``out/.``): an output path
    must not, since Path() would drop them and write a file ``out``. Give it the path as the user typed it: a
    Path has lost them already."""
    return os.fspath(path).endswith(("/", os.sep, "/.", os.sep + "."))


def check_stdout_not_an_input(inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse to write to standard output when it is one of ``inputs`` (or a file of an input
    directory), as ``cat`` refuses "input file is output file": ``-o - 1<>in.npz`` or ``>> in.npz``
    would put an archive's bytes into the input.

    Example:
        >>> check_stdout_not_an_input([])
    """
    try:
        out = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real standard output (a test runner's capture)
        return
    if not stat.S_ISREG(out.st_mode):
        return
    for given in inputs:
        path = Path(given)
        files = [path] if not path.is_dir() else [p for p in path.iterdir() if p.is_file()]
        for file in files:
            try:
                st = os.stat(file)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino):
                raise OptionError(f"standard output is the input '{file}'; write the output elsewhere")


def same_file(target: Path, given: Path) -> bool:
    """Whether writing ``target`` would replace the file ``given`` (by name, or through a link)."""
    try:
        st = os.lstat(target)
    except (FileNotFoundError, ValueError):
        st = None
    return _same_file(target, st, given)


def _same_file(target: Path, target_stat: os.stat_result | None, given: Path) -> bool:
    """Whether writing ``target`` would replace ``given``: the same name, or (through a symbolic
    or hard link) the same file."""
    if os.path.abspath(target) == os.path.abspath(given):
        return True
    if target_stat is None:
        return False
    try:
        followed = os.stat(target)
        other = os.stat(given)
    except (OSError, ValueError):
        return False
    return (followed.st_dev, followed.st_ino) == (other.st_dev, other.st_ino)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, force: bool = True, verify: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path``.

    ``verify(tmp)`` (optional) runs on the finished, fsynced temporary file and must raise if
    it is not what was meant to be written. On any exception (a write error, a failed check,
    KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_output(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    target = _check_target(path, force)  # (its directory is written next: mkstemp tests it)
    directory = target.parent if str(target.parent) else Path(".")
    remove_stale_temporaries(target)
    prefix = f".{_temp_stem(target)}.{host()}.{os.getpid()}."
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise _named(exc, target) from None
    try:
        os.fchmod(fd, 0o600)  # writable while it is written, whatever the umask (222 made mkstemp's 0400)
        created = os.fstat(fd)
    finally:
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            _finish(tmp, target, created)  # after writing: the mode may forbid writes (umask 222, a 0444 file)
        except OSError as exc:
            if exc.filename not in (None, str(tmp), tmp):
                raise  # about another file (e.g. an input the caller read)
            raise _named(exc, target) from None
        if verify is not None:
            verify(tmp)
        try:
            _check_target(target, force)  # still a regular file (or absent) right before the rename
            _opened_as_created(os.lstat(tmp), created, tmp)  # (not a link put in its place: it would be renamed)
            if force:
                os.replace(tmp, target)
            else:
                _rename_to_new(tmp, target)
        except OSError as exc:
            raise _named(exc, target) from None
        _fsync_directory(directory)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _rename_to_new(tmp: Path, target: Path) -> None:
    """``tmp`` becomes ``target`` only if no file is there, in one step (a hard link; the caller removes
    ``tmp``): a file made at ``target`` since the last check, e.g. by another pack, is never replaced."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        _check_target(target, force=False)  # says so in the words of the first check
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        os.replace(tmp, target)  # no hard links on this file system: the check just made is the last word


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, checking every write and reading it back before the rename.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "blob"
        >>> write_bytes(target, b"abc"); target.read_bytes()
        b'abc'
    """

    def same_bytes(tmp: Path) -> None:
        with open(tmp, "rb") as fh:
            if fh.read() != data:
                raise OSError(errno.EIO, "the written file does not read back as written", str(path))

    with atomic_output(path, force=force, verify=same_bytes) as tmp:
        with open(tmp, "wb") as fh:
            view = memoryview(data)
            while view:
                view = view[fh.write(view) :]
            fh.flush()


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporary files of ``target`` left by processes of this host that no longer run."""
    directory = target.parent if str(target.parent) else Path(".")
    removed = []
    here = host()
    stem = _temp_stem(target)
    try:
        candidates = list(directory.glob(f".{glob_escape(stem)}.*{TEMP_SUFFIX}"))
    except OSError:
        return removed
    for candidate in candidates:
        parts = candidate.name[len(stem) + 2 : -len(TEMP_SUFFIX)].split(".")
        if len(parts) != 3 or parts[0] != here or not parts[1].isdigit() or alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def _temp_stem(target: Path) -> str:
    """``target``'s name as its temporary files start with it: shortened (keeping a hash of the
    whole name) where ``.NAME.HOST.PID.XXXXXXXX.bnctmp`` would exceed the file system's name limit."""
    name = target.name
    directory = target.parent if str(target.parent) else Path(".")
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - no pathconf (Windows)
        limit = 255
    # ".", ".HOST", ".PID" (at most 7 digits on Linux), ".", 8 random characters, TEMP_SUFFIX
    room = limit - len(f"..{host()}.{'9' * 7}..{'X' * 8}{TEMP_SUFFIX}".encode())
    encoded = os.fsencode(name)
    if len(encoded) <= room:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:12]
    kept = encoded[: max(0, room - len(digest) - 1)].decode("utf-8", "ignore")  # whole characters only
    return f"{kept}~{digest}"


def _finish(tmp: Path, target: Path, created: os.stat_result) -> None:
    """Flush the written ``tmp`` to disk and give it the permission bits of the file it replaces (not
    setuid, setgid or sticky) and its owner and group where this process may (as ``cp -f`` keeps them:
    root replacing a user's 0640 file left it root's, unreadable to the user); a new file's bits are
    those the umask allows. Through a descriptor of the file made (``created``): a link put at its
    path by whoever may write to the directory is refused, not followed (root gave its target away)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link
            _opened_as_created(os.lstat(tmp), created, tmp)
        raise
    try:
        ours = os.fstat(fd)
        _opened_as_created(ours, created, tmp)
        os.fsync(fd)
        try:
            old = os.stat(target)
        except FileNotFoundError:
            _chmod(fd, tmp, 0o666 & ~_umask())
            return
        for owner, group in ((old.st_uid, old.st_gid), (-1, old.st_gid)):  # (a user may give a group of theirs)
            if owner in (-1, ours.st_uid) and old.st_gid == ours.st_gid:
                break
            try:
                os.fchown(fd, owner, group)
                break
            except (OSError, AttributeError):  # (not allowed, no owners here, no fchown: the file stays ours)
                continue
        _chmod(fd, tmp, stat.S_IMODE(old.st_mode) & 0o777)  # (after chown, which may clear setuid bits)
    finally:
        os.close(fd)


def _chmod(fd: int, path: Path, mode: int) -> None:
    try:
        os.fchmod(fd, mode)
    except (AttributeError, NotImplementedError):  # pragma: no cover - no fchmod (Windows before 3.13)
        os.chmod(path, mode)


def _opened_as_created(found: os.stat_result, created: os.stat_result, tmp: Path) -> None:
    """``found`` (the file now at ``tmp``) must be the file made, or one a writer renamed there itself
    (safetensors, matplotlib's PostScript): a regular file of this user's with one name, so never a link
    nor a hard link to another file that a link's target would be."""
    if (found.st_dev, found.st_ino) == (created.st_dev, created.st_ino) and stat.S_ISREG(found.st_mode):
        return
    if stat.S_ISREG(found.st_mode) and found.st_uid == created.st_uid and found.st_nlink == 1:
        return
    raise OSError(errno.EEXIST, "its temporary file was replaced by another process while it was written", str(tmp))


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``os.umask`` sets one to
    read it: for that moment another thread's new files were world-writable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0)
        os.umask(umask)
        return umask


def _named(exc: OSError, target: Path) -> OSError:
    """The same OS error, naming the destination instead of the temporary file."""
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
