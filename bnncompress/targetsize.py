"""Packing to a target archive size: the file at most ``size`` bytes, and within 2% below it where it can be.

Rate control (:mod:`bnncompress.ratecontrol`) aims lambda at a payload. An archive holds more than its
payload: the HDF5 container, the manifest, the vocabulary, and whatever the real coder rounds beyond
rate control's estimate; little of it depends on lambda. A pack to a size therefore measures an
archive of no tensors (container, manifest and vocabulary), codes at the payload the size leaves
besides it, builds the archive it would write and measures it, and if that is outside the window
codes again with what it measured besides the estimated payload taken off. What is kept is the
archive inside the window ``[size * (1 - SIZE_TOLERANCE), size]``, else the largest one at most
``size`` (with a note).

Example:
    >>> parse_size("1.5M"), parse_size("200KB"), parse_size("64 KiB"), parse_size(4096)
    (1572864, 200000, 65536, 4096)
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from .errors import ArgumentTypeError, OptionError, RateControlError
from .pipeline import code_jobs, jobs_have_sample
from .progress import Progress
from .ratecontrol import BITS_TOLERANCE, LAM_RANGE, TargetOutOfReach, estimate_payload_bits, find_lambda
from .records import TensorRecord
from .tensorjob import TensorJob

#: A pack to a size lands within this fraction below it (never above), where the method's rate allows.
SIZE_TOLERANCE = BITS_TOLERANCE
#: Archives coded and measured at most (one more to see whether any archive is small enough): usually one or two.
MAX_PASSES = 6
#: Units of a size: powers of 1024 as in GNU coreutils (K, KiB), powers of 1000 with a B (KB); case is ignored.
SIZE_UNITS = {
    "": 1,
    "b": 1,
    **{p: 1024**i for i, p in enumerate("kmgt", 1)},
    **{p + "ib": 1024**i for i, p in enumerate("kmgt", 1)},
    **{p + "b": 1000**i for i, p in enumerate("kmgt", 1)},
}
#: Where in the window a pass aims (0: at ``size``, 1: at its bottom): above the middle, leaving room for what the
#: archive holds besides the payload and was not measured yet (each tensor's entries, about 1 KB).
_AIM_BELOW = 0.6
_MAX_SIZE = 2**63  # (HDF5's offsets are 64-bit)
_SIZE = re.compile(r"\s*(\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})(?:[eE]([+-]?\d{1,3}))?\s*([a-zA-Z]*)\s*", re.ASCII)


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # (a number too large for a float)
        return False


def parse_size(size: int | str) -> int:
    """A target size in bytes: an int, or a number with a unit (K, M, G, T: powers of 1024, also written
    KiB, MiB...; KB, MB, GB, TB: powers of 1000; B or none: bytes), rounded down to whole bytes.

    Example:
        >>> parse_size("2.5 kb"), parse_size("1e3"), parse_size("2.01KB")
        (2500, 1000, 2010)
    """
    if isinstance(size, bool) or not isinstance(size, (numbers.Real, str)):
        raise ArgumentTypeError(f"«size» must be a number of bytes or a string such as '200K', not {size!r:.40}")
    if isinstance(size, str):
        match = _SIZE.fullmatch(size)
        unit = match and SIZE_UNITS.get(match.group(3).lower())
        if not unit:
            raise OptionError(
                f"cannot read the size {size!r:.40}; give bytes or a number (at most 30 digits) with K, M, G (powers "
                "of 1024) or KB, MB, GB (powers of 1000), e.g. 200K or 1.5MB"
            )
        # (exact: 2.01KB is 2,010 bytes, not float's 2,009.99)
        number = Fraction(match.group(1)) * unit * Fraction(10) ** int(match.group(2) or 0)
    elif isinstance(size, numbers.Rational):  # (ints, Fractions: exactly)
        number = Fraction(int(size.numerator), int(size.denominator))
    else:
        number = Fraction(float(size)) if _finite(size) else math.inf
    if not 1 <= number < _MAX_SIZE:
        raise OptionError(f"the target «size» must be from 1 byte to 2^63 - 1 bytes, got {size!r:.40}")
    return math.floor(number)


@dataclass(frozen=True)
class SizedPack:
    """The records a pack to a size keeps: their lambda, the archive's bytes and the notes on their values."""

    records: list[TensorRecord]
    lam: float
    file_bytes: int
    notes: list[str]


