"""The archive container: one HDF5 file of plain arrays and attributes (docs/FORMAT.md).

This module only stores and validates what other stages produced; it knows nothing about how symbols
were chosen or decoded. Nothing here can unpickle: every value is a numeric array, a string, or JSON.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .contents import ArchiveContents, no_gc
from .errors import ArchiveError
from .files import write_bytes
from .gzipped import StoredVocabulary, write_gzipped
from .hdf5checks import GZIP, HDF5_MAGIC, image_hint, open_unreplaced, plain_dataset, scalar_attribute
from .inputfiles import open_nonblocking
from .manifest import KnownFields, check_vocab_count, parse_manifest, refuse_unknown_fields
from .manifest import require as _require
from .records import RecordKind, TensorRecord, common_counts_dtype, kind_of, marks, side_arrays
from .supports import check_bound_shapes
from .vocabulary import validate_words

FORMAT_NAME = "bnncompress"
#: The newest version written (the oldest that holds the tensors: :func:`format_version`); READABLE_VERSIONS are read.
FORMAT_VERSION = 7
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7)

#: The limits of the format, checked by the writer and the reader alike (whatever one writes, the other reads).
MAX_WEIGHTS = 1 << 40  # per tensor
MAX_BLOCK_ROWS = 1 << 31
MAX_TENSORS = 1 << 22
MAX_MANIFEST_BYTES = 1 << 28
MAX_VOCAB_BYTES = 1 << 34

_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: The datasets every tensor has a slice of, and their stored types (a kind's side arrays follow).
_COMMON = {"words": "<u4", "grid": "<f4", "counts": None, "offsets": "<u8"}
_FIELDS = {"name", "shape", "dtype", "method", "params", "coder", "block_rows", "sha256", *_COMMON}
_MAX_EXPANSION = 1024  # gzip-compressed datasets (manifest, vocab) expand at most this much
Vocabulary = list[str] | StoredVocabulary | None  # the words labelling rows, as given or as stored (made once)


def _fixed(text: str) -> np.bytes_:
    """A fixed-length string attribute: in the checksummed object header, not HDF5's global heap (hangs if damaged)."""
    return np.bytes_(text.encode("utf-8"))


def write_archive(
    path: str | os.PathLike,
    tensors: list[TensorRecord],
    vocab: Vocabulary,
    source: str,
    tool_version: str,
    force: bool = True,
) -> ArchiveContents:
    """Write an archive; returns it as read back (its ``file_bytes``, ``vocab_bytes``, ...).

    The HDF5 file is built in memory (:func:`archive_image`) and validated as :func:`read_archive` would before a
    byte of it is written; then it is written to a temporary file, read back, and renamed over ``path``
    (:func:`bnncompress.files.write_bytes`), so a write error never leaves a partial or corrupt archive at ``path``.
    """
    image = archive_image(tensors, vocab, source, tool_version)
    written = _read_image(image, Path(path))  # what is written must read back: checksums, sizes, manifest
    write_bytes(path, image, force=force)
    return written


