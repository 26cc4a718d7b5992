"""The class-valued record kind (format version 5): a classed record whose values, too, are per class.

Marked ``class_values = C``. It stores everything a :mod:`.classed` record does (D column models
per block class as one-byte levels, every column's used values in ``grid``, the means and the int8
rotation) and, besides, each class's own value of every symbol it uses: the column's value plus a
correction, an int8 ``value_deltas`` entry (one per nonzero level, in the levels' order: column
after column, class after class, symbol after symbol) times the column's float32 ``value_units``:

    value[c, j, s] = float32(grid value of (j, s) + delta * unit_j)   (the sum in float64: exact product)

The encoder sets each class's value of a symbol to the weighted mean of the coordinates of that
class's rows coded to it (:func:`class_value_deltas`): rare words' coarse rows and frequent words'
fine ones no longer share one reconstruction per symbol (docs/METHODS.md).
"""

from __future__ import annotations

import numpy as np

from ..geometry import row_size
from .base import SideArray, TensorRecord, damaged, plugin_kind, register_record_kind
from .classed import Classed, column_values, decoded_rotation, level_layout
from .columns import inverse_transform

DELTA_LIMIT = 127  # int8 corrections: -127 .. 127 units of their column


def class_value_table(
    grid: np.ndarray, widths: np.ndarray, levels: np.ndarray, classes: int, deltas: np.ndarray, units: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every class's value of every symbol, (C, D, widest) float32, and which of them exist (a
    nonzero level): the decoder's table, and the encoder's, so that what it checks is what decodes.

    Example:
        >>> t, ok = class_value_table(np.array([1.0, 2.0], np.float32), np.array([2]), np.array([255, 0, 250, 255]),
        ...                           2, np.array([4, -2, 1], np.int8), np.array([0.25], np.float32))
        >>> t[ok].tolist()
        [2.0, 0.5, 2.25]
    """
    column = column_values(np.asarray(grid, np.float64), widths)[0]
    valid = level_layout(levels, widths, classes) > 0
    steps = np.zeros(valid.shape, np.float64)
    steps.transpose(1, 0, 2)[valid.transpose(1, 0, 2)] = deltas  # in the levels' order: column, class, symbol
    table = column[None] + steps * np.asarray(units, np.float64)[None, :, None]
    with np.errstate(over="ignore"):  # (beyond float32: inf, which validate refuses in one line)
        return np.where(valid, table, 0.0).astype(np.float32), valid


def class_value_deltas(column: np.ndarray, valid: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 corrections (one per ``valid`` (C, D, widest) entry, in the levels' order) and float32
    units (D) that move each column's values ``column`` (D, widest) towards ``target`` (C, D,
    widest): the largest correction of a column is 127 units.

    Example:
        >>> deltas, units = class_value_deltas(np.array([[1.0, 2.0]]), np.array([[[True, True]]]),
        ...                                    np.array([[[1.5, 2.0]]]))
        >>> deltas.tolist(), units.tolist()
        ([127, 0], [0.003937007859349251])
    """
    shift = np.where(valid, np.asarray(target, np.float64) - np.asarray(column, np.float64)[None], 0.0)
    largest = np.abs(shift).max(axis=(0, 2), initial=0.0)
    units = (largest / DELTA_LIMIT).astype(np.float32)
    step = np.where(units > 0, units, 1).astype(np.float64)[None, :, None]
    deltas = np.clip(np.rint(shift / step), -DELTA_LIMIT, DELTA_LIMIT).astype(np.int8)
    return np.ascontiguousarray(deltas.transpose(1, 0, 2)[valid.transpose(1, 0, 2)]), units


