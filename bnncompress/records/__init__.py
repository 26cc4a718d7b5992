"""Tensor records, the archive's unit, and their kinds: one module per kind.

- :mod:`~bnncompress.records.scalar`: one symbol per weight into a grid (version 1);
- :mod:`~bnncompress.records.product`: product quantization, codebooks of sub-vectors (version 2);
- :mod:`~bnncompress.records.columns`: one entropy model per column and a transform (version 3);
- :mod:`~bnncompress.records.raw`: the values as they are (version 3);
- :mod:`~bnncompress.records.classed`: column models per block class, compact tables (version 4);
- :mod:`~bnncompress.records.classvalued`: the same with each class's own values (version 5);
- :mod:`~bnncompress.records.levelled`: one model as one-byte levels, float16 values (version 7).

A new kind is one module: a :class:`RecordKind` subclass with :func:`register_record_kind`,
imported here (and its spec in docs/FORMAT.md); archives store and read it from what it declares.
"""

from .base import (
    JUMP_ENTRY_BYTES,
    KINDS,
    RecordKind,
    SideArray,
    SymbolDecoder,
    TensorRecord,
    common_counts_dtype,
    kind_of,
    marks,
    payload_bytes,
    register_record_kind,
    side_arrays,
)
from .classed import (
    MAX_REFLECTED,
    Classed,
    decoded_rotation,
    level_weights,
    levels_of,
    max_table_entries,
    position_classes,
    stored_rotation,
)
from .classvalued import ClassValued, class_corrections, class_value_deltas, class_value_table
from .columns import PerColumn, inverse_transform
from .levelled import Levelled, float16_exact, pack_half, unpack_half
from .product import ProductQuantized
from .raw import Raw, raw_payload_bytes
from .scalar import ScalarGrid, dequantize

__all__ = [
    "ClassValued",
    "Classed",
    "JUMP_ENTRY_BYTES",
    "KINDS",
    "Levelled",
    "MAX_REFLECTED",
    "PerColumn",
    "ProductQuantized",
    "Raw",
    "RecordKind",
    "ScalarGrid",
    "SideArray",
    "SymbolDecoder",
    "TensorRecord",
    "class_corrections",
    "class_value_deltas",
    "class_value_table",
    "common_counts_dtype",
    "decoded_rotation",
    "dequantize",
    "float16_exact",
    "inverse_transform",
    "kind_of",
    "level_weights",
    "levels_of",
    "marks",
    "max_table_entries",
    "pack_half",
    "payload_bytes",
    "position_classes",
    "raw_payload_bytes",
    "register_record_kind",
    "side_arrays",
    "stored_rotation",
    "unpack_half",
]