def code_to_size(
    jobs: list[TensorJob],
    size: int,
    measure: Callable[[list[TensorRecord]], int],
    report: Progress,
) -> SizedPack:
    """Code ``jobs`` at the lambda whose archive (``measure(records)``: its bytes; ``measure([])`` the
    archive's without tensors) is at most ``size`` bytes and within :data:`SIZE_TOLERANCE` below it.
    Raises :class:`RateControlError` for a size the method cannot reach on this posterior."""
    weights = sum(job.num_weights for job in jobs)
    has_sample = jobs_have_sample(jobs)
    empty = measure([])
    if size <= empty:
        raise RateControlError(
            f"a target size of {size:,} bytes is no more than an archive of no tensors takes ({empty:,} bytes: the "
            "HDF5 container, its manifest and any vocabulary); ask for a larger «size»"
        )
    extra = float(empty)  # bytes of the archive besides the estimated payload: at first, of no tensors
    search = _Measured(size)
    lam = 1.0
    for attempt in range(MAX_PASSES):
        stage = "searching lambda" if attempt == 0 else "searching lambda again for the size"
        report(stage, 0, 1)
        proposed = search.propose(
            _estimated(jobs, size * (1 - _AIM_BELOW * SIZE_TOLERANCE) - extra, weights, has_sample, lam)
        )
        report(stage, 1, 1)
        if proposed is None:  # (every lambda worth trying was coded)
            break
        lam = proposed
        got = search.add(lam, *code_jobs(jobs, lam, report, last=False), measure)
        if search.done or search.jumps or (got > size and lam == LAM_RANGE[1]):  # (the last: no archive is smaller)
            break
        extra = got - estimate_payload_bits(jobs, lam) * weights / 8
    if search.fits is None and LAM_RANGE[1] not in search.tried:  # (is there an archive small enough at all?)
        search.add(LAM_RANGE[1], *code_jobs(jobs, LAM_RANGE[1], report, last=False), measure)
    for job in jobs:
        job.fitted.keep_pass_data(0)  # (their passes are done)
    if search.fits is None:
        raise RateControlError(
            f"a target size of {size:,} bytes is below the smallest archive this posterior packs to (about "
            f"{min(search.tried.values()):,} bytes); ask for a larger «size»"
        )
    if not search.done and search.fits.lam == LAM_RANGE[0]:  # (the smallest lambda: the largest archive)
        raise RateControlError(
            f"a target size of {size:,} bytes is more than this method packs this posterior to (about "
            f"{max(search.tried.values()):,} bytes at most); ask for a smaller «size»"
        )
    return search.fits


def _estimated(jobs: list[TensorJob], payload: float, weights: int, has_sample: bool, start: float) -> float:
    """The lambda rate control finds for ``payload`` bytes (an end of lambda's range for one beyond it)."""
    if payload <= 0:  # (measured besides the payload: more than the size leaves)
        return LAM_RANGE[1]
    try:
        return find_lambda(jobs, 8 * payload / weights, has_sample, start=start, aim=SIZE_TOLERANCE / 4)
    except TargetOutOfReach as e:
        return e.lam


def _short(lam: float) -> float:
    """``lam`` to 4 significant digits, within lambda's range: a lambda the manifest stores in few digits (their
    number changed the archive's bytes: 1e24 and 9.999999999999981e23 are 7 bytes apart), whose repeats are seen.

    Example:
        >>> _short(20.43718), _short(9.999999999999981e23)
        (20.44, 1e+24)
    """
    return min(max(float(f"{lam:.4g}"), LAM_RANGE[0]), LAM_RANGE[1])


class _Measured:
    """The archives a pack to ``size`` coded: the largest at most the size (``fits``), every lambda's bytes, and
    the bracket of lambdas where the size must be: the largest measured over it (``over``) and the smallest
    measured within it (``under``); the lambdas it proposes lie between those two."""

    def __init__(self, size: int):
        self.size, self.fits, self.over, self.under = size, None, None, None
        self.tried: dict[float, int] = {}
        self.steps = 0  # proposals in a row not rate control's

    def add(self, lam: float, records: list[TensorRecord], notes: list[str], measure: Callable) -> int:
        got = self.tried[lam] = measure(records)
        if got <= self.size and (self.fits is None or got > self.fits.file_bytes):
            self.fits = SizedPack(records, float(lam), got, notes)
        if got > self.size and (self.over is None or lam > self.over):
            self.over = lam
        if got <= self.size and (self.under is None or lam < self.under):
            self.under = lam
        return got

    @property
    def done(self) -> bool:
        """An archive within the window."""
        return self.fits is not None and self.fits.file_bytes >= self.size * (1 - SIZE_TOLERANCE)

    @property
    def jumps(self) -> bool:
        """The lambdas of the smallest archive over the size and the largest within it are within 0.2% of each
        other: the rate jumps there, past the window."""
        return self.under is not None and self.over is not None and self.under <= self.over * 1.002

    def propose(self, estimate: float) -> float | None:
        """The next lambda to code: rate control's ``estimate`` if it is new and inside the bracket, not within
        0.5% of an end already measured; else a step from the end measured over the size of 1%, 4%, 16%, ...
        (a jump in the rate is often just past it; rate control crept towards it: 20.42, 20.43, ...; bisecting a
        bracket that reaches 1e24 kept kmeans 81% of its size where 95% was reachable), the bracket's geometric mean
        once that passes the other end, or steps of 4x, 16x ... down from the one end measured within the size.
        None: nothing new to try."""
        lam, low, high = _short(estimate), self.over, self.under
        if lam not in self.tried and (low is None or lam > low * 1.005) and (high is None or lam < high / 1.005):
            self.steps = 0
            return lam
        self.steps += 1
        if low is not None:
            lam = low * (1 + 0.01 * 4 ** (self.steps - 1))
            lam = math.sqrt(low * high) if high is not None and lam >= high / 1.005 else lam
        else:
            lam = high / 4**self.steps
        lam = _short(lam)
        return None if lam in self.tried else lam
