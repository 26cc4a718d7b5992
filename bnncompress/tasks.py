"""The pipeline's tasks: module-level functions over a range of whole coding blocks of one
tensor, run where the executor runs them (threads of this process, or Dask workers).

Each task reads its rows once (:func:`blocks`); a ``TensorJob`` (:mod:`.tensorjob`) reduces its results in block order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import coding
from .decoded import restore_dtype
from .geometry import num_rows
from .posterior import TensorPosterior
from .quantizers import Block, ClassValues, FittedQuantizer, Quantizer, narrow_counts, used_grid
from .records import class_corrections, float16_exact, level_weights, levels_of, max_table_entries, pack_half

#: Weights with scales below this fraction of the RMS of their block's means are expected to be kept within their scale.
CERTAIN_FRACTION = 1e-3
#: Weights decoded farther than this many posterior standard deviations from their means are reported: no
#: ordinary rate does that (data/example.pt at 0.5-3 bits/weight: every method within 26), so it means an
#: outlier the grid did not reach or a method trading per-weight fidelity (vbq-direction's row-relative errors).
FAR_SDS = 100.0
#: A matrix whose decoded rows are fewer than this fraction of its distinct rows of means has collapsed: on data/
#: example.pt (4,000 x 50) the default keeps 77 distinct rows at 0.05 bits/weight, 885 at 0.2, 3,968+ from 1.
DISTINCT_FRACTION = 0.1


def blocks(source: TensorPosterior, start: int, stop: int, block_rows: int) -> list[Block]:
    """The coding blocks of rows ``start:stop`` (whole blocks), read with one read."""
    loc, scale = source.read(start, stop)
    return split(loc, scale, start, stop, block_rows, source.row_size)


def split(loc: np.ndarray, scale: np.ndarray, start: int, stop: int, block_rows: int, rs: int) -> list[Block]:
    blocks = []
    for a in range(start, stop, block_rows):
        span = slice((a - start) * rs, (min(a + block_rows, stop) - start) * rs)
        blocks.append(Block(loc[span], scale[span], rs, a, key=(a, span.stop - span.start)))  # (kept by a fit)
    return blocks


def map_task(
    source: TensorPosterior, start: int, stop: int, block_rows: int, fn: Callable[..., Any], args: tuple
) -> list:
    return [fn(block, *args) for block in blocks(source, start, stop, block_rows)]


def map_kept_task(
    source: TensorPosterior, start: int, stop: int, block_rows: int, fn: Callable[..., Any], args: tuple, kept: Any
) -> list:
    """``fn(block, indices, *args)`` for each block, ``indices`` its part of the task's ``kept`` (one per weight)."""
    out, at = [], 0
    for block in blocks(source, start, stop, block_rows):
        out.append(fn(block, np.asarray(kept[at : at + len(block.loc)], dtype=np.int32), *args))
        at += len(block.loc)
    return out


def statistics_task(source, start, stop, block_rows, quantizer: Quantizer | None, positions: np.ndarray):
    """Pass 1 of a task: per-block statistics (none without a quantizer), the sample, float64 means off float32."""
    loc, scale = source.read(start, stop)
    blocks = split(loc, scale, start, stop, block_rows, source.row_size) if quantizer else []
    local = positions - start * source.row_size
    return [quantizer.statistics(b) for b in blocks], loc[local], scale[local], source.beyond_blocks(start, stop)


#: Row hashes a distinct-row sketch keeps: counts up to this are exact, larger ones estimated (~2%).
SKETCH = 4096


def _no_hashes() -> np.ndarray:
    return np.zeros(0, np.uint64)


#: The fields of :class:`Quality` that the numba pass (``check_values``) accumulates, in the order
#: of the float64 array it takes (:meth:`Quality.accumulator`, :meth:`Quality.from_checks`).
CHECKED = (
    "values_min",
    "values_max",
    "loc_min",
    "loc_max",
    "flat_rows",
    "certain_missed",
    "largest_error",
    "far_weights",
    "farthest_sds",
)


