"""The posterior types: a mean-field Gaussian N(loc, scale²) per weight, by tensor name.

A :class:`Posterior` maps tensor names (the model's sample-site names, e.g.
``word_vectors``) to a :class:`TensorPosterior` holding ``loc`` and ``scale`` (in memory, or
read from a file by rows: :class:`StoredTensor`), plus an optional vocabulary. Readers for
every source kind live in :mod:`bnncompress.sources`; this module only holds the types and the
checks every source passes through (:func:`make_tensor`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import PosteriorError
from .floatvalues import as_float32, beyond_float32, check_values, to_float32
from .geometry import block_rows_for, num_rows, row_size
from .wordvectors import WORD_VECTORS

#: Name given to the single flat tensor of an AutoDiagonalNormal guide read without its model.
FLAT_LATENT_NAME = "latent"

#: What tells a file apart from another at its path, or from itself after a write (see :func:`file_stamp`).
FileStamp = tuple[int, int, int, int]


def file_stamp(path: str | os.PathLike) -> FileStamp | None:
    """The file at ``path`` as the system knows it: inode, size, and modification and change times
    (ns), or None if there is none. Any write or replacement changes it (to the file system's time
    resolution). The device is left out: a network share may have another on each Dask worker."""
    try:
        return stamp_of(os.stat(path))
    except OSError:
        return None


def stamp_of(st: os.stat_result) -> FileStamp:
    """:func:`file_stamp` of a file already open (``os.fstat`` of it): a reader that parsed a header through
    a descriptor stamps that very file, not whatever the path names a moment later."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_opened(fd: int, path: str | os.PathLike, stamp: FileStamp | None) -> None:
    """Raise :class:`PosteriorError` unless the file open as ``fd`` is the one stamped ``stamp`` (another
    file renamed over ``path`` since, or this one written: its rows would mix two files)."""
    if stamp is not None and stamp_of(os.fstat(fd)) != stamp:
        raise PosteriorError(
            f"'{path}' was replaced or written while it was read; pack again once nothing writes to it"
        )


class TensorPosterior:
    """The Gaussian posterior of one tensor: ``N(loc, scale**2)`` elementwise, read whole or by rows.

    Made from arrays, its values are in memory: ``loc`` and ``scale`` are float32 numpy arrays of
    the same shape. A source reader may instead return a :class:`StoredTensor`, which reads its
    values from a file only when asked (by rows for streaming and Dask, or whole). ``dtype`` is the
    floating-point type the tensor had in its source (restored when it is loaded back).

    Example:
        >>> t = TensorPosterior(np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32))
        >>> t.shape, t.num_rows, t.row_size, t.read(1, 3)[0].tolist()
        ((3, 2), 3, 2, [0.0, 0.0, 0.0, 0.0])
    """

    #: True when ``loc`` and ``scale`` are arrays in memory (:meth:`read` returns views of them).
    in_memory: ClassVar[bool] = True
    #: (name, where) while the values wait for :meth:`check` (:func:`make_tensor`; done on first use at the latest)
    _unchecked: tuple[str, str] | None = None

    def __init__(self, loc: np.ndarray, scale: np.ndarray, dtype: str = "float32"):
        self._loc, self._scale, self.dtype = loc, scale, dtype
        self.shape: tuple[int, ...] = tuple(loc.shape)
        #: float64 means float32 cannot hold within 100 posterior sds: (how many, the most sds off).
        self.beyond_float32: tuple[int, float] = (0, 0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype!r})"

    @property
    def loc(self) -> np.ndarray:
        """The means, float32, of shape :attr:`shape`."""
        self.check()
        return self._loc

    @property
    def scale(self) -> np.ndarray:
        """The standard deviations, float32, of shape :attr:`shape`."""
        self.check()
        return self._scale

    def unchecked_values(self) -> tuple[np.ndarray, np.ndarray]:
        """``loc`` and ``scale`` as held, before :meth:`check` (to copy a tensor that a selection may leave out)."""
        return self._loc, self._scale

    def check(self) -> TensorPosterior:
        """Refuse values a pack cannot use (PosteriorError: NaN/inf means, scales not finite and > 0), once;
        a :class:`StoredTensor` checks the rows it reads instead. Returns the tensor."""
        if self._unchecked is not None:
            check_values(*self._unchecked, self._loc, self._scale)
            self._unchecked = None
        return self

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
        """Flat float32 ``loc`` and ``scale`` of rows ``start:stop`` (first dimension; a 0-d or 1-D
        tensor has one value per row)."""
        rs = self.check().row_size
        return self._loc.reshape(-1)[start * rs : stop * rs], self._scale.reshape(-1)[start * rs : stop * rs]

    def load(self) -> TensorPosterior:
        """The tensor with its values in memory (itself when they already are)."""
        return self

    def beyond_blocks(self, start: int, stop: int) -> dict[int, tuple[int, float]]:
        """What reads found of float64 means beyond float32 (:attr:`beyond_float32`) in the coding blocks of rows
        ``start:stop``, per block (a Dask worker's copy tells them back with :meth:`add_beyond_blocks`)."""
        br = block_rows_for(self.shape)
        return {b: e for b, e in self.__dict__.get("_beyond", {}).items() if start <= b * br < stop}

    def add_beyond_blocks(self, blocks: dict[int, tuple[int, float]]) -> None:
        """Keep :meth:`beyond_blocks` another copy of this tensor read (a block read again replaces its own)."""
        self.__dict__.setdefault("_beyond", {}).update(blocks)


