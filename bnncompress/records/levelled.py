"""The levelled record kind (format version 7): one entropy model as one-byte levels, float16 values.

Marked ``levelled = 1``. One symbol per weight, as the :mod:`.scalar` grid, with a table half its
size: ``counts`` holds one byte per used symbol, a *level* (as the :mod:`.classed` kind's: level
v > 0 weighs ``2 ** ((v - 255) / 8)``, exact in float64), and the ``grid`` slice holds the K values
as float16, two to a float32 slot (:func:`pack_half`): no dataset of their own, whose link would
overflow the root's object header of a small archive (2.2 KB more file). The scalar grid spends 6
bytes per used symbol (a uint16 count and a float32 value): on a small network's tensors 15-30% of
the payload at 1.5 bits/weight. The coder codes every block with the one model (a classed table of
one class and one column), so a reader checks what it decodes only against which symbols have a
nonzero level.

The default method writes it for the tensors that fall back to one model, whose values the encoder
rounds to float16 after each refinement when that moves none by more than 1/64 of the effective scale
of the weights it codes (their posterior scale as the quantizer tempers it; what it chose is what
decodes); otherwise, or with ``--option small_levels=false``, the scalar grid (version 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import RecordKind, TensorRecord, damaged, plugin_kind, register_record_kind
from .classed import level_weights
from .scalar import PLAIN


def float16_exact(values: np.ndarray) -> bool:
    """True if every one of ``values`` is a finite float16 value (what a levelled record can store).

    Example:
        >>> float16_exact(np.array([0.5, -1.25], np.float32)), float16_exact(np.array([0.1], np.float32))
        (True, False)
    """
    v = np.asarray(values, np.float64)
    with np.errstate(over="ignore"):
        half = v.astype(np.float16)
    return bool(np.all(np.isfinite(half)) and np.array_equal(half.astype(np.float64), v))


def pack_half(values: np.ndarray) -> np.ndarray:
    """K float16 ``values`` as ceil(K / 2) float32 slots of the same little-endian bytes (a zero pad for
    odd K). Finite float16 values never make a float32 NaN or infinity: its exponent bits would be the
    upper value's exponent bits, all ones, which only an infinite or NaN float16 has.

    Example:
        >>> unpack_half(pack_half(np.array([1.0, -2.5, 0.125], np.float16)), 3).tolist()
        [1.0, -2.5, 0.125]
    """
    half = np.asarray(values, "<f2")
    padded = np.zeros(2 * (-(-len(half) // 2)), "<f2")
    padded[: len(half)] = half
    return padded.view("<f4")


def unpack_half(grid: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` float16 values packed in ``grid`` (:func:`pack_half`), as float32."""
    return np.ascontiguousarray(grid, "<f4").view("<f2")[:k].astype(np.float32)


@register_record_kind
class Levelled(RecordKind):
    """One entropy model of one-byte levels; the values the symbols index are float16, packed in ``grid``."""

    name = "levelled"
    mark = "levelled"
    version = 7

    def check_mark(self, value: Any, shape: tuple[int, ...], where: str) -> None:
        if value != 1:
            raise damaged(where, f"'{self.mark}' {value} is not 1")

    def checksum_fields(self, record: TensorRecord) -> list[Any]:
        return [record.marks[self.mark]]

    def values_per_symbol(self, record: TensorRecord) -> int:
        return 1

    def block_classes(self, record: TensorRecord) -> np.ndarray:
        return np.zeros(record.num_blocks, np.uint8)

    def model_counts(self, record: TensorRecord) -> np.ndarray:
        """(1, 1, K) float64 weights: one class of one model (the coder's classed form)."""
        return level_weights(record.counts)[None, None, :]

    def values16(self, record: TensorRecord) -> np.ndarray:
        """The K values (float16, as float32) the symbols index."""
        return unpack_half(record.grid, len(record.counts))

    def dequantize(self, record: TensorRecord, symbols: np.ndarray) -> np.ndarray:
        return self.values16(record)[symbols]

    def value_table(self, record: TensorRecord) -> tuple | None:
        """What the row kernels decode with (as :meth:`.scalar.ScalarGrid.value_table`): (1, K, 1) values,
        which symbols have a level, no transform."""
        if plugin_kind(self):  # a plug-in's subclass decodes by its own dequantize
            return None
        values = self.values16(record)
        valid = (np.asarray(record.counts) > 0)[None, :]
        return values.reshape(1, -1, 1), valid, PLAIN, np.zeros(1), np.eye(1)

    def validate(self, record: TensorRecord, where: str) -> None:
        """One level (at most 255) per value, some nonzero; K finite float16 values packed in the grid."""
        levels, k = record.counts, len(record.counts)
        if (record.num_weights > 0 and k == 0) or len(record.grid) != -(-k // 2):
            raise damaged(where, f"the grid does not hold the {k} float16 values of the levels")
        if k > record.num_weights:
            raise damaged(where, "the entropy model has more symbols than the tensor has weights")
        if np.any(levels > 255) or not np.any(levels > 0):
            raise damaged(where, "the levels are not from 0 to 255 with one above 0")
        half = np.ascontiguousarray(record.grid, "<f4").view("<f2")
        if not np.all(np.isfinite(half[:k])) or np.any(half[k:].view("<u2") != 0):  # the pad: zero bytes, not -0.0
            raise damaged(where, "a float16 value is not finite, or the pad is not 0")
