"""Posteriors in a .safetensors file: flat ``NAME.loc`` / ``NAME.scale`` tensors are read by rows
(:class:`~bnncompress.sources.stored.FileTensor`), so they stream; any other layout is read whole
as a container (:func:`~bnncompress.sources.containers.from_mapping`). A ``vocab`` metadata entry
labels the rows.

The header is parsed strictly: every size it promises must be backed by bytes in the file
before anything is allocated, and a name given twice is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PosteriorError
from ..inputfiles import open_readable
from ..posterior import FileStamp, Posterior, TensorPosterior, stamp_of
from ..vocabulary import first_repeated, split_lines, validate_words
from .containers import from_mapping
from .reader import PosteriorReader, Probe
from .stored import FileArray, FileTensor, check_pair

#: safetensors dtype name -> numpy dtype string ("bfloat16" is read as uint16 bit patterns)
_SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "bfloat16"}
_MAX_HEADER = 100 << 20  # as the safetensors library


def is_safetensors(probe: Probe) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    head = probe.head
    return len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= probe.size - 8


class SafetensorsReader(PosteriorReader):
    """Reads a safetensors file: by rows when it holds flat loc/scale pairs, else whole."""

    def open(self) -> Posterior:
        path = self.path
        where = f"'{path.name}' (safetensors)"
        arrays, meta = safetensors_header(path)
        names = _flat_pairs(arrays)
        if names is None:
            return from_mapping(_read_whole(arrays, meta, where), where)
        tensors: dict[str, TensorPosterior] = {}
        for name in names:
            loc, scale = arrays[name + ".loc"], arrays[name + ".scale"]
            dtype = check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
            tensors[name] = FileTensor(name, loc, scale, where, dtype)
        return Posterior(tensors, safetensors_vocab(meta, where), f"loc/scale dict: {where}")


def safetensors_header(path: Path) -> tuple[dict[str, FileArray], dict[str, str]]:
    """The tensors (as :class:`FileArray`) and metadata of a safetensors file, checked against its size."""
    with open_readable(path, f"'{path}'") as fh:
        opened = os.fstat(fh.fileno())  # (the tensors are read from this file: not one renamed over it later)
        size = opened.st_size
        n = int.from_bytes(fh.read(8), "little")
        if not 0 < n <= min(size - 8, _MAX_HEADER):
            raise PosteriorError(f"'{path}': the safetensors header length {n} does not fit the file")
        raw = fh.read(n)
    where = f"'{path.name}' (safetensors)"

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # JSON lets a later key replace an earlier
        dup = first_repeated([k for k, _ in pairs])
        if dup is not None:
            raise PosteriorError(f"{where}: the header names '{dup}' twice; re-save the file with unique names")
        return dict(pairs)

    try:
        header = json.loads(raw, object_pairs_hook=unique)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise PosteriorError(f"{where}: the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise PosteriorError(f"{where}: the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise PosteriorError(f"{where}: '__metadata__' must map strings to strings")
    data_start, data_len = 8 + n, size - 8 - n
    arrays, stamp = {}, stamp_of(opened)
    for key, entry in header.items():
        arrays[key] = _safetensors_entry(key, entry, where, str(path), data_start, data_len, stamp)
    _check_coverage(header, data_len, where)
    return arrays, meta


def _check_coverage(header: dict[str, Any], data_len: int, where: str) -> None:
    """The tensors' byte ranges tile the data exactly, as the safetensors library requires: an
    overlap (one tensor reading another's bytes), a gap or trailing bytes mean a damaged or
    forged file."""
    spans = sorted((entry["data_offsets"][0], entry["data_offsets"][1], key) for key, entry in header.items())
    end = 0
    for begin, stop, key in spans:
        if begin != end:
            problem = "overlaps another tensor's bytes" if begin < end else f"leaves bytes {end}..{begin} unused"
            raise PosteriorError(f"{where}: entry '{key}' {problem}; the file is damaged, re-save it")
        end = max(end, stop)
    if end != data_len:
        raise PosteriorError(f"{where}: {data_len - end:,} bytes after the last tensor; the file is damaged")


def _safetensors_entry(
    key: str, entry: Any, where: str, path: str, data_start: int, data_len: int, stamp: FileStamp
) -> FileArray:
    bad = f"{where}: entry '{key}'"
    if not isinstance(entry, dict):
        raise PosteriorError(f"{bad} is not an object")
    dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype")) if isinstance(entry.get("dtype"), str) else None
    if dtype is None:
        raise PosteriorError(f"{bad} has dtype {entry.get('dtype')!r}; it must be floating point (F16, BF16, F32, F64)")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise PosteriorError(f"{bad} has no valid 'shape' (a list of non-negative integers)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise PosteriorError(f"{bad} has no valid 'data_offsets' ([begin, end])")
    array = FileArray(path, data_start + offsets[0], tuple(shape), dtype, stamp)
    if not 0 <= offsets[0] <= offsets[1] <= data_len or offsets[1] - offsets[0] != array.nbytes:
        raise PosteriorError(f"{bad} declares {array.nbytes:,} bytes at {offsets} that the file does not hold")
    return array


def safetensors_vocab(meta: dict[str, str], where: str) -> list[str] | None:
    """The ``vocab`` metadata entry: a JSON list of words, or words separated by newlines
    (so a first word such as ``[PAD]`` is a word, not broken JSON)."""
    if "vocab" not in meta:
        return None
    raw = meta["vocab"].removeprefix("\ufeff")  # a byte-order mark, as a vocab.txt's is dropped
    words = split_lines(raw)
    if raw.lstrip().startswith("["):
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(w, str) for w in parsed):
            words = parsed
    return validate_words(words, f"vocabulary in {where}")


def _read_whole(arrays: dict[str, FileArray], meta: dict[str, str], where: str) -> dict[str, Any]:
    """All tensors of a safetensors file as numpy arrays (bfloat16 as torch tensors), plus the vocab."""
    data: dict[str, Any] = {}
    for key, array in arrays.items():
        values = array.rows(0, array.shape[0] if array.shape else 1).reshape(array.shape)
        if array.dtype == "bfloat16":  # numpy has no bfloat16: a torch tensor keeps the dtype
            import torch

            values = torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
        data[key] = values
    vocab = safetensors_vocab(meta, where)
    if vocab is not None:
        data["vocab"] = vocab
    return data


def _flat_pairs(arrays: dict[str, FileArray]) -> list[str] | None:
    keys = sorted(arrays)
    locs = [k[: -len(".loc")] for k in keys if k.endswith(".loc")]
    if not locs or len(keys) != 2 * len(locs) or any(n + ".scale" not in arrays for n in locs):
        return None
    return locs
