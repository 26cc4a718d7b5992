"""The command line's standard streams: results on standard output, messages on standard error, an
archive written to standard output (``-o -``), and what to do when a stream is closed, full, or its
reader left.

Example:
    >>> print(text_table(("method", "bits"), [("uniform", "2.000"), ("vbq", "1.999")], left=(0,)))
    method    bits
    --------------
    uniform  2.000
    vbq      1.999
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import typer
from rich.console import Console

from ..errors import OptionError
from ..scratch import scratch_directory


def _silence(fd: int) -> None:
    """``fd`` writes to /dev/null from now on (a stream whose reader left: Python's flush at exit stays quiet)."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class _Console(Console):
    """rich's Console, but a reader that left (``| head``) ends what is said there, not the command
    (rich exits 1): the work was done (a trained posterior written) and its exit code says so."""

    def on_broken_pipe(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            _silence(self.file.fileno())


class _Environment(Mapping):
    """``os.environ`` as rich reads it, but for a ``COLUMNS`` or ``LINES`` of 0 (rich then printed
    nothing: every error, warning and note of the command was lost)."""

    def __getitem__(self, key: str) -> str:
        value = os.environ[key]
        if key in ("COLUMNS", "LINES") and value.isdigit() and not (value.isascii() and int(value) > 0):
            raise KeyError(key)  # (also '²', a digit int() refuses: rich's traceback at import)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key in list(os.environ) if key in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: Messages (standard error) and results (standard output).
err = _Console(stderr=True, emoji=False, _environ=_Environment())  # (no emoji: 'ckpt:x:f.bnc' was 'ckpt❌f.bnc')
out = _Console(emoji=False, _environ=_Environment())


def say(text: str, to: Console = out) -> None:
    """Print plain text: no rich markup or highlighting (file and tensor names may contain brackets).
    A stream that is closed or full (``2>&-``, ``2>/dev/full``, a reader gone) takes nothing more,
    and the work goes on: a report that cannot be shown must not end a training run."""
    try:
        to.print(text, markup=False, highlight=False, soft_wrap=True)
    except OSError:
        to.on_broken_pipe()  # (and Python's flush at exit stays quiet)


def print_text(text: str) -> None:
    """Print a command's result to standard output as it is (say() through rich takes minutes for 200,000 tensors
    lines); a reader that leaves early (``| head``) ends the output quietly."""
    if sys.stdout is None:  # started with standard output closed (>&-): the result would be lost, exit 0
        raise OptionError("standard output is closed; the result has nowhere to go (do not close it with >&-)")
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _silence(sys.stdout.fileno())  # and Python's flush at exit


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: tuple[int, ...]) -> str:
    """Plain aligned columns: a rich Table takes minutes for the rows of 200,000 tensors, and in a narrow
    terminal it drops columns and folds numbers across lines."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        cells = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "-" * (sum(widths) + 2 * len(widths) - 2), *map(line, rows)])


def is_stdio(path: str | Path | None) -> bool:
    """Whether the argument ``path``, as typed, is ``-`` (standard input or output). Only the literal
    ``-``: ``./-`` names a file called ``-``, which a Path cannot tell apart (``Path("./-") == Path("-")``),
    so the commands take their paths as typed (options as str, arguments with ``path_type=str``, which
    typer respects from 0.29 on; a Path ``-`` from an older one is standard input as before)."""
    return path == "-" or (isinstance(path, Path) and str(path) == "-")


@contextlib.contextmanager
def stdout_file(name: str) -> Iterator[Path]:
    """A temporary path named ``name`` to write; when the block succeeds its bytes go to standard
    output. Refused when standard output is a terminal (binary data would garble it, as zstd says)."""
    if sys.stdout is None:  # started with standard output closed (>&-)
        raise OptionError("standard output is closed; pass «output» FILE")
    if sys.stdout.isatty():
        raise OptionError("standard output is a terminal; redirect it to a file or pipe, or pass «output» FILE")
    with scratch_directory("copy of standard output") as tmp:
        path = tmp / name
        yield path
        sys.stdout.flush()
        try:
            with open(path, "rb") as fh:
                shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader left (`| head`): end quietly with SIGPIPE's 141, as gzip -c
            _silence(sys.stdout.fileno())  # does (and no flush at exit)
            raise typer.Exit(128 + signal.SIGPIPE) from None


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """Within the block, what anything prints to standard output (a ``--model`` module's print, a C
    library's) goes to standard error: standard output is the archive being written (``-o -``)."""
    if not active or sys.stdout is None:
        yield
        return
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # (no file descriptor: a test runner's stream) Python's prints only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sys.stdout.flush()
    saved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)  # (os.dup takes the lowest free number: 2 under 2>&-,
    # and what C code then wrote to 'standard error' went into the archive on standard output)
    try:
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # (standard error closed: started with 2>&-)
        _silence(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


def standard_fds_taken() -> None:
    """A standard file descriptor the command was started without (``2>&-``) is given /dev/null: else the
    next file opened takes its number, and what C code writes to 'standard error' goes into that file."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
