"""Per-block cell statistics of a refinement pass, and their sum in block order.

A refinement pass returns, for each coding block, dense arrays over (column, cell): how many
weights each cell got, and the sums of their weights and of weight x value. At a high rate a
column has up to thousands of cells, far more than a block of a few hundred rows can touch, so
the dense arrays are mostly zeros (a 128-row block of 512 columns at 850 cells: 10 MiB for its
65,536 weights). :func:`compact_cells` keeps only the touched cells of such a block, and
:func:`reduce_cells` adds the blocks up one at a time as they arrive (:func:`each`), so a pass
holds the blocks in flight instead of every block of the tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A block's statistics are kept at its touched cells when the dense arrays have more than this many
#: cells per weight of the block (it touches at most one cell per weight).
SPARSE_CELLS_PER_WEIGHT = 2


@dataclass(frozen=True)
class TouchedCells:
    """A block's cell statistics at the cells its weights fell in: ``cells`` are flat indices into the
    dense (column, cell) arrays of ``shape``; ``counts`` is (count classes, len(cells))."""

    shape: tuple[int, int]
    cells: np.ndarray
    counts: np.ndarray
    total: np.ndarray
    moment: np.ndarray


def compact_cells(counts: np.ndarray, total: np.ndarray, moment: np.ndarray, weights: int) -> Any:
    """``(counts, total, moment)`` (counts: (classes x columns, cells); the sums: (columns, cells)) as
    they are, or as :class:`TouchedCells` when arrays of this many cells would be mostly zeros for a
    block of ``weights`` weights."""
    if total.size <= SPARSE_CELLS_PER_WEIGHT * max(weights, 1):
        return counts, total, moment
    by_class = counts.reshape(-1, total.size)
    cells = np.flatnonzero(by_class.any(axis=0))
    return TouchedCells(total.shape, cells, by_class[:, cells], total.reshape(-1)[cells], moment.reshape(-1)[cells])


def reduce_cells(parts: Iterable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum the blocks' cell statistics (dense triples or :class:`TouchedCells`) in block order, one
    block at a time: the same bits on every route. (A cell a block did not touch is not added to; a
    dense sum adds 0.0 there, which differs only in turning an accumulated -0.0 into 0.0.)"""
    sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for part in parts:
        if sums is None:
            sums = _copy(part)
            continue
        counts, total, moment = sums
        if isinstance(part, TouchedCells):
            counts.reshape(-1, total.size)[:, part.cells] += part.counts
        else:
            counts += part[0]
        add_cells(total, moment, part)
    if sums is None:
        raise ValueError("no blocks to sum the cell statistics of")
    return sums


def add_cells(total: np.ndarray, moment: np.ndarray, part: Any) -> None:
    """Add one block's sums (a dense ``(counts, total, moment)`` or :class:`TouchedCells`) to ``total``
    and ``moment`` in place."""
    if isinstance(part, TouchedCells):
        total.reshape(-1)[part.cells] += part.total
        moment.reshape(-1)[part.cells] += part.moment
    else:
        total += part[1]
        moment += part[2]


def each(rows: Any, fn: Callable[..., Any], *args: Any) -> Iterable[Any]:
    """``rows.map(fn, *args)``, one block's result at a time as the pass makes them when ``rows`` can
    (the pipeline's rows have ``imap``), so a reduction holds only the blocks in flight."""
    imap = getattr(rows, "imap", None)
    return imap(fn, *args) if imap is not None else rows.map(fn, *args)


def _copy(part: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's statistics as new dense arrays (the first block of a sum: copied, not added to zeros)."""
    if not isinstance(part, TouchedCells):
        return tuple(np.array(a, copy=True) for a in part)  # type: ignore[return-value]
    classes = part.counts.shape[0]
    counts = np.zeros((classes * part.shape[0], part.shape[1]), part.counts.dtype)
    total, moment = np.zeros(part.shape, part.total.dtype), np.zeros(part.shape, part.moment.dtype)
    counts.reshape(classes, -1)[:, part.cells] = part.counts
    total.reshape(-1)[part.cells] = part.total
    moment.reshape(-1)[part.cells] = part.moment
    return counts, total, moment
