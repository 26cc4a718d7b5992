"""What decoded values take: their numpy dtype (and the float16 restore), the memory a whole
tensor's decode needs, and the bytes a still-coded record holds."""

from __future__ import annotations

import os
import resource
from typing import Any

import numpy as np

from .errors import ArchiveError, OutOfRangeError
from .geometry import row_positions
from .records import TensorRecord
from .supports import apply_constraint, constrain

#: The numpy dtype a tensor of each stored dtype is returned in (numpy has no bfloat16).
NUMPY_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "bfloat16": np.float32}


def restore_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values in the tensor's original dtype; values beyond float16's range (possible
    only for grid points just past its largest finite value) are clipped, never made infinite.
    bfloat16, which numpy lacks, is float32 holding bfloat16 values: rounded to nearest even as
    ``torch``'s cast rounds, so that ``state_dict()`` and every numpy path agree.

    Example:
        >>> restore_dtype(np.array([1.0, 1.00390625, 1.01171875], np.float32), "bfloat16").tolist()
        [1.0, 1.0, 1.015625]
    """
    target = np.dtype(NUMPY_DTYPES[dtype])
    if target == np.float16:
        limit = float(np.finfo(np.float16).max)
        values = np.asarray(np.clip(values, -limit, limit))
    if dtype == "bfloat16":
        values = np.asarray(np.clip(np.asarray(values, np.float32), -_BFLOAT16_MAX, _BFLOAT16_MAX))  # (0-d too)
        bits = values.view(np.uint32)
        bits = (bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) & np.uint32(0xFFFF0000)  # (no NaN is decoded)
        return np.asarray(bits, np.uint32).view(np.float32)  # (a 0-d array's arithmetic gives a scalar)
    if values.dtype == np.float64 and target == np.float32:  # (a support's transform: exp(100) is clipped,
        limit = float(np.finfo(np.float32).max)  # as float16's are, not made infinite)
        values = np.asarray(np.clip(values, -limit, limit))  # (0-d too)
    values = values.astype(target, copy=False)
    if not np.isfinite(values).all():  # a damaged or forged archive's finite parameters decoding beyond range
        raise ArchiveError(f"values decode beyond the range of {dtype}; the archive is damaged")
    return values


_BFLOAT16_MAX = np.float32(3.3895313892515355e38)  # the largest finite bfloat16


def record_bytes(record: TensorRecord) -> int:
    """Bytes of the numpy arrays a record holds (coded words, jump table, counts, grid, side arrays)."""
    arrays = [record.words, record.offsets, record.counts, record.grid, *(record.side or {}).values()]
    return int(sum(np.asarray(a).nbytes for a in arrays))


def available_memory() -> float:
    """Bytes this process may use: the machine's memory, or a lower address-space limit (``ulimit -v``)."""
    try:
        available = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return float("inf")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return available if limit == resource.RLIM_INFINITY else min(available, float(limit))


def check_fits_in_memory(rec: TensorRecord, work_bytes_per_weight: int) -> None:
    """Refuse to decode a tensor whose declared size exceeds the memory this process may use:
    the machine's, or a lower address-space limit (``ulimit -v``). The decode holds ``work_bytes_per_weight``
    (symbols and values: 12; values alone: 4) besides its result."""
    needed = rec.num_weights * (work_bytes_per_weight + np.dtype(NUMPY_DTYPES[rec.dtype]).itemsize)
    available = available_memory()
    if needed > available:
        raise ArchiveError(
            f"tensor '{rec.name}' declares {rec.num_weights:,} weights ({needed / 2**30:.1f} GiB to decode), "
            f"more than the {available / 2**30:.1f} GiB of memory this process may use"
        )


def decode_whole(rec: TensorRecord, reader: Any) -> np.ndarray:
    """Tensor ``rec`` decoded whole by its row ``reader`` (:class:`~bnncompress.rowaccess.RowReader`):
    shaped, constrained to its recorded support (the posterior median) and in its original dtype."""
    check_fits_in_memory(rec, reader.work_bytes_per_weight())
    try:
        values = reader.all().reshape(rec.shape)
        if "support" in rec.params:  # stored unconstrained: the constrained posterior median
            values = constrain(rec.params["support"], values, f"tensor '{rec.name}'")
        return restore_dtype(values, rec.dtype)
    except MemoryError:
        raise ArchiveError(f"tensor '{rec.name}' does not fit in the memory left to decode it") from None


def served_values(rec: TensorRecord, stored: np.ndarray, positions: np.ndarray, constraint: Any = None) -> np.ndarray:
    """Stored (float32) rows of ``rec`` at ``positions`` as ``archive[name]`` has them: its support's elementwise
    ``constraint`` applied (bounds per element taken at those rows), its dtype restored."""
    if constraint is not None:
        stored = apply_constraint(constraint, stored, f"tensor '{rec.name}'", positions, tuple(rec.shape))
    return restore_dtype(stored, rec.dtype)


def select_rows(
    rec: TensorRecord, indices: Any, whole: np.ndarray | None, reader: Any, constraint: Any = None
) -> np.ndarray:
    """``archive[name][indices]`` by numpy's rules: from the ``whole`` tensor if it is given (decoded, or a
    support acting across rows), else decoding only the blocks that hold the rows (an elementwise
    ``constraint`` of its support applied to them)."""
    shape = tuple(rec.shape) if whole is None else whole.shape
    if not shape:
        raise OutOfRangeError(f"tensor '{rec.name}' is 0-dimensional; it has no rows; read it as archive['{rec.name}']")
    positions, index_shape = row_positions(indices, shape[0], rec.name)
    if whole is not None:
        values = whole[positions]
    else:
        values = reader.rows(positions).reshape((len(positions),) + tuple(shape[1:]))  # (bounds broadcast on it)
        values = served_values(rec, values, positions, constraint)
    values = values.reshape(index_shape + tuple(shape[1:]))
    return values[()] if values.ndim == 0 else values  # one value of a 1-D tensor: a numpy scalar
