"""Posterior sources: everything that yields a mean-field Gaussian N(loc, scale²) per weight.

Files are recognised by content, never by name, once per file: :func:`detect` tries the
entries of :data:`FORMATS` (name, detector, reader) in order and returns a
:class:`PosteriorReader`. A new format is one module (its detector and reader) and one entry
(:func:`register_format`).

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
  (:func:`open_posterior` gives :class:`~bnncompress.posterior.StoredTensor` objects), so they stream;
- in Python: a live Pyro autoguide, ``{name: (loc, scale)}``, or a :class:`Posterior`.

Example:
    >>> import numpy as np
    >>> p = read_posterior({"w": (np.zeros(4), np.full(4, 0.5))}, vocab=None)
    >>> p.names, p.tensors["w"].scale.tolist()
    (['w'], [0.5, 0.5, 0.5, 0.5])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import OptionError, PosteriorError
from ..floatvalues import FLOAT_DTYPES
from ..posterior import Posterior, StoredTensor, TensorPosterior, check_vocab, make_tensor
from ..vocabulary import decode_words, read_vocab, validate_words
from .containers import fitting_supports, from_mapping
from .guides import from_live_guide, is_pyro_guide, ivon_posterior
from .hdf5 import HDF5Reader, is_hdf5
from .npy import NpyDirectoryReader, is_npy_directory
from .npz import NpzReader, is_npz
from .reader import ZIP_MAGIC, PosteriorReader, Probe, SourceFormat
from .safetensors import SafetensorsReader, is_safetensors
from .torchfile import TorchReader, is_torch_file

__all__ = [
    "FORMATS",
    "PosteriorReader",
    "SourceFormat",
    "detect",
    "ivon_posterior",
    "open_posterior",
    "read_posterior",
    "register_format",
]

#: Posterior files with at least this many weights are streamed when ``stream`` is left to auto.
STREAM_WEIGHTS = 1 << 26

#: The posterior file formats, tried in this order: safetensors before torch, whose legacy
#: pickles start with a byte a safetensors header length may start with too.
FORMATS: list[SourceFormat] = [
    SourceFormat("npy-directory", is_npy_directory, NpyDirectoryReader),
    SourceFormat("hdf5", is_hdf5, HDF5Reader),
    SourceFormat("npz", is_npz, NpzReader),
    SourceFormat("safetensors", is_safetensors, SafetensorsReader),
    SourceFormat("torch", is_torch_file, TorchReader),
]


def register_format(source_format: SourceFormat) -> None:
    """Add a posterior file format; its detector is tried after those of the formats already known.

    Example:
        >>> is_toy = lambda probe: probe.head.startswith(b"TOY")      # doctest: +SKIP
        >>> register_format(SourceFormat("toy", is_toy, ToyReader))  # doctest: +SKIP
    """
    if any(f.name == source_format.name for f in FORMATS):
        raise OptionError(f"a posterior format named {source_format.name!r} is already registered; choose another name")
    FORMATS.append(source_format)


def detect(path: str | os.PathLike) -> PosteriorReader:
    """The reader for the posterior file or directory at ``path``, chosen from its content.

    Example:
        >>> detect("data/example.pt")
        TorchReader('data/example.pt')
    """
    given, path = str(path), Path(path)
    probe = Probe.of(path, given)
    for source_format in FORMATS:
        if source_format.detector(probe):
            return source_format.reader(path)
    if probe.is_dir:
        raise PosteriorError(f"'{given}' is a directory without NAME.loc.npy / NAME.scale.npy files")
    if probe.head.startswith(ZIP_MAGIC):
        raise PosteriorError(f"'{path}' is a zip archive but neither a torch .pt file nor a numpy .npz file")
    raise PosteriorError(
        f"'{path}' is not a known posterior format; expected a Pyro param store or state dict (.pt), "
        "a .npz, .safetensors or HDF5 file, or a directory of .npy files"
    )


def read_posterior(source: Any, vocab: str | os.PathLike | Iterable[str] | None = None) -> Posterior:
    """Read a posterior whole: a file path, a live Pyro guide, a mapping, or a :class:`Posterior`.

    ``vocab`` is a file with one word per line (row order) or a list of words; it overrides a
    vocabulary stored in the source. It must match the first dimension of a 2-D tensor.
    """
    return _with_vocab(_open(source).load().check(), vocab)


def open_posterior(source: Any, vocab: str | os.PathLike | Iterable[str] | None = None) -> Posterior:
    """Open a posterior as :func:`read_posterior` does, detecting a file's format once; tensors of
    a file that can be read by rows stay there (:class:`~bnncompress.posterior.StoredTensor`,
    headers only read now), so that a pack may stream them."""
    return _with_vocab(_open(source), vocab)


def _open(source: Any) -> Posterior:
    if isinstance(source, Posterior):
        posterior = _checked_posterior(source)
    elif isinstance(source, (str, os.PathLike)):
        posterior = detect(source).open()
    elif is_pyro_guide(source):
        posterior = from_live_guide(source)
    elif isinstance(source, Mapping):
        posterior = from_mapping(source, "python dict")
    else:
        raise PosteriorError(
            f"cannot read a posterior from a {type(source).__name__}; pass a file path, "
            "a Pyro AutoNormal/AutoDiagonalNormal guide, or a dict {name: (loc, scale)}"
        )
    return posterior


def _checked_posterior(source: Posterior) -> Posterior:
    """A :class:`Posterior` the caller built, checked as every source's are: its tensors, names,
    vocabulary and supports (an unchecked support or word wrote an archive none could load)."""
    where = source.source if isinstance(source.source, str) else "Posterior"
    if not isinstance(source.source, str) or not isinstance(source.warnings, list):
        raise PosteriorError(f"{where}: Posterior.source must be a str and .warnings a list of str")
    if not isinstance(source.tensors, Mapping) or not source.tensors:
        raise PosteriorError(f"{where} holds no posterior tensors; Posterior.tensors maps names to TensorPosteriors")
    if not all(isinstance(name, str) and name for name in source.tensors):
        raise PosteriorError(f"{where}: tensor names must be non-empty str, found {list(source.tensors)!r:.200}")
    tensors = {name: _checked(name, t, where) for name, t in source.tensors.items()}
    vocab = source.vocab
    if vocab is not None:
        if not isinstance(vocab, (list, tuple)):
            raise PosteriorError(f"{where}: Posterior.vocab must be a list of words, not a {type(vocab).__name__}")
        vocab = validate_words(decode_words(vocab, f"{where}: vocabulary"), f"{where}: vocabulary")
    if not isinstance(source.supports, Mapping) or any(n not in tensors for n in source.supports):
        raise PosteriorError(
            f"{where}: Posterior.supports must map names of its tensors to supports, found {source.supports!r:.200}"
        )
    supports = fitting_supports(source.supports, tensors, where, "give one bnncompress.supports.describe makes")
    return source.with_tensors(tensors, vocab=vocab, supports=supports)


def _checked(name: str, tensor: Any, where: str) -> TensorPosterior:
    """A tensor of a :class:`Posterior` the caller built, checked as every source's are (a
    ``TensorPosterior`` of mismatched shapes made the coder read past the shorter array)."""
    if isinstance(tensor, StoredTensor):  # checked as its rows are read
        return tensor
    if not isinstance(tensor, TensorPosterior):
        raise PosteriorError(f"{where}: '{name}' is a {type(tensor).__name__}, not a TensorPosterior")
    if tensor.dtype not in FLOAT_DTYPES:
        raise PosteriorError(f"{where}: '{name}' has dtype {tensor.dtype!r}; choose one of {', '.join(FLOAT_DTYPES)}")
    checked = make_tensor(name, *tensor.unchecked_values(), where)  # (its values: checked if the pack selects it)
    checked.dtype = tensor.dtype  # the dtype to restore, as the caller said
    checked.beyond_float32 = max(checked.beyond_float32, tensor.beyond_float32)  # (float64 means the copy has not)
    return checked


def _with_vocab(posterior: Posterior, vocab: Any) -> Posterior:
    if vocab is not None:
        given = read_vocab(vocab)
        if posterior.vocab is not None and posterior.vocab != given:  # the user's choice, but not a silent one
            posterior.warnings.append(
                f"the posterior's own vocabulary ({len(posterior.vocab):,} words) is replaced by the one given "
                f"({len(given):,} words)"
            )
        posterior.vocab = given
    if posterior.vocab is not None:
        check_vocab(posterior)
    return posterior
