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
    """The state after a refinement at ``lam``: every column's used values (d x width, ascending, the
    first ``sizes[j]`` of row j), their code lengths per (set, column) (sets x d rows), the running
    minima of the costs from either side, and the seeding cell each value came from."""

    lam: float
    values: np.ndarray
    costs: np.ndarray
    below: np.ndarray
    above: np.ndarray
    sizes: np.ndarray
    cell_ids: np.ndarray
    width: int


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
    centers = np.asarray(grid).reshape(d, -1)
    by_set = counts.reshape(sets, d, width)
    pooled = by_set.sum(axis=0)
    values = np.zeros((d, width))
    costs = np.full((sets, d, width), np.inf)
    cell_ids = np.zeros((d, width), np.int64)
    sizes = np.zeros(d, np.int64)
    for j in range(d):
        used = np.flatnonzero(pooled[j])
        v = moment[j, used] / np.maximum(total[j, used], 1e-300) if centroids else centers[j, used]
        v = v.astype(np.float32).astype(np.float64)  # the values are stored as float32
        order = np.argsort(v, kind="stable")
        sizes[j] = len(used)
        values[j, : len(used)] = v[order]
        cell_ids[j, : len(used)] = used[order]
        for c in range(sets):
            seen = by_set[c, j] if by_set[c, j].any() else pooled[j]
            with np.errstate(divide="ignore"):
                costs[c, j, : len(used)] = -np.log2(seen[used[order]] / seen.sum())
    costs = costs.reshape(sets * d, width)
    below = np.minimum.accumulate(costs, axis=1)  # padding costs are inf: never the minimum
    above = np.minimum.accumulate(costs[:, ::-1], axis=1)[:, ::-1]
    lam = 0.0 if state is None else state.lam
    return ColumnValues(lam, values, costs, below, above, sizes, cell_ids, width)
