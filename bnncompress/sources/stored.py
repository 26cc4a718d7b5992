"""Tensors stored as raw arrays in files (.npy, safetensors), read by ranges of rows.

A :class:`FileTensor` is what a streamed or Dask pack reads, one task at a time: a
:class:`~bnncompress.posterior.StoredTensor` whose ``loc`` and ``scale`` are two
:class:`FileArray` (a C-order array at a byte offset), each range read with one positioned read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PosteriorError
from ..geometry import row_size
from ..inputfiles import open_input, open_nonblocking
from ..posterior import FileStamp, StoredTensor, check_opened, file_stamp


@dataclasses.dataclass
class FileArray:
    """A C-order array at a byte offset in a file, read with one positioned read per range.
    The file was checked to hold all of it when the source was opened."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, or "bfloat16"
    stamp: FileStamp | None = None  # the file whose header was read (:func:`stamp_of`; default: the path's now)
    within: str | None = None  # a posterior directory the file is read beneath again (:func:`open_input`)

    def __post_init__(self) -> None:
        if self.stamp is None:
            self.stamp = file_stamp(self.path)

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.itemsize

    def rows(self, start: int, stop: int) -> np.ndarray:
        dt = np.dtype("<u2") if self.dtype == "bfloat16" else np.dtype(self.dtype)
        rs = row_size(self.shape)
        try:
            if self.within is not None:  # (beneath its directory again: a link swapped in since leads nowhere)
                fh = open_input(Path(self.path), f"'{self.path}'", Path(self.within))
            else:
                fh = open_nonblocking(self.path)
        except OSError as exc:
            raise PosteriorError(
                f"cannot read '{self.path}' again ({exc.strerror}); pack again once it is back"
            ) from None
        with fh:  # the file whose header was read, or none (not one renamed over it since)
            check_opened(fh.fileno(), self.path, self.stamp)
            fh.seek(self.offset + start * rs * dt.itemsize)
            return np.fromfile(fh, dtype=dt, count=(stop - start) * rs)


@dataclasses.dataclass(repr=False)
class FileTensor(StoredTensor):
    """A tensor whose loc and scale are raw arrays in files (a .npy pair, or two safetensors entries)."""

    name: str
    loc_array: FileArray
    scale_array: FileArray
    where: str
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.shape = self.loc_array.shape

    def stamps(self) -> list[tuple[str, FileStamp | None]]:
        return [(a.path, a.stamp) for a in (self.loc_array, self.scale_array)]

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self.loc_array.rows(start, stop), self.scale_array.rows(start, stop)


def check_pair(name: str, where: str, loc: tuple, scale: tuple, dtypes: tuple[Any, Any]) -> str:
    """Check the shapes and dtypes a file declares for ``name``; return the dtype to restore."""
    if tuple(loc) != tuple(scale):
        raise PosteriorError(
            f"{where}: loc of '{name}' has shape {tuple(loc)} but scale has {tuple(scale)}; they must match"
        )
    if int(np.prod(loc, dtype=np.int64)) == 0:
        raise PosteriorError(f"{where}: tensor '{name}' is empty (shape {tuple(loc)})")
    kinds = []
    for what, dt in zip(("loc", "scale"), dtypes):
        if dt == "bfloat16":
            kinds.append("bfloat16")
            continue
        dt = np.dtype(dt)
        if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
            raise PosteriorError(f"{where}: {what} of '{name}' has dtype {dt}; it must be float16, float32 or float64")
        kinds.append(dt.newbyteorder("=").name)
    return kinds[0]
