"""Writing an archive's point estimate in other formats: word2vec vectors, a torch
state_dict (.pt), numpy arrays (.npz). Every file is written atomically (:mod:`bnncompress.files`)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import OptionError
from .files import atomic_output, write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .loader import Archive

#: Export formats and the file suffixes that select them.
FORMATS = {"word2vec": (".txt", ".vec", ".w2v", ".bin"), "pt": (".pt", ".pth"), "npz": (".npz",)}


def format_from_suffix(path: str | os.PathLike) -> str:
    """The export format a file name asks for, e.g. ``vectors.txt`` -> ``word2vec``."""
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in FORMATS.items():
        if suffix in suffixes:
            return fmt
    raise OptionError(f"cannot tell the format from '{Path(path).name}'; give «format» word2vec, pt or npz")


def export_archive(
    archive: Archive, path: str | os.PathLike, fmt: str | None, tensor: str | None, binary: bool, force: bool
) -> str:
    """See :meth:`bnncompress.Archive.export`."""
    fmt = fmt or format_from_suffix(path)
    if fmt not in FORMATS:
        raise OptionError(f"unknown export format {fmt!r}; choose word2vec, pt or npz")
    if Path(path).resolve() == Path(archive.path).resolve():
        raise OptionError(f"the output '{path}' is the archive itself; choose another output path")
    if fmt == "word2vec":
        if archive.vocab is not None and any(len(w.split()) != 1 for w in archive.vocab):
            raise OptionError(
                "the vocabulary has words containing whitespace, which word2vec files cannot hold; export npz"
            )
        kv = archive.to_keyed_vectors(tensor)
        with atomic_output(path, force=force) as tmp:
            kv.save_word2vec_format(str(tmp), binary=binary)
        return fmt
    buffer = io.BytesIO()
    if fmt == "pt":
        import torch

        torch.save(archive.state_dict(), buffer)
    else:
        arrays = {name: np.asarray(archive[name]) for name in archive.names}
        if archive.vocab is not None:
            arrays["vocab"] = np.asarray(archive.vocab, dtype=str)
        np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue(), force=force)
    return fmt
