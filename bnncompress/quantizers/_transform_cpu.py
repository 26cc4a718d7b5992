"""numba kernels of the transform-coding method (:mod:`.transform`): block statistics, the
rotation, and entropy-constrained assignment with one set of values per column.

Every kernel is sequential in a fixed order, so a block gives the same bits wherever it is
processed (the pipeline's routes must write identical archives). Kept in its own module so
that importing bnncompress does not import numba.
"""

import numpy as np

from .._ans import (
    numba,  # (numba imported after its environment is checked)
    writable_cache,  # noqa: F401 (numba's cache: set before the kernels)
)

#: Rows :func:`gram` takes at a time: each product is loaded and stored once per 8 rows (2.4x faster).
GRAM_ROWS = 8


@numba.njit(cache=True, nogil=True)
def gram(loc, d, sums, products):  # pragma: no cover - compiled
    """sums[i] += column sums (row after row), products[i, j] += sum of x_i x_j (j >= i; float64, rows in
    order, GRAM_ROWS rows summed before they are added: each row widened to float64 once, the inner loop
    over j contiguous so that it vectorises)."""
    rows = loc.shape[0] // d
    x = np.empty((GRAM_ROWS, d), np.float64)
    r = 0
    while r < rows:
        n = min(GRAM_ROWS, rows - r)
        for k in range(n):
            base = (r + k) * d
            for i in range(d):
                v = np.float64(loc[base + i])
                x[k, i] = v
                sums[i] += v
        if n == GRAM_ROWS:
            for i in range(d):
                a0, a1, a2, a3 = x[0, i], x[1, i], x[2, i], x[3, i]
                a4, a5, a6, a7 = x[4, i], x[5, i], x[6, i], x[7, i]
                for j in range(i, d):
                    first = a0 * x[0, j] + a1 * x[1, j] + a2 * x[2, j] + a3 * x[3, j]
                    products[i, j] += first + (a4 * x[4, j] + a5 * x[5, j] + a6 * x[6, j] + a7 * x[7, j])
        else:  # the last rows, one at a time
            for k in range(n):
                for i in range(d):
                    a = x[k, i]
                    for j in range(i, d):
                        products[i, j] += a * x[k, j]
        r += n


#: Rows :func:`rotate_means` and :func:`rotated_weights` take at a time: each entry of the rotation is loaded
#: once per 4 rows (1.9x faster).
ROTATE_ROWS = 4


@numba.njit(cache=True, nogil=True)
def rotate_means(loc, mean, rotation, y, low, high):  # pragma: no cover - compiled
    """Per row y = (x - mean) @ R (float64; each sum over i in increasing order, the inner loop over j
    contiguous so that it vectorises; ROTATE_ROWS rows at a time, the same sums), and low[j], high[j] =
    the running minimum and maximum of column j of y."""
    d = mean.shape[0]
    rows = loc.shape[0] // d
    acc = np.empty((ROTATE_ROWS, d), np.float64)
    x = np.empty(ROTATE_ROWS, np.float64)
    r = 0
    while r < rows:
        n = min(ROTATE_ROWS, rows - r)
        acc[:, :] = 0.0
        for i in range(d):
            for k in range(n):
                x[k] = np.float64(loc[(r + k) * d + i]) - mean[i]
            if n == ROTATE_ROWS:
                x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
                for j in range(d):
                    rij = rotation[i, j]
                    acc[0, j] += x0 * rij
                    acc[1, j] += x1 * rij
                    acc[2, j] += x2 * rij
                    acc[3, j] += x3 * rij
            else:  # the last rows, one at a time
                for k in range(n):
                    for j in range(d):
                        acc[k, j] += x[k] * rotation[i, j]
        for k in range(n):
            base = (r + k) * d
            for j in range(d):
                v = acc[k, j]
                y[base + j] = v
                low[j] = min(low[j], v)
                high[j] = max(high[j], v)
        r += n


@numba.njit(cache=True, nogil=True)
def rotated_weights(scale, rotation, trust, sd, row_factor, w):  # pragma: no cover - compiled
    """Per row the rotated variance v_j = sum_i R_ij^2 scale_i^2 and the distortion weight
    w = 1 / (2 v^trust sd^(2 (1 - trust)) row_factor) (float64; sums as in :func:`rotate_means`)."""
    d = rotation.shape[0]
    rows = scale.shape[0] // d
    floor = 1e-300
    squared = rotation * rotation
    var = np.empty((ROTATE_ROWS, d), np.float64)
    s = np.empty(ROTATE_ROWS, np.float64)
    tempered = sd ** (2.0 * (1.0 - trust))
    whole = trust == 1.0  # v ** 1.0 is v: no power per weight
    r = 0
    while r < rows:
        n = min(ROTATE_ROWS, rows - r)
        var[:, :] = 0.0
        for i in range(d):
            for k in range(n):
                sk = np.float64(scale[(r + k) * d + i])
                s[k] = sk * sk
            if n == ROTATE_ROWS:
                s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
                for j in range(d):
                    qij = squared[i, j]
                    var[0, j] += qij * s0
                    var[1, j] += qij * s1
                    var[2, j] += qij * s2
                    var[3, j] += qij * s3
            else:  # the last rows, one at a time
                for k in range(n):
                    for j in range(d):
                        var[k, j] += squared[i, j] * s[k]
        for k in range(n):
            base = (r + k) * d
            for j in range(d):
                v = max(var[k, j], floor)
                eff = (v if whole else v**trust) * tempered * row_factor[r + k]
                w[base + j] = 0.5 / max(eff, floor)
        r += n


