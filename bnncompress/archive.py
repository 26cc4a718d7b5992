"""The archive container: one HDF5 file of plain arrays and attributes (docs/FORMAT.md).

This module only stores and validates what other stages produced; it knows nothing about
how symbols were chosen or how they are decoded. Nothing here can unpickle: every value is
a numeric array, a string, or a JSON document.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .coding import num_blocks, row_size
from .errors import ArchiveError
from .files import write_bytes
from .hdf5checks import GZIP, HDF5_MAGIC, plain_dataset
from .records import (
    MAX_BLOCK_ROWS,
    MAX_MANIFEST_BYTES,
    MAX_TENSORS,
    MAX_VOCAB_BYTES,
    MAX_WEIGHTS,
    ArchiveContents,
    TensorRecord,
    check_archive_limits,
    check_models,
    common_counts_dtype,
    no_gc,
)
from .vocabulary import validate_words

FORMAT_NAME = "bnncompress"
#: The newest version this code writes (the oldest that holds an archive's tensors, see
#: :func:`format_version`); it reads every version in READABLE_VERSIONS.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

_DTYPES = ("float16", "bfloat16", "float32", "float64")
_MAX_EXPANSION = 1024  # gzip-compressed datasets (manifest, vocab) expand at most this much
_GZIP = {"compression": "gzip", "compression_opts": 9, "shuffle": False}


def _fixed(text: str) -> np.bytes_:
    """A fixed-length string attribute: stored in the (checksummed) object header, not in
    HDF5's unchecksummed global heap, whose corruption can hang libhdf5."""
    return np.bytes_(text.encode("utf-8"))


def _gzip_bytes(f: Any, name: str, raw: bytes) -> None:
    data = np.frombuffer(raw, dtype=np.uint8)
    f.create_dataset(name, data=data, chunks=(max(1, len(data)),), **_GZIP)


def write_archive(
    path: str | os.PathLike,
    tensors: list[TensorRecord],
    vocab: list[str] | None,
    source: str,
    tool_version: str,
    force: bool = True,
) -> int:
    """Write an archive; returns the file size in bytes.

    The HDF5 file is built in memory (:func:`archive_image`) and validated as
    :func:`read_archive` would before a byte of it is written; then it is written to a
    temporary file, read back, and renamed over ``path`` (:func:`bnncompress.files.write_bytes`),
    so a write error never leaves a partial or corrupt archive at ``path``.
    """
    image = archive_image(tensors, vocab, source, tool_version)
    _read_image(image, Path(path))  # what is written must read back: checksums, sizes, manifest
    write_bytes(path, image, force=force)
    return len(image)


def archive_image(tensors: list[TensorRecord], vocab: list[str] | None, source: str, tool_version: str) -> bytes:
    """The bytes of an archive file holding ``tensors`` (unvalidated; see :func:`write_archive`)."""
    import h5py

    counts_dtype = common_counts_dtype(tensors)
    entries, starts = [], {"words": 0, "grid": 0, "counts": 0, "offsets": 0, "mean": 0, "rotation": 0}
    for t in tensors:
        t = dataclasses.replace(t, counts=t.counts.astype(counts_dtype))
        entry = {
            "name": t.name,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "method": t.method,
            "params": t.params,
            "coder": t.coder,
            "sha256": t.checksum(),
            "block_rows": t.block_rows,
        }
        if t.subvectors:
            entry["subvectors"] = t.subvectors
        if t.models:
            entry["models"] = t.models
        if t.raw:
            entry["raw"] = True
        for key in starts:
            array = getattr(t, key)
            if array is None:  # a transform's arrays are optional
                continue
            length = max(len(t.offsets) - 2, 0) if key == "offsets" else len(array)
            entry[key] = [starts[key], length]
            starts[key] += length
        entries.append(entry)
    manifest = {"source": source, "tool_version": tool_version, "tensors": entries, "vocab": None}
    vocab_raw = None
    if vocab is not None:
        vocab_raw = "\n".join(vocab).encode("utf-8")
        manifest["vocab"] = {"num_words": len(vocab), "sha256": hashlib.sha256(vocab_raw).hexdigest()}
    manifest_raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    check_archive_limits(tensors, len(manifest_raw), None if vocab_raw is None else len(vocab_raw))

    def concat(key: str, dtype: str) -> np.ndarray:
        arrays = [t.offsets[1:-1] if key == "offsets" else getattr(t, key) for t in tensors]
        parts = [np.asarray(a).astype(dtype) for a in arrays if a is not None]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    with h5py.File("archive.bnc", "w", driver="core", backing_store=False, libver=("v110", "v110")) as f:
        f.attrs["format"] = _fixed(FORMAT_NAME)
        f.attrs["format_version"] = np.int64(format_version(tensors))
        f.attrs["manifest_sha256"] = _fixed(hashlib.sha256(manifest_raw).hexdigest())
        _gzip_bytes(f, "manifest", manifest_raw)
        if vocab_raw is not None:
            _gzip_bytes(f, "vocab", vocab_raw)
        f.create_dataset("words", data=concat("words", "<u4"))
        f.create_dataset("grid", data=concat("grid", "<f4"))
        f.create_dataset("counts", data=concat("counts", counts_dtype.str))
        f.create_dataset("offsets", data=concat("offsets", "<u8"))
        if any(t.mean is not None for t in tensors):  # only archives with transform-coded tensors
            f.create_dataset("means", data=concat("mean", "<f4"))
        if any(t.rotation is not None for t in tensors):
            f.create_dataset("rotations", data=concat("rotation", "<f2"))
        f.flush()
        return f.id.get_file_image()