@dataclass
class Quality:
    """What a histogram pass saw of the quantized values (reduced over blocks). ``row_sketch`` and ``mean_sketch``
    keep the :data:`SKETCH` smallest distinct hashes of the decoded rows and of the rows of means (a K-minimum-values
    sketch: merged in any order, the same) until :meth:`count_rows` makes ``rows_distinct``, ``means_distinct``."""

    values_min: float = np.inf
    values_max: float = -np.inf
    loc_min: float = np.inf
    loc_max: float = -np.inf
    flat_rows: int = 0
    certain_missed: int = 0
    largest_error: float = 0.0
    far_weights: int = 0
    farthest_sds: float = 0.0
    row_sketch: np.ndarray = field(default_factory=_no_hashes)
    mean_sketch: np.ndarray = field(default_factory=_no_hashes)
    rows_distinct: int = 0
    means_distinct: int = 0

    @classmethod
    def accumulator(cls) -> np.ndarray:
        """The array the numba pass accumulates the :data:`CHECKED` fields in, at their starting values."""
        start = cls()
        return np.array([getattr(start, name) for name in CHECKED], dtype=np.float64)

    @classmethod
    def from_checks(cls, checked: np.ndarray, row_sketch: np.ndarray, mean_sketch: np.ndarray) -> Quality:
        """The quality of a task from the numba pass's array and the sketches of its rows.

        Example:
            >>> q = Quality.from_checks(Quality.accumulator(), _no_hashes(), _no_hashes())
            >>> q.values_min, q.flat_rows, q.largest_error
            (inf, 0, 0.0)
        """
        start = cls()
        named = {name: type(getattr(start, name))(value) for name, value in zip(CHECKED, checked.tolist())}
        return cls(**named, row_sketch=row_sketch, mean_sketch=mean_sketch)

    def add(self, other: Quality) -> None:
        self.values_min, self.values_max = (
            min(self.values_min, other.values_min),
            max(self.values_max, other.values_max),
        )
        self.loc_min, self.loc_max = min(self.loc_min, other.loc_min), max(self.loc_max, other.loc_max)
        self.flat_rows += other.flat_rows
        self.certain_missed += other.certain_missed
        self.largest_error = max(self.largest_error, other.largest_error)
        self.far_weights += other.far_weights
        self.farthest_sds = max(self.farthest_sds, other.farthest_sds)
        self.row_sketch = sketch(self.row_sketch, other.row_sketch)
        self.mean_sketch = sketch(self.mean_sketch, other.mean_sketch)

    def count_rows(self, rows: int) -> Quality:
        """Count the distinct rows (of ``rows``) the sketches saw and drop them (kept: one Quality per tensor)."""
        self.rows_distinct, self.means_distinct = distinct(self.row_sketch, rows), distinct(self.mean_sketch, rows)
        self.row_sketch, self.mean_sketch = _no_hashes(), _no_hashes()
        return self


def sketch(*hashes: np.ndarray) -> np.ndarray:
    """The :data:`SKETCH` smallest distinct values among ``hashes`` (sorted; not np.unique: 20x slower in numpy 2.4)."""
    values = np.sort(np.concatenate(hashes), kind="stable")
    return values[np.r_[True, values[1:] != values[:-1]]][:SKETCH] if len(values) else values


def distinct(hashes: np.ndarray, rows: int) -> int:
    """Distinct rows (of ``rows``) a sketch saw: exact below :data:`SKETCH`, else the K-minimum-values estimate."""
    if len(hashes) < SKETCH:
        return len(hashes)
    return max(min(int((SKETCH - 1) / ((float(hashes[-1]) + 1.0) / 2.0**64)), rows), SKETCH)  # (it saw SKETCH)


def check_block(
    fitted: FittedQuantizer, block: Block, indices: np.ndarray, state: Any, check: tuple, checked: np.ndarray
) -> np.ndarray:
    """Reconstruct ``block`` from its grid ``indices``, add what its values lost to ``checked``
    (:meth:`Quality.accumulator`) and return its rows' hashes (2 x rows; none unless ``check[0]``)."""
    from ._pipeline_kernels import check_values  # numba: imported on first use

    values = fitted.reconstruct(block, indices, state)
    if check[3] in ("float16", "bfloat16"):  # what a load returns, rounded to the source's dtype (check[3])
        values = restore_dtype(values, check[3])
    values, loc = (np.ascontiguousarray(a, dtype=np.float32) for a in (values, block.loc))
    rows = np.zeros((2, block.num_rows if check[0] else 0), np.uint64)  # rows_matter: hash every row
    bits = values.view(np.uint32), loc.view(np.uint32)
    check_values(values, loc, block.scale, block.row_size, *check[:3], checked, *bits, rows)
    return rows


