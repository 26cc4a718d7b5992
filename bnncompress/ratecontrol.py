"""Rate control: choose lambda so that the payload lands on a target number of bits per weight.

The payload counts everything needed to rebuild the values: the entropy-coded words, the
entropy model tables and the grids. One lambda is shared by all tensors of an archive (the
VBQ objective is a sum over weights), and the target is the total over all of them.

Large posteriors are searched on an evenly spaced subsample of weights first; the full
posterior is then quantized at that lambda and the search continues on it only if the
subsample's estimate missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .coding import block_rows_for, information_bits, num_blocks
from .errors import OptionError, RateControlError
from .quantizers import FittedQuantizer

#: --bits lands within this relative tolerance of the target (payload bits per weight).
BITS_TOLERANCE = 0.02
_AIM = 0.01  # search until this close, leaving room for the real coder's rounding
_LAM_RANGE = (1e-8, 1e12)
_SAMPLE_WEIGHTS = 1 << 17
_GRID_BITS_PER_SYMBOL = 32  # one float32 grid value (+ one count, as wide as the largest tensor needs)
_CODER_BITS_PER_BLOCK = 40  # ANS's final state: 34-42 bits measured per coded block
_JUMP_BITS_PER_BLOCK = 64  # one uint64 word offset per block after the first


def estimate_payload_bits(
    fitted: Sequence[FittedQuantizer], lam: float, samples: Sequence[np.ndarray] | None = None
) -> float:
    """Estimated payload bits per weight at ``lam``, from all weights or from ``samples``
    (flat positions per tensor; their information content is scaled up to the full size)."""
    bits = 0.0
    weights = 0
    count_bits = 8 * np.min_scalar_type(max(f.num_weights for f in fitted)).itemsize
    for i, f in enumerate(fitted):
        counts, counted = _histogram(f, lam, None if samples is None else samples[i])
        used = int(np.count_nonzero(counts))
        blocks = num_blocks(f.shape, block_rows_for(f.shape))
        table = (
            (_GRID_BITS_PER_SYMBOL * f.values_per_symbol + count_bits) * used
            + _JUMP_BITS_PER_BLOCK * (blocks - 1)
            + (_CODER_BITS_PER_BLOCK * blocks if used > 1 else 0)
        )
        bits += information_bits(counts) * (f.num_symbols / max(counted, 1)) + table
        weights += f.num_weights
    return bits / weights


def _histogram(f: FittedQuantizer, lam: float, sample: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Counts of each grid index at ``lam`` (of all weights, or of ``sample``) and how many were
    counted; a fit that never holds all weights at once (streaming) counts them itself."""
    if hasattr(f, "histogram"):
        return f.histogram(lam, sample)
    indices = f.assign_all(lam) if sample is None else f.assign(lam, sample)
    return np.bincount(indices), len(indices)


