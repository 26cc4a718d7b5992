"""The one progress callback of long operations: ``progress(stage, done, total)``.

:func:`bnncompress.pack` and :func:`bnncompress.sweep` call it (and the command line's bars
are one), so one function can follow both. Training reports something else, a
:class:`~bnncompress.models.TrainProgress` per step (loss, speed, ETA), to its own callback.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called as ``progress(stage, done, total)``: ``done`` of ``total`` steps of ``stage`` (a
    short label such as ``"writing archive"`` or ``"uniform @ 2 bits"``) are finished.

    Example:
        >>> def show(stage: str, done: int, total: int) -> None:
        ...     print(f"{stage}: {done}/{total}")
        >>> report: Progress = show
        >>> report("writing archive", 1, 1)
        writing archive: 1/1
    """

    def __call__(self, stage: str, done: int, total: int, /) -> None: ...


def no_progress(stage: str, done: int, total: int, /) -> None:
    """The :class:`Progress` that reports nothing (what ``progress=None`` means)."""
