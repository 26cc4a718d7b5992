"""numba kernels of the pipeline: one pass that counts symbols and checks what quantization
lost, and one that checks the values read from a file (kept apart so that importing
bnncompress needs no numba)."""

import numba
import numpy as np


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


@numba.njit(cache=True, nogil=True)
def check_values(values, loc, scale, row_size, rows_matter, certain_fraction, stats):  # pragma: no cover
    """Accumulate in ``stats``, over whole rows of quantized ``values``: [min value, max value, min loc,
    max loc, rows that became constant while their means were not, certain weights (scale <
    certain_fraction x the block's RMS) not kept within their scale, their largest error]."""
    n = values.shape[0]
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
        for i in range(r, min(r + row_size, n)):
            v = np.float64(values[i])
            x = np.float64(loc[i])
            vlo = min(vlo, v)
            vhi = max(vhi, v)
            llo = min(llo, x)
            lhi = max(lhi, x)
            s = np.float64(scale[i])
            if s < certain_below:
                err = abs(v - x)
                if err > s:
                    stats[5] += 1
                    stats[6] = max(stats[6], err)
        stats[0] = min(stats[0], vlo)
        stats[1] = max(stats[1], vhi)
        stats[2] = min(stats[2], llo)
        stats[3] = max(stats[3], lhi)
        if rows_matter and vlo == vhi and llo != lhi:
            stats[4] += 1
