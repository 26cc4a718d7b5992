"""Posteriors stored as plain arrays: a directory of .npy files, .npz, and .safetensors.

Headers are parsed here, strictly: every size a header promises must be backed by bytes in
the file before anything is allocated, and anything malformed is a one-line
:class:`~bnncompress.PosteriorError`. A directory of ``NAME.loc.npy`` / ``NAME.scale.npy``
pairs and a safetensors file of flat ``NAME.loc`` / ``NAME.scale`` tensors can be read by rows
(:class:`~bnncompress.sources.rows.FileSource`), so they stream.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PosteriorError
from ..posterior import input_file
from ..vocabulary import decode_words, read_vocab, split_lines, validate_words
from .rows import FileArray, FileSource, RowSource, check_pair

#: safetensors dtype name -> numpy dtype string ("bfloat16" is read as uint16 bit patterns)
_SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "bfloat16"}
_MAX_HEADER = 100 << 20  # as the safetensors library
_MAX_DEFLATE_RATIO = 1032  # zlib cannot expand more than this


def npy_array(path: Path) -> FileArray:
    """The array in a .npy file, by its header (the file must hold all of it)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
            offset = fh.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise PosteriorError(f"cannot read '{path}' as .npy ({exc})") from None
    if fortran and len(shape) > 1:
        raise PosteriorError(f"'{path}' is stored in Fortran order; save it in C order (np.ascontiguousarray)")
    if dtype.hasobject:
        raise PosteriorError(f"'{path}' holds Python objects; store a floating-point array")
    array = FileArray(str(path), offset, tuple(int(s) for s in shape), dtype.str)
    if offset + array.nbytes > path.stat().st_size:
        raise PosteriorError(f"'{path}' declares shape {tuple(shape)} but holds fewer bytes; it is truncated")
    return array


def read_npy_directory(path: Path) -> tuple[dict[str, RowSource], list[str] | None, str]:
    """``NAME.loc.npy`` / ``NAME.scale.npy`` pairs and an optional ``vocab.txt``; each must be a
    regular file, and a symbolic link must not lead out of the directory (:func:`input_file`)."""
    where = f"npy directory '{path.name}'"
    names = sorted(p.name[: -len(".loc.npy")] for p in path.glob("*.loc.npy"))
    if not names:
        raise PosteriorError(f"directory '{path}' holds no NAME.loc.npy / NAME.scale.npy pairs")
    sources: dict[str, RowSource] = {}
    for name in names:
        loc_path, scale_path = path / f"{name}.loc.npy", path / f"{name}.scale.npy"
        if not os.path.lexists(scale_path):
            raise PosteriorError(f"{where}: '{name}.loc.npy' has no matching '{name}.scale.npy'")
        loc, scale = (npy_array(input_file(p, f"{where}: '{p.name}'", within=path)) for p in (loc_path, scale_path))
        dtype = check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
        sources[name] = FileSource(name, loc, scale, where, dtype)
    vocab_path = path / "vocab.txt"
    vocab = None
    if os.path.lexists(vocab_path):
        vocab = read_vocab(input_file(vocab_path, f"{where}: 'vocab.txt'", within=path))
    return sources, vocab, f"npy loc/scale pairs: {where}"


