"""Tensors read by ranges of rows: what a streamed or Dask pack reads, one task at a time.

A :class:`RowSource` is small and picklable (a Dask worker reads its own rows); it reads rows
``start:stop`` (first dimension; a 0-d or 1-D tensor has one value per row) as flat float32
``loc`` and ``scale``, validated as packing requires.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..coding import num_rows, row_size
from ..errors import PosteriorError
from ..posterior import TensorPosterior, check_values


class RowSource:
    """One tensor's posterior, read by ranges of rows as float32.

    Subclasses set ``name``, ``shape``, ``dtype`` (the dtype to restore) and ``where`` and
    implement :meth:`_read`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    where: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def num_rows(self) -> int:
        return num_rows(self.shape)

    @property
    def row_size(self) -> int:
        return row_size(self.shape)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat float32 ``loc`` and ``scale`` of rows ``start:stop``, checked (finite means, positive scales)."""
        loc, scale = self._read(start, stop)
        loc, scale = as_float32(loc), as_float32(scale)
        if len(loc) != (stop - start) * self.row_size or len(scale) != len(loc):
            raise PosteriorError(f"{self.where}: '{self.name}' holds fewer values than its shape says; it is truncated")
        from .._pipeline_kernels import count_invalid  # numba: imported on first use

        if any(count_invalid(loc, scale)):  # one pass; the error says how many
            check_values(self.name, self.where, loc, scale)
        return loc, scale

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_tensor(self) -> TensorPosterior:
        """The whole tensor in memory."""
        loc, scale = self.read(0, self.num_rows)
        return TensorPosterior(loc.reshape(self.shape), scale.reshape(self.shape), self.dtype)


def as_float32(a: np.ndarray) -> np.ndarray:
    """Flat float32 values; uint16 arrays are bfloat16 bit patterns."""
    if a.dtype == np.uint16:
        return (a.astype(np.uint32).reshape(-1) << 16).view(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


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
            raise PosteriorError(f"{where}: {what} of '{name}' has dtype {dt}; it must be floating point")
        kinds.append(dt.newbyteorder("=").name)
    return kinds[0]


@dataclasses.dataclass
class ArraySource(RowSource):
    """A tensor already in memory (a :class:`TensorPosterior`, validated when it was made)."""

    name: str
    tensor: TensorPosterior
    where: str = "python objects"

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.tensor.shape

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.tensor.dtype

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        rs = self.row_size
        return self.tensor.loc.reshape(-1)[start * rs : stop * rs], self.tensor.scale.reshape(-1)[
            start * rs : stop * rs
        ]

    def to_tensor(self) -> TensorPosterior:
        return self.tensor


@dataclasses.dataclass
class FileArray:
    """A C-order array at a byte offset in a file, read with one positioned read per range.
    The file was checked to hold all of it when the source was opened."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, or "bfloat16"

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.itemsize

    def rows(self, start: int, stop: int) -> np.ndarray:
        dt = np.dtype("<u2") if self.dtype == "bfloat16" else np.dtype(self.dtype)
        rs = row_size(self.shape)
        return np.fromfile(
            self.path, dtype=dt, count=(stop - start) * rs, offset=self.offset + start * rs * dt.itemsize
        )


@dataclasses.dataclass
class FileSource(RowSource):
    """loc and scale stored as raw arrays in files (.npy, safetensors)."""

    name: str
    loc: FileArray
    scale: FileArray
    where: str
    dtype: str = "float32"

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.loc.shape

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self.loc.rows(start, stop), self.scale.rows(start, stop)