def archive_image(tensors: list[TensorRecord], vocab: Vocabulary, source: str, tool_version: str) -> bytes:
    """The bytes of an archive file holding ``tensors`` (unvalidated; see :func:`write_archive`)."""
    import h5py

    counts_dtype = common_counts_dtype(tensors)
    tensors = [t.with_counts_dtype(counts_dtype) for t in tensors]
    stored = [side for side, _ in side_arrays() if any(side.name in t.side for t in tensors)]
    starts = dict.fromkeys([*_COMMON, *(s.name for s in stored)], 0)
    entries = []
    for t in tensors:
        entry = {
            "name": t.name,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "method": t.method,
            "params": t.params,
            "coder": t.coder,
            "sha256": t.checksum(),
            "block_rows": t.block_rows,
            **t.marks,
        }
        for key, array in _stored_arrays(t):
            entry[key] = [starts[key], len(array)]
            starts[key] += len(array)
        entries.append(entry)
    stored_vocab = vocab if vocab is None or isinstance(vocab, StoredVocabulary) else StoredVocabulary.of(vocab)
    about = None if stored_vocab is None else {"num_words": stored_vocab.num_words, "sha256": stored_vocab.sha256}
    manifest = {"source": source, "tool_version": tool_version, "tensors": entries, "vocab": about}
    manifest_raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    check_archive_limits(tensors, len(manifest_raw), None if stored_vocab is None else len(stored_vocab.raw))
    stored_arrays = [dict(_stored_arrays(t)) for t in tensors]

    def concat(key: str, dtype: str) -> np.ndarray:
        parts = [np.asarray(arrays[key]).astype(dtype) for arrays in stored_arrays if key in arrays]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    name = f"archive-{uuid.uuid4().hex}.bnc"  # (HDF5 refuses to make a core file of a name another thread has open)
    with h5py.File(name, "w", driver="core", backing_store=False, libver=("v110", "v110")) as f:
        f.attrs["format"] = _fixed(FORMAT_NAME)
        f.attrs["format_version"] = np.int64(format_version(tensors))
        f.attrs["manifest_sha256"] = _fixed(hashlib.sha256(manifest_raw).hexdigest())
        write_gzipped(f, "manifest", manifest_raw)
        if stored_vocab is not None:
            write_gzipped(f, "vocab", stored_vocab.raw, stored_vocab.chunk())
        for key, dtype in _COMMON.items():
            f.create_dataset(key, data=concat(key, dtype or counts_dtype.str))
        for side in stored:  # only archives with a kind that has them
            f.create_dataset(side.dataset, data=concat(side.name, side.dtype))
        f.flush()
        return f.id.get_file_image()


def _stored_arrays(t: TensorRecord) -> list[tuple[str, np.ndarray]]:
    """What a tensor stores in each dataset: the common arrays (its jump table without the implied
    first and last offsets), then its kind's side arrays."""
    common = [("words", t.words), ("grid", t.grid), ("counts", t.counts), ("offsets", t.offsets[1:-1])]
    return common + [(s.name, t.side[s.name]) for s in t.kind.side_arrays if s.name in t.side]


def check_archive_limits(tensors: list[TensorRecord], manifest_bytes: int, vocab_bytes: int | None) -> None:
    """Refuse to write what the reader would refuse (the MAX_* limits above)."""
    if len(tensors) > MAX_TENSORS:
        raise ArchiveError(f"an archive holds at most 2^22 tensors, not {len(tensors):,}; pack them in several")
    if manifest_bytes > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"the manifest of {len(tensors):,} tensors exceeds 1 GiB; pack them in several archives")
    if vocab_bytes is not None and vocab_bytes > MAX_VOCAB_BYTES:
        raise ArchiveError("the vocabulary exceeds 16 GiB; it cannot be stored")
    for t in tensors:
        if t.num_weights > MAX_WEIGHTS or not 1 <= t.block_rows <= MAX_BLOCK_ROWS:
            raise ArchiveError(f"tensor '{t.name}' is larger than an archive holds (2^40 weights)")


def format_version(tensors: list[TensorRecord]) -> int:
    """The oldest version that holds ``tensors``: the newest version among their kinds and the side arrays
    they store (1, the scalar grid, for none)."""
    stored = [version for side, version in side_arrays() if any(side.name in t.side for t in tensors)]
    return max([t.kind.version for t in tensors] + stored + [1])


def is_archive(path: str | os.PathLike) -> bool:
    """True if ``path`` is an HDF5 file whose root says it is a bnncompress archive (reads only that)."""
    import h5py

    try:
        with open(path, "rb") as fh:
            if fh.read(8) != HDF5_MAGIC:
                return False
        with h5py.File(path, "r") as f:
            return scalar_attribute(f.attrs, "format") in (FORMAT_NAME.encode(), FORMAT_NAME)  # (str: read_archive)
    except Exception:  # unreadable or damaged: not an archive we can recognise
        return False