class StoredTensor(TensorPosterior):
    """A tensor whose values stay in a file until asked for; :meth:`read` checks them as packing
    requires (finite means, positive scales, as many values as the shape says). Small and
    picklable, so a Dask worker reads its own rows.

    Subclasses (one per storage, made by the source readers) set ``name``, ``shape``, ``dtype``
    and ``where`` (the file, for error messages) and implement :meth:`_read`.
    """

    in_memory: ClassVar[bool] = False
    name: str
    where: str

    def __init__(self) -> None:  # pragma: no cover - subclasses are dataclasses
        raise TypeError("StoredTensor is abstract; a source reader makes its subclasses")

    @property
    def loc(self) -> np.ndarray:
        return self.load().loc

    @property
    def scale(self) -> np.ndarray:
        return self.load().scale

    def stamps(self) -> list[tuple[str, FileStamp | None]]:
        """The files this tensor reads, each with its :func:`file_stamp` when it was opened (a
        subclass that names none is not checked)."""
        return []

    def check_unchanged(self) -> None:
        """Raise :class:`PosteriorError` if a file this tensor reads was written, replaced or removed
        since it was opened (the rows read before and after would be of two different files)."""
        for path, stamp in self.stamps():
            now = file_stamp(path)
            if now is None and stamp is not None and not os.path.exists(path):  # (a Dask worker that lacks it)
                raise PosteriorError(
                    f"{self.where}: '{path}' cannot be found here (removed, or a Dask worker that does not have it: "
                    f"give an absolute path on a file system every worker shares; working directory {os.getcwd()})"
                )
            if now != stamp:
                raise PosteriorError(
                    f"{self.where}: '{path}' was changed while '{self.name}' was read from it; pack again once "
                    "nothing writes to it"
                )

    @property
    def beyond_float32(self) -> tuple[int, float]:  # type: ignore[override]
        """As :attr:`TensorPosterior.beyond_float32`, over the coding blocks read so far (each once: passes read
        ranges that overlap; a Dask worker's reads are told back by the pipeline)."""
        parts = list(self.__dict__.get("_beyond", {}).values())
        return sum(p[0] for p in parts), max((p[1] for p in parts), default=0.0)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        self.check_unchanged()
        wide, wide_scale = self._read(start, stop)
        self.check_unchanged()  # a write during the read
        loc, scale = as_float32(wide), as_float32(wide_scale)
        if len(loc) != (stop - start) * self.row_size or len(scale) != len(loc):
            raise PosteriorError(f"{self.where}: '{self.name}' holds fewer values than its shape says; it is truncated")
        from ._pipeline_kernels import count_invalid  # numba, imported on the first read (~0.3 s)

        if any(count_invalid(loc, scale)):  # one pass; the error says how many
            check_values(self.name, self.where, loc, scale, range(start, stop))
        if wide.dtype.kind == "f" and wide.dtype.itemsize == 8:  # float64 of either byte order (checked above; per
            # coding block: one read again is counted once)
            br, flat = block_rows_for(self.shape), [np.asarray(w).reshape(-1) for w in (wide, wide_scale)]
            found = {}
            for first in range(start, stop, br):
                part = slice((first - start) * self.row_size, (min(first + br, stop) - start) * self.row_size)
                found[first // br] = beyond_float32(flat[0][part], flat[1][part], loc[part])
            self.add_beyond_blocks(found)
        return loc, scale

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """Rows ``start:stop`` of loc and scale as stored (any float dtype; uint16 = bfloat16 bits)."""
        raise NotImplementedError

    def load(self) -> TensorPosterior:
        loc, scale = self.read(0, self.num_rows)
        tensor = TensorPosterior(loc.reshape(self.shape), scale.reshape(self.shape), self.dtype)
        tensor.beyond_float32 = self.beyond_float32
        return tensor


@dataclass
class Posterior:
    """Named Gaussian posteriors plus an optional vocabulary (row labels of 2-D tensors).

    Every tensor is a :class:`TensorPosterior`: in memory, or for a posterior opened from a
    file that reads by rows, a :class:`StoredTensor` that reads its values when asked.

    Example:
        >>> p = Posterior({"w": make_tensor("w", np.zeros((3, 2)), np.ones((3, 2)), "test")}, ["a", "b", "c"])
        >>> p.names, p.vocab_tensors, p.num_weights
        (['w'], ['w'], 6)
    """

    tensors: dict[str, TensorPosterior]
    vocab: list[str] | None = None
    source: str = "python objects"
    warnings: list[str] = field(default_factory=list)
    #: ``{name: support}`` of tensors whose values are unconstrained (:mod:`bnncompress.supports`).
    supports: dict[str, dict] = field(default_factory=dict)
    #: A param store's parameters that are no loc/scale pair (``{key: value as stored}``, unconstrained): with
    #: the model, an AutoDelta's ``<guide>.<site>`` point estimates (:func:`bnncompress.modelsites.with_model`).
    points: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # (the dataclass's would print every word of the vocabulary)
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in list(self.tensors.items())[:8])
        more = f" and {len(self.tensors) - 8} more" if len(self.tensors) > 8 else ""
        words = "no vocabulary" if self.vocab is None else f"a vocabulary of {len(self.vocab):,} words"
        return f"Posterior({shapes}{more}; {words}; from {self.source})"

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.size for t in self.tensors.values())

    @property
    def in_memory(self) -> bool:
        """True when every tensor's values are in memory."""
        return all(t.in_memory for t in self.tensors.values())

    def check_unchanged(self) -> None:
        """Raise :class:`PosteriorError` if a file one of the tensors reads changed since it was opened:
        a pack checks it after reading everything, so no archive mixes two versions of a file."""
        for t in self.tensors.values():
            if isinstance(t, StoredTensor):
                t.check_unchanged()

    def load(self) -> Posterior:
        """A copy of this posterior with every tensor's values in memory (read now if they are in a file)."""
        return self.with_tensors({n: t.load() for n, t in self.tensors.items()})

    def check(self) -> Posterior:
        """Check every tensor's values in memory (:meth:`TensorPosterior.check`; a file's are checked as read)."""
        for tensor in self.tensors.values():
            tensor.check()
        return self

    def with_tensors(self, tensors: dict[str, TensorPosterior], **changes: Any) -> Posterior:
        """A copy holding ``tensors``, every other field kept (its lists and dicts copied) unless in ``changes``."""
        kept = {"warnings": list(self.warnings), "supports": dict(self.supports), "points": dict(self.points)}
        return dataclasses.replace(self, tensors=tensors, **{**kept, **changes})

    @property
    def vocab_tensors(self) -> list[str]:
        """Names of the 2-D tensors whose rows the vocabulary labels."""
        if self.vocab is None:
            return []
        return [n for n, t in self.tensors.items() if len(t.shape) == 2 and t.shape[0] == len(self.vocab)]

    def select(self, names: Iterable[str], require_vocab: bool = False) -> Posterior:
        """The same posterior restricted to ``names`` (in that order). A vocabulary that labels
        none of them is dropped with a warning, or refused if ``require_vocab`` (it was asked for)."""
        names = [names] if isinstance(names, str) else list(names)  # (one name, not its characters)
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
        supports = {n: s for n, s in self.supports.items() if n in names}
        return self.with_tensors({n: self.tensors[n] for n in names}, vocab=vocab, warnings=warnings, supports=supports)