def count_block(fitted: FittedQuantizer, block: Block, indices: np.ndarray, counts: np.ndarray) -> None:
    """Add ``block``'s grid ``indices`` to ``counts`` ((classes x models, alphabet) for a classed fit: a
    row's symbols count in its class's models)."""
    from ._pipeline_kernels import count_symbols  # numba: imported on first use

    classes = fitted.row_classes(block)
    if classes is None:
        count_symbols(indices, counts)
        return
    models = len(counts) // fitted.classes
    if len(classes) and classes.min() == classes.max():  # a coding block: one class
        c = int(classes[0])
        count_symbols(indices, counts[c * models : (c + 1) * models])
        return
    rows = indices.reshape(len(classes), -1)
    model = classes[:, None] * models + np.arange(rows.shape[1])[None, :] % models
    counts += np.bincount((model * counts.shape[1] + rows).reshape(-1), minlength=counts.size).reshape(counts.shape)


def histogram_task(
    source, start, stop, block_rows, fitted: FittedQuantizer, state: Any, shape: tuple, keep: bool, check: tuple
):
    """Counts of every grid index (``shape``: (models, alphabet)) over a task's blocks, what the
    reconstructed values lost, the number of symbols of each block, and (if ``keep``) the indices."""
    counts = np.zeros(shape, dtype=np.int64)
    checked = Quality.accumulator()
    kept, hashes, lengths = [], [], []
    for block in blocks(source, start, stop, block_rows):
        indices = fitted.assign(block, state)
        count_block(fitted, block, indices, counts)
        hashes.append(check_block(fitted, block, indices, state, check, checked))
        lengths.append(len(indices))
        if keep:
            kept.append(indices.astype(np.uint16))
    rows = np.concatenate(hashes, axis=1)
    quality = Quality.from_checks(checked, sketch(rows[0]), sketch(rows[1]))
    return (counts, quality, lengths), (np.concatenate(kept) if keep else None)


def renumber(indices: np.ndarray, remap: np.ndarray) -> np.ndarray:
    """The symbols of grid indices: ``remap[i mod M, index]`` for (M, K) ``remap``."""
    models, alphabet = remap.shape
    if models == 1:
        return np.take(remap[0], indices)
    return np.take(remap.reshape(-1), np.resize(np.arange(models) * alphabet, len(indices)) + indices)


def encode_task(source, start, stop, block_rows, fitted, state, remap, counts, block_size, classes=None):
    """The coded words of a task's blocks and each block's word count (``classes``: of these blocks)."""
    symbols = np.concatenate([fitted.assign(b, state) for b in blocks(source, start, stop, block_rows)])
    return encode_kept_task(symbols, remap, counts, block_size, classes)


def encode_kept_task(
    indices: np.ndarray, remap: np.ndarray, counts: np.ndarray, block_size: int, classes: np.ndarray | None = None
):
    symbols = renumber(indices, remap)
    if classes is None:
        words, offsets = coding.encode_blocks(symbols, counts, block_size)
    else:
        words, offsets = coding.encode_blocks(symbols, counts, block_size, classes=classes)
    return words, np.diff(offsets)


