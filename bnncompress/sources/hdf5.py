"""Posteriors in HDF5 files: datasets ``NAME/loc`` and ``NAME/scale`` (or ``NAME.loc`` /
``NAME.scale``), any layout h5py reads (chunked and compressed too), and an optional ``vocab``
dataset of strings. Read by rows, so they stream.

Only the file's own bytes are read: external and soft links, external raw storage and
virtual datasets are refused before any data is read (:mod:`bnncompress.hdf5checks`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PosteriorError
from ..hdf5checks import HDF5_MAGIC, LOSSLESS, check_local_dataset, plain_dataset
from ..posterior import FileStamp, Posterior, StoredTensor, TensorPosterior, file_stamp
from ..vocabulary import decode_words, validate_words
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
    stamp: FileStamp | None = None  # the file when it was opened (default: now)

    def __post_init__(self) -> None:
        if self.stamp is None:
            self.stamp = file_stamp(self.path)

    def stamps(self) -> list[tuple[str, FileStamp | None]]:
        return [(self.path, self.stamp)]

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        import h5py

        # opened for each read (about a millisecond, for a task's 16 MiB of rows): a handle kept for the
        # process held the file open after the pack (its space not freed when deleted, h5py unable to
        # write it again) and, kept by path, read an older file saved over it
        with h5py.File(self.path, "r") as f:
            if not self.shape:
                return f[self.loc_key][()], f[self.scale_key][()]
            return f[self.loc_key][start:stop], f[self.scale_key][start:stop]


class HDF5Reader(PosteriorReader):
    """Reads an HDF5 posterior as :class:`HDF5Tensor` objects (headers only until rows are read)."""

    def open(self) -> Posterior:
        return _open_hdf5(self.path)


def _open_hdf5(path: Path) -> Posterior:
    import h5py

    where = f"HDF5 file '{path.name}'"
    found: dict[str, dict[str, Any]] = {}
    vocab = None
    try:
        opened = h5py.File(path, "r")
    except OSError as exc:  # a damaged or truncated file (a truncated archive is no archive either)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "unable to lock file" in detail:  # HDF5's file locking: another process writes it (errno 11)
            raise PosteriorError(
                f"'{path}' is open for writing in another process (HDF5 file lock); close it there, or wait for it"
            ) from None
        raise PosteriorError(
            f"'{path}' is an HDF5 file that cannot be read ({detail}); it is damaged or truncated"
        ) from None
    with opened as f:
        if f.attrs.get("format") in (b"bnncompress", "bnncompress"):  # (str: rewritten with h5py)
            raise PosteriorError(f"'{path}' is a bnncompress archive, not a posterior")
        links: list[tuple[str, Any]] = []
        f.visititems_links(lambda key, link: links.append((key, link)))  # h5py callbacks must not raise
        for key, link in links:  # before reading anything: no data from other files
            if not isinstance(link, h5py.HardLink):
                raise PosteriorError(f"{where}: '{key}' is a link to elsewhere ({type(link).__name__}); refusing it")
        for key, _ in links:
            obj = f[key]
            leaf = next((x for x in ("loc", "scale") if key.endswith(("/" + x, "." + x))), None)
            if leaf is not None and isinstance(obj, h5py.Dataset):
                check_local_dataset(obj, f"{where}: dataset '{key}'", PosteriorError, LOSSLESS)
                pair = found.setdefault(key[: -len(leaf) - 1], {})
                if leaf in pair:  # 'w/loc' and 'w.loc' both name w's loc
                    raise PosteriorError(
                        f"{where}: datasets '{pair[leaf].name.lstrip('/')}' and '{key}' are both the {leaf} of "
                        f"'{key[: -len(leaf) - 1]}'; keep one of them"
                    )
                pair[leaf] = obj
        words = plain_dataset(f, "vocab", f"{where}: dataset 'vocab'", PosteriorError, LOSSLESS)
        if words is not None:
            vocab = validate_words(_decode_words(words, where), f"vocabulary in {where}")
        tensors: dict[str, TensorPosterior] = {}
        for name in sorted(found):
            pair = found[name]
            if set(pair) != {"loc", "scale"}:
                missing = ({"loc", "scale"} - set(pair)).pop()
                raise PosteriorError(f"{where}: '{name}' has no matching '{missing}' dataset")
            loc, scale = pair["loc"], pair["scale"]
            dtype = check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
            tensors[name] = HDF5Tensor(name, str(path), loc.name, scale.name, tuple(loc.shape), where, dtype)
    if not tensors:
        raise PosteriorError(f"{where} holds no NAME/loc and NAME/scale datasets")
    return Posterior(tensors, vocab, f"HDF5 loc/scale datasets: {where}")


def _decode_words(dataset: Any, where: str) -> list[str]:
    if dataset.dtype.kind not in "SUO":
        raise PosteriorError(f"{where}: dataset 'vocab' must hold strings, found {dataset.dtype}")
    return decode_words(np.asarray(dataset[()]).reshape(-1).tolist(), f"{where}: dataset 'vocab'")