def format_version(tensors: list[TensorRecord]) -> int:
    """The oldest version that holds ``tensors``: 3 with per-column models, 2 with product quantization, else 1."""
    if any(t.models or t.raw for t in tensors):
        return 3
    return 2 if any(t.subvectors for t in tensors) else 1


def is_archive(path: str | os.PathLike) -> bool:
    """True if ``path`` is an HDF5 file whose root says it is a bnncompress archive (reads only that)."""
    import h5py

    try:
        with open(path, "rb") as fh:
            if fh.read(8) != HDF5_MAGIC:
                return False
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME.encode()
    except Exception:  # unreadable or damaged: not an archive we can recognise
        return False


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
    return _read_hdf5(lambda: h5py.File(path, "r"), path, file_bytes)


def _read_image(image: bytes, path: Path) -> ArchiveContents:
    """Validate an archive held in memory (the writer checks its own output this way)."""
    import h5py

    return _read_hdf5(lambda: h5py.File(io.BytesIO(image), "r"), path, len(image))


def _read_hdf5(opener: Any, path: Path, file_bytes: int) -> ArchiveContents:
    try:
        with no_gc(), opener() as f:
            return _read_open_file(f, path, file_bytes)
    except ArchiveError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, TypeError... on damage
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchiveError(
            f"archive '{path}' is corrupt or truncated ({detail}); re-create it with bnncompress pack"
        ) from None


def _root_attr(f: Any, key: str, where: str) -> Any:
    if key not in f.attrs:
        raise ArchiveError(f"{where}: attribute '{key}' is missing; the archive is damaged")
    return f.attrs[key]


def _dataset(f: Any, key: str, dtypes: tuple[str, ...], where: str, max_items: int) -> np.ndarray:
    ds = plain_dataset(f, key, f"{where}: dataset '{key}'", ArchiveError, GZIP if key in _GZIPPED else ())
    if ds is None:
        raise ArchiveError(f"{where}: dataset '{key}' is missing; the archive is damaged")
    if ds.ndim != 1 or ds.dtype.kind not in "uif" or ds.dtype.name not in dtypes:
        raise ArchiveError(f"{where}: dataset '{key}' should be 1-D {'/'.join(dtypes)}, found {ds.dtype} {ds.shape}")
    if ds.shape[0] > max_items:
        raise ArchiveError(f"{where}: dataset '{key}' declares {ds.shape[0]} items, more than the file can hold")
    return ds[()]


_GZIPPED = ("manifest", "vocab")


