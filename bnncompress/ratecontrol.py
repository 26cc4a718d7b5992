"""Rate control: choose lambda so that the payload lands on a target number of bits per weight.

The payload counts everything needed to rebuild the values: the entropy-coded words, the
jump tables, the entropy model tables, the grids and a kind's side arrays, estimated with the
one formula the archive reports (:func:`bnncompress.records.payload_bytes`). One lambda is
shared by all tensors of an archive (the VBQ objective is a sum over weights), and the target
is the total over all of them.

Large posteriors are searched on an evenly spaced subsample of weights first; the full
posterior is then quantized at that lambda and the search continues on it only if the
subsample's estimate missed. The subsample is 2^17 weights, or 1/64 of a larger posterior up to
2^21: per-column refinements on a few hundred rows fit their code lengths to those same rows and
come out coarser than on all rows, so a small subsample's rate runs low (10% on a 20,000 x 100
skip-gram at 2 bits; the whole posterior's quantizer applied to the subsample misses by only 2%),
and on a posterior streamed from disk every further full check re-reads the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from .coding import cheapest_class_merge, information_bits
from .errors import OptionError, RateControlError
from .geometry import block_rows_for, num_blocks
from .records import payload_bytes, raw_payload_bytes

#: --bits lands within this relative tolerance of the target (payload bits per weight).
BITS_TOLERANCE = 0.02
_AIM = 0.01  # search until this close, leaving room for the real coder's rounding
#: lambda's range (the rate a lambda gives scales with the posterior's (mean spread / scale)²: a collapsed
#: posterior needed 1e-16 for 8 bits, which the range of 1e-8 to 1e12 called unreachable).
LAM_RANGE = (1e-24, 1e24)
_SAMPLE_WEIGHTS = 1 << 17  # the subsample's size: at least this, 1/64 of the posterior, at most _SAMPLE_MAX
_SAMPLE_MAX = 1 << 21
_GRID_BYTES_PER_VALUE = 4  # one float32 grid value
#: A coded block is whole uint32 words: its information content and ANS's final state, this many bits on
#: average (40 bits a block with the rounding to words, as measured; a block of two symbols is one word).
_CODER_STATE_BITS = 24


class RateModel(Protocol):
    """One tensor as rate control sees it (:class:`bnncompress.tensorjob.TensorJob`)."""

    shape: tuple[int, ...]
    num_weights: int
    values_per_symbol: int
    side_bits: int  # a transform's arrays
    class_valued: bool  # classed counts: each class's values stored too

    def histogram(self, lam: float, on_sample: bool = False) -> tuple[np.ndarray, int]:
        """Counts of every grid index at ``lam`` (of all weights, or of the subsample; (models, K) for
        per-column models) and how many were counted."""

    def num_symbols(self, lam: float) -> int:
        """Symbols of the whole tensor at ``lam`` (one per weight, or per sub-vector)."""

    def levelled_at(self, lam: float, on_sample: bool = False) -> bool:
        """A levelled record at ``lam``: one model, a level byte and a float16 value per used symbol."""


def estimate_payload_bits(tensors: Sequence[RateModel], lam: float, on_sample: bool = False) -> float:
    """Estimated payload bits per weight at ``lam``, from all weights or from the subsample
    (whose information content is scaled up to the full size)."""
    bits = 0.0
    weights = 0
    levelled = [t.levelled_at(lam, on_sample) for t in tensors]
    histograms = [t.histogram(lam, on_sample) for t in tensors]
    # one counts dataset for all, as wide as the largest count stored (classed and levelled records store levels)
    largest = [
        counts.max(initial=0) * t.num_symbols(lam) / max(counted, 1)
        for t, lv, (counts, counted) in zip(tensors, levelled, histograms)
        if not lv and counts.ndim < 3
    ]
    count_bytes = np.min_scalar_type(round(max(largest, default=1))).itemsize
    for t, lv, (counts, counted) in zip(tensors, levelled, histograms):
        blocks = num_blocks(t.shape, block_rows_for(t.shape))
        used = int(np.count_nonzero(counts))
        if counts.ndim == 3:  # classed: a level byte per (class, kept symbol), a width per column, a class per block
            counts = cheapest_class_merge(counts, t.num_symbols(lam) / max(counted, 1))  # as the coder will
            kept = (counts > 0).any(axis=0)
            used = int(kept.sum())
            entries, entry_bytes = len(counts) * used + 2 * counts.shape[1] + blocks, 1
            if t.class_valued and len(counts) > 1:  # an int8 correction per (class, used symbol), a unit per column
                entries += int(np.count_nonzero(counts)) + 4 * counts.shape[1]
            coded = bool(np.any(kept.sum(axis=1) > 1))
        else:
            # one model: a count per used symbol; per-column models: tables as wide as the widest column
            entries = used if counts.ndim == 1 else len(counts) * int((counts > 0).sum(axis=1).max(initial=0))
            entry_bytes = count_bytes
            coded = used > 1 if counts.ndim == 1 else bool(np.any((counts > 0).sum(axis=1) > 1))
        info = information_bits(counts) * (t.num_symbols(lam) / max(counted, 1))
        table = 8 * payload_bytes(
            words=4 * blocks * math.ceil((info / blocks + _CODER_STATE_BITS) / 32) if coded else 0,
            blocks=blocks,
            counts=entry_bytes * entries,
            grid=4 * -(-used // 2) if lv else _GRID_BYTES_PER_VALUE * t.values_per_symbol * used,  # float16 pairs
            side=t.side_bits // 8,
        )
        coded_bits = table
        # a tensor is never stored larger than its raw float32 values
        bits += min(coded_bits, 8 * raw_payload_bytes(t.num_weights, blocks))
        weights += t.num_weights
    return bits / weights


def sample_positions(sizes: Sequence[int]) -> list[np.ndarray] | None:
    """The flat positions of the rate-control subsample in each tensor, or None to search on all weights."""
    total = sum(sizes)
    if total <= 4 * _SAMPLE_WEIGHTS:
        return None
    weights = min(max(_SAMPLE_WEIGHTS, total // 64), _SAMPLE_MAX)
    return [np.linspace(0, n - 1, max(1, n * weights // total)).astype(np.int64) for n in sizes]


def whole_rows(positions: np.ndarray, row_size: int) -> np.ndarray:
    """Flat positions of whole rows, about as many values as ``positions``, evenly spread."""
    rows = np.unique(positions // row_size)
    keep = rows[np.linspace(0, len(rows) - 1, max(1, len(positions) // row_size)).astype(np.int64)]
    return (np.unique(keep)[:, None] * row_size + np.arange(row_size)[None, :]).reshape(-1)


def choose_lambda(
    tensors: Sequence[RateModel],
    bits: float | None,
    lam: float | None,
    default_lam: float,
    has_sample: bool,
    report: Callable[[str, int, int], None],
) -> float:
    """The lambda a pack uses: searched for ``bits``, else ``lam``, else ``default_lam``."""
    if bits is not None:
        report("searching lambda", 0, 1)
        lam = find_lambda(tensors, bits, has_sample)
        report("searching lambda", 1, 1)
    elif lam is None:
        lam = default_lam
    check_lambda(lam)
    return lam


def check_lambda(lam: float) -> None:
    """lambda must be a finite number >= 0."""
    if not (isinstance(lam, (int, float)) and 0 <= lam < math.inf):
        raise OptionError(f"lambda must be a finite number >= 0, got {lam}")


def check_bits(bits: float) -> None:
    """A target rate must be a positive, finite number of bits per weight."""
    if not (isinstance(bits, (int, float)) and 0 < bits < math.inf):
        raise RateControlError(f"the target rate must be a positive number of bits per weight, got {bits}")


class TargetOutOfReach(RateControlError):
    """A target rate beyond what the method reaches on the posterior; ``lam``: the end of lambda's range where
    the search stopped (the nearest it came)."""

    def __init__(self, message: str, lam: float):
        super().__init__(message)
        self.lam = lam


def find_lambda(
    tensors: Sequence[RateModel], target_bits: float, has_sample: bool = False, *, start: float = 1.0, aim: float = _AIM
) -> float:
    """The lambda whose payload is closest to ``target_bits`` per weight (within ``aim``, 1%, where
    the posterior allows), searched from ``start``. Raises :class:`TargetOutOfReach` for unreachable targets.

    ``has_sample``: the tensors have a rate-control subsample to search on first.
    """
    check_bits(target_bits)
    estimates: dict[tuple[float, bool], float] = {}  # the search comes back to points it has seen

    def excess(u: float, on_samples: bool) -> float:
        if (u, on_samples) not in estimates:
            estimates[(u, on_samples)] = estimate_payload_bits(tensors, math.exp(u), on_samples)
        return estimates[(u, on_samples)] - target_bits

    lo, hi = math.log(LAM_RANGE[0]), math.log(LAM_RANGE[1])
    u0 = min(max(math.log(start), lo), hi)
    aim = aim * target_bits
    on_samples = has_sample
    while True:  # bracket the root from lambda = start by secant steps (most targets take 1-2)
        found = _bracket(lambda u, s=on_samples: excess(u, s), u0, excess(u0, on_samples), _SLOPE, lo, hi)
        if len(found) == 4:
            break
        if on_samples:  # never call a target unreachable from a subsample: walk again on everything
            on_samples = False
            continue
        v, g_v, moved = found
        measured = [bits for (_, on), bits in estimates.items() if not on]  # (not g_v + target_bits: 1e20 gives 0)
        edge = f"; the search stopped at lambda {math.exp(v):g}, the end of its range: «lam» beyond it may go further"
        edge = edge if moved else ""  # (a rate that no longer changed there: no lambda goes further)
        if g_v < -BITS_TOLERANCE * target_bits:
            raise TargetOutOfReach(
                f"a target of {target_bits:g} bits/weight is more than this method reaches on this posterior "
                f"(about {max(measured):.3g} bits/weight at most); ask for fewer bits{edge}",
                math.exp(v),
            )
        if g_v > BITS_TOLERANCE * target_bits:
            raise TargetOutOfReach(
                f"a target of {target_bits:g} bits/weight is below the smallest payload this posterior packs to "
                f"(about {min(measured):.3g} bits/weight); ask for more bits{edge}",
                math.exp(v),
            )
        return math.exp(v)  # the extreme itself is within tolerance
    a, b, g_a, g_b = found
    if not on_samples:
        return math.exp(_solve(lambda u: excess(u, False), a, b, g_a, g_b, aim / 2))  # cheap: room for the coder

    guess = _solve(lambda u: excess(u, True), a, b, g_a, g_b, aim / 4)
    g = excess(guess, False)
    if abs(g) <= aim:
        return math.exp(guess)
    # The subsample's curve through the full posterior's point at the guess, re-solved on the subsample
    # (cheap): the second point on the full posterior. Where the full posterior's rate is (1 + e) times
    # the subsample's, its slope is about (1 + 2e) times (the gap grows in proportion to the rate: P1
    # 5% at 1 bit, 11% at 2), so the curve is stretched by that about the guess.
    below = excess(guess, True)
    e = (g - below) / max(target_bits + below, 1e-12)
    offset = g / min(max(1 + 2 * e, 0.5), 2.0) - below

    def shifted(u: float) -> float:
        return excess(u, True) + offset

    slope = (g_b - g_a) / (b - a) if b > a and g_b < g_a else _SLOPE  # the subsample's, about the guess
    found = _bracket(shifted, guess, shifted(guess), slope, lo, hi)
    nxt = _solve(shifted, *found, aim / 4) if len(found) == 4 else guess + (0.1 if g > 0 else -0.1)
    return math.exp(_full_root(lambda u: excess(u, False), guess, g, nxt, lo, hi, aim))


#: A typical slope of the payload in bits/weight per unit of ln(lambda) (trained skip-grams: -0.7 to -1.4),
#: for the first secant step of a search.
_SLOPE = -1.0
_STEPS = (0.05, 2.5)  # the smallest and largest step in ln(lambda) a bracket search takes
_PAST = 1.2  # each step aims this far past the secant's root, so that the next point brackets it


def _bracket(g, u: float, g_u: float, slope: float, lo: float, hi: float) -> tuple:
    """A bracket ``(a, b, g(a), g(b))`` of the root of a decreasing ``g``, from ``u`` by secant steps
    (the first with ``slope``; each a little past the root the line through the latest two points
    gives, from 0.05 to 2.5 in ln(lambda)), or ``(v, g(v), moved)`` at ``lo`` or ``hi`` with no sign change,
    ``moved`` whether the last step still changed the rate (else no lambda beyond goes further)."""
    if g_u == 0:
        return u, u, g_u, g_u
    flat = 0.0  # the last step's length if it left the rate unchanged: the next one is twice as long
    while True:
        step = -g_u / slope * _PAST if slope < 0 else math.copysign(_STEPS[1], g_u)
        step = math.copysign(min(max(abs(step), _STEPS[0]), _STEPS[1]), g_u)  # the rate falls as lambda grows
        step = math.copysign(2 * flat, g_u) if flat else step  # (to the range's ends in a few steps, not 20)
        v = min(max(u + step, lo), hi)
        g_v = g(v)
        if (g_v > 0) != (g_u > 0) or g_v == 0:
            return (u, v, g_u, g_v) if u < v else (v, u, g_v, g_u)
        moved = abs(g_v - g_u) > 1e-9 * max(abs(g_u), 1.0)
        if v in (lo, hi):
            return v, g_v, moved
        flat = 0.0 if moved else abs(v - u)
        if g_v != g_u:
            slope = (g_v - g_u) / (v - u)
        u, g_u = v, g_v


def _full_root(excess_full, u: float, g_u: float, v: float, lo: float, hi: float, aim: float) -> float:
    """The root on the full posterior from two first points ``u`` (checked: ``g_u``) and ``v``: secant
    steps towards the root (a sixteenth to twice the last distance) until it is bracketed, then
    :func:`_solve` within the bracket. Every check is a full pass, so each point is used."""
    while True:
        if v == u:  # no second point given: step towards the root
            v = u + (0.1 if g_u > 0 else -0.1)
        v = min(max(v, lo), hi)
        g_v = excess_full(v)
        if abs(g_v) <= aim:
            return v
        if (g_v > 0) != (g_u > 0):
            a, b, g_a, g_b = (u, v, g_u, g_v) if u < v else (v, u, g_v, g_u)
            return _solve(excess_full, a, b, g_a, g_b, aim)
        if v in (lo, hi):
            return v if abs(g_v) < abs(g_u) else u
        toward = 1.0 if g_v > 0 else -1.0  # the rate falls as lambda grows
        span = abs(v - u)
        step = -g_v * (v - u) / (g_v - g_u) if g_v != g_u else 0.0  # secant through the two latest points
        step = min(max(step * toward, span / 16), span * 2) if step * toward > 0 else span * 2
        step *= 1.05 * toward  # a little past the secant's root: the next point should bracket it
        u, g_u, v = v, g_v, v + step


def _solve(g, a: float, b: float, ga: float, gb: float, tol: float, max_iter: int = 60) -> float:
    """Root of a decreasing function g on [a, b] with g(a) >= 0 >= g(b) (Illinois regula falsi, with
    a bisection whenever two steps have halved neither the bracket nor the best miss: a step function
    converges slowly; a smooth curve approached from one side keeps a wide bracket but halves its miss)."""
    best_u, best_g = (a, ga) if abs(ga) < abs(gb) else (b, gb)
    side = 0
    widths = [math.inf, math.inf]  # the bracket's width before each of the last two steps
    misses = [math.inf, math.inf]  # and the smallest |g| found
    for _ in range(max_iter):
        if abs(best_g) <= tol or b - a < 1e-4:  # a jump in the rate (a value dropped): lambda to 0.01% is enough
            break
        slow = b - a > widths[0] / 2 and abs(best_g) > misses[0] / 2
        u = (a + b) / 2 if slow or ga == gb else b - gb * (b - a) / (gb - ga)
        if not a < u < b:
            u = (a + b) / 2
        widths, misses = [widths[1], b - a], [misses[1], abs(best_g)]
        gu = g(u)
        if abs(gu) < abs(best_g):
            best_u, best_g = u, gu
        if gu > 0:
            a, ga = u, gu
            if side == -1:
                gb /= 2
            side = -1
        else:
            b, gb = u, gu
            if side == 1:
                ga /= 2
            side = 1
    return best_u
