"""What ``bnncompress pack`` shows while it works: its stages (reading, fitting, rate search,
coding, writing).

In a terminal a rich bar on stderr once the pack has run :data:`SHOW_AFTER` seconds (erased when
the pack ends); when stderr is not a terminal (a log, a pipe) one line per stage,
``pack: <stage> (<seconds> s)``, once it has run :data:`LOG_AFTER` seconds, so that a short pack's
log (and a one-line error) stays as it was; nothing with ``--quiet``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from ..progress import Progress, no_progress

#: Seconds of work before a terminal shows the bar.
SHOW_AFTER = 1.0
#: Seconds of work before a log gets stage lines (they stay: a pack that fails early stays one error line).
LOG_AFTER = 10.0


def progress_bar(console: Console, *columns: object) -> RichProgress:
    """A rich bar on ``console`` that leaves the screen when done and ``sys.stdout`` alone (rich's stand-in
    for a closed standard output, ``>&-``, broke colorama's ``isatty()`` when numba loaded a kernel)."""
    return RichProgress(*columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False)


def redraws(console: Console) -> bool:
    """Whether ``console`` is a terminal a bar can redraw: a console made with ``force_terminal`` says so,
    else its file must be a tty that is not ``TERM=dumb`` (rich's ``is_terminal`` is also true for
    ``FORCE_COLOR`` / ``TTY_COMPATIBLE``, which CI sets for colours in a log: that log wants lines)."""
    forced = getattr(console, "_force_terminal", None)
    if forced is not None:
        return bool(forced)
    try:
        return bool(console.file.isatty()) and not console.is_dumb_terminal
    except (AttributeError, ValueError, OSError):  # (no isatty, or a closed file)
        return False


class StageDisplay:
    """A :class:`~bnncompress.progress.Progress` callback showing a pack's stages on ``console``
    once ``after`` seconds have passed (default :data:`SHOW_AFTER` for a terminal, which gets a
    bar, :data:`LOG_AFTER` otherwise, which gets a line per stage).

    Example:
        >>> import io
        >>> console = Console(file=io.StringIO(), force_terminal=False)
        >>> with StageDisplay(console, after=0.0, first_stage="reading posterior") as show:
        ...     show("reading posterior", 1, 1); show("fitting", 0, 1); show("fitting", 1, 1)
        >>> [line.split(" (")[0] for line in console.file.getvalue().splitlines()]
        ['pack: reading posterior', 'pack: fitting']
    """

    def __init__(
        self, console: Console, after: float | None = None, first_stage: str = "packing", command: str = "pack"
    ):
        self.console, self.terminal, self.command = console, redraws(console), command
        self.after = (SHOW_AFTER if self.terminal else LOG_AFTER) if after is None else after
        self.stage, self.started = first_stage, time.perf_counter()
        self.active, self.closed, self.lock = False, False, threading.Lock()
        self.bar = None
        if self.terminal:
            self.bar = progress_bar(
                console,
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
            )
            self.task = self.bar.add_task(first_stage, total=None)
        self.timer = threading.Timer(self.after, self._activate)
        self.timer.daemon = True

    def __enter__(self) -> StageDisplay:
        if self.after <= 0:
            self._activate()
        else:
            self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()  # (a timer already firing is not stopped: `closed` keeps it from starting the bar)
        with self.lock:
            self.closed = True
            if self.active and self.bar is not None:
                with contextlib.suppress(OSError):
                    self.bar.stop()
            self.active = False

    def _activate(self) -> None:
        with self.lock:
            if self.active or self.closed:
                return
            self.active = True
            try:  # a display that cannot be shown (stderr full or gone) must not end the work
                if self.bar is not None:
                    self.bar.start()
                else:
                    self._line()
            except OSError:
                self.bar, self.closed = None, True

    def _line(self) -> None:
        self.console.print(
            f"{self.command}: {self.stage} ({time.perf_counter() - self.started:.1f} s)", markup=False, highlight=False
        )

    def __call__(self, stage: str, done: int, total: int, /) -> None:
        with self.lock:
            new = stage != self.stage
            self.stage = stage
            if self.closed:
                return
            try:
                if self.bar is not None:
                    self.bar.update(self.task, description=stage, completed=done, total=total)
                elif new and self.active:
                    self._line()
            except OSError:
                self.bar, self.closed = None, True


@contextlib.contextmanager
def stage_progress(quiet: bool, console: Console, first_stage: str, command: str = "pack") -> Iterator[Progress]:
    """A ``progress(stage, done, total)`` callback for a command's stages (pack, sweep): a
    :class:`StageDisplay` on ``console`` (stderr) starting at ``first_stage``, or nothing when ``quiet``."""
    if quiet:
        yield no_progress
        return
    with StageDisplay(console, first_stage=first_stage, command=command) as display:
        yield display