def _read_open_file(f: Any, path: Path, file_bytes: int) -> ArchiveContents:
    where = f"archive '{path}'"
    fmt = f.attrs.get("format")
    if not isinstance(fmt, bytes) or fmt != FORMAT_NAME.encode():
        raise ArchiveError(f"'{path}' is an HDF5 file but not a bnncompress archive")
    version = _root_attr(f, "format_version", where)
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool):
        raise ArchiveError(f"{where}: attribute 'format_version' should be an integer, found {version!r}")
    if int(version) not in READABLE_VERSIONS:
        raise ArchiveError(
            f"{where} has format version {int(version)}; this bnncompress reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} — upgrade bnncompress"
        )
    expected_sha = _root_attr(f, "manifest_sha256", where)
    raw = _dataset(f, "manifest", ("uint8",), where, min(_MAX_EXPANSION * file_bytes, MAX_MANIFEST_BYTES)).tobytes()
    if not isinstance(expected_sha, bytes) or hashlib.sha256(raw).hexdigest().encode() != expected_sha:
        raise ArchiveError(f"{where}: manifest checksum mismatch; the archive is corrupt")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError(f"{where}: the manifest is not valid JSON; the archive is damaged") from None
    _require(manifest, dict, "manifest", where)
    source = _require(manifest.get("source"), str, "manifest 'source'", where)
    tool_version = _require(manifest.get("tool_version"), str, "manifest 'tool_version'", where)
    entries = _require(manifest.get("tensors"), list, "manifest 'tensors'", where)
    if len(entries) > MAX_TENSORS:
        raise ArchiveError(f"{where}: {len(entries):,} tensors, more than an archive holds (2^22)")

    vocab, vocab_bytes = None, 0
    vinfo = manifest.get("vocab")
    if vinfo is not None:
        _require(vinfo, dict, "manifest 'vocab'", where)
        vraw = _dataset(f, "vocab", ("uint8",), where, min(_MAX_EXPANSION * file_bytes, MAX_VOCAB_BYTES)).tobytes()
        if hashlib.sha256(vraw).hexdigest() != vinfo.get("sha256"):
            raise ArchiveError(f"{where}: vocabulary checksum mismatch; the archive is corrupt")
        vocab = validate_words(vraw.decode("utf-8").split("\n"), f"{where}: the vocabulary", ArchiveError)
        if len(vocab) != vinfo.get("num_words"):
            raise ArchiveError(f"{where}: vocabulary word count does not match the manifest; the archive is damaged")
        vocab_bytes = int(f["vocab"].id.get_storage_size())
    elif "vocab" in f:
        raise ArchiveError(f"{where}: a vocabulary is stored but the manifest has none; the archive is damaged")

    arrays = {
        "words": _dataset(f, "words", ("uint32",), where, file_bytes),
        "grid": _dataset(f, "grid", ("float32",), where, file_bytes),
        "counts": _dataset(f, "counts", ("uint8", "uint16", "uint32", "uint64"), where, file_bytes),
        "offsets": _dataset(f, "offsets", ("uint64",), where, file_bytes),
    }
    if int(version) >= 3:  # optional datasets: absent when no tensor has a transform (or a rotation)
        for key, name, dtype in (("mean", "means", "float32"), ("rotation", "rotations", "float16")):
            present = f.get(name, getlink=True) is not None
            arrays[key] = _dataset(f, name, (dtype,), where, file_bytes) if present else np.zeros(0, dtype)
    for key in ("grid", "mean", "rotation"):  # once for all tensors: per tensor, it dominates many tiny ones
        if key in arrays and not np.isfinite(arrays[key]).all():
            raise ArchiveError(f"{where}: dataset '{key}' holds NaN or infinite values; the archive is damaged")
    tensors = [_read_tensor(entry, arrays, f"{where}, tensor {i}", int(version)) for i, entry in enumerate(entries)]
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ArchiveError(f"{where}: two tensors share a name; the archive is damaged")
    return ArchiveContents(path, tensors, vocab, source, tool_version, int(version), file_bytes, vocab_bytes)


