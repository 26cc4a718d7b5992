"""Entropy-constrained scalar assignment as a numba kernel for the CPU, parallel over weights.

For each weight x with distortion weight w, pick the candidate value v_k (sorted ascending)
minimising ``w (v_k - x)² + lam * cost_k``. The search walks outwards from x's position among
the values and stops on each side once the distortion alone can no longer win (the smallest
cost is a lower bound on every candidate's rate term).
"""

import numpy as np

from .._ans import (
    numba,  # (numba imported after its environment is checked)
    serial_twin,
)


@numba.njit(parallel=True, cache=True, nogil=True)
def assign_ecsq(loc, weight, values, costs, lam, out):  # pragma: no cover - compiled
    n = values.shape[0]
    min_cost = np.inf
    for k in range(n):
        min_cost = min(min_cost, costs[k])
    floor = lam * min_cost
    for i in numba.prange(loc.shape[0]):
        x = np.float64(loc[i])
        w = np.float64(weight[i])
        lo = 0
        hi = n
        while lo < hi:  # p = number of values <= x
            mid = (lo + hi) >> 1
            if values[mid] <= loc[i]:
                lo = mid + 1
            else:
                hi = mid
        p = lo
        best = np.inf
        best_k = 0
        for step in (-1, 1):  # walk left from p - 1, then right from p
            k = p - 1 if step < 0 else p
            while 0 <= k < n:
                d = np.float64(values[k]) - x
                dist = w * d * d
                if dist + floor >= best:
                    break
                c = dist + lam * costs[k]
                if c < best:
                    best = c
                    best_k = k
                k += step
        out[i] = best_k


@numba.njit(cache=True, nogil=True)
def cell_stats(indices, weight, loc, n_cells):  # pragma: no cover - compiled
    """Per cell: how many weights, the sum of their weights and of weight * loc (one pass)."""
    counts = np.zeros(n_cells, np.int64)
    total = np.zeros(n_cells, np.float64)
    moment = np.zeros(n_cells, np.float64)
    for i in range(indices.shape[0]):
        k = indices[i]
        w = np.float64(weight[i])
        counts[k] += 1
        total[k] += w
        moment[k] += w * np.float64(loc[i])
    return counts, total, moment


assign_ecsq_serial = serial_twin(assign_ecsq, "assign_ecsq_serial")
