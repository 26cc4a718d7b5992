"""The VBQ search as a numba kernel for the CPU, parallel over weights.

Kept in its own module so that importing bnncompress (e.g. only to load archives) does
not import numba. The GPU path is :func:`bnncompress.quantizers.vbq.assign_torch`, which
computes the same indices.
"""

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def assign_cpu(loc, scale, grid, max_level, lam, out):  # pragma: no cover - compiled
    """Write into ``out`` the VBQ grid index of every weight (see :mod:`.vbq`)."""
    n_grid = grid.shape[0]
    half = 1 << max_level
    for i in numba.prange(loc.shape[0]):
        x = np.float64(loc[i])
        s = np.float64(scale[i])
        inv = 0.5 / (s * s)
        lo = 0
        hi = n_grid
        while lo < hi:  # p = number of grid values <= x
            mid = (lo + hi) >> 1
            if grid[mid] <= loc[i]:
                lo = mid + 1
            else:
                hi = mid
        p = lo
        d = np.float64(grid[half - 1]) - x
        best = d * d * inv
        best_m = half
        for r in range(1, max_level + 1):
            penalty = lam * r
            if penalty >= best:
                break
            step = 1 << (max_level - r)
            m_left = step * (2 * ((p - step) // (2 * step)) + 1)
            if m_left >= 1:
                d = np.float64(grid[m_left - 1]) - x
                cost = d * d * inv + penalty
                if cost < best:
                    best = cost
                    best_m = m_left
            m_right = m_left + 2 * step
            if m_right <= n_grid:
                d = np.float64(grid[m_right - 1]) - x
                cost = d * d * inv + penalty
                if cost < best:
                    best = cost
                    best_m = m_right
        out[i] = best_m - 1