def _require(value: Any, kind: type, what: str, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArchiveError(
            f"{where}: {what} should be {kind.__name__}, found {type(value).__name__}; the archive is damaged"
        )
    return value


def _read_tensor(entry: Any, arrays: dict[str, np.ndarray], where: str, version: int) -> TensorRecord:
    # Long on purpose: one check per manifest field, in the order of docs/FORMAT.md, each with
    # its own message; split up, the checks would only be harder to compare with the spec.
    _require(entry, dict, "entry", where)
    name = _require(entry.get("name"), str, "'name'", where)
    where = f"{where} ('{name}')"
    shape = _require(entry.get("shape"), list, "'shape'", where)
    if not all(type(s) is int and s >= 0 for s in shape):  # (bool is not)
        raise ArchiveError(f"{where}: 'shape' should be a list of non-negative integers, found {shape!r}")
    if math.prod(map(float, shape)) > MAX_WEIGHTS:
        raise ArchiveError(f"{where}: declared shape {tuple(shape)} is absurdly large; the archive is damaged")
    dtype = _require(entry.get("dtype"), str, "'dtype'", where)
    if dtype not in _DTYPES:
        raise ArchiveError(f"{where}: dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    slices = _slices(entry, arrays, where)
    block_rows = _require(entry.get("block_rows"), int, "'block_rows'", where)
    if not 1 <= block_rows <= MAX_BLOCK_ROWS:
        raise ArchiveError(f"{where}: 'block_rows' should be from 1 to 2^31, found {block_rows}")
    subvectors = _require(entry.get("subvectors", 0), int, "'subvectors'", where)
    if subvectors and (version < 2 or subvectors < 0 or len(shape) < 2 or row_size(tuple(shape)) % subvectors):
        raise ArchiveError(f"{where}: 'subvectors' {subvectors} does not divide the rows; the archive is damaged")
    models = _require(entry.get("models", 0), int, "'models'", where)
    if models and (version < 3 or subvectors or models != row_size(tuple(shape))):
        raise ArchiveError(f"{where}: 'models' {models} is not one per column; the archive is damaged")
    raw = _require(entry.get("raw", False), bool, "'raw'", where)
    if raw and (version < 3 or subvectors or models):
        raise ArchiveError(f"{where}: a raw tensor with models or sub-vectors; the archive is damaged")
    record = TensorRecord(
        name=name,
        shape=tuple(shape),
        dtype=dtype,
        method=_require(entry.get("method"), str, "'method'", where),
        params=_require(entry.get("params"), dict, "'params'", where),
        coder=_require(entry.get("coder"), str, "'coder'", where),
        block_rows=block_rows,
        subvectors=subvectors,
        models=models,
        raw=raw,
        **slices,
    )
    if record.checksum() != entry.get("sha256"):
        raise ArchiveError(f"{where}: checksum mismatch; the archive is corrupt")
    offsets = record.offsets  # the first (0) and the last (all words) are implied
    if len(offsets) != num_blocks(record.shape, block_rows) + 1 or (
        len(offsets) > 2 and np.any(offsets[1:] < offsets[:-1])
    ):
        raise ArchiveError(f"{where}: the block jump table does not fit the coded words; the archive is damaged")
    if raw:
        if len(record.grid) != record.num_weights or len(record.counts) or len(record.words):
            raise ArchiveError(f"{where}: a raw tensor must hold exactly its values; the archive is damaged")
        if record.mean is not None or record.rotation is not None:
            raise ArchiveError(f"{where}: a raw tensor with a transform; the archive is damaged")
        return record
    if models:
        check_models(record, where)
        return record
    values_per_symbol = row_size(record.shape) if subvectors else 1
    if len(record.grid) != len(record.counts) * values_per_symbol or (
        record.num_weights > 0 and len(record.counts) == 0
    ):
        raise ArchiveError(f"{where}: grid and entropy model disagree in size; the archive is damaged")
    if record.mean is not None or record.rotation is not None:
        raise ArchiveError(f"{where}: a transform without per-column models; the archive is damaged")
    if int(record.counts.sum(dtype=np.uint64)) != record.num_symbols:
        raise ArchiveError(f"{where}: entropy model counts do not add up to the tensor size; the archive is damaged")
    return record


def _slices(entry: dict, arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray | None]:
    """The tensor's slice of every dataset (a transform's ``mean`` and ``rotation`` may be absent)."""
    slices: dict[str, np.ndarray | None] = {}
    for key, arr in arrays.items():
        span = entry.get(key)
        if span is None and key in ("mean", "rotation"):
            slices[key] = None
            continue
        ok = type(span) is list and len(span) == 2 and type(span[0]) is type(span[1]) is int  # (not bool)
        if not ok or span[0] < 0 or span[1] < 0 or span[0] + span[1] > len(arr):
            raise ArchiveError(f"{where}: '{key}' span {span!r} lies outside the stored data; the archive is damaged")
        slices[key] = arr[span[0] : span[0] + span[1]]
    stored = slices["offsets"]
    offsets = np.empty(len(stored) + 2, np.uint64)
    offsets[0], offsets[1:-1], offsets[-1] = 0, stored, len(slices["words"])
    slices["offsets"] = offsets
    return slices
