"""One tensor through the pack pipeline (:mod:`bnncompress.pipeline`): fitted, counted at any lambda, coded.

A :class:`TensorJob` runs its passes over the tensor's coding blocks on an executor: the statistics
pass and the fit when it is made, a histogram pass per lambda rate control asks about (cached),
and the coding pass at the lambda chosen, from the grid indices the last histogram pass kept
(within the pack's :class:`KeepBudget`) or by assigning them again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import coding, geometry
from .blockrows import BlockRows
from .errors import OptionError
from .executors import Executor
from .posterior import TensorPosterior
from .quantizers import Block, Quantizer, SampleRows
from .quantizers.plugins import checked
from .ratetasks import check_task, count_task
from .records import TensorRecord, kind_of, raw_payload_bytes
from .tasks import (
    CERTAIN_FRACTION,
    FAR_SDS,
    Quality,
    count_block,
    encode_kept_task,
    encode_task,
    histogram_task,
    levelled_record,
    record_tables,
    statistics_task,
)


class KeepBudget:
    """Bytes of grid indices the pack may keep between a histogram pass and the coding pass."""

    def __init__(self, available: int):
        self.available = available


#: Bytes of block statistics a task of the statistics pass returns at most (a transform's Gram matrices: 8 MiB a
#: block of 1,024-wide rows); the pass holds those of the tasks in flight.
STATISTICS_BYTES = 1 << 25


class TensorJob:
    """One tensor through the pipeline: fitted on creation; histograms at any lambda (cached);
    coded at the chosen one. Implements :class:`~bnncompress.ratecontrol.RateModel`."""

    def __init__(
        self,
        name: str,
        source: TensorPosterior,
        quantizer: Quantizer,
        executor: Executor,
        budget: KeepBudget,
        positions: np.ndarray | None,
        pass_bytes: int | None = None,
    ):
        """``pass_bytes``: what the fit may keep of per-block values between passes (a transform's rotated
        rows, not recomputed at each: :meth:`FittedQuantizer.keep_pass_data`); None: the method's own allowance."""
        self.name, self.source, self.executor, self.budget = name, source, executor, budget
        self.quantizer, self.quantizer_name = quantizer, quantizer.name
        self.shape, self.num_weights = source.shape, source.size
        handle = executor.scatter(source) if source.in_memory else source  # files: workers read them
        self.rows = BlockRows(source, handle, executor, pass_bytes)
        self._fit(quantizer, np.zeros(0, np.int64) if positions is None else positions)
        if pass_bytes is not None:
            self.fitted.keep_pass_data(pass_bytes)
        self._states: dict[tuple[float, bool], Any] = {}
        self._histograms: dict[tuple[float, bool], tuple[np.ndarray, int, Any]] = {}
        self._kept: tuple[float, list[Any], int] | None = None  # lambda, indices per task, bytes

    def _fit(self, quantizer: Quantizer, positions: np.ndarray) -> None:
        rs = self.source.row_size
        skip = quantizer.passes_agree("needs_statistics") and not quantizer.needs_statistics(self.shape)
        gather = None if skip else quantizer  # (None: the pass reads the rate-control sample only)
        fold = quantizer.folds_statistics and quantizer.passes_agree("folds_statistics")
        most = max(1, STATISTICS_BYTES // max(int(quantizer.statistics_bytes(rs)), 1))  # blocks' statistics a task
        tasks = []
        for a, b in self.rows.split_ranges(most) if gather else self.rows.ranges:
            lo, hi = np.searchsorted(positions, [a * rs, b * rs])
            tasks.append((self.rows.handle, a, b, self.rows.block_rows, gather, positions[lo:hi]))
        stats: list[Any] = []
        locs, scales = [], []
        for part, loc, scale, beyond in self.executor.map(statistics_task, tasks):
            for block in part:  # (a method that needs only their sum holds one total, not every block's)
                if stats and fold:
                    stats[0] = quantizer.fold_statistics(stats[0], block)
                else:
                    stats.append(block)
            locs.append(loc)
            scales.append(scale)
            self.source.add_beyond_blocks(beyond)  # (read by a worker: told to the driver's tensor, which reports it)
        # (what a plug-in's code returns is checked before it reaches a kernel or the archive)
        self.fitted = checked(quantizer.fit(self.shape, stats, self.rows), quantizer)
        sample = None
        if len(positions):
            sample = Block(np.concatenate(locs), np.concatenate(scales), rs, positions=positions, key=("sample",))
        sample = self.fitted.prepare_sample(sample)
        self.sample = None if sample is None else SampleRows(self.shape, sample)

    @property
    def values_per_symbol(self) -> int:
        return self.fitted.values_per_symbol

    def params(self, state: Any, lam: float) -> dict[str, Any]:
        """What a record stores of how it was made: the method's options (so that
        ``from_config({"method": ..., **params})`` rebuilds it), what was fitted, and ``lam``."""
        options = self.quantizer.stored_options() if self.fitted.stores_method_options else {}
        return {**options, **self.fitted.params(state), "lam": float(lam)}

    def state(self, lam: float, on_sample: bool = False) -> Any:
        key = (lam, on_sample)
        if key not in self._states:
            _forget_oldest(self._states)
            self._states[key] = self.fitted.at(lam, self.sample if on_sample else self.rows.representative)
        return self._states[key]

    def table_shape(self, state: Any) -> tuple[int, int]:
        """(models, alphabet) of the histograms at ``state`` (classes x models for a classed fit)."""
        models = self.fitted.models(state)
        alphabet = len(self.fitted.grid(state)) // self.fitted.values_per_symbol // models
        return models * max(self.fitted.classes, 1), alphabet

    def _shaped(self, counts: np.ndarray) -> np.ndarray:
        """Histograms as rate control and the coder take them: (K,), (models, K), or (classes, models, K)."""
        if self.fitted.classes:
            return counts.reshape(self.fitted.classes, -1, counts.shape[1])
        return counts if len(counts) > 1 else counts[0]

    def levelled_at(self, lam: float, on_sample: bool = False) -> bool:
        """The record at ``lam`` is levelled (:func:`~bnncompress.tasks.levelled_record`, as the coder decides)."""
        if not self.fitted.levelled:  # (no histogram needed)
            return False
        counts, _ = self.histogram(lam, on_sample)
        grid = self.fitted.grid(self.state(lam, on_sample and self.sample is not None))
        return levelled_record(self.fitted, counts, grid[counts > 0] if counts.ndim == 1 else grid)

    @property
    def class_valued(self) -> bool:  # the record stores each class's own values (a byte per (class, used symbol))
        return bool(getattr(self.fitted, "class_values", False))

    @property
    def side_bits(self) -> int:
        """Bits of the arrays the decoder needs besides the grid (a transform's means and rotation)."""
        return 8 * sum(a.nbytes for a in self.fitted.side_arrays().values())

    def num_symbols(self, lam: float) -> int:
        """Symbols of the whole tensor at ``lam`` (from whichever state at ``lam`` exists: no extra passes)."""
        state = next((s for (at, _), s in self._states.items() if at == lam), None)
        return self.fitted.num_symbols(self.state(lam) if state is None else state)

    def histogram(self, lam: float, on_sample: bool = False) -> tuple[np.ndarray, int]:
        """Counts of every grid index at ``lam`` and how many symbols were counted."""
        on_sample = on_sample and self.sample is not None
        key = (lam, on_sample)
        if key not in self._histograms:
            _forget_oldest(self._histograms)
            self._histograms[key] = self._sample_histogram(lam) if on_sample else self._full_histogram(lam)
        counts, counted, _ = self._histograms[key]
        return counts, counted

    def _sample_histogram(self, lam: float) -> tuple[np.ndarray, int, None]:
        state = self.state(lam, True)
        indices = self.fitted.assign(self.sample.block, state)
        counts = np.zeros(self.table_shape(state), dtype=np.int64)
        count_block(self.fitted, self.sample.block, indices, counts)
        return self._shaped(counts), len(indices), None

    def _full_histogram(self, lam: float) -> tuple[np.ndarray, int, Quality | list[list[int]]]:
        """Counts at ``lam``, keeping the grid indices (within the budget) for coding. What the values
        lose is checked in the same pass when reading rows costs a read of a file; for a posterior in
        memory only the lambda coded is checked (:meth:`quality`): the search counts at many."""
        self.release()
        state = self.state(lam)
        shape = self.table_shape(state)
        n = self.fitted.num_symbols(state)
        keep = shape[1] <= 1 << 16 and 2 * n <= self.budget.available
        counts, kept, seen = np.zeros(shape, dtype=np.int64), [], []
        if self.source.in_memory:
            tasks = self.rows.tasks(self.fitted, state, shape, keep)
            for (c, sizes), k in self.executor.map_keep(count_task, tasks):
                counts += c
                seen.append(sizes)  # each block's number of symbols, for the check pass
                kept.append(k)
        else:
            quality = Quality()
            tasks = self.rows.tasks(self.fitted, state, shape, keep, self._check)
            for (c, q, sizes), k in self.executor.map_keep(histogram_task, tasks):
                counts += c
                quality.add(q)
                seen.append(sizes)
                kept.append(k)
            seen = (quality.count_rows(self._rows), seen)
        if keep:
            self._kept = (lam, kept, 2 * n)
            self.budget.available -= 2 * n
        return self._shaped(counts), n, seen

    @property
    def _check(self) -> tuple[bool, float, float, str]:
        rows_matter = len(self.shape) == 2 and self.shape[0] > 1 and self.shape[1] > 1
        return rows_matter, CERTAIN_FRACTION, FAR_SDS, self.source.dtype

    def quality(self, lam: float, decoded: Any = None) -> Quality:
        """What the values at ``lam`` (of the ``decoded`` state, if given) lost: one pass reconstructing
        them from the kept indices, unless the count pass checked the very values that decode (streamed:
        it did, but for a class-valued record, whose class values are known only after the count)."""
        self.histogram(lam)
        seen = self._histograms[(lam, False)][2]
        if isinstance(seen, tuple):  # streamed: (what the count pass found, each block's number of symbols)
            if decoded is None or not self.class_valued:
                return seen[0]
            seen = seen[1]
        kept = self._kept_at(lam)
        kept = [None] * len(seen) if kept is None else kept
        tasks = self.rows.tasks(self.fitted, self.state(lam) if decoded is None else decoded, self._check)
        quality = Quality()
        for q in self.executor.map(check_task, [t + (sizes, k) for t, sizes, k in zip(tasks, seen, kept)]):
            quality.add(q)
        return quality.count_rows(self._rows)

    @property
    def _rows(self) -> int:
        return self.shape[0] if len(self.shape) == 2 else 1

    def _kept_at(self, lam: float) -> list[Any] | None:
        """The grid indices the count pass at ``lam`` kept (per task), or None."""
        return self._kept[1] if self._kept is not None and self._kept[0] == lam else None

    def release(self) -> None:
        """Drop kept grid indices and return their bytes to the budget."""
        if self._kept is not None:
            self.budget.available += self._kept[2]
            self._kept = None

    def code(self, lam: float) -> tuple[TensorRecord, Quality]:
        """Entropy-code the tensor at ``lam``: its archive record and what the values lost."""
        state = self.state(lam)
        blocks = geometry.num_blocks(self.shape, self.rows.block_rows)
        remap, table, grid, stored_counts, marks, side, classes, decoded = self.tables(lam)
        quality = self.quality(lam, decoded)
        block_size = self.rows.block_rows * kind_of(marks).symbols_per_row(self.shape, marks)
        if table.shape[-1] <= 1:
            words = np.zeros(0, dtype=np.uint32)
            offsets = np.zeros(blocks + 1, dtype=np.uint64)
        else:
            words, offsets = self._encode(lam, state, remap, table, block_size, classes)
        self.release()
        record = TensorRecord(
            name=self.name,
            shape=self.shape,
            dtype=self.source.dtype,
            method=self.quantizer_name,
            params=self.params(state, lam),
            coder=coding.CODER_ID,
            grid=grid,
            counts=stored_counts,
            words=words,
            block_rows=self.rows.block_rows,
            offsets=offsets,
            **marks,
            **side,
        )
        unstored = sorted(set(side) - {s.name for s in record.kind.side_arrays})
        if unstored:  # (a plug-in's: the decoder would not get them)
            raise OptionError(
                f"method {self.quantizer_name!r} returned side array(s) {', '.join(unstored)} that its tensor's "
                f"record ({record.kind.name}) does not store; return only those the record kind declares"
            )
        if raw_payload_bytes(self.num_weights, record.num_blocks) <= record.payload_bytes:
            return self.raw_record(lam), Quality()  # tiny tensor: its values cost less than its code
        return record, quality

    def tables(self, lam: float) -> tuple:
        """The record's tables at ``lam`` and the state it decodes to (:func:`~bnncompress.tasks.record_tables`;
        class values: one more pass over :attr:`BlockRows.representative`)."""
        counts, _ = self.histogram(lam)
        state = self.state(lam)
        blocks = geometry.num_blocks(self.shape, self.rows.block_rows)
        rows = self.rows.representative  # (all rows: the indices the count pass kept, if it kept them)
        kept = self._kept_at(lam) if rows is self.rows else None
        moments = (lambda: self.fitted.class_moments(state, rows, kept)) if self.class_valued else None
        return record_tables(counts, self.fitted, state, blocks, moments)

    def raw_record(self, lam: float) -> TensorRecord:
        """The tensor as its float32 values (smaller than its code)."""
        values = self.source.loc.reshape(-1).astype(np.float32)
        return TensorRecord(
            name=self.name,
            shape=self.shape,
            dtype=self.source.dtype,
            method=self.quantizer_name,
            params={"lam": float(lam), "stored": "raw float32: smaller than its code"},
            coder=coding.CODER_ID,
            grid=values,
            counts=np.zeros(0, np.uint8),
            words=np.zeros(0, np.uint32),
            block_rows=self.rows.block_rows,
            offsets=np.zeros(geometry.num_blocks(self.shape, self.rows.block_rows) + 1, dtype=np.uint64),
            raw=True,
        )

    def _encode(
        self, lam: float, state: Any, remap: np.ndarray, table: np.ndarray, block_size: int, classes: np.ndarray | None
    ) -> tuple:
        br = self.rows.block_rows
        own = [None if classes is None else classes[a // br : -(-b // br)] for a, b in self.rows.ranges]
        kept = self._kept_at(lam)
        if kept is not None:  # code the indices of the histogram pass
            tasks = [(k, remap, table, block_size, c) for k, c in zip(kept, own)]
            parts = self.executor.map(encode_kept_task, tasks)
        else:
            tasks = [t + (c,) for t, c in zip(self.rows.tasks(self.fitted, state, remap, table, block_size), own)]
            parts = self.executor.map(encode_task, tasks)
        words_parts, lengths = zip(*parts)
        offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.uint64)
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return np.concatenate(words_parts), offsets


_REMEMBERED = 4  # rate control asks for the latest few lambdas again; a pack may hold 10^5 tensors


def _forget_oldest(cache: dict) -> None:
    """Keep a per-tensor cache of states or histograms small: drop the oldest entries."""
    while len(cache) >= _REMEMBERED:
        del cache[next(iter(cache))]