def read_archive(path: str | os.PathLike) -> ArchiveContents:
    """Open, validate and checksum an archive; raise :class:`ArchiveError` on any defect."""
    if not os.fspath(path):  # (Path("") is the working directory)
        raise ArchiveError("the archive path is empty; pass the path of a .bnc archive")
    path = Path(path)
    location = os.path.abspath(path)  # now: the working directory may change before rows are served
    if not path.exists():
        raise ArchiveError(f"archive '{path}' does not exist")
    if not path.is_file():
        raise ArchiveError(f"'{path}' is not a file; pass a .bnc archive")
    for attempt in range(3):  # an archive renamed over the path while it was opened is opened again
        try:
            fh = open_nonblocking(path)
        except OSError as exc:
            raise ArchiveError(f"cannot read archive '{path}' ({exc.strerror})") from None
        with fh:  # (held open: its inode number is not given to a file saved over the path meanwhile)
            opened = os.fstat(fh.fileno())
            if fh.read(8) != HDF5_MAGIC:
                raise ArchiveError(f"'{path}' is not a bnncompress archive (no HDF5 signature at its start)")
            try:
                contents = _read_hdf5(functools.partial(open_unreplaced, path, opened, _Replaced), path, opened.st_size)
                contents.location = location
                return contents
            except _Replaced:
                if attempt == 2:
                    raise ArchiveError(
                        f"archive '{path}' is being replaced again and again; open it once it is not"
                    ) from None
    raise AssertionError("unreachable")  # pragma: no cover


class _Replaced(ArchiveError):
    """Another file was renamed over the archive's path between its first and second opening."""


def _read_image(image: bytes, path: Path) -> ArchiveContents:
    """Validate an archive held in memory (the writer checks its own output this way)."""
    import h5py

    try:
        return _read_hdf5(lambda: h5py.File(io.BytesIO(image), "r"), path, len(image))
    except ArchiveError as exc:  # nothing was written, a file at path is intact: not "the archive is damaged"
        said = re.sub("; (the archive is (damaged|corrupt)|re-create it with bnncompress pack)", "", str(exc))
        raise ArchiveError(f"nothing written: the archive made for it is invalid ({said}{image_hint(said)})") from None


def _read_hdf5(opener: Any, path: Path, file_bytes: int) -> ArchiveContents:
    try:
        with no_gc(), opener() as f:
            return _read_open_file(f, path, file_bytes)
    except ArchiveError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, TypeError... on damage
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "unable to lock file" in detail:  # another process has it open for writing
            raise ArchiveError(
                f"archive '{path}' is locked by a process writing to it (HDF5 file locking); close it there, "
                "or set HDF5_USE_FILE_LOCKING=FALSE to read it anyway"
            ) from None
        raise ArchiveError(
            f"archive '{path}' is corrupt or truncated ({detail}); re-create it with bnncompress pack"
        ) from None


def _root_attr(f: Any, key: str, where: str, required: bool = True) -> Any:
    if key not in f.attrs and required:
        raise ArchiveError(f"{where}: attribute '{key}' is missing; the archive is damaged")
    value = scalar_attribute(f.attrs, key)  # (format and manifest_sha256: fixed-length byte strings, read as bytes)
    if value is None and key in f.attrs and key != "format":  # (an array is not read: no format attribute is one)
        raise ArchiveError(f"{where}: attribute '{key}' is not one value; the archive is damaged")
    if isinstance(value, str) and key in ("format", "manifest_sha256"):  # h5py rewrites str and bytes as str
        raise ArchiveError(
            f"{where}: attribute '{key}' is a variable-length string (rewritten with h5py?); "
            f"the format stores it as a fixed-length byte string: np.bytes_({value.encode()!r:.80})"
        )
    return value


