"""The archive container: one HDF5 file of plain arrays and attributes (docs/FORMAT.md).

This module only stores and validates what other stages produced; it knows nothing about
how symbols were chosen or how they are decoded. Nothing here can unpickle: every value is
a numeric array, a string, or a JSON document.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArchiveError
from .files import atomic_output

FORMAT_NAME = "bnncompress"
#: The version this code writes; it reads every version in READABLE_VERSIONS.
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

_DTYPES = ("float16", "bfloat16", "float32", "float64")
_MAX_WEIGHTS = 1 << 40  # refuse absurd declared sizes before allocating anything


@dataclass(frozen=True)
class TensorRecord:
    """Everything the archive stores for one tensor.

    ``grid[symbols]`` reshaped to ``shape`` is the point estimate, where ``symbols`` are the
    ``num_weights`` values decoded from ``words`` with the categorical model ``counts``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    method: str
    params: dict[str, Any]
    coder: str
    grid: np.ndarray
    counts: np.ndarray
    words: np.ndarray

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def payload_bytes(self) -> int:
        """Coded words + entropy-model table + grid: everything needed to rebuild the values."""
        return int(self.words.nbytes + self.counts.nbytes + self.grid.nbytes)

    def checksum(self) -> str:
        """SHA-256 over the metadata and the three payload arrays."""
        h = hashlib.sha256()
        header = json.dumps(
            [self.name, list(self.shape), self.dtype, self.method, self.params, self.coder, str(self.counts.dtype)],
            sort_keys=True,
        )
        h.update(header.encode())
        for arr in (
            self.words.astype("<u4"),
            self.counts.astype(self.counts.dtype.newbyteorder("<")),
            self.grid.astype("<f4"),
        ):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


@dataclass
class ArchiveContents:
    """A validated archive as read from disk (still entropy-coded)."""

    path: Path
    tensors: list[TensorRecord]
    vocab: list[str] | None
    source: str
    tool_version: str
    format_version: int
    file_bytes: int
    vocab_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def payload_bytes(self) -> int:
        return sum(t.payload_bytes for t in self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.num_weights for t in self.tensors)


def write_archive(
    path: str | os.PathLike,
    tensors: list[TensorRecord],
    vocab: list[str] | None,
    source: str,
    tool_version: str,
) -> int:
    """Write an archive atomically (temporary file + rename); returns the file size in bytes."""
    import h5py

    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["tool_version"] = tool_version
            f.attrs["source"] = source
            f.attrs["num_tensors"] = np.int64(len(tensors))
            f.attrs["has_vocab"] = np.int64(vocab is not None)
            if vocab is not None:
                raw = np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8)
                ds = f.create_dataset(
                    "vocab", data=raw, chunks=(max(1, len(raw)),), compression="gzip", compression_opts=9
                )
                ds.attrs["num_words"] = np.int64(len(vocab))
                ds.attrs["sha256"] = hashlib.sha256(raw.tobytes()).hexdigest()
            group = f.create_group("tensors")
            for i, t in enumerate(tensors):
                g = group.create_group(f"{i:04d}")
                g.attrs["name"] = t.name
                g.attrs["shape"] = np.asarray(t.shape, dtype=np.int64)
                g.attrs["dtype"] = t.dtype
                g.attrs["method"] = t.method
                g.attrs["params"] = json.dumps(t.params, sort_keys=True)
                g.attrs["coder"] = t.coder
                g.attrs["sha256"] = t.checksum()
                g.create_dataset("grid", data=t.grid.astype("<f4"))
                g.create_dataset("counts", data=t.counts)
                g.create_dataset("words", data=t.words.astype("<u4"))
    return Path(path).stat().st_size