def check_vocab(posterior: Posterior) -> None:
    """The vocabulary must label at least one 2-D tensor (as many words as rows); a note joins the
    posterior's warnings when it passes over a 2-D ``word_vectors`` to label another tensor."""
    labelled = posterior.vocab_tensors
    if not labelled:
        shapes = ", ".join(f"{n} {t.shape}" for n, t in posterior.tensors.items())
        raise PosteriorError(
            f"vocabulary has {len(posterior.vocab or [])} words but no 2-D tensor has that many rows "
            f"({shapes}); pass the vocabulary the model was trained with"
        )
    passed_over = posterior.tensors.get(WORD_VECTORS)
    if passed_over is not None and len(passed_over.shape) == 2 and WORD_VECTORS not in labelled:
        posterior.warnings.append(
            f"the vocabulary ({len(posterior.vocab or []):,} words) does not fit '{WORD_VECTORS}' "
            f"({passed_over.shape[0]:,} rows): its words label '{labelled[0]}', which is read as the word vectors; "
            f"pass the vocabulary of '{WORD_VECTORS}' if that was meant"
        )


def make_tensor(name: str, loc: Any, scale: Any, where: str) -> TensorPosterior:
    """Validate ``loc`` and ``scale`` (arrays or tensors) as the posterior of tensor ``name``: types and shapes
    now, values (finite means, positive scales) on :meth:`TensorPosterior.check` or first use.

    Example:
        >>> make_tensor("w", np.zeros(2), np.ones(2), "test").dtype
        'float64'
    """
    loc_arr, dtype = to_float32(name, "loc", loc, where)
    scale_arr, _ = to_float32(name, "scale", scale, where)
    if loc_arr.shape != scale_arr.shape:
        raise PosteriorError(
            f"{where}: loc of '{name}' has shape {loc_arr.shape} but scale has {scale_arr.shape}; they must match"
        )
    if loc_arr.size == 0:
        raise PosteriorError(f"{where}: tensor '{name}' is empty (shape {loc_arr.shape})")
    tensor = TensorPosterior(loc_arr, scale_arr, dtype)
    tensor._unchecked = (name, where)  # on first use (a pack checks the tensors it selected: one left out may be bad)
    if dtype == "float64":  # sds below float32's spacing at their means: the archive's float32 values are far
        tensor.beyond_float32 = beyond_float32(loc, scale, loc_arr)
    return tensor
