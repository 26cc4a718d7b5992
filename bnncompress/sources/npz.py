"""Posteriors in a numpy .npz file, read whole without pickle: any container layout that
:func:`~bnncompress.sources.containers.from_mapping` understands, plus an optional ``vocab``.

Every member's header is checked against the bytes it is stored in before anything is read.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PosteriorError
from ..inputfiles import open_nonblocking
from ..posterior import Posterior
from ..vocabulary import decode_words, first_repeated
from .containers import from_mapping
from .reader import PosteriorReader, Probe, check_zip_layout

_MAX_DEFLATE_RATIO = 1032  # zlib cannot expand more than this


def is_npz(probe: Probe) -> bool:
    """A zip file whose members are all ``.npy`` arrays."""
    members = probe.zip_members
    return bool(members) and all(m.endswith(".npy") for m in members)


class NpzReader(PosteriorReader):
    """Reads a .npz file whole."""

    def open(self) -> Posterior:
        return from_mapping(read_npz(self.path), f"'{self.path.name}' (npz)")


def read_npz(path: Path) -> dict[str, Any]:
    """The arrays of a .npz file (no pickle), each member's header checked against its stored size."""
    try:
        with open_nonblocking(path) as fh:  # one open file: the arrays read are those of the file checked
            with zipfile.ZipFile(fh) as zf:
                dup = first_repeated(zf.namelist())
                if dup is not None:  # numpy would keep only one of them
                    raise PosteriorError(f"'{path}' holds two arrays named '{dup}'; re-save it with unique names")
                check_zip_layout(zf.infolist(), os.fstat(fh.fileno()).st_size, f"'{path}'")
                for info in zf.infolist():
                    _check_npz_member(zf, info, path)
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
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
