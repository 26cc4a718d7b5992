"""One tensor's coding blocks, mapped over an executor in tasks of whole blocks: the pipeline's rows.

:class:`BlockRows` is the ``Rows`` a fitted quantizer's passes map over (:mod:`bnncompress.quantizers.base`):
every coding block, or (:attr:`BlockRows.representative`) the runs of blocks refinements run on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import geometry
from .executors import Executor
from .posterior import TensorPosterior
from .quantizers import Block
from .tasks import map_kept_task, map_task

#: A full evaluation at a lambda refines the method's values on at most this many rows (whole coding blocks,
#: evenly spread), then counts and codes every row: a 1M x 100 posterior streamed at 2 bits packs 2.2x faster
#: with 0.2% more posterior-weighted distortion (fewer rows cost more: 8,192 of P1's 20,000, 1-4%); tensors
#: of fewer rows (vocabularies up to 65,536 words) are refined on all of them, as before.
REFINE_ROWS = 1 << 16
#: ... in this many runs of consecutive blocks, a task each on every route (Dask workers pay per task; 8 runs
#: of 12 blocks represented a 1M-row tensor's rows worse: plain MSE +9% at 3 bits, against +1.5% with 32).
REFINE_RUNS = 32


class BlockRows:
    """One tensor's coding blocks, mapped over an executor in tasks of whole blocks (a ``Rows``)."""

    def __init__(self, source: TensorPosterior, handle: Any, executor: Executor, pass_bytes: int | None = None):
        self.shape, self.pass_bytes = source.shape, pass_bytes
        self.handle, self.executor = handle, executor
        self.block_rows = geometry.block_rows_for(source.shape)
        block_symbols = self.block_rows * source.row_size
        n_blocks = geometry.num_blocks(source.shape, self.block_rows)
        per_task = max(1, min(executor.task_symbols // max(block_symbols, 1), -(-n_blocks // (2 * executor.slots))))
        step = per_task * self.block_rows
        self.ranges = [(a, min(a + step, source.num_rows)) for a in range(0, source.num_rows, step)]
        # the spread rows (None: not made yet), or self is its own (never stored: a cycle would keep the
        # posterior alive after the pack until Python's cyclic garbage collector ran)
        self._representative: BlockRows | None = None
        self._all_representative = False

    @property
    def representative(self) -> BlockRows:
        """Where refinements run: every row, or :data:`REFINE_RUNS` runs of blocks of at most
        :data:`REFINE_ROWS` rows in all (:meth:`spread`)."""
        if self._all_representative:
            return self
        if self._representative is None:
            spread = self.spread(REFINE_ROWS, REFINE_RUNS)
            if spread is self:
                self._all_representative = True
                return self
            self._representative = spread
        return self._representative

    def tasks(self, *args: Any) -> list[tuple]:
        return [(self.handle, a, b, self.block_rows, *args) for a, b in self.ranges]

    def split_ranges(self, most_blocks: int) -> list[tuple[int, int]]:
        """:attr:`ranges`, each cut into ranges of at most ``most_blocks`` coding blocks (for a pass whose
        results per block are large)."""
        step = most_blocks * self.block_rows
        return [(a, min(a + step, b)) for start, b in self.ranges for a in range(start, b, step)]

    def spread(self, most_rows: int, runs: int) -> BlockRows:
        """These rows, or about ``most_rows`` of them: ``runs`` runs of whole coding blocks evenly spread
        over the tensor, a task each (the same on every route: not one per slot); a run is at least one
        block, so rows of a few weights (blocks of many rows) may give up to ``runs`` blocks."""
        rows = geometry.num_rows(self.shape)
        if rows <= most_rows:
            return self
        n, length = geometry.num_blocks(self.shape, self.block_rows), max(1, most_rows // self.block_rows // runs)
        starts = np.unique(np.linspace(0, n - length, runs).round().astype(np.int64))
        picks = np.unique((starts[:, None] + np.arange(length)[None, :]).reshape(-1))
        first = picks[np.r_[True, np.diff(picks) > 1]]  # runs that touch merge into one range
        last = picks[np.r_[np.diff(picks) > 1, True]]
        spread, br = copy.copy(self), self.block_rows
        spread.ranges = [(int(a) * br, min(int(b + 1) * br, rows)) for a, b in zip(first, last)]
        spread._representative, spread._all_representative = None, True
        return spread

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return list(self.imap(fn, *args))

    def imap(self, fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
        """As :meth:`map`, each block's result as its task is done (a reduction holds the tasks in flight)."""
        for part in self.executor.map(map_task, self.tasks(fn, args)):
            yield from part

    def imap_kept(self, fn: Callable[..., Any], kept: list[Any], *args: Any) -> Iterator[Any]:
        """As :meth:`imap`, each block's grid indices (one per weight) from ``kept``, a task's each as the
        count pass kept them (:meth:`~bnncompress.tensorjob.TensorJob.histogram`), given as ``fn``'s second argument."""
        for part in self.executor.map(map_kept_task, [t + (k,) for t, k in zip(self.tasks(fn, args), kept)]):
            yield from part

    def blocks(self) -> list[Block]:
        """Every coding block, read here (to inspect a tensor in memory; a pack maps over them instead)."""
        return self.map(_block_itself)


def _block_itself(block: Block) -> Block:
    return block