def read_npz(path: Path) -> dict[str, Any]:
    """The arrays of a .npz file (no pickle), each member's header checked against its stored size."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            if len(set(members)) != len(members):  # numpy would keep only one of them
                dup = next(m for i, m in enumerate(members) if m in members[:i])
                raise PosteriorError(f"'{path}' holds two arrays named '{dup}'; re-save it with unique names")
            for info in zf.infolist():
                _check_npz_member(zf, info, path)
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except PosteriorError:
        raise
    except ValueError as exc:
        raise PosteriorError(f"cannot read '{path}' as .npz without pickle ({exc}); store plain arrays") from None
    except Exception as exc:  # a damaged archive makes numpy/zipfile raise almost anything
        raise PosteriorError(f"cannot read '{path}' as .npz ({exc}); is it truncated or corrupt?") from None
    if "vocab" in data:
        if data["vocab"].dtype.kind not in "US":
            raise PosteriorError(f"'{path}': 'vocab' must be an array of strings, found {data['vocab'].dtype}")
        data["vocab"] = decode_words(data["vocab"].reshape(-1).tolist(), f"'{path}': 'vocab'")
    return data


def _check_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    fmt = np.lib.format
    with zf.open(info) as fh:
        version = fmt.read_magic(fh)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = reader(fh)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    stored_limit = info.compress_size * (_MAX_DEFLATE_RATIO if info.compress_type else 1)
    if declared > info.file_size or declared > stored_limit:
        raise PosteriorError(f"'{path}': member '{info.filename}' declares {declared:,} bytes it does not hold")


def safetensors_header(path: Path) -> tuple[dict[str, FileArray], dict[str, str]]:
    """The tensors (as :class:`FileArray`) and metadata of a safetensors file, checked against its size."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if not 0 < n <= min(size - 8, _MAX_HEADER):
            raise PosteriorError(f"'{path}': the safetensors header length {n} does not fit the file")
        raw = fh.read(n)
    where = f"'{path.name}' (safetensors)"

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # JSON lets a later key replace an earlier
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            dup = next(k for i, k in enumerate(names) if k in names[:i])
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
    arrays = {}
    for key, entry in header.items():
        arrays[key] = _safetensors_entry(key, entry, where, str(path), data_start, data_len)
    return arrays, meta


def _safetensors_entry(key: str, entry: Any, where: str, path: str, data_start: int, data_len: int) -> FileArray:
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
    array = FileArray(path, data_start + offsets[0], tuple(shape), dtype)
    if not 0 <= offsets[0] <= offsets[1] <= data_len or offsets[1] - offsets[0] != array.nbytes:
        raise PosteriorError(f"{bad} declares {array.nbytes:,} bytes at {offsets} that the file does not hold")
    return array


def safetensors_vocab(meta: dict[str, str], where: str) -> list[str] | None:
    """The ``vocab`` metadata entry: a JSON list of words, or words separated by newlines
    (so a first word such as ``[PAD]`` is a word, not broken JSON)."""
    if "vocab" not in meta:
        return None
    raw = meta["vocab"]
    words = split_lines(raw)
    if raw.lstrip().startswith("["):
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(isinstance(w, str) for w in parsed):
            words = parsed
    return validate_words(words, f"vocabulary in {where}")


def read_safetensors(path: Path) -> dict[str, Any]:
    """All tensors of a safetensors file as numpy arrays (bfloat16 as torch tensors), plus the vocab."""
    arrays, meta = safetensors_header(path)
    data: dict[str, Any] = {}
    for key, array in arrays.items():
        values = array.rows(0, array.shape[0] if array.shape else 1).reshape(array.shape)
        if array.dtype == "bfloat16":  # numpy has no bfloat16: a torch tensor keeps the dtype
            import torch

            values = torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
        data[key] = values
    vocab = safetensors_vocab(meta, f"'{path.name}' (safetensors)")
    if vocab is not None:
        data["vocab"] = vocab
    return data


def open_safetensors(path: Path) -> tuple[dict[str, RowSource], list[str] | None, str] | None:
    """A flat ``NAME.loc`` / ``NAME.scale`` safetensors file as row sources; None for other layouts."""
    arrays, meta = safetensors_header(path)
    names = _flat_pairs(arrays)
    if names is None:
        return None
    where = f"'{path.name}' (safetensors)"
    sources: dict[str, RowSource] = {}
    for name in names:
        loc, scale = arrays[name + ".loc"], arrays[name + ".scale"]
        dtype = check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
        sources[name] = FileSource(name, loc, scale, where, dtype)
    return sources, safetensors_vocab(meta, where), f"loc/scale dict: {where}"


def _flat_pairs(arrays: dict[str, FileArray]) -> list[str] | None:
    keys = sorted(arrays)
    locs = [k[: -len(".loc")] for k in keys if k.endswith(".loc")]
    if not locs or len(keys) != 2 * len(locs) or any(n + ".scale" not in arrays for n in locs):
        return None
    return locs