def compact_models(counts: np.ndarray, grid: np.ndarray, subvectors: int = 0) -> tuple:
    """Keep the used symbols of every model: ``(remap (M, K), counts (M, K') or (K',), grid)``.
    One model: the used grid values (or codebook entries); per-column models: each column's used
    symbols numbered from 0, tables padded with zero counts to the widest column, and the grid
    holding the used values column after column."""
    table = counts.reshape(-1, counts.shape[-1])
    models, alphabet = table.shape
    used = table > 0
    remap = np.zeros((models, alphabet), dtype=np.int32)
    if models == 1:
        kept = np.flatnonzero(used[0])
        remap[0, kept] = np.arange(len(kept), dtype=np.int32)
        return remap, narrow_counts(table[0, kept]), used_grid(grid, kept, alphabet, subvectors)
    width = int(used.sum(axis=1).max(initial=1))
    compact = np.zeros((models, width), dtype=np.int64)
    for m in range(models):
        kept = np.flatnonzero(used[m])
        remap[m, kept] = np.arange(len(kept), dtype=np.int32)
        compact[m, : len(kept)] = table[m, kept]
    values = grid.reshape(models, alphabet)[used].astype(np.float32)  # row-major: column after column
    return remap, narrow_counts(compact), np.ascontiguousarray(values)