def _dataset(f: Any, key: str, dtypes: tuple[str, ...], where: str, max_items: int) -> np.ndarray:
    ds = plain_dataset(f, key, f"{where}: dataset '{key}'", ArchiveError, GZIP if key in ("manifest", "vocab") else ())
    if ds is None:
        raise ArchiveError(f"{where}: dataset '{key}' is missing; the archive is damaged")
    if ds.ndim != 1 or ds.dtype.kind not in "uif" or ds.dtype.name not in dtypes:
        raise ArchiveError(f"{where}: dataset '{key}' should be 1-D {'/'.join(dtypes)}, found {ds.dtype} {ds.shape}")
    if ds.shape[0] > max_items:
        raise ArchiveError(f"{where}: dataset '{key}' declares {ds.shape[0]} items, more than the file can hold")
    return ds[()]


def _read_open_file(f: Any, path: Path, file_bytes: int) -> ArchiveContents:
    where = f"archive '{path}'"
    fmt = _root_attr(f, "format", where, required=False)
    if not isinstance(fmt, bytes) or fmt != FORMAT_NAME.encode():
        raise ArchiveError(f"'{path}' is an HDF5 file but not a bnncompress archive")
    version = _root_attr(f, "format_version", where)
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool):
        raise ArchiveError(f"{where}: attribute 'format_version' should be an integer, found {version!r}")
    if int(version) not in READABLE_VERSIONS:  # (below the first version: none such was ever written)
        fix = "upgrade bnncompress" if int(version) > max(READABLE_VERSIONS) else "the archive is damaged"
        known = f"versions {READABLE_VERSIONS[0]} to {READABLE_VERSIONS[-1]}"
        raise ArchiveError(f"{where} has format version {int(version)}; this bnncompress reads {known} — {fix}")
    expected_sha = _root_attr(f, "manifest_sha256", where)
    raw = _dataset(f, "manifest", ("uint8",), where, min(_MAX_EXPANSION * file_bytes, MAX_MANIFEST_BYTES)).tobytes()
    if not isinstance(expected_sha, bytes) or hashlib.sha256(raw).hexdigest().encode() != expected_sha:
        raise ArchiveError(f"{where}: manifest checksum mismatch; the archive is corrupt")
    manifest = parse_manifest(raw, where, file_bytes)
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
        check_vocab_count(vraw, vinfo.get("num_words"), entries, where, file_bytes)
        vocab = validate_words(vraw.decode("utf-8").split("\n"), f"{where}: the vocabulary", ArchiveError)
        vocab_bytes = int(f["vocab"].id.get_storage_size())
    elif "vocab" in f:
        raise ArchiveError(f"{where}: a vocabulary is stored but the manifest has none; the archive is damaged")

    arrays = {
        "words": _dataset(f, "words", ("uint32",), where, file_bytes),
        "grid": _dataset(f, "grid", ("float32",), where, file_bytes),
        "counts": _dataset(f, "counts", ("uint8", "uint16", "uint32", "uint64"), where, file_bytes),
        "offsets": _dataset(f, "offsets", ("uint64",), where, file_bytes),
    }
    for side, since in side_arrays():  # optional datasets: absent when no tensor of their kind has one
        if int(version) >= since:
            dtype = np.dtype(side.dtype)
            present = plain_dataset(f, side.dataset, f"{where}: dataset '{side.dataset}'", ArchiveError) is not None
            array = _dataset(f, side.dataset, (dtype.name,), where, file_bytes) if present else np.zeros(0, dtype)
            arrays[side.name] = array
    for key, array in arrays.items():  # once for all tensors: per tensor, it dominates many tiny ones
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ArchiveError(f"{where}: dataset '{key}' holds NaN or infinite values; the archive is damaged")
    known = KnownFields.of({*_FIELDS, *marks()}, side_arrays(), int(version))  # (once: not per tensor)
    tensors = [_read_tensor(e, arrays, f"{where}, tensor {i}", known) for i, e in enumerate(entries)]
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ArchiveError(f"{where}: two tensors share a name; the archive is damaged")
    return ArchiveContents(path, tensors, vocab, source, tool_version, int(version), file_bytes, vocab_bytes)


