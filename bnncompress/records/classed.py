"""The classed per-column record kind (format version 4): entropy models per (block class, column).

Marked ``classes = C``. Like :mod:`.columns` (a transform, one set of values per column), but every
coding block carries a class (``block_class``, one byte per block) and is coded with that class's
D column models, so rows in different parts of a tensor (word vectors in frequency order: rare
words' coarse rows) get their own statistics. The models are stored compactly: column j's used
symbols are numbered ``0 .. widths[j] - 1`` (its values in ``grid``), and each (class, column) model
is ``widths[j]`` one-byte *levels* — level 0 is a symbol the class never uses, level v > 0 the weight
``2 ** ((v - 255) / 8)`` (exact in float64: :func:`level_weights`). A row decodes to
``y_hat @ R.T + mean`` as a per-column record does, with R stored as int8 entries and a float32
scale per column, or (format version 6) as D - 1 Householder reflectors, half the entries
(:func:`reflected_rotation`): :func:`decoded_rotation`.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

from ..blasthreads import qr_raw
from ..geometry import num_rows, row_size
from .base import RecordKind, SideArray, TensorRecord, damaged, plugin_kind, register_record_kind
from .columns import inverse_transform
from .scalar import MEAN, ROTATED

#: 2 ** (f / 8) for f = 0..7, as exact float64 constants (docs/FORMAT.md): level weights are these
#: mantissas times powers of two, so every platform builds the same probabilities.
_MANTISSAS = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p+0", "0x1.172b83c7d517bp+0", "0x1.306fe0a31b715p+0", "0x1.4bfdad5362a27p+0",
    "0x1.6a09e667f3bcdp+0", "0x1.8ace5422aa0dbp+0", "0x1.ae89f995ad3adp+0", "0x1.d5818dcfba487p+0",
)])  # fmt: skip
TOP_LEVEL = 255


def level_weights(levels: np.ndarray) -> np.ndarray:
    """Entropy-model weights of one-byte levels: 0 for level 0, ``2 ** ((v - 255) / 8)`` for level v.

    Example:
        >>> level_weights(np.array([0, 255, 247, 251])).tolist()
        [0.0, 1.0, 0.5, 0.7071067811865476]
    """
    e = np.asarray(levels, dtype=np.int64) - TOP_LEVEL
    return np.where(e > -TOP_LEVEL, np.ldexp(_MANTISSAS[e % 8], e // 8), 0.0)


def levels_of(counts: np.ndarray) -> np.ndarray:
    """The one-byte levels that describe symbol ``counts`` (last axis: one model): the most frequent
    symbol 255, the others ``round(255 + 8 log2(count / max))`` clipped to 1..255, unused ones 0.

    Example:
        >>> levels_of(np.array([100, 50, 0, 1])).tolist()
        [255, 247, 0, 202]
    """
    c = np.asarray(counts, dtype=np.float64)
    top = np.maximum(c.max(axis=-1, keepdims=True), 1.0)
    with np.errstate(divide="ignore"):
        level = np.rint(TOP_LEVEL + 8 * np.log2(c / top))
    return np.where(c > 0, np.clip(level, 1, TOP_LEVEL), 0).astype(np.uint8)


def decoded_rotation(side: dict[str, np.ndarray], d: int) -> np.ndarray | None:
    """The D x D float64 rotation a transform-coded record stores, or None: float16 ``rotation``
    (version 3), int8 ``rotation8`` times each column's float32 ``rotation_scale`` (exact in float64),
    or Householder ``reflectors`` with their ``reflector_scales`` (version 6: :func:`reflected_rotation`).

    Example:
        >>> decoded_rotation({"rotation8": np.array([127, 0, 0, -127], np.int8),
        ...                   "rotation_scale": np.array([0.5, 0.25], np.float32)}, 2).tolist()
        [[63.5, 0.0], [0.0, -31.75]]
    """
    if "rotation" in side:
        return np.asarray(side["rotation"], dtype=np.float64).reshape(d, d)
    if "rotation8" in side:
        return side["rotation8"].astype(np.float64).reshape(d, d) * side["rotation_scale"].astype(np.float64)
    if "reflectors" in side:  # built once per process (numpy: 2 ms at D = 100, 50 ms at 300): a read-only copy
        entries, scales = (
            np.ascontiguousarray(side[k], t) for k, t in (("reflectors", "i1"), ("reflector_scales", "<f4"))
        )
        return _reflected_once(entries.tobytes(), scales.tobytes(), d)
    return None


@functools.lru_cache(maxsize=8)
def _reflected_once(entries: bytes, scales: bytes, d: int) -> np.ndarray:
    rotation = reflected_rotation(np.frombuffer(entries, np.int8), np.frombuffer(scales, "<f4"), d)
    rotation.flags.writeable = False
    return rotation


def reflected_rotation(entries: np.ndarray, scales: np.ndarray, d: int) -> np.ndarray:
    """The orthogonal D x D matrix ``Q = H_0 H_1 ... H_(D-2)`` of D - 1 Householder reflections
    ``H_k = I - 2 u uᵀ / (uᵀ u)``, u zero above k, ``u_k = 1`` and below it the reflector's int8
    ``entries`` (reflector k's D - 1 - k, k ascending) times its float32 scale, in float64. Every sum
    runs in index order (``cumsum``), so every platform builds the same bits (docs/FORMAT.md).

    Example:
        >>> q = reflected_rotation(np.array([2], np.int8), np.array([0.5], np.float32), 2)  # u = (1, 1)
        >>> q.tolist()
        [[0.0, -1.0], [-1.0, 0.0]]
    """
    if d >= _KERNEL_WIDTH or "bnncompress._rows_kernels" in sys.modules:  # O(D³): numba's loops, same order
        from .._rows_kernels import reflect_into

        q = np.eye(d)
        # writable copies: a read-only buffer (the stored bytes) would be a second signature to compile
        reflect_into(np.array(entries, np.int8), np.array(scales, np.float32), q)
        return q
    qt = np.eye(d)  # Qᵀ, so that each sum over Q's rows runs along a contiguous row
    if d < 2:
        return qt
    lengths = np.arange(d - 1, 0, -1)  # reflector k has D - 1 - k entries
    u = np.zeros((d - 1, d))  # row k: u_k .. u_(D-1) of reflector k (1, then its entries x its scale), zero-padded
    u[:, 0] = 1.0
    below = np.arange(1, d)[None, :] <= lengths[:, None]
    u[:, 1:][below] = np.asarray(entries, np.float64) * np.repeat(np.asarray(scales, np.float64), lengths)
    c = (2.0 / np.cumsum(u * u, axis=1)[:, -1])[:, None] * u  # 2 / uᵀu (trailing zeros add nothing) times u_i
    for k in range(d - 2, -1, -1):  # Q[k:, k:] is all that H_(k+1) ... H_(D-2) have changed of I
        block = qt[k:, k:]
        dots = np.cumsum(block * u[k, : d - k], axis=1)[:, -1]  # uᵀ Q[k:, j], each sum over rows in order
        block -= dots[:, None] * c[k, : d - k]
    return np.ascontiguousarray(qt.T)


#: Row sizes from which :func:`reflected_rotation` imports numba for its kernel: below, numpy's loop is
#: faster than that import (about 0.6 s). numpy: 2 ms at 100, 50 ms at 300, 0.5 s at 600, 2.3 s at 1024;
#: numba: 0.4 ms at 100, 11 ms at 300, 0.5 s at 1024. Then the widest row stored as reflectors.
_KERNEL_WIDTH = 640
MAX_REFLECTED = 1024


def stored_rotation(vectors: np.ndarray, form: str) -> dict[str, np.ndarray]:
    """The side arrays that store a D x D rotation (orthonormal columns ``vectors``, any signs):
    ``"float16"`` (version 3), ``"int8"`` entries with a float32 scale per column (version 4; column
    k's largest entry is ±127 times its scale), or ``"reflectors"`` (version 6): the D - 1
    Householder reflectors that map ``vectors`` to the identity, up to column signs, each as int8
    entries (its largest ±127) and a float32 scale. :func:`decoded_rotation` gives the matrix they
    decode to, which the encoder then uses.

    Example:
        >>> stored_rotation(np.array([[0.5, -0.25], [0.25, 0.5]]), "int8")["rotation8"].tolist()
        [127, -64, 64, 127]
    """
    if form == "float16":
        return {"rotation": vectors.astype(np.float16).reshape(-1)}
    if form == "int8":
        scale = (np.abs(vectors).max(axis=0) / 127).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(vectors / scale.astype(np.float64)), -127, 127).astype(np.int8)
        return {"rotation8": q.reshape(-1), "rotation_scale": scale}
    d = len(vectors)
    packed = qr_raw(np.asarray(vectors, dtype=np.float64))[0]  # reflector k: row k after k (one BLAS thread)
    tails = [packed[k, k + 1 :] for k in range(d - 1)]
    scales = np.array([np.abs(t).max(initial=0.0) / 127 for t in tails], dtype=np.float32)
    scales[scales == 0] = 1.0
    entries = [np.clip(np.rint(t / np.float64(s)), -127, 127) for t, s in zip(tails, scales)]
    return {
        "reflectors": np.concatenate(entries).astype(np.int8) if d > 1 else np.zeros(0, np.int8),
        "reflector_scales": scales,
    }


def max_table_entries(rows: int, models: int) -> int:
    """The most (class, column, symbol) entries a classed tensor's coder tables may have: twice its
    weights, plus 65,536 (a reader refuses more: levels expand to the widest column's width).

    Example:
        >>> max_table_entries(1000, 10)
        85536
    """
    return 2 * rows * models + (1 << 16)


def level_layout(levels: np.ndarray, widths: np.ndarray, classes: int) -> np.ndarray:
    """The levels of a classed record as a (classes, D, widest) uint8 table (a column's symbols beyond
    its width: level 0), from the stored order: column after column, C runs of ``widths[j]`` bytes.

    Example:
        >>> level_layout(np.array([255, 0, 250, 9, 7, 255]), np.array([2, 1]), 2).tolist()
        [[[255, 0], [7, 0]], [[250, 9], [255, 0]]]
    """
    widths = np.asarray(widths, dtype=np.int64)
    table = np.zeros((classes, len(widths), int(widths.max(initial=1))), np.uint8)
    at = 0
    for j, k in enumerate(widths.tolist()):
        table[:, j, :k] = levels[at : at + classes * k].reshape(classes, k)
        at += classes * k
    return table


def column_values(grid: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's values (``grid``, column after column) as a (D, widest) table padded with zeros,
    and which entries are values.

    Example:
        >>> column_values(np.array([1.0, 2.0, 3.0], np.float32), np.array([2, 1]))[0].tolist()
        [[1.0, 2.0], [3.0, 0.0]]
    """
    widths = np.asarray(widths, dtype=np.int64)
    valid = np.arange(int(widths.max(initial=1)))[None, :] < widths[:, None]
    table = np.zeros(valid.shape, grid.dtype)
    table[valid] = grid
    return table, valid


def position_classes(num_blocks: int, classes: int, blocks: np.ndarray | None = None) -> np.ndarray:
    """Block classes by position: ``classes`` runs of consecutive blocks, as equal as can be (block b
    of ``num_blocks`` is in class ``b * classes // num_blocks``); of every block, or of ``blocks``.

    Example:
        >>> position_classes(7, 3).tolist(), position_classes(7, 3, np.array([6, 3])).tolist()
        ([0, 0, 0, 1, 1, 2, 2], [2, 1])
    """
    b = np.arange(num_blocks, dtype=np.int64) if blocks is None else np.asarray(blocks, dtype=np.int64)
    return (b * classes // max(num_blocks, 1)).astype(np.uint8)


@register_record_kind
class Classed(RecordKind):
    """D column models per block class, stored as levels; the transform maps the columns back."""

    name = "classed"
    mark = "classes"
    version = 4
    side_arrays = (  # in a group of their own: an archive's root then keeps at most 8 links (HDF5's compact
        SideArray("widths", "classed/widths", "<u2"),  # link storage; a 9th costs about 3 KB of heap and index)
        SideArray("levels", "classed/levels", "u1"),
        SideArray("block_class", "classed/block_classes", "u1"),
        SideArray("mean", "means", "<f4"),
        SideArray("rotation8", "classed/rotations8", "i1"),
        SideArray("rotation_scale", "classed/rotation_scales", "<f4"),
        SideArray("reflectors", "classed/reflectors", "i1", version=6),  # or the rotation as reflectors
        SideArray("reflector_scales", "classed/reflector_scales", "<f4", version=6),
    )

    def check_mark(self, value: Any, shape: tuple[int, ...], where: str) -> None:
        if not 1 <= value <= 255:
            raise damaged(where, f"'{self.mark}' {value} is not from 1 to 255")

    def checksum_fields(self, record: TensorRecord) -> list[Any]:
        return [record.marks[self.mark]]

    def num_classes(self, record: TensorRecord) -> int:
        """C, the sets of column models (the kind's mark)."""
        return int(record.marks[self.mark])

    def block_classes(self, record: TensorRecord) -> np.ndarray:
        return record.side["block_class"]

    def model_counts(self, record: TensorRecord) -> np.ndarray:
        """(classes, D, widest) float64 weights; a column's symbols beyond its width weigh 0."""
        return level_weights(level_layout(record.side["levels"], record.side["widths"], self.num_classes(record)))

    def dequantize(self, record: TensorRecord, symbols: np.ndarray) -> np.ndarray:
        widths = record.side["widths"].astype(np.int64)
        d = len(widths)
        rows = np.asarray(symbols, dtype=np.int64).reshape(-1, d)
        if rows.size and np.any(rows >= widths):
            raise ValueError("a decoded symbol has no value in its column")
        y_hat = record.grid[rows + np.r_[0, np.cumsum(widths)[:-1]]]
        return inverse_transform(y_hat, record.side["mean"], decoded_rotation(record.side, d)).reshape(-1)

    def value_table(self, record: TensorRecord) -> tuple | None:
        """As :func:`.columns.value_table`: (D, widest, 1) values, which symbols exist, the transform."""
        if plugin_kind(self):  # a plug-in's subclass decodes by its own dequantize
            return None
        vt, valid = column_values(record.grid.astype(np.float32), record.side["widths"])
        rotation = decoded_rotation(record.side, len(vt))
        mode = MEAN if rotation is None else ROTATED
        rt = np.eye(1) if rotation is None else np.ascontiguousarray(rotation.T)
        return vt[:, :, None], valid, mode, record.side["mean"].astype(np.float64), rt

    def validate(self, record: TensorRecord, where: str) -> None:
        """One width per column and its values in the grid; C levels per used symbol, every model with a
        nonzero level; one class below C per block; finite means (and rotation)."""
        classes, d = self.num_classes(record), row_size(record.shape)
        widths, levels, block_class = (record.side.get(k) for k in ("widths", "levels", "block_class"))
        if widths is None or len(widths) != d or np.any(widths == 0):
            raise damaged(where, f"the column widths are missing or not {d} nonzero numbers")
        if len(record.grid) != int(widths.sum(dtype=np.int64)):
            raise damaged(where, "grid and column widths disagree in size")
        if levels is None or len(levels) != classes * int(widths.sum(dtype=np.int64)):
            raise damaged(where, "the levels do not fit the classes and widths")
        if classes * d * int(widths.max()) > max_table_entries(num_rows(record.shape), d):
            raise damaged(where, "the entropy models' tables would outweigh the tensor")
        if np.any(self.model_counts(record).max(axis=2) == 0):
            raise damaged(where, "an entropy model has no symbol")
        if block_class is None or len(block_class) != record.num_blocks or np.any(block_class >= classes):
            raise damaged(where, f"the block classes are missing or not {record.num_blocks} classes below {classes}")
        if len(record.counts):
            raise damaged(where, "a classed tensor with counts")
        mean, entries, scale = (record.side.get(k) for k in ("mean", "rotation8", "rotation_scale"))
        if mean is None or len(mean) != d or not np.all(np.isfinite(mean)):
            raise damaged(where, "the transform's means are missing or invalid")
        if (entries is None) != (scale is None) or (
            entries is not None and (len(entries) != d * d or len(scale) != d or not np.all(np.isfinite(scale)))
        ):
            raise damaged(where, f"the transform's rotation is not {d} x {d} entries and {d} finite scales")
        reflectors, scales = record.side.get("reflectors"), record.side.get("reflector_scales")
        if (reflectors is None) != (scales is None) or (
            reflectors is not None
            and (d > MAX_REFLECTED or len(reflectors) != d * (d - 1) // 2 or len(scales) != d - 1)
        ):
            raise damaged(
                where,
                f"the transform's reflectors are not {d * (d - 1) // 2} entries and {d - 1} scales"
                f" (or rows are wider than {MAX_REFLECTED})",
            )
        if scales is not None and not np.all((scales >= 0) & (scales <= 1)):  # |u| <= 127: R stays finite
            raise damaged(where, "a reflector's scale is not from 0 to 1")
        if entries is not None and reflectors is not None:
            raise damaged(where, "the transform's rotation is stored twice (entries and reflectors)")
