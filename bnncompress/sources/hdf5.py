"""Posteriors in HDF5 files: datasets ``NAME/loc`` and ``NAME/scale`` (or ``NAME.loc`` /
``NAME.scale``), any layout h5py reads (chunked and compressed too), and an optional ``vocab``
dataset of strings. Read by rows, so they stream.

Only the file's own bytes are read: external and soft links, external raw storage and
virtual datasets are refused before any data is read (:mod:`bnncompress.hdf5checks`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnnCompressError, PosteriorError
from ..hdf5checks import (
    HDF5_MAGIC,
    LOSSLESS,
    MAX_EXPANSION,
    check_local_dataset,
    open_hdf5,
    plain_dataset,
    scalar_attribute,
)
from ..posterior import FileStamp, Posterior, StoredTensor, TensorPosterior, check_opened, file_stamp, stamp_of
from ..vocabulary import decode_words, validate_words
from .hdf5bands import read_rows
from .reader import PosteriorReader, Probe
from .stored import check_pair


def is_hdf5(probe: Probe) -> bool:
    """A file that starts with the HDF5 signature."""
    return probe.head.startswith(HDF5_MAGIC)


@dataclasses.dataclass(repr=False)
class HDF5Tensor(StoredTensor):
    """loc and scale as two datasets of an HDF5 file."""

    name: str
    path: str
    loc_key: str
    scale_key: str
    shape: tuple[int, ...]
    where: str
    dtype: str = "float32"
    stamp: FileStamp | None = None  # the file whose datasets were checked (:func:`stamp_of`; default: the path's now)

    def __post_init__(self) -> None:
        if self.stamp is None:
            self.stamp = file_stamp(self.path)

    def stamps(self) -> list[tuple[str, FileStamp | None]]:
        return [(self.path, self.stamp)]

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:

        # opened for each read (about a millisecond, for a task's 16 MiB of rows): a handle kept for the
        # process held the file open after the pack (its space not freed when deleted, h5py unable to
        # write it again) and, kept by path, read an older file saved over it
        with open_hdf5(self.path) as f:
            # the file whose links and storage were checked, not one renamed over it since (its datasets unchecked)
            check_opened(f.id.get_vfd_handle(), self.path, self.stamp)
            try:
                if not self.shape:
                    return f[self.loc_key][()], f[self.scale_key][()]
                # (chunks taller than the read, e.g. by columns: whole bands of chunks, cached by file stamp)
                loc = read_rows(f, self.path, self.stamp, self.loc_key, start, stop)
                return loc, read_rows(f, self.path, self.stamp, self.scale_key, start, stop)
            except OSError as exc:  # a chunk that its filter (gzip, fletcher32) cannot read
                raise PosteriorError(
                    f"{self.where}: rows of '{self.name}' cannot be read ({_first_line(exc)}); the file is damaged"
                ) from None


class HDF5Reader(PosteriorReader):
    """Reads an HDF5 posterior as :class:`HDF5Tensor` objects (headers only until rows are read)."""

    def open(self) -> Posterior:
        return _open_hdf5(self.path)


def _open_hdf5(path: Path) -> Posterior:

    try:
        opened = open_hdf5(path)
    except OSError as exc:  # a damaged or truncated file (a truncated archive is no archive either)
        if "unable to lock file" in _first_line(exc):  # HDF5's file locking: another process writes it (errno 11)
            raise PosteriorError(
                f"'{path}' is open for writing in another process (HDF5 file lock); close it there, or wait for it"
            ) from None
        raise PosteriorError(_damaged(path, exc)) from None
    with opened as f:
        try:
            return _read_open(f, path, f"HDF5 file '{path.name}'", os.fstat(f.id.get_vfd_handle()))
        except BnnCompressError:
            raise
        except (KeyError, OSError, ValueError, RuntimeError, TypeError) as exc:  # h5py's, on damaged metadata
            raise PosteriorError(_damaged(path, exc)) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _damaged(path: Path, exc: BaseException) -> str:
    return f"'{path}' is an HDF5 file that cannot be read ({_first_line(exc)}); it is damaged or truncated"


def _read_open(f: Any, path: Path, where: str, opened: os.stat_result) -> Posterior:
    """The posterior in the open file ``f`` (``opened``: its ``fstat``; its rows are read from that file only)."""
    import h5py

    found: dict[str, dict[str, Any]] = {}
    vocab = None
    if scalar_attribute(f.attrs, "format") in (b"bnncompress", "bnncompress"):  # (str: rewritten with h5py)
        raise PosteriorError(f"'{path}' is a bnncompress archive, not a posterior")
    links = _links(f, where, opened.st_size)
    for key, link in links:  # before reading anything: no data from other files
        if not isinstance(link, h5py.HardLink):
            raise PosteriorError(f"{where}: '{key}' is a link to elsewhere ({type(link).__name__}); refusing it")
    stored: dict[Any, int] = {}  # each loc and scale dataset's stored bytes; the bytes they declare under every name
    reads = 0  # (tied weights have two names, a forgery thousands)
    for key, _ in links:
        obj = f[key]
        leaf = next((x for x in ("loc", "scale") if key.endswith(("/" + x, "." + x))), None)
        if leaf is not None and isinstance(obj, h5py.Dataset):
            check_local_dataset(obj, f"{where}: dataset '{key}'", PosteriorError, LOSSLESS)
            stored[obj.id] = int(obj.id.get_storage_size())
            reads += int(obj.size) * obj.dtype.itemsize
            pair = found.setdefault(key[: -len(leaf) - 1], {})
            if leaf in pair:  # 'w/loc' and 'w.loc' both name w's loc
                raise PosteriorError(
                    f"{where}: datasets '{pair[leaf].name.lstrip('/')}' and '{key}' are both the {leaf} of "
                    f"'{key[: -len(leaf) - 1]}'; keep one of them"
                )
            pair[leaf] = obj
    file_bytes = opened.st_size
    if sum(stored.values()) > file_bytes:  # each is checked against its own storage: not against another's
        raise PosteriorError(
            f"{where}: its loc and scale datasets store {sum(stored.values()):,} bytes in a file of {file_bytes:,} "
            "(datasets sharing their stored bytes); refusing it"
        )
    if reads > 2 * MAX_EXPANSION * file_bytes:  # (tied weights have two names, each at most gzip's ceiling)
        raise PosteriorError(
            f"{where}: its loc and scale datasets declare {reads:,} bytes under all their names, over twice gzip's "
            f"ceiling of {MAX_EXPANSION:,} times the file's {file_bytes:,} (one dataset under many names); refusing it"
        )
    words = plain_dataset(f, "vocab", f"{where}: dataset 'vocab'", PosteriorError, LOSSLESS)
    if words is not None:
        vocab = validate_words(_decode_words(words, where, file_bytes), f"vocabulary in {where}")
    tensors: dict[str, TensorPosterior] = {}
    stamp = stamp_of(opened)
    for name in sorted(found):
        pair = found[name]
        if set(pair) != {"loc", "scale"}:
            missing = ({"loc", "scale"} - set(pair)).pop()
            raise PosteriorError(f"{where}: '{name}' has no matching '{missing}' dataset")
        loc, scale = pair["loc"], pair["scale"]
        dtype = check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
        tensors[name] = HDF5Tensor(name, str(path), loc.name, scale.name, tuple(loc.shape), where, dtype, stamp)
    if not tensors:
        raise PosteriorError(f"{where} holds no NAME/loc and NAME/scale datasets")
    return Posterior(tensors, vocab, f"HDF5 loc/scale datasets: {where}")


#: Groups a posterior may nest (``NAME/loc`` is one): h5py's own walk took 16 s for a chain of 1,500 (200 kB).
MAX_DEPTH = 64
#: Names that second links to groups may add: per link walked, and per :data:`FILE_BYTES_PER_ALIAS` bytes of the
#: file, whichever allows fewer, plus :data:`FREE_ALIASES` (tied weights add a few, a checkpoint's group under a
#: dozen names (best, ema ...) a dozen times its links; doubling chains 2^depth; each name is looked up and checked:
#: a 3 MB file of 100,000 links named 64 times over took 6 minutes and 1 GB with 64 per link and no byte bound).
MAX_ALIASES = 16
FILE_BYTES_PER_ALIAS = 8
FREE_ALIASES = 4096
#: Characters the links' full names may take, per byte of the file, beyond :data:`FREE_NAME_CHARS`: a name repeats
#: its groups' names (a 1.1 MB file of 4,000 links in a group named by 1 MB took 18 s and 4 GB).
MAX_NAME_CHARS = 16
FREE_NAME_CHARS = 1 << 20
#: Variable-length words read at a time: each may point at one shared heap object, so a read is bounded by
#: this many times the file (the ceiling gzip has too), and the words' length is checked after each.
_WORDS_AT_ONCE = 1024


def _links(f: Any, where: str, file_bytes: int) -> list[tuple[str, Any]]:
    """Every link of the file by its path, depth first in name order (as ``visititems_links``); a group
    reached by several hard links is listed under each of its names (tied weights: ``f["dec"] = f["enc"]``),
    walked once; a group that contains itself is not entered again. Refused: groups nested deeper than
    :data:`MAX_DEPTH`; names given by such second links beyond :data:`MAX_ALIASES` times the links walked or
    one per :data:`FILE_BYTES_PER_ALIAS` bytes of the file (plus :data:`FREE_ALIASES`: each name is looked up
    and checked, and links doubling at every level would be 2^depth); full names longer in all than
    :data:`MAX_NAME_CHARS` times ``file_bytes`` (plus :data:`FREE_NAME_CHARS`)."""
    import h5py

    links: list[tuple[str, Any]] = []
    walked: dict[Any, tuple[str, int, int]] = {}  # group id -> (its first path's prefix, its links' span in links)
    aliases = 0  # names listed by copying a group walked before
    chars, most = 0, MAX_NAME_CHARS * file_bytes + FREE_NAME_CHARS  # the full names' length, and its bound
    stack = [("", f, iter(sorted(f)), len(links))]  # (sorted: not the creation order a file may track)
    while stack:
        prefix, group, names, first = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            walked[group.id] = (prefix, first, len(links))
            continue
        key, link = prefix + name, group.get(name, getlink=True)
        links.append((key, link))
        chars += len(key)
        if chars > most:
            raise PosteriorError(f"{where}: links whose full names are far longer than the file; refusing it")
        obj = group.get(name) if isinstance(link, h5py.HardLink) else None
        if not isinstance(obj, h5py.Group) or any(obj.id == s[1].id for s in stack):
            continue  # (a dataset, another link, or a group that contains itself)
        if obj.id in walked:  # another name of a group walked before: its names again, under this one
            was, a, b = walked[obj.id]
            own = len(links) - aliases  # the links walked (not copied)
            aliases += b - a
            if aliases > min(MAX_ALIASES * own, file_bytes // FILE_BYTES_PER_ALIAS) + FREE_ALIASES:
                raise PosteriorError(f"{where}: groups linked under ever more names ('{key[:60]}...'); refusing it")
            chars += sum(len(k) for k, _ in links[a:b]) + (b - a) * (len(key) + 1 - len(was))
            if chars > most:
                raise PosteriorError(f"{where}: links whose full names are far longer than the file; refusing it")
            links.extend((key + "/" + k[len(was) :], lk) for k, lk in links[a:b])
            continue
        if len(stack) > MAX_DEPTH:
            raise PosteriorError(f"{where}: groups nested more than {MAX_DEPTH} deep ('{key[:60]}...'); refusing")
        stack.append((key + "/", obj, iter(sorted(obj)), len(links)))
    return links


def _decode_words(dataset: Any, where: str, file_bytes: int) -> list[str]:
    import h5py

    if dataset.dtype.kind not in "SUO" or (
        dataset.dtype.kind == "O" and h5py.check_string_dtype(dataset.dtype) is None
    ):
        vlen = h5py.check_vlen_dtype(dataset.dtype)  # (variable-length numbers are read whole: refused unread)
        found = dataset.dtype if vlen is None else f"variable-length {vlen}"
        raise PosteriorError(f"{where}: dataset 'vocab' must hold strings, found {found}")
    if dataset.dtype.kind != "O" or not dataset.size:  # (fixed-length: its size was checked against its storage)
        return decode_words(np.asarray(dataset[()]).reshape(-1).tolist(), f"{where}: dataset 'vocab'")
    axis = int(np.argmax(dataset.shape))  # sliced along its longest axis, about _WORDS_AT_ONCE words at a time
    step = max(1, _WORDS_AT_ONCE * dataset.shape[axis] // dataset.size)
    parts, total = [], 0  # (each word is stored once: together they are no longer than the file)
    for start in range(0, dataset.shape[axis], step):
        index = tuple(slice(start, start + step) if i == axis else slice(None) for i in range(dataset.ndim))
        parts.append(np.asarray(dataset[index], dtype=object))
        total += sum(len(w) for w in parts[-1].reshape(-1).tolist())
        if total > file_bytes:
            raise PosteriorError(
                f"{where}: dataset 'vocab' holds words longer than the file (strings sharing their stored bytes); "
                "refusing it"
            )
    return decode_words(np.concatenate(parts, axis=axis).reshape(-1).tolist(), f"{where}: dataset 'vocab'")