def _read_tensor(entry: Any, arrays: dict[str, np.ndarray], where: str, known: KnownFields) -> TensorRecord:
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
    block_rows = _require(entry.get("block_rows"), int, "'block_rows'", where)
    if not 1 <= block_rows <= MAX_BLOCK_ROWS:
        raise ArchiveError(f"{where}: 'block_rows' should be from 1 to 2^31, found {block_rows}")
    kind, found = _kind(entry, tuple(shape), where, known)
    record = TensorRecord(
        name=name,
        shape=tuple(shape),
        dtype=dtype,
        method=_require(entry.get("method"), str, "'method'", where),
        params=_require(entry.get("params"), dict, "'params'", where),
        coder=_require(entry.get("coder"), str, "'coder'", where),
        block_rows=block_rows,
        **found,
        **_slices(entry, arrays, kind, where),
    )
    if record.checksum() != entry.get("sha256"):
        raise ArchiveError(f"{where}: checksum mismatch; the archive is corrupt")
    offsets = record.offsets  # the first (0) and the last (all words) are implied
    if len(offsets) != record.num_blocks + 1 or (len(offsets) > 2 and np.any(offsets[1:] < offsets[:-1])):
        raise ArchiveError(f"{where}: the block jump table does not fit the coded words; the archive is damaged")
    kind.validate(record, where)
    check_bound_shapes(record.params.get("support"), record.shape, where)
    if len(record.words) and np.shape(kind.model_counts(record))[-1] <= 1:  # one symbol needs no words: none is read
        raise ArchiveError(f"{where}: coded words for one-value models; the archive is damaged")
    return record


def _kind(entry: dict, shape: tuple[int, ...], where: str, known: KnownFields) -> tuple[RecordKind, dict]:
    """The tensor's kind, from the one mark (manifest field) it may carry, and that mark."""
    refuse_unknown_fields(entry, known, where)  # (its fields, marks and side arrays: every kind's)
    found = {}
    for mark, kind in marks().items():
        value = _require(entry.get(mark, kind.absent), kind.mark_type, f"'{mark}'", where)
        if value != kind.absent:
            if (version := known.version) < kind.version:
                raise ArchiveError(f"{where}: '{mark}' is not part of format version {version}; the archive is damaged")
            kind.check_mark(value, shape, where)
            found[mark] = value
    if len(found) > 1:
        raise ArchiveError(f"{where}: a tensor marked as {' and '.join(found)}, several kinds; the archive is damaged")
    return kind_of(found), found


def _slices(entry: dict, arrays: dict[str, np.ndarray], kind: RecordKind, where: str) -> dict[str, np.ndarray]:
    """The tensor's slice of every common dataset and of its kind's side arrays (which may be absent)."""
    slices: dict[str, np.ndarray] = {}
    own = {side.name for side in kind.side_arrays}
    for key, arr in arrays.items():
        span = entry.get(key)
        if key not in _COMMON:
            if span is None:
                continue
            if key not in own:
                raise ArchiveError(f"{where}: a {kind.name} tensor with a '{key}' array; the archive is damaged")
        ok = type(span) is list and len(span) == 2 and type(span[0]) is type(span[1]) is int  # (not bool)
        if not ok or span[0] < 0 or span[1] < 0 or span[0] + span[1] > len(arr):
            raise ArchiveError(f"{where}: '{key}' span {span!r} lies outside the stored data; the archive is damaged")
        slices[key] = arr[span[0] : span[0] + span[1]]
    stored = slices["offsets"]
    offsets = np.empty(len(stored) + 2, np.uint64)
    offsets[0], offsets[1:-1], offsets[-1] = 0, stored, len(slices["words"])
    slices["offsets"] = offsets
    return slices
