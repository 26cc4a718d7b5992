"""The transform method's per-column grids at one rate (:mod:`.transform`): the seeding grid, and
the values and code lengths after each entropy-constrained refinement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SeedGrid:
    """The state before refinements at rate knob ``lam``: per column a uniform grid's step, its first
    cell and its number of cells."""

    lam: float
    steps: np.ndarray
    firsts: np.ndarray
    cells: np.ndarray


@dataclass(frozen=True, eq=False)
class ColumnValues:
    """The state after a refinement at ``lam``: every column's used values (d x the most any column uses,
    ascending, the first ``sizes[j]`` of row j), their code lengths per (set, column) (sets x d rows), the
    running minima of the costs from either side, the seeding cell each value came from (of ``width``
    cells a column), and where to start looking for a coordinate among its column's values
    (:func:`start_table`)."""

    lam: float
    values: np.ndarray
    costs: np.ndarray
    below: np.ndarray
    above: np.ndarray
    sizes: np.ndarray
    cell_ids: np.ndarray
    width: int
    starts: np.ndarray  # (a 1 x 1 placeholder when every column is scanned: _transform_cpu.SCAN_VALUES)
    start_low: np.ndarray
    start_scale: np.ndarray


@dataclass(frozen=True, eq=False)
class ClassValues:
    """The state a class-valued record decodes to: the assignment's state (``columns``), and every
    block class's value of every grid cell, (classes, d, alphabet) float32, with each coding block's
    class (the classes the coder kept: :func:`bnncompress.tasks.record_tables`)."""

    columns: ColumnValues
    table: np.ndarray
    block_class: np.ndarray


def refine(
    state: SeedGrid | ColumnValues,
    grid: np.ndarray,
    counts: np.ndarray,
    total: np.ndarray,
    moment: np.ndarray,
    sets: int,
    centroids: bool,
) -> ColumnValues:
    """The next state from the cell statistics of an assignment at ``state`` (whose cells' values
    are ``grid``): each column's used cells, at their weighted means if ``centroids``; code lengths
    per (set, column) from that set's counts ((sets x d, width) ``counts``; a set that saw no weights,
    on a sample, takes the column's pooled counts).

    Example:
        >>> counts = np.array([[3, 1, 0]]); total = np.array([[3.0, 1.0, 0.0]])
        >>> s = refine(None, np.zeros(3), counts, total, total * [[1.0, 2.0, 0.0]], 1, True)
        >>> s.values[0, :2].tolist(), s.costs[0, :2].round(3).tolist()
        ([1.0, 2.0], [0.415, 2.0])
    """
    d, width = total.shape
    by_set = counts.reshape(sets, d, width)
    pooled = by_set.sum(axis=0)
    cols, cells = np.nonzero(pooled)  # each column's used cells, ascending
    if centroids:
        v = moment[cols, cells] / np.maximum(total[cols, cells], 1e-300)
    else:
        v = np.asarray(grid).reshape(d, -1)[cols, cells]
    v = v.astype(np.float32).astype(np.float64)  # the values are stored as float32
    order = np.lexsort((v, cols))  # by column, then value (stable: equal values keep their cells' order)
    cols, cells, v = cols[order], cells[order], v[order]
    sizes = np.bincount(cols, minlength=d).astype(np.int64)
    rank = np.arange(len(cols)) - (np.cumsum(sizes) - sizes)[cols]  # the value's place in its column
    most = max(int(sizes.max(initial=0)), 1)  # (not the cells' width: at a high rate thousands, 20-200 used)
    values = np.zeros((d, most))
    cell_ids = np.zeros((d, most), np.int64)
    values[cols, rank], cell_ids[cols, rank] = v, cells
    costs = np.full((sets, d, most), np.inf)
    for c in range(sets):
        seen = np.where(by_set[c].any(axis=1)[:, None], by_set[c], pooled)
        with np.errstate(divide="ignore"):
            costs[c, cols, rank] = -np.log2(seen[cols, cells] / seen.sum(axis=1)[cols])
    costs = costs.reshape(sets * d, most)
    below = np.minimum.accumulate(costs, axis=1)  # padding costs are inf: never the minimum
    above = np.ascontiguousarray(np.minimum.accumulate(costs[:, ::-1], axis=1)[:, ::-1])  # one numba signature
    from ._transform_cpu import SCAN_VALUES  # numba: imported on first use

    lam = 0.0 if state is None else state.lam
    starts = start_table(values, sizes) if sizes.max(initial=0) > SCAN_VALUES else _NO_STARTS
    return ColumnValues(lam, values, costs, below, above, sizes, cell_ids, width, *starts)


#: What a state whose columns are all scanned (``_transform_cpu.SCAN_VALUES``) has for a start table: the
#: table is built only for wider columns (0.35 ms at D = 100, a sixth of a subsample's check at 2 bits).
_NO_STARTS = (np.zeros((1, 1), np.int16), np.zeros(1), np.zeros(1))  # what the assignment never reads

#: Buckets of a column's value range in :func:`start_table`.
START_BUCKETS = 128


def start_table(values: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column j, how many of its values are at most the start of each of :data:`START_BUCKETS`
    equal buckets between its smallest and largest value: a coordinate y in bucket
    ``b = floor((y - low[j]) * scale[j])`` (clamped) has about ``starts[j, b]`` values at most y, so
    the assignment steps from there to the exact count instead of searching (same result, faster;
    a count off by one at a bucket's edge costs it a step). One search over all columns at once:
    column j's values and bucket starts become the keys ``j + (value - low) * scale / START_BUCKETS``.

    Example:
        >>> starts, low, scale = start_table(np.array([[0.0, 1.0, 3.0]]), np.array([3]))
        >>> starts[0, [0, 42, 43, 127]].tolist(), low.tolist(), scale.tolist()
        ([1, 1, 2, 3], [0.0], [42.333333333333336])
    """
    d, width = values.shape
    rows = np.arange(d)[:, None]
    low = np.where(sizes > 0, values[:, 0], 0.0)
    span = values[np.arange(d), np.maximum(sizes - 1, 0)] - low
    used = np.arange(width)[None, :] < sizes[:, None]
    with np.errstate(invalid="ignore", over="ignore"):  # a span so small that its scale is inf: 0 * inf
        scale = np.where(span > 0, (START_BUCKETS - 1) / np.where(span > 0, span, 1.0), 0.0)
        place = np.nan_to_num((values - low[:, None]) * scale[:, None], nan=0.0, posinf=START_BUCKETS - 1)
    place = np.clip(place, 0, START_BUCKETS - 1) / START_BUCKETS
    keys = rows + np.where(used, place, 1 - 0.5 / START_BUCKETS)  # padding after every bucket start
    bounds = rows + np.arange(START_BUCKETS)[None, :] / START_BUCKETS
    starts = np.searchsorted(keys.ravel(), bounds.ravel(), side="right").reshape(d, START_BUCKETS) - rows * width
    starts = np.clip(starts, 0, sizes[:, None])  # never outside the column's values
    return starts.astype(np.int16), low, scale  # counts of at most 4,096 values (a column's most)
