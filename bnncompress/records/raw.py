"""The raw record kind (format version 3): a tensor stored as its float32 values.

Marked ``raw = true``: ``grid`` holds the values row-major, with no counts and no coded words
(and a jump table of zeros). A tensor is stored so when that costs fewer payload bytes than
its code (:func:`raw_payload_bytes`): tiny tensors, whose tables would cost more than the values.
"""

from __future__ import annotations

import numpy as np

from ..geometry import row_size
from .base import RecordKind, SymbolDecoder, TensorRecord, damaged, payload_bytes, register_record_kind


def raw_payload_bytes(num_weights: int, blocks: int) -> int:
    """The payload of a raw tensor of ``num_weights`` in ``blocks`` blocks (:func:`payload_bytes`).

    Example:
        >>> raw_payload_bytes(10, 1)
        40
    """
    return payload_bytes(words=0, blocks=blocks, counts=0, grid=4 * num_weights)


@register_record_kind
class Raw(RecordKind):
    """Values as they are: nothing to decode."""

    name = "raw"
    mark = "raw"
    mark_type = bool
    absent = False
    version = 3
    coded = False

    def checksum_fields(self, record: TensorRecord) -> list[str]:
        return ["raw"]

    def dequantize(self, record: TensorRecord, symbols: np.ndarray) -> np.ndarray:
        raise ValueError("a raw tensor has no symbols")

    def values(self, record: TensorRecord, blocks: list[int] | None, decode: SymbolDecoder) -> np.ndarray:
        if blocks is None:
            return record.grid
        size = record.block_rows * row_size(record.shape)
        parts = [record.grid[b * size : (b + 1) * size] for b in blocks]
        return np.concatenate(parts or [np.zeros(0, np.float32)])

    def validate(self, record: TensorRecord, where: str) -> None:
        if len(record.grid) != record.num_weights or len(record.counts) or len(record.words):
            raise damaged(where, "a raw tensor must hold exactly its values")