def merge_classes(counts: np.ndarray, classes: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring classes until the coder's tables, (classes, models, widest) entries, are at
    most :func:`~bnncompress.records.max_table_entries` (a reader refuses more: levels expand to the
    widest column's width, and tables must not outweigh their tensor).

    Example:
        >>> merged, blocks = merge_classes(np.ones((4, 1, 20000), np.int64), np.array([0, 1, 2, 3]), rows=10)
        >>> merged.shape, blocks.tolist()
        ((3, 1, 20000), [0, 0, 1, 2])
    """
    n, models, _ = counts.shape
    widest = int((counts > 0).any(axis=0).sum(axis=1).max(initial=1))
    fits = max(1, max_table_entries(rows, models) // (models * widest))
    if n <= fits:
        return counts, classes
    into = np.arange(n) * fits // n
    merged = np.zeros((fits, *counts.shape[1:]), counts.dtype)
    np.add.at(merged, into, counts)
    return merged, into[classes].astype(classes.dtype)


def compact_classed(counts: np.ndarray, grid: np.ndarray) -> tuple:
    """A classed record's tables from (classes, D, alphabet) ``counts``: ``(remap (D, alphabet),
    widths, levels, weights (classes, D, widest), values)``. Column j keeps the symbols some class
    uses, numbered from 0 (``widths[j]`` of them, their values column after column); ``levels``
    holds, column after column, each class's one-byte level of each kept symbol; ``weights`` is what
    the coder builds from them (:func:`~bnncompress.records.level_weights`)."""
    classes, d, alphabet = counts.shape
    used = (counts > 0).any(axis=0)
    widths = used.sum(axis=1)
    remap = np.zeros((d, alphabet), dtype=np.int32)
    padded = np.zeros((classes, d, int(widths.max(initial=1))), np.uint8)
    parts = []
    for j in range(d):
        kept = np.flatnonzero(used[j])
        remap[j, kept] = np.arange(len(kept), dtype=np.int32)
        levels = levels_of(counts[:, j, kept])
        padded[:, j, : len(kept)] = levels
        parts.append(levels.reshape(-1))
    values = grid.reshape(d, alphabet)[used].astype(np.float32)  # row-major: column after column
    levels = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return remap, widths.astype(np.uint16), levels, level_weights(padded), np.ascontiguousarray(values)


def levelled_record(fitted: FittedQuantizer, table: np.ndarray, values: np.ndarray) -> bool:
    """A record stored levelled (format version 7): a levelled fit's one model (1-D ``table``) whose used
    ``values`` are float16 values (the fit rounded them). Rate control asks the same (``TensorJob.levelled_at``).

    Example:
        >>> class Fit: levelled = True
        >>> levelled_record(Fit(), np.array([3, 1]), np.array([0.5, 0.25])), levelled_record(Fit(), np.ones(2), [0.1])
        (True, False)
    """
    return bool(fitted.levelled) and np.ndim(table) == 1 and float16_exact(values)


def record_tables(
    counts: np.ndarray, fitted: FittedQuantizer, state: Any, num_blocks: int, moments: Callable | None = None
) -> tuple:
    """What a record of ``counts`` stores and the coder codes with: ``(remap, coder table, grid,
    stored counts, marks, side arrays, block classes or None, the state the record decodes to)``; a
    classed fit's (classes, models, K) counts become levels (:func:`compact_classed`) and, if the
    coder keeps several classes, with ``moments()`` (each class's sums of weights and weight x
    coordinate per grid cell) each class's own values (a class-valued record); others compact counts
    (:func:`compact_models`), a levelled fit's one model as levels if its values are float16 (a levelled
    record). One class gains too little from its own values to pay for them."""
    side = dict(fitted.side_arrays())
    if counts.ndim == 3:
        first, into = merge_classes(counts, np.arange(len(counts)), num_rows(fitted.shape))
        merged = coding.cheapest_class_merge(first)  # fewer classes where they code smaller
        into = into // (len(first) // len(merged))  # each class's merged class
        counts, classes = merged, into[fitted.block_classes(num_blocks)].astype(np.uint8)
        remap, widths, levels, table, grid = compact_classed(counts, fitted.grid(state))
        side.update(widths=widths, levels=levels, block_class=classes)
        if moments is None or len(counts) == 1:
            return remap, table, grid, np.zeros(0, np.uint8), {"classes": len(counts)}, side, classes, state
        sums = moments()
        total, moment = (np.zeros((len(counts), *m.shape[1:])) for m in sums)
        np.add.at(total, into, sums[0])  # in class order: the same bits on every route
        np.add.at(moment, into, sums[1])
        deltas, units, values = class_corrections(counts, total, moment, remap, widths, levels, grid)
        side.update(value_deltas=deltas, value_units=units)
        decoded = ClassValues(state, values, classes)
        return remap, table, grid, np.zeros(0, np.uint8), {"class_values": len(counts)}, side, classes, decoded
    sub = fitted.subvectors(state)
    remap, table, grid = compact_models(counts, fitted.grid(state), sub)
    if not sub and levelled_record(fitted, table, grid):  # one model, float16 values
        levels = levels_of(table)
        one = level_weights(levels)[None, None, :]  # the coder's classed form: one class of one model
        classes = np.zeros(num_blocks, np.uint8)
        return remap, one, pack_half(grid), levels, {"levelled": 1}, side, classes, state
    marks = {"subvectors": sub, "models": len(table) if table.ndim == 2 else 0}  # 0: unmarked
    return remap, table, grid, table.reshape(-1), marks, side, None, state


def quality_notes(name: str, shape: Sequence[int], q: Quality) -> list[str]:
    """One-line notes on what a quantization lost that a user would not expect: a tensor of
    several distinct means collapsed to one value, a matrix's rows collapsed to few distinct
    vectors (fewer than DISTINCT_FRACTION of its distinct rows) or to constant vectors, or
    weights decoded more than FAR_SDS posterior standard deviations from their means, or weights
    whose posterior is very certain (scale below CERTAIN_FRACTION of their block's RMS) not kept
    within their scale."""
    notes = []
    size = int(np.prod(shape, dtype=np.int64))
    rows, means = q.rows_distinct, q.means_distinct
    if size > 1 and q.values_min == q.values_max and q.loc_min != q.loc_max:
        notes.append(f"tensor '{name}': all {size:,} weights were quantized to one value ({q.values_min:.4g})")
    elif rows < DISTINCT_FRACTION * means:
        count = lambda n: f"about {n:,}" if n >= SKETCH else f"{n:,}"  # noqa: E731 (a sketch's estimate)
        notes.append(
            f"tensor '{name}': its {count(means)} distinct rows were quantized to only {count(rows)} distinct vectors "
            "(most rows can no longer be told apart); use more bits"
        )
    if q.flat_rows and not notes:
        notes.append(
            f"tensor '{name}': {q.flat_rows:,} of {shape[0]:,} rows were quantized to a constant vector "
            "(their direction is lost); use more bits"
        )
    if q.far_weights:
        notes.append(
            f"tensor '{name}': {q.far_weights:,} weights were decoded more than {FAR_SDS:g} posterior standard "
            f"deviations from their means (up to {q.farthest_sds:,.0f}); use more bits or another method"
        )
    if q.certain_missed:
        notes.append(
            f"tensor '{name}': {q.certain_missed:,} very certain weights (scale < {CERTAIN_FRACTION:g} x RMS) "
            f"are not kept within their scale (largest error {q.largest_error:.3g}); use more bits"
        )
    return notes
