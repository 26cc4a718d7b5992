"""Posteriors as a directory of ``NAME.loc.npy`` / ``NAME.scale.npy`` pairs (+ ``vocab.txt``).

Headers are parsed strictly: the bytes every header promises must be in the file before
anything is read, each file must be a regular file, and a symbolic link must not lead out of
the directory (:func:`~bnncompress.inputfiles.open_input`). Tensors are read by rows, so they stream.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import PosteriorError
from ..inputfiles import open_input
from ..posterior import Posterior, TensorPosterior, stamp_of
from ..vocabulary import read_vocab
from .reader import PosteriorReader, Probe
from .stored import FileArray, FileTensor, check_pair


def is_npy_directory(probe: Probe) -> bool:
    """A directory holding at least one ``NAME.loc.npy``."""
    return probe.is_dir and any(probe.path.glob("*.loc.npy"))


class NpyDirectoryReader(PosteriorReader):
    """Reads a directory of ``NAME.loc.npy`` / ``NAME.scale.npy`` pairs as :class:`FileTensor` objects."""

    def open(self) -> Posterior:
        path = self.path
        where = f"npy directory '{path.name}'"
        names = sorted(p.name[: -len(".loc.npy")] for p in path.glob("*.loc.npy"))
        if not names:
            raise PosteriorError(f"directory '{path}' holds no NAME.loc.npy / NAME.scale.npy pairs")
        orphans = sorted(p.name for p in path.glob("*.scale.npy") if p.name[: -len(".scale.npy")] not in names)
        if orphans:  # (an incomplete copy: its tensor was dropped, silently)
            raise PosteriorError(f"{where}: '{orphans[0]}' has no matching '.loc.npy'; copy it, or remove the scale")
        tensors: dict[str, TensorPosterior] = {}
        for name in names:
            loc_path, scale_path = path / f"{name}.loc.npy", path / f"{name}.scale.npy"
            if not os.path.lexists(scale_path):
                raise PosteriorError(f"{where}: '{name}.loc.npy' has no matching '{name}.scale.npy'")
            loc, scale = (npy_array(p, f"{where}: '{p.name}'", within=path) for p in (loc_path, scale_path))
            dtype = check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
            tensors[name] = FileTensor(name, loc, scale, where, dtype)
        vocab_path = path / "vocab.txt"
        vocab = None
        if os.path.lexists(vocab_path):
            vocab = read_vocab(vocab_path, within=path, what=f"{where}: 'vocab.txt'")
        return Posterior(tensors, vocab, f"npy loc/scale pairs: {where}")


def npy_array(path: Path, what: str | None = None, within: Path | None = None) -> FileArray:
    """The array in a .npy file, by its header (the file must hold all of it; ``within``: a posterior
    directory it must stay in, :func:`~bnncompress.inputfiles.open_input`)."""
    fmt = np.lib.format
    with open_input(path, what or f"'{path}'", within) as fh:
        try:
            opened = os.fstat(fh.fileno())  # (the rows are read from this file: not one renamed over it later)
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
    if any(int(s) < 0 for s in shape):  # (numpy's own loader refuses it too)
        raise PosteriorError(f"'{path}' declares shape {tuple(shape)}, a negative size; the file is damaged")
    within_ = None if within is None else str(within)
    array = FileArray(str(path), offset, tuple(int(s) for s in shape), dtype.str, stamp_of(opened), within_)
    if offset + array.nbytes > opened.st_size:
        raise PosteriorError(f"'{path}' declares shape {tuple(shape)} but holds fewer bytes; it is truncated")
    return array
