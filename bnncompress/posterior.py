"""The posterior types: a mean-field Gaussian N(loc, scale²) per weight, by tensor name.

A :class:`Posterior` maps tensor names (the model's sample-site names, e.g.
``word_vectors``) to a :class:`TensorPosterior` holding ``loc`` and ``scale`` arrays, plus an
optional vocabulary. Readers for every source kind live in :mod:`bnncompress.sources`; this
module only holds the types and the checks every source passes through (:func:`make_tensor`).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PosteriorError

#: Name given to the single flat tensor of an AutoDiagonalNormal guide read without its model.
FLAT_LATENT_NAME = "latent"
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class TensorPosterior:
    """The Gaussian posterior of one tensor: ``N(loc, scale**2)`` elementwise.

    ``loc`` and ``scale`` are float32 numpy arrays of the same shape; ``dtype`` is the
    floating-point type the tensor had in its source (restored when it is loaded back).
    """

    loc: np.ndarray
    scale: np.ndarray
    dtype: str = "float32"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.loc.shape)

    @property
    def size(self) -> int:
        return int(self.loc.size)


@dataclass
class Posterior:
    """Named Gaussian posteriors plus an optional vocabulary (row labels of 2-D tensors).

    ``tensors`` hold the values (:class:`TensorPosterior`), or for a posterior read lazily,
    objects that read them by rows (:class:`bnncompress.sources.RowSource`); both have
    ``shape``, ``size`` and ``dtype``.

    Example:
        >>> p = Posterior({"w": make_tensor("w", np.zeros((3, 2)), np.ones((3, 2)), "test")}, ["a", "b", "c"])
        >>> p.names, p.vocab_tensors, p.num_weights
        (['w'], ['w'], 6)
    """

    tensors: dict[str, Any]
    vocab: list[str] | None = None
    source: str = "python objects"
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.size for t in self.tensors.values())

    @property
    def vocab_tensors(self) -> list[str]:
        """Names of the 2-D tensors whose rows the vocabulary labels."""
        if self.vocab is None:
            return []
        return [n for n, t in self.tensors.items() if len(t.shape) == 2 and t.shape[0] == len(self.vocab)]

    def select(self, names: Iterable[str], require_vocab: bool = False) -> Posterior:
        """The same posterior restricted to ``names`` (in that order). A vocabulary that labels
        none of them is dropped with a warning, or refused if ``require_vocab`` (it was asked for)."""
        names = list(names)
        unknown = [n for n in names if n not in self.tensors]
        if unknown:
            raise PosteriorError(
                f"no tensor named {', '.join(map(repr, unknown))} in {self.source}; available: {', '.join(self.names)}"
            )
        vocab, warnings = self.vocab, list(self.warnings)
        if vocab is not None and not any(
            len(self.tensors[n].shape) == 2 and self.tensors[n].shape[0] == len(vocab) for n in names
        ):
            if require_vocab:
                raise PosteriorError(
                    f"the vocabulary ({len(vocab)} words) labels none of the selected tensors "
                    f"({', '.join(names)}); select a tensor it labels or drop the vocabulary"
                )
            warnings.append("the stored vocabulary labels none of the selected tensors; it is not packed")
            vocab = None
        return Posterior({n: self.tensors[n] for n in names}, vocab, self.source, warnings)


def check_vocab(posterior: Posterior) -> None:
    """The vocabulary must label at least one 2-D tensor (as many words as rows)."""
    if not posterior.vocab_tensors:
        shapes = ", ".join(f"{n} {t.shape}" for n, t in posterior.tensors.items())
        raise PosteriorError(
            f"vocabulary has {len(posterior.vocab or [])} words but no 2-D tensor has that many rows "
            f"({shapes}); pass the vocabulary the model was trained with"
        )


def input_file(path: Path, what: str, within: Path | None = None) -> Path:
    """``path`` if it is a regular file, checked before it is opened: reading a FIFO, socket or
    device could block forever. Inside ``within`` (a posterior directory) a symbolic link must
    also stay inside it, so a directory received from elsewhere cannot pull in local files."""
    try:
        if within is not None and path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(within.resolve(strict=True)):
                raise PosteriorError(
                    f"{what} is a symbolic link to '{target}', outside the directory; copy the file in instead"
                )
        st = path.stat()
    except FileNotFoundError:
        raise PosteriorError(f"{what} does not exist (or is a broken link); pass an existing file") from None
    except (OSError, RuntimeError) as exc:  # a link loop, a permission denied
        raise PosteriorError(f"cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise PosteriorError(f"{what} is not a regular file (a directory, pipe, socket or device); pass a file")
    return path


def _to_numpy(name: str, what: str, value: Any, where: str) -> tuple[np.ndarray, str]:
    """A float32 numpy copy of ``value`` (numpy array or torch tensor) and its original dtype name."""
    if type(value).__module__.startswith("torch"):  # torch is imported only when a tensor comes in
        import torch

        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.is_meta or value.is_quantized:
                kind = "meta" if value.is_meta else ("quantized" if value.is_quantized else str(value.layout))
                raise PosteriorError(
                    f"{where}: {what} of '{name}' is a {kind} tensor; store dense floating-point tensors"
                )
            value = value.detach()
            dtype = str(value.dtype).removeprefix("torch.")
            if dtype not in FLOAT_DTYPES:
                raise PosteriorError(f"{where}: {what} of '{name}' has dtype {dtype}; it must be floating point")
            return value.to(dtype=torch.float32, device="cpu").numpy(), dtype
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise PosteriorError(f"{where}: {what} of '{name}' is not an array ({exc})") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise PosteriorError(f"{where}: {what} of '{name}' has dtype {arr.dtype}; it must be floating point")
    dtype = arr.dtype.newbyteorder("=").name
    return np.asarray(arr, dtype=np.float32, order="C").reshape(arr.shape), dtype


def make_tensor(name: str, loc: Any, scale: Any, where: str) -> TensorPosterior:
    """Validate ``loc`` and ``scale`` (arrays or tensors) as the posterior of tensor ``name``.

    Example:
        >>> make_tensor("w", np.zeros(2), np.ones(2), "test").dtype
        'float64'
    """
    loc_arr, dtype = _to_numpy(name, "loc", loc, where)
    scale_arr, _ = _to_numpy(name, "scale", scale, where)
    if loc_arr.shape != scale_arr.shape:
        raise PosteriorError(
            f"{where}: loc of '{name}' has shape {loc_arr.shape} but scale has {scale_arr.shape}; they must match"
        )
    if loc_arr.size == 0:
        raise PosteriorError(f"{where}: tensor '{name}' is empty (shape {loc_arr.shape})")
    check_values(name, where, loc_arr, scale_arr)
    return TensorPosterior(loc_arr, scale_arr, dtype)


def check_values(name: str, where: str, loc: np.ndarray, scale: np.ndarray) -> None:
    """Means must be finite, scales finite and positive (float32 after conversion)."""
    bad = int(np.count_nonzero(~np.isfinite(loc)))
    if bad:
        raise PosteriorError(f"{where}: loc of '{name}' has {bad} NaN/inf values; means must be finite")
    bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0))))
    if bad:
        raise PosteriorError(
            f"{where}: scale of '{name}' has {bad} NaN/inf or non-positive values (after conversion to float32); "
            "scales must be finite and > 0"
        )
