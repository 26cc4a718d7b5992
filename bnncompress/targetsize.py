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

from .errors import ArgumentTypeError, OptionError, RateControlError
from .pipeline import code_jobs, jobs_have_sample
from .progress import Progress
from .ratecontrol import BITS_TOLERANCE, TargetOutOfReach, estimate_payload_bits, find_lambda
from .records import TensorRecord
from .tensorjob import TensorJob

#: A pack to a size lands within this fraction below it (never above), where the method's rate allows.
SIZE_TOLERANCE = BITS_TOLERANCE
#: Packs measured at most: the first without the container, then with what the latest one measured.
MAX_PASSES = 4
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
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([a-zA-Z]*)\s*")


def parse_size(size: int | str) -> int:
    """A target size in bytes: an int, or a number with a unit (K, M, G, T: powers of 1024, also written
    KiB, MiB...; KB, MB, GB, TB: powers of 1000; B or none: bytes), rounded down to whole bytes.

    Example:
        >>> parse_size("2.5 kb"), parse_size("1e3")
        (2500, 1000)
    """
    if isinstance(size, bool) or not isinstance(size, (numbers.Real, str)):
        raise ArgumentTypeError(f"«size» must be a number of bytes or a string such as '200K', not {size!r:.40}")
    if isinstance(size, str):
        match = _SIZE.fullmatch(size)
        unit = match and SIZE_UNITS.get(match.group(3).lower())
        if not unit:
            raise OptionError(
                f"cannot read the size {size!r:.40}; give bytes or a number with K, M, G (powers of 1024) "
                "or KB, MB, GB (powers of 1000), e.g. 200K or 1.5MB"
            )
        number = float(match.group(1) + (f"e{match.group(2)}" if match.group(2) else "")) * unit
    else:
        number = float(size) if math.isfinite(size) else math.inf
    if not 1 <= number < 2**63:
        raise OptionError(f"the target «size» must be at least 1 byte and finite, got {size!r:.40}")
    return int(number)


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
    Raises :class:`RateControlError` for a size the method cannot reach on this posterior, or that no
    pass could stay within."""
    weights = sum(job.num_weights for job in jobs)
    has_sample = jobs_have_sample(jobs)
    extra = float(measure([]))  # bytes of the archive besides the estimated payload: at first, of no tensors
    lam, kept, smallest = 1.0, None, math.inf
    for attempt in range(MAX_PASSES):
        payload = size * (1 - _AIM_BELOW * SIZE_TOLERANCE) - extra  # (an unmeasured extra is more bytes)
        if payload <= 0:
            raise RateControlError(
                f"a target size of {size:,} bytes is less than this archive needs besides its payload "
                f"(about {extra:,.0f} bytes: the HDF5 container, the manifest and any vocabulary); ask for a "
                "larger «size»"
            )
        report("searching lambda" if attempt == 0 else "searching lambda again for the size", 0, 1)
        try:
            lam, beyond = find_lambda(jobs, 8 * payload / weights, has_sample, start=lam, aim=SIZE_TOLERANCE / 4), None
        except TargetOutOfReach as e:  # (the extra was measured without the tensors' entries: code there to see)
            lam, beyond = e.lam, e
        report("searching lambda" if attempt == 0 else "searching lambda again for the size", 1, 1)
        records, notes = code_jobs(jobs, lam, report, last=False)
        got = measure(records)
        if got <= size and (kept is None or got > kept.file_bytes):
            kept = SizedPack(records, float(lam), got, notes)
        if beyond is not None and beyond.above and got <= size * (1 - SIZE_TOLERANCE):
            raise RateControlError(
                f"a target size of {size:,} bytes is more than this method packs this posterior to ({got:,} bytes "
                "at most); ask for a smaller «size»"
            )
        if beyond is not None and not beyond.above and got > size:
            raise RateControlError(
                f"a target size of {size:,} bytes is below the smallest archive this posterior packs to ({got:,} "
                "bytes); ask for a larger «size»"
            )
        if size * (1 - SIZE_TOLERANCE) <= got <= size or (beyond is not None and got <= size):
            break  # (at an end of lambda's range: no lambda comes closer)
        smallest = min(smallest, got)
        extra = got - estimate_payload_bits(jobs, lam) * weights / 8
    for job in jobs:
        job.fitted.keep_pass_data(0)  # (their passes are done)
    if kept is None:
        raise RateControlError(
            f"no lambda the search tried gives an archive of at most {size:,} bytes (the smallest was "
            f"{smallest:,.0f}: this method's rate jumps near it on this posterior); ask for a larger «size»"
        )
    return kept
