"""Posterior sources: everything that yields a mean-field Gaussian N(loc, scale²) per weight.

Files are recognised by content, never by name (:func:`detect`):

- ``pyro.get_param_store().save(path)`` of AutoNormal (``G.locs.X`` / ``G.scales.X``),
  AutoDiagonalNormal (flat ``G.loc`` / ``G.scale``), AutoLowRankMultivariateNormal and
  AutoMultivariateNormal (marginal scales, with a warning), TyXe (``G.X.loc``); values are
  unconstrained and mapped through their stored constraints;
- ``torch.save(guide.state_dict())`` of those guides; a bayesian-torch state dict
  (``L.mu_weight`` / ``L.rho_weight``); ``{"mean": sd, "variance": sd}`` (IVON);
- a plain dict ``{name: {"loc": T, "scale": T}}`` or flat ``name.loc`` / ``name.scale`` keys with
  an optional ``"vocab"``, in .pt, .npz or .safetensors (``vocab`` metadata);
- a directory of ``NAME.loc.npy`` / ``NAME.scale.npy`` (+ ``vocab.txt``), flat loc/scale
  safetensors, and HDF5 ``NAME/loc`` / ``NAME/scale`` datasets: these are read by rows
  (:func:`open_posterior`), so they stream;
- in Python: a live Pyro autoguide, ``{name: (loc, scale)}``, or a :class:`Posterior`.

Example:
    >>> import numpy as np
    >>> p = read_posterior({"w": (np.zeros(4), np.full(4, 0.5))}, vocab=None)
    >>> p.names, p.tensors["w"].scale.tolist()
    (['w'], [0.5, 0.5, 0.5, 0.5])
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import PosteriorError
from ..hdf5checks import HDF5_MAGIC
from ..posterior import Posterior, check_vocab
from ..vocabulary import read_vocab
from .arrays import open_safetensors, read_npy_directory, read_npz, read_safetensors
from .containers import from_mapping, torch_load
from .guides import from_live_guide, is_pyro_guide, ivon_posterior
from .hdf5 import open_hdf5
from .rows import ArraySource, RowSource

__all__ = ["RowSource", "detect", "ivon_posterior", "is_large", "open_posterior", "read_posterior"]

#: Posterior files with at least this many weights are streamed when ``stream`` is left to auto.
STREAM_WEIGHTS = 1 << 26
_ZIP_MAGIC = b"PK\x03\x04"

#: What :func:`detect` returns for each kind of posterior file.
KINDS = ("npy-directory", "hdf5", "torch", "npz", "safetensors")


def detect(path: str | os.PathLike) -> str:
    """The kind of posterior file at ``path`` (one of :data:`KINDS`), from its content.

    Example:
        >>> detect("data/example.pt")
        'torch'
    """
    given, path = str(path), Path(path)
    if path.is_dir():
        if any(path.glob("*.loc.npy")):
            return "npy-directory"
        raise PosteriorError(f"'{given}' is a directory without NAME.loc.npy / NAME.scale.npy files")
    if not path.exists():
        raise PosteriorError(f"'{given}' does not exist; pass a posterior file or a directory of .npy files")
    if not path.is_file():
        raise PosteriorError(f"'{path}' is not a regular file; pass a posterior file (.pt, .npz, .safetensors, .h5)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise PosteriorError(f"cannot read '{path}' ({exc.strerror})") from None
    size = path.stat().st_size
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                members = zf.namelist()
        except Exception:  # zipfile raises many kinds on damaged input
            raise PosteriorError(f"'{path}' looks like a zip archive but is corrupt or truncated") from None
        if any(m.endswith("data.pkl") for m in members):
            return "torch"
        if members and all(m.endswith(".npy") for m in members):
            return "npz"
        raise PosteriorError(f"'{path}' is a zip archive but neither a torch .pt file nor a numpy .npz file")
    # safetensors first: a header of 128 + 256k bytes starts with 0x80, like a legacy pickle
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return "torch"
    raise PosteriorError(
        f"'{path}' is not a known posterior format; expected a Pyro param store or state dict (.pt), "
        "a .npz, .safetensors or HDF5 file, or a directory of .npy files"
    )


def read_posterior(source: Any, vocab: str | os.PathLike | Iterable[str] | None = None) -> Posterior:
    """Read a posterior whole: a file path, a live Pyro guide, a mapping, or a :class:`Posterior`.

    ``vocab`` is a file with one word per line (row order) or a list of words; it overrides a
    vocabulary stored in the source. It must match the first dimension of a 2-D tensor.
    """
    if isinstance(source, Posterior):
        tensors = {n: t.to_tensor() if isinstance(t, RowSource) else t for n, t in source.tensors.items()}
        posterior = Posterior(tensors, source.vocab, source.source, list(source.warnings))
    elif isinstance(source, (str, os.PathLike)):
        posterior = _read_file(Path(source))
    elif is_pyro_guide(source):
        posterior = from_live_guide(source)
    elif isinstance(source, Mapping):
        posterior = from_mapping(source, "python dict")
    else:
        raise PosteriorError(
            f"cannot read a posterior from a {type(source).__name__}; pass a file path, "
            "a Pyro AutoNormal/AutoDiagonalNormal guide, or a dict {name: (loc, scale)}"
        )
    return _with_vocab(posterior, vocab)


def open_posterior(source: Any, vocab: str | os.PathLike | Iterable[str] | None = None) -> Posterior:
    """A :class:`Posterior` whose tensors are :class:`RowSource` objects: read lazily by rows
    from a streamable file (headers only now), or wrapping the tensors of any other source."""
    opened = _open_rows(Path(source)) if isinstance(source, (str, os.PathLike)) else None
    if opened is None:
        posterior = read_posterior(source, vocab=vocab)
        tensors = {n: ArraySource(n, t, posterior.source) for n, t in posterior.tensors.items()}
        return Posterior(tensors, posterior.vocab, posterior.source, list(posterior.warnings))
    sources, stored_vocab, description = opened
    return _with_vocab(Posterior(dict(sources), stored_vocab, description), vocab)


def is_large(source: Any) -> bool:
    """True for a streamable posterior file of at least :data:`STREAM_WEIGHTS` weights."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    try:
        opened = _open_rows(Path(source))
    except PosteriorError:
        return False  # the whole-file reader reports it
    return opened is not None and sum(s.size for s in opened[0].values()) >= STREAM_WEIGHTS


