"""Command-line pieces the recipes share: list and number types argparse checks (a bad value is one
usage line, before any training), and :func:`run`, which says a bnncompress error in one line.

    from recipe_args import methods, positive_int, rates, run   # (recipes/ is the script's directory)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from bnncompress import BnnCompressError
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


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate, a scale)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number above 0")
    return value


def run(main: Callable[[], None]) -> None:
    """``main()``; a bnncompress error (a missing file, a target no method reaches) is one line, exit 2."""
    try:
        main()
    except BnnCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