@numba.njit(cache=True, nogil=True)
def round_to_cells(y, step, first, cells, out):  # pragma: no cover - compiled
    """out[i] = the nearest cell of column j = i mod d: rint(y / step_j) - first_j, clipped to the column's
    cells (in float64 before the cast: a huge or NaN quotient never becomes an index out of range)."""
    d = step.shape[0]
    for r in range(y.shape[0] // d):
        for j in range(d):
            i = r * d + j
            k = np.rint(y[i] / step[j]) - first[j]
            top = cells[j] - 1
            out[i] = np.int64(k) if 0.0 <= k <= top else (top if k > top else 0)


@numba.njit(cache=True, nogil=True)
def cell_stats(indices, w, y, d, width, row_class, classes):  # pragma: no cover - compiled
    """Per (class, column, cell) how many weights (row r in class ``row_class[r]``); per (column,
    cell) the sum of their weights and of weight x y."""
    counts = np.zeros((classes * d, width), np.int64)
    total = np.zeros((d, width), np.float64)
    moment = np.zeros((d, width), np.float64)
    for r in range(indices.shape[0] // d):
        base = row_class[r] * d
        for j in range(d):
            i = r * d + j
            k = indices[i]
            counts[base + j, k] += 1
            total[j, k] += w[i]
            moment[j, k] += w[i] * y[i]
    return counts, total, moment


#: Columns of at most this many values are assigned by scanning every value for a whole block's rows at
#: once (the loop over rows vectorises; P1's word vectors at 0.6-3 bits: 8.9-12.8 ns a weight, against
#: 23-24 walking out from each coordinate, which visits a few values of any number: as fast at 165 values).
#: Only wider columns need a start table (:func:`~.column_grids.start_table`).
SCAN_VALUES = 96


@numba.njit(cache=True, nogil=True)
def assign_columns(
    y, w, values, costs, below, above, sizes, cells, lam, row_class, starts, start_low, start_scale, out
):  # pragma: no cover - compiled
    """For each weight (column j = i mod d, row r) the cell minimising ``w (value - y)² + lam * cost``
    among column j's ``sizes[j]`` values (sorted ascending), with the costs of the row's class
    (``m = row_class[r] * d + j``); out = that value's cell id ``cells[j, k]`` (ties: the lowest
    value). A column of at most SCAN_VALUES values is scanned value by value for all rows at once;
    wider ones are searched weight by weight (:func:`_walk`)."""
    d = values.shape[0]
    rows = y.shape[0] // d
    one_set = costs.shape[0] == d  # one set of code lengths: every row's are column j's
    yc = np.empty(rows)
    wc = np.empty(rows)
    best = np.empty(rows)
    chosen = np.empty(rows, np.int64)
    wide = False
    for j in range(d):  # a loop, not sizes.max(): numba's max compiles for half a second on a fresh install
        wide = wide or sizes[j] > SCAN_VALUES
    if wide:
        tables = (values, costs, below, above, sizes, cells, lam, row_class, starts, start_low, start_scale)
        _walk(SCAN_VALUES, y, w, *tables, out)
    for j in range(d):
        n = sizes[j]
        if n > SCAN_VALUES:
            continue
        for r in range(rows):
            yc[r] = y[r * d + j]
            wc[r] = w[r * d + j]
            best[r] = np.inf
            chosen[r] = 0
        for k in range(n):
            v = values[j, k]
            rate = lam * costs[j, k]
            for r in range(rows):
                if not one_set:
                    rate = lam * costs[row_class[r] * d + j, k]
                dv = v - yc[r]
                c = wc[r] * dv * dv + rate
                better = c < best[r]
                best[r] = c if better else best[r]
                chosen[r] = k if better else chosen[r]
        for r in range(rows):
            out[r * d + j] = cells[j, chosen[r]]


@numba.njit(cache=True, nogil=True)
def _walk(
    narrow, y, w, values, costs, below, above, sizes, cells, lam, row_class, starts, start_low, start_scale, out
):  # pragma: no cover - compiled
    """:func:`assign_columns` for the columns of more than ``narrow`` values, row by row, weight by
    weight: finds p, the number of values <= y, from the start table
    (:func:`~.column_grids.start_table`), then walks outwards: left from p - 1, then right from p,
    each side stopping once the distortion plus the smallest cost still ahead (``below[m, k]`` = min
    of costs[m, :k + 1], ``above[m, k]`` = min of costs[m, k:]) cannot beat the best found (ties: the
    lower value, as the scan)."""
    d = values.shape[0]
    last = starts.shape[1] - 1
    for r in range(y.shape[0] // d):
        base = row_class[r] * d
        for j in range(d):
            n = sizes[j]
            if n <= narrow:
                continue
            m = base + j
            i = r * d + j
            x = y[i]
            wi = w[i]
            t = (x - start_low[j]) * start_scale[j]
            p = starts[j, 0 if not t > 0.0 else (last if not t < last else int(t))]
            while p < n and values[j, p] <= x:
                p += 1
            while p > 0 and not values[j, p - 1] <= x:
                p -= 1
            best = np.inf
            best_k = 0
            k = p - 1
            while k >= 0:  # left: a tie with a value found further right goes to this lower one
                dv = values[j, k] - x
                dist = wi * dv * dv
                if dist + lam * below[m, k] > best:
                    break
                c = dist + lam * costs[m, k]
                if c <= best:
                    best = c
                    best_k = k
                k -= 1
            k = p
            while k < n:  # right: only a strictly better value replaces a lower one
                dv = values[j, k] - x
                dist = wi * dv * dv
                if dist + lam * above[m, k] >= best:
                    break
                c = dist + lam * costs[m, k]
                if c < best:
                    best = c
                    best_k = k
                k += 1
            out[i] = cells[j, best_k]
