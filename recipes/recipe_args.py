"""Command-line pieces the recipes share: list and number types argparse checks (a bad value is one
usage line, before any training), results files checked before the work and written whole
(:func:`check_results`, :func:`write_result`), and :func:`run`, which says an error in one line.

    from recipe_args import methods, positive_int, rates, run   # (recipes/ is the script's directory)
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from bnncompress import BnnCompressError
from bnncompress.files import atomic_output, check_output_path
from bnncompress.quantizers import METHODS


def rates(text: str) -> list[float]:
    """``"1,1.5,2"`` -> ``[1.0, 1.5, 2.0]``: payload bits per weight, each above 0 and at most 32."""
    try:
        values = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or not all(0 < b <= 32 and math.isfinite(b) for b in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give rates above 0 and at most 32 bits/weight")
    return values


def methods(text: str) -> list[str]:
    """``"vbq,uniform"`` -> ``["vbq", "uniform"]``, each one of bnncompress's methods."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        name = unknown[0] if unknown else text
        raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return names


def method(text: str) -> str:
    """One of bnncompress's methods."""
    names = methods(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one method")
    return names[0]


def _integer(text: str, low: int, high: float, what: str) -> int:
    """``text`` as an integer in ``low .. high``; argparse's error (one usage line) if it is not."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is {what}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    return _integer(text, 1, math.inf, "less than 1")


def seed(text: str) -> int:
    """A random seed: an integer in 0 .. 2**32 - 1 (what numpy and Pyro take)."""
    return _integer(text, 0, 2**32 - 1, "not a seed in 0 .. 2**32 - 1")


def _number(text: str, low: float, high: float, low_open: bool, what: str) -> float:
    """``text`` as a float in ``low .. high`` (``low`` itself excluded if ``low_open``); argparse's error (one
    usage line) saying it is not ``what`` if it is not."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate, a scale)."""
    return _number(text, 0, math.inf, True, "a finite number above 0")


def fraction(text: str) -> float:
    """A number from 0 to 1 (a subsampling threshold)."""
    return _number(text, 0, 1, False, "a number from 0 to 1")


def positive_fraction(text: str) -> float:
    """A number above 0 and at most 1 (a share of a learning rate)."""
    return _number(text, 0, 1, True, "a number above 0 and at most 1")


def directory(text: str) -> Path:
    """A folder for results, made later if missing, but not an existing file (its mkdir said "File
    exists", read as the results existing, and --force did not help)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory")
    return path


def check_results(paths: Iterable[Path], force: bool) -> None:
    """Before any work: each results file can be written and, without ``--force``, does not exist yet
    (a rerun replaced the user's own notes in a results folder, silently)."""
    for path in paths:
        check_output_path(path, force=force)


def write_result(path: Path, text: str) -> None:
    """``text`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    with atomic_output(path, force=True) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def run(main: Callable[[], None]) -> None:
    """``main()``; a bnncompress error (a missing file, a target no method reaches), a file the system
    refuses, or a failed tool is one line, exit 2."""
    try:
        main()
    except BnnCompressError as exc:
        print(f"error: {exc.render({'force=True': '--force'}, prefix='--')}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({exc.filename or 'a file'})", file=sys.stderr)
        sys.exit(2)
    except subprocess.CalledProcessError as exc:
        said = exc.stderr or ""  # bytes, or str when the tool was run with text=True
        said = (said.decode(errors="replace") if isinstance(said, bytes) else said).strip().splitlines()
        print(
            f"error: {' '.join(map(str, exc.cmd))} failed ({said[-1] if said else f'exit {exc.returncode}'})",
            file=sys.stderr,
        )
        sys.exit(2)