def _with_vocab(posterior: Posterior, vocab: Any) -> Posterior:
    if vocab is not None:
        posterior.vocab = read_vocab(vocab)
    if posterior.vocab is not None:
        check_vocab(posterior)
    return posterior


def _open_rows(path: Path) -> tuple[dict[str, RowSource], list[str] | None, str] | None:
    kind = detect(path)
    if kind == "npy-directory":
        return read_npy_directory(path)
    if kind == "hdf5":
        return open_hdf5(path)
    if kind == "safetensors":
        return open_safetensors(path)
    return None


def _read_file(path: Path) -> Posterior:
    kind = detect(path)
    where = f"'{path.name}'"
    if kind in ("npy-directory", "hdf5"):
        sources, vocab, description = _open_rows(path)  # type: ignore[misc]
        return Posterior({n: s.to_tensor() for n, s in sources.items()}, vocab, description)
    if kind == "safetensors":
        opened = open_safetensors(path)
        if opened is not None:
            sources, vocab, description = opened
            return Posterior({n: s.to_tensor() for n, s in sources.items()}, vocab, description)
        return from_mapping(read_safetensors(path), f"{where} (safetensors)")
    if kind == "npz":
        return from_mapping(read_npz(path), f"{where} (npz)")
    return from_mapping(torch_load(path), where)