def read_archive(path: str | os.PathLike) -> ArchiveContents:
    """Open, validate and checksum an archive; raise :class:`ArchiveError` on any defect."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise ArchiveError(f"archive '{path}' does not exist")
    if not path.is_file():
        raise ArchiveError(f"'{path}' is not a file; pass a .bnc archive")
    with open(path, "rb") as fh:
        if fh.read(8) != HDF5_MAGIC:
            raise ArchiveError(f"'{path}' is not a bnncompress archive (not an HDF5 file)")
    file_bytes = path.stat().st_size
    try:
        with h5py.File(path, "r") as f:
            return _read_open_file(f, path, file_bytes)
    except ArchiveError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, TypeError... on damage
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchiveError(
            f"archive '{path}' is corrupt or truncated ({detail}); re-create it with bnncompress pack"
        ) from None


def _attr(obj: Any, key: str, kind: type, where: str) -> Any:
    if key not in obj.attrs:
        raise ArchiveError(f"{where}: attribute '{key}' is missing; the archive is damaged")
    value = obj.attrs[key]
    if kind is str:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "strict")
        if not isinstance(value, str):
            raise ArchiveError(f"{where}: attribute '{key}' should be a string, found {type(value).__name__}")
        return value
    if kind is int:
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
            raise ArchiveError(f"{where}: attribute '{key}' should be an integer, found {value!r}")
        return int(value)
    raise TypeError(kind)  # pragma: no cover


def _dataset(group: Any, key: str, dtypes: tuple[str, ...], where: str, max_items: int) -> np.ndarray:
    import h5py

    ds = group.get(key)
    if not isinstance(ds, h5py.Dataset):
        raise ArchiveError(f"{where}: dataset '{key}' is missing; the archive is damaged")
    if ds.ndim != 1 or ds.dtype.kind not in "uif" or ds.dtype.name not in dtypes:
        raise ArchiveError(f"{where}: dataset '{key}' should be 1-D {'/'.join(dtypes)}, found {ds.dtype} {ds.shape}")
    if ds.shape[0] > max_items:
        raise ArchiveError(f"{where}: dataset '{key}' declares {ds.shape[0]} items, more than the file can hold")
    return ds[()]


def _read_open_file(f: Any, path: Path, file_bytes: int) -> ArchiveContents:
    where = f"archive '{path}'"
    if f.attrs.get("format") not in (FORMAT_NAME, FORMAT_NAME.encode()):
        raise ArchiveError(f"'{path}' is an HDF5 file but not a bnncompress archive")
    version = _attr(f, "format_version", int, where)
    if version not in READABLE_VERSIONS:
        raise ArchiveError(
            f"{where} has format version {version}; this bnncompress reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} — upgrade bnncompress"
        )
    source = _attr(f, "source", str, where)
    tool_version = _attr(f, "tool_version", str, where)
    max_items = file_bytes  # no stored array can have more elements than the file has bytes

    num_tensors = _attr(f, "num_tensors", int, where)
    has_vocab = _attr(f, "has_vocab", int, where)
    if has_vocab not in (0, 1) or has_vocab != ("vocab" in f):
        raise ArchiveError(
            f"{where}: the vocabulary is {'missing' if has_vocab else 'unexpected'}; the archive is damaged"
        )
    vocab = None
    vocab_bytes = 0
    if has_vocab:
        vw = f"{where}, vocab"
        raw = _dataset(f, "vocab", ("uint8",), vw, 64 * max_items)
        if hashlib.sha256(raw.tobytes()).hexdigest() != _attr(f["vocab"], "sha256", str, vw):
            raise ArchiveError(f"{vw}: checksum mismatch; the archive is corrupt")
        vocab = raw.tobytes().decode("utf-8").split("\n")
        if len(vocab) != _attr(f["vocab"], "num_words", int, vw):
            raise ArchiveError(f"{vw}: word count does not match its header; the archive is corrupt")
        vocab_bytes = int(f["vocab"].id.get_storage_size())

    tensors = []
    group = f.get("tensors")
    if group is None:
        raise ArchiveError(f"{where}: group 'tensors' is missing; the archive is damaged")
    keys = sorted(group.keys())
    if keys != [f"{i:04d}" for i in range(num_tensors)]:
        raise ArchiveError(
            f"{where}: expected {num_tensors} tensor groups numbered from 0000, found {len(keys)}; "
            "the archive is damaged"
        )
    for key in keys:
        tensors.append(_read_tensor(group[key], f"{where}, tensor {key}", max_items))
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ArchiveError(f"{where}: two tensors share a name; the archive is damaged")
    return ArchiveContents(path, tensors, vocab, source, tool_version, version, file_bytes, vocab_bytes)


def _read_tensor(g: Any, where: str, max_items: int) -> TensorRecord:
    name = _attr(g, "name", str, where)
    where = f"{where} ('{name}')"
    shape_attr = g.attrs.get("shape")
    shape_arr = np.asarray(shape_attr) if shape_attr is not None else None
    if shape_arr is None or shape_arr.ndim != 1 or shape_arr.dtype.kind not in "iu" or (shape_arr < 0).any():
        raise ArchiveError(
            f"{where}: attribute 'shape' should be a list of non-negative integers, found {shape_attr!r}"
        )
    shape = tuple(int(s) for s in shape_arr)
    if np.prod([float(s) for s in shape]) > _MAX_WEIGHTS:
        raise ArchiveError(f"{where}: declared shape {shape} is absurdly large; the archive is damaged")
    dtype = _attr(g, "dtype", str, where)
    if dtype not in _DTYPES:
        raise ArchiveError(f"{where}: dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    try:
        params = json.loads(_attr(g, "params", str, where))
    except json.JSONDecodeError:
        raise ArchiveError(f"{where}: attribute 'params' is not valid JSON; the archive is damaged") from None
    record = TensorRecord(
        name=name,
        shape=shape,
        dtype=dtype,
        method=_attr(g, "method", str, where),
        params=params,
        coder=_attr(g, "coder", str, where),
        grid=_dataset(g, "grid", ("float32",), where, max_items),
        counts=_dataset(g, "counts", ("uint32", "uint64"), where, max_items),
        words=_dataset(g, "words", ("uint32",), where, max_items),
    )
    if record.checksum() != _attr(g, "sha256", str, where):
        raise ArchiveError(f"{where}: checksum mismatch; the archive is corrupt")
    if len(record.grid) != len(record.counts) or (record.num_weights > 0 and len(record.counts) == 0):
        raise ArchiveError(f"{where}: grid and entropy model disagree in size; the archive is damaged")
    if int(record.counts.sum(dtype=np.uint64)) != record.num_weights:
        raise ArchiveError(f"{where}: entropy model counts do not add up to the tensor size; the archive is damaged")
    return record