@register_record_kind
class ClassValued(Classed):
    """A classed record with each class's own values: int8 corrections of the column values."""

    name = "class-valued"
    mark = "class_values"
    version = 5
    values_per_class = True
    side_arrays = Classed.side_arrays + (
        SideArray("value_deltas", "classed/value_deltas", "i1"),
        SideArray("value_units", "classed/value_units", "<f4"),
    )

    def class_table(self, record: TensorRecord) -> tuple[np.ndarray, np.ndarray]:
        """(C, D, widest) values and which exist (:func:`class_value_table`)."""
        s = record.side
        return class_value_table(
            record.grid, s["widths"], s["levels"], self.num_classes(record), s["value_deltas"], s["value_units"]
        )

    def dequantize(self, record: TensorRecord, symbols: np.ndarray, row_blocks: np.ndarray | None = None) -> np.ndarray:
        table, valid = self.class_table(record)
        d = table.shape[1]
        rows = np.asarray(symbols, dtype=np.int64).reshape(-1, d)
        blocks = np.arange(len(rows)) // record.block_rows if row_blocks is None else np.asarray(row_blocks)
        classes = record.side["block_class"].astype(np.int64)[blocks][:, None]
        if rows.size and (np.any(rows >= table.shape[2]) or not np.all(valid[classes, np.arange(d), rows])):
            raise ValueError("a decoded symbol has no value in its class's column")
        y_hat = table[classes, np.arange(d)[None, :], rows]
        return inverse_transform(y_hat, record.side["mean"], decoded_rotation(record.side, d)).reshape(-1)

    def value_table(self, record: TensorRecord) -> tuple | None:
        """As :meth:`Classed.value_table`, with (C x D, widest, 1) values: a block's symbols use its class's D."""
        if plugin_kind(self):  # a plug-in's subclass decodes by its own dequantize
            return None
        table, valid = self.class_table(record)
        c, d, width = table.shape
        _, _, mode, mean, rt = super().value_table(record)
        return table.reshape(c * d, width, 1), valid.reshape(c * d, width), mode, mean, rt

    def validate(self, record: TensorRecord, where: str) -> None:
        """As a classed record, and one correction per nonzero level, D finite units >= 0."""
        super().validate(record, where)
        deltas, units = record.side.get("value_deltas"), record.side.get("value_units")
        if deltas is None or len(deltas) != int(np.count_nonzero(record.side["levels"])):
            raise damaged(where, "the class values' corrections do not fit the levels")
        d = row_size(record.shape)
        if units is None or len(units) != d or not np.all(np.isfinite(units)) or np.any(units < 0):
            raise damaged(where, f"the class values' units are not {d} finite numbers >= 0")
        if not np.all(np.isfinite(self.class_table(record)[0])):
            raise damaged(where, "a class value is not finite")


def class_corrections(
    counts: np.ndarray,
    total: np.ndarray,
    moment: np.ndarray,
    remap: np.ndarray,
    widths: np.ndarray,
    levels: np.ndarray,
    grid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a class-valued record stores besides a classed one, from (C, D, alphabet) symbol
    ``counts`` and the sums of weights and weight x coordinate of each (class, column, grid cell), and
    the classed tables (``remap`` of grid cells to symbols, ``widths``, ``levels``, column values
    ``grid``): ``(value_deltas, value_units, values)``, ``values`` the (C, D, alphabet) float32 value
    each class decodes each grid cell to. A (class, cell) without weight keeps its column's value.

    Example:
        >>> counts = np.array([[[3, 1]], [[0, 2]]]); total = np.array([[[1.0, 1.0]], [[0.0, 2.0]]])
        >>> deltas, units, values = class_corrections(counts, total, total * [[[0.5, 2.0]], [[0.0, 3.0]]],
        ...     np.array([[0, 1]]), np.array([2]), np.array([255, 255, 0, 255], np.uint8),
        ...     np.array([0.5, 2.5], np.float32))
        >>> deltas.tolist(), values.tolist()
        ([0, -127, 127], [[[0.5, 2.0]], [[0.0, 3.0]]])
    """
    classes, d, _ = counts.shape
    column = column_values(np.asarray(grid, np.float64), widths)[0]
    valid = level_layout(levels, widths, classes) > 0  # (a level is 0 exactly where the count is)
    target = np.broadcast_to(column, valid.shape).copy()
    j, cell = np.nonzero((counts > 0).any(axis=0))  # every used (column, grid cell), and its symbol
    weight = total[:, j, cell]
    with np.errstate(invalid="ignore", divide="ignore"):
        target[:, j, remap[j, cell]] = np.where(weight > 0, moment[:, j, cell] / weight, column[j, remap[j, cell]])
    deltas, units = class_value_deltas(column, valid, target)
    table, _ = class_value_table(grid, widths, levels, classes, deltas, units)
    columns = np.arange(d)[:, None]
    values = np.where(counts > 0, table[:, columns, remap], 0.0).astype(np.float32)
    return deltas, units, values
