"""numba kernels of the pipeline: one pass that counts symbols and checks what quantization
lost (hashing rows, to count distinct ones), and one that checks the values read from a file
(kept apart so that importing bnncompress needs no numba)."""

import numpy as np

from ._ans import (
    numba,  # (numba imported after its environment is checked)
    writable_cache,  # noqa: F401 (numba's cache: set before the kernels)
)


@numba.njit(cache=True, nogil=True)
def count_invalid(loc, scale):  # pragma: no cover - compiled
    """How many means are NaN/inf, and how many scales are NaN/inf or not > 0 (one pass)."""
    bad_loc = 0
    bad_scale = 0
    for i in range(loc.shape[0]):
        if not np.isfinite(loc[i]):
            bad_loc += 1
        s = scale[i]
        if not (np.isfinite(s) and s > 0):
            bad_scale += 1
    return bad_loc, bad_scale


@numba.njit(cache=True, nogil=True)
def count_symbols(indices, counts):  # pragma: no cover - compiled
    """counts[i mod M, indices[i]] += 1 for (M, K) counts (whole rows of symbols)."""
    models = counts.shape[0]
    m = 0
    for i in range(indices.shape[0]):
        counts[m, indices[i]] += 1
        m = m + 1 if m + 1 < models else 0


_START = np.uint64(0xCBF29CE484222325)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_FINAL = np.uint64(0xFF51AFD7ED558CCD)
_SHIFT = np.uint64(32)


@numba.njit(cache=True, nogil=True)
def check_values(  # pragma: no cover - compiled
    values, loc, scale, row_size, rows_matter, certain_fraction, far_sds, stats, value_bits, loc_bits, hashes
):
    """Accumulate in ``stats``, over whole rows of quantized ``values``: [min value, max value, min loc,
    max loc, rows that became constant while their means spread wider than their mean sd, certain weights (scale <
    certain_fraction x the block's RMS) not kept within their scale, their largest error, weights
    more than ``far_sds`` posterior standard deviations from their means, the largest such
    distance in standard deviations]. If
    ``hashes`` (2 x rows) is not empty, write a 64-bit hash of each row's values and of its means
    into it, from their float32 bits (``value_bits``, ``loc_bits``): equal rows, equal hashes."""
    n = values.shape[0]
    hashed = hashes.shape[1] > 0
    squares = 0.0
    for i in range(n):
        x = np.float64(loc[i])
        squares += x * x
    certain_below = certain_fraction * np.sqrt(squares / max(n, 1))
    for r in range(0, n, row_size):
        vlo = np.inf
        vhi = -np.inf
        llo = np.inf
        lhi = -np.inf
        hv = _START
        hl = _START
        ssum = 0.0
        for i in range(r, min(r + row_size, n)):
            if hashed:
                hv = (hv ^ np.uint64(value_bits[i])) * _MULTIPLIER
                hv ^= hv >> _SHIFT
                hl = (hl ^ np.uint64(loc_bits[i])) * _MULTIPLIER
                hl ^= hl >> _SHIFT
            v = np.float64(values[i])
            x = np.float64(loc[i])
            vlo = min(vlo, v)
            vhi = max(vhi, v)
            llo = min(llo, x)
            lhi = max(lhi, x)
            s = np.float64(scale[i])
            ssum += s
            err = abs(v - x)
            if err > far_sds * s:
                stats[7] += 1
                stats[8] = max(stats[8], err / s)
            if s < certain_below:
                if err > s:
                    stats[5] += 1
                    stats[6] = max(stats[6], err)
        stats[0] = min(stats[0], vlo)
        stats[1] = max(stats[1], vhi)
        stats[2] = min(stats[2], llo)
        stats[3] = max(stats[3], lhi)
        if rows_matter and vlo == vhi and lhi - llo > ssum / (min(r + row_size, n) - r):  # (means apart by
            stats[4] += 1  # more than their sds: a direction was lost; a row of means within their sds had none)
        if hashed:
            hashes[0, r // row_size] = (hv ^ (hv >> _SHIFT)) * _FINAL
            hashes[1, r // row_size] = (hl ^ (hl >> _SHIFT)) * _FINAL