def sample_positions(sizes: Sequence[int]) -> list[np.ndarray] | None:
    """The flat positions of the rate-control subsample in each tensor, or None to search on all weights."""
    total = sum(sizes)
    if total <= 4 * _SAMPLE_WEIGHTS:
        return None
    return [np.linspace(0, n - 1, max(1, n * _SAMPLE_WEIGHTS // total)).astype(np.int64) for n in sizes]


def choose_lambda(
    fitted: Sequence[FittedQuantizer],
    bits: float | None,
    lam: float | None,
    default_lam: float,
    report: Callable[[str, int, int], None],
) -> float:
    """The lambda a pack uses: searched for ``bits``, else ``lam``, else ``default_lam``."""
    if bits is not None:
        report("searching lambda", 0, 1)
        lam = find_lambda(fitted, bits)
        report("searching lambda", 1, 1)
    elif lam is None:
        lam = default_lam
    if not (lam >= 0):
        raise OptionError(f"lambda must be >= 0, got {lam}")
    return lam


def find_lambda(fitted: Sequence[FittedQuantizer], target_bits: float) -> float:
    """The lambda whose payload is closest to ``target_bits`` per weight (within 1% where
    the posterior allows). Raises :class:`RateControlError` for unreachable targets.

    Example:
        >>> import numpy as np
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.quantizers import VBQ
        >>> rng = np.random.default_rng(0)
        >>> t = TensorPosterior(rng.normal(size=20000).astype(np.float32), np.full(20000, 0.1, np.float32))
        >>> f = VBQ(device="cpu").fit(t)
        >>> round(estimate_payload_bits([f], find_lambda([f], 3.0)), 1)
        3.0
    """
    if not (target_bits > 0 and math.isfinite(target_bits)):
        raise RateControlError(f"--bits must be a positive number, got {target_bits}")
    samples = sample_positions([f.num_weights for f in fitted])

    def excess(u: float, on_samples: bool) -> float:
        return estimate_payload_bits(fitted, math.exp(u), samples if on_samples else None) - target_bits

    lo, hi = math.log(_LAM_RANGE[0]), math.log(_LAM_RANGE[1])
    on_samples = samples is not None
    # Bracket the root by walking out from lambda = 1 in steps of e^2.5 (most targets take 1-3 steps).
    u, g = 0.0, excess(0.0, on_samples)
    step = 2.5 if g > 0 else -2.5
    while True:
        v = min(max(u + step, lo), hi)
        g_v = excess(v, on_samples)
        if (g_v > 0) != (g > 0):
            break
        if v in (lo, hi):
            if on_samples:  # never call a target unreachable from a subsample: walk again on everything
                samples, on_samples = None, False
                u, g = 0.0, excess(0.0, False)
                step = 2.5 if g > 0 else -2.5
                continue
            if g_v < -BITS_TOLERANCE * target_bits:
                raise RateControlError(
                    f"--bits {target_bits:g} is more than this method reaches on this posterior "
                    f"(about {g_v + target_bits:.2f} bits/weight at most); ask for fewer bits"
                )
            if g_v > BITS_TOLERANCE * target_bits:
                raise RateControlError(
                    f"--bits {target_bits:g} is below the smallest payload this posterior packs to "
                    f"(about {g_v + target_bits:.4f} bits/weight); ask for more bits"
                )
            return math.exp(v)  # the extreme itself is within tolerance
        u, g = v, g_v
    a, b, g_a, g_b = (u, v, g, g_v) if u < v else (v, u, g_v, g)
    aim = _AIM * target_bits
    if samples is None:
        return math.exp(_solve(lambda u: excess(u, False), a, b, g_a, g_b, aim))

    guess = _solve(lambda u: excess(u, True), a, b, g_a, g_b, aim / 4)
    g = excess(guess, False)
    if abs(g) <= aim:
        return math.exp(guess)
    # The subsample missed: bracket the root on the full posterior, widening from the guess.
    step = 0.1 if g > 0 else -0.1
    u, g_u = guess, g
    while True:
        v = min(max(u + step, lo), hi)
        g_v = excess(v, False)
        if abs(g_v) <= aim:
            return math.exp(v)
        if (g_v > 0) != (g > 0) or v in (lo, hi):
            break
        u, g_u, step = v, g_v, step * 2
    a, b, g_a, g_b = (u, v, g_u, g_v) if u < v else (v, u, g_v, g_u)
    return math.exp(_solve(lambda w: excess(w, False), a, b, g_a, g_b, aim))


def _solve(g, a: float, b: float, ga: float, gb: float, tol: float, max_iter: int = 60) -> float:
    """Root of a decreasing function g on [a, b] with g(a) >= 0 >= g(b) (Illinois regula falsi,
    every third step a bisection to guard against slow convergence on a step function)."""
    best_u, best_g = (a, ga) if abs(ga) < abs(gb) else (b, gb)
    side = 0
    for i in range(max_iter):
        if abs(best_g) <= tol or b - a < 1e-9:
            break
        u = (a + b) / 2 if i % 3 == 2 or ga == gb else b - gb * (b - a) / (gb - ga)
        if not a < u < b:
            u = (a + b) / 2
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
