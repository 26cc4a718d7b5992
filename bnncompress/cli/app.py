"""The ``bnncompress`` command line's shared parts: the typer app, output, and error handling.

Every error raised for bad input (a :class:`~bnncompress.BnnCompressError`, a file the
system refuses, or a request too large for memory) is printed as one line on stderr with exit
code 2, without a traceback; the API's parameter names in messages become this command line's
flags. Warnings are one line ``warning: ...`` on stderr, none with ``--quiet``. SIGINT and
SIGTERM remove any temporary file and exit with 130 and 143.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from .._version import __version__
from ..contents import printable
from ..errors import BnnCompressError, OptionError
from ..export import FORMATS
from ..files import check_output_path
from ..models import TrainCallback, TrainProgress
from ..numbaenv import refuse_bad_numba_environment
from ..quantizers import METHODS, method_class
from .stages import progress_bar, redraws
from .streams import err, is_stdio, say, standard_fds_taken

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Compress Bayesian neural networks by their posterior uncertainty (Variational Bayesian Quantization).",
)


def _print_version(value: bool) -> None:
    if value:
        print(f"bnncompress {__version__}", flush=True)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    pass


#: API parameter -> flag, where the flag is not just --NAME.
_FLAGS = {
    "options": "--option KEY=VALUE",
    "stream=False": "--no-stream",
    "force=True": "--force",
    "format": "--format",
    "csv_path": "--output",
    "plot_path": "--plot",
    "init_vectors": "--init",
    "binary": "--binary/--text",
    "model_args": "--model FUNCTION: one without arguments that calls the model with them",
}


def fails_cleanly(command):
    """Turn bad-input errors into one line on stderr and exit code 2, and warnings into one line
    each (none when the command's ``quiet`` is set)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            if kwargs.get("quiet"):
                warnings.simplefilter("ignore")
            else:
                warnings.showwarning = _show_warning
            # torch warns about a pickle protocol it does not expect before refusing a file: the error says it
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            try:
                return command(*args, **kwargs)
            except BnnCompressError as exc:
                say(f"error: {printable(exc.render(_FLAGS, prefix='--'))}", err)  # (a path may hold a newline)
            except OSError as exc:
                where = exc.filename or "standard output or a file"
                say(f"error: {printable(f'{exc.strerror or exc} ({where})')}", err)
            except MemoryError:
                say("error: not enough memory for this input and these options; use smaller values", err)
            except OverflowError as exc:
                say(f"error: a value is too large ({exc}); use smaller values", err)
            raise typer.Exit(2)

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, without the source file and line it came from (numba's about a variable it
    cannot read: without the traceback it quotes)."""
    text = " ".join(str(message).split())
    unread = re.match(r"Environment variable '(\w+)' is defined but its associated value '(.*?)' could not be", text)
    if unread:
        name, value = unread.groups()
        text = f"{name}={value} is not a value numba can read: numba uses its default; unset it or see numba's "
        text += "documentation"
    say(f"warning: {text}", err)


def refuse_existing(output: str | Path, force: bool, *inputs: str | Path | None) -> None:
    """The one check of every command's output path, before any work: not one of the command's
    ``inputs`` (also through a link), not a directory, device or link, and absent unless ``force``.
    ``output`` is the text as typed (a str option, not a Path, which drops the slash of ``out/``)."""
    check_output_path(output, force, [i for i in inputs if i is not None])


def refuse_stdin(*inputs: str | None) -> None:
    """Inputs are read by name (some are read twice, or seeked in): a clear refusal of ``-`` (the arguments
    as typed: ``./-`` is a file)."""
    for given in inputs:
        if is_stdio(given):
            raise OptionError("'-' (standard input) cannot be read here; save the input to a file and pass its path")


@contextlib.contextmanager
def training_progress(quiet: bool) -> Iterator[TrainCallback]:
    """A ``progress`` callback for training, given a :class:`TrainProgress` report per step: a rich
    bar (loss, pairs/s, ETA) in a terminal, else one line per epoch on stderr; nothing when ``quiet``."""
    if quiet:
        yield lambda p: None
        return
    if not redraws(err):

        def line(p: TrainProgress) -> None:
            if p.epoch_done:
                say(
                    f"epoch {p.epoch}/{p.epochs}: loss/pair {p.loss:.4f}, {p.pairs_per_second:,.0f} pairs/s, "
                    f"ETA {_clock(p.eta_seconds)}",
                    err,
                )

        yield line
        return
    bar = progress_bar(
        err,
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%  {task.fields[speed]}  ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with bar:
        task = bar.add_task("training", total=None, speed="", eta="-")

        shown = [0.0]

        def update(p: TrainProgress) -> None:
            now = time.monotonic()
            if now - shown[0] < 0.2 and not p.epoch_done:  # redrawing every step would slow training
                return
            shown[0] = now
            bar.update(
                task,
                completed=p.step,
                total=p.total_steps,
                description=f"epoch {p.epoch}/{p.epochs} loss/pair {p.loss:.4f}",
                speed=f"{p.pairs_per_second:,.0f} pairs/s",
                eta=_clock(p.eta_seconds),
            )

        yield update


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def method_choice(value: str) -> str:
    """``--method``: a registered method, or one another distribution names in the entry-point group."""
    try:
        method_class(value)
    except OptionError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


METHOD_HELP = f"Quantization method: {', '.join(METHODS)}, or an installed plugin's name."


def parse_options(pairs: list[str] | None) -> dict:
    """``["prune=0.1", "centroids=false"]`` -> ``{"prune": 0.1, "centroids": False}``: JSON values, any
    number Python reads (``.5``, ``1.``), true/false in any case, else the text; a key given twice is refused."""
    options: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--option takes KEY=VALUE, got {pair!r}")
        key = key.replace("-", "_")
        if key in options:
            raise OptionError(f"--option {key} is given twice; give it once")
        options[key] = _option_value(value)
    return options


def _option_value(text: str) -> Any:
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


UnpackFormat = Enum("UnpackFormat", [(name, name) for name in FORMATS], type=str)  # export.FORMATS: the one list


def main() -> None:
    """Console-script entry point: one line and exit 130 / 143 on SIGINT / SIGTERM, no traceback."""
    standard_fds_taken()  # (sys.stdout stays None for a closed standard output: commands refuse to write there)
    for stream in (sys.stdout, sys.stderr):  # a locale that cannot encode a name (LC_ALL=C, PYTHONIOENCODING=ascii):
        # escaped, not a traceback (surrogateescape, C's with PYTHONUTF8=0, fails on any character beyond ASCII)
        if getattr(stream, "errors", None) in ("strict", "surrogateescape") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # (SIGHUP: the terminal closed)
        if signal.getsignal(signum) is not signal.SIG_IGN:  # (nohup, or `cmd &` in a script: kept ignored)
            signal.signal(signum, _terminate)
    try:  # (from the first step after the handlers: a signal while the command is built is one line too)
        refuse_bad_numba_environment()  # a bad NUMBA_* variable: one line and exit 2, not a traceback later
        # numba warns in 4 lines when it cannot create its import lock in /dev/shm (e.g. under a file
        # size limit); the command's own error, if any, is the one line that matters
        warnings.filterwarnings("ignore", message=".*Could not obtain multiprocessing lock")
        command = typer.main.get_command(app)
        code = command.main(prog_name="bnncompress", standalone_mode=False)  # returns typer.Exit's code
    except KeyboardInterrupt:  # typer turns it into exit code 130 itself; this is in case it does not
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except _USAGE_ERROR as exc:  # a bad flag or value: one line, like every other error
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `bnncompress`: the help, not an error
            say(exc.format_message(), err)
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "bnncompress"
        say(f"error: {exc.format_message().replace('Value error, ', '')} (see {where} --help)", err)
        code = exc.exit_code
    except typer.Abort:
        code = 1
    except OSError as exc:  # --help or --version to a full device; a command's own are said by fails_cleanly
        say(f"error: {exc.strerror or exc} (standard output)", err)
        code = 2
    except Exception as exc:  # a signal inside a C callback (numba loading a kernel) arrives wrapped
        if not _interrupted(exc):
            raise
        code = 130
    if "received" in _SIGNALS:  # its KeyboardInterrupt may have been swallowed (raised in a gc callback or a
        code = 130  # __del__, which Dask's client runs often), and the command then ran on to the end
    if code == 130:  # the temporary files are gone: the exception unwound through atomic_output
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a second one while the line is said
            signal.signal(signum, signal.SIG_IGN)
        received = _SIGNALS.get("received", signal.SIGINT)
        terminated = received != signal.SIGINT
        say("terminated" if terminated else "interrupted", err)
        # Exit now: under load the interpreter's shutdown (joining worker threads, atexit hooks) could
        # still end in an unhandled KeyboardInterrupt, and Python then kills itself with SIGINT (-2),
        # whatever the code; the temporary files are gone already, and nothing is left to write.
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os._exit(128 + received)  # 130, 143, or 129 for SIGHUP
    atexit.register(_ignore_signals)  # the command is done: registered last, this runs first at exit
    colorama = sys.modules.get("colorama.initialise")  # numba initialises it when it imports: at exit it wrote
    if colorama is not None:  # ESC[0m to a terminal's standard output, also under --quiet (the CLI prints no colour)
        atexit.unregister(colorama.reset_all)
    sys.exit(code if isinstance(code, int) else 0)


_SIGNALS: dict[str, int] = {}
#: click's ClickException, from whichever click typer uses (its own copy since typer 0.16-ish; there
#: is no public name for it, and click itself need not be installed).
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by Ctrl-C or SIGTERM: numba, for one, turns a KeyboardInterrupt
    raised while it loads a cached kernel into a SystemError whose cause chain holds it."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _ignore_signals() -> None:
    """At exit, after a command: the work is done and the exit hooks left (numba's, a temporary cache directory's)
    should run, so a signal is ignored. Raised as a KeyboardInterrupt there, it was "Exception ignored in ...
    KeyboardInterrupt" with a traceback, and exit 0. (A program that calls :func:`main` and goes on keeps the
    handlers it had until it exits.)"""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(signum) is _terminate:
            signal.signal(signum, signal.SIG_IGN)


def _terminate(signum, frame) -> None:
    """SIGTERM, SIGHUP: unwind like Ctrl-C (removing temporary files on the way out), then exit 143, 129;
    SIGINT: 130."""
    _SIGNALS["received"] = signum
    raise KeyboardInterrupt
