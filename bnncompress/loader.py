"""Loading an archive back as a point-estimate model: numpy, torch and gensim views."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import modules
from .archive import read_archive
from .contents import ArchiveContents, ClosedContents, TensorInfo, loaded_shape, printable, summary, tensor_infos
from .decoded import decode_whole, select_rows
from .errors import ArgumentTypeError, NotFoundError, OptionError
from .export import export_archive
from .forksafe import renew_after_fork
from .records import TensorRecord
from .rowaccess import RowReader
from .servedrows import ServedRows, is_bool_id
from .similarity import WordQueries
from .supports import constraint_of, is_elementwise
from .wordvectors import embedding_tensor

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from gensim.models import KeyedVectors

    from .serving import CompressedEmbedding


class Archive:
    """A loaded archive: dequantized point estimates by tensor name, plus the vocabulary.

    Tensors are decoded on first access and cached. Open one with :func:`bnncompress.load`
    (``with bnncompress.load(path) as a:`` drops the decoded tensors on leaving; a closed
    archive refuses every use).

    Example:
        >>> import bnncompress, numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.bnc")
        >>> rng = np.random.default_rng(0)
        >>> _ = bnncompress.pack({"w": (rng.normal(size=(50, 4)), np.full((50, 4), 0.05))}, path, lam=0.1)
        >>> a = bnncompress.load(path)
        >>> a.names, a["w"].shape, a["w"].dtype  # float64 in, float64 out
        (['w'], (50, 4), dtype('float64'))
    """

    def __init__(self, contents: ArchiveContents):
        self._contents = contents
        self._records = {t.name: t for t in contents.tensors}
        self._cache: dict[str, np.ndarray] = {}
        self._readers: dict[str, RowReader] = {}
        self._served: dict[str, ServedRows] = {}
        self._closing = threading.Lock()  # a tensor decoded while another thread closes is not kept
        renew_after_fork(self)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Archive:
        """Read and validate ``path`` (checksums included); decoding happens on access."""
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
            raise ArgumentTypeError(
                f"path must be the path of a .bnc archive (a str or os.PathLike), not {type(path).__name__}"
            )
        return cls(read_archive(path))

    def close(self) -> None:
        """Drop the archive's contents and decoded tensors; any later use raises :class:`ArchiveError`."""
        with self._closing:
            self._contents = self._records = ClosedContents(self._contents.path)  # type: ignore[assignment]
            self._cache.clear()
            self._readers.clear()
            self._served.clear()
            self.__dict__.pop("_word_index", None)

    def _kept(self, cache: dict[str, Any], name: str, value: Any) -> Any:
        """What ``cache`` holds at ``name`` (else ``value``), or ``value`` if another thread closed the archive."""
        with self._closing:
            return value if isinstance(self._records, ClosedContents) else cache.setdefault(name, value)

    def __getstate__(self) -> dict[str, Any]:  # pickled without its decoded tensors: decoded again, read-only
        return {"_contents": self._contents, "_records": self._records}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _cache={}, _readers={}, _served={}, _closing=threading.Lock())
        renew_after_fork(self)

    def _after_fork(self) -> None:  # (forksafe: another thread of the parent may have held the lock)
        self._closing = threading.Lock()

    def __enter__(self) -> Archive:
        if isinstance(self._records, ClosedContents):
            self._records.refuse()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ contents
    @property
    def names(self) -> list[str]:
        """Tensor names in archive order (the model's sample-site names)."""
        return list(self._records)

    @property
    def vocab(self) -> list[str] | None:
        """The vocabulary (row labels of 2-D tensors with that many rows), or None; a copy: keep it in a variable."""
        return None if self._contents.vocab is None else list(self._contents.vocab)

    @property
    def source(self) -> str:
        return self._contents.source

    @property
    def path(self) -> os.PathLike:
        return self._contents.path

    @property
    def location(self) -> str:
        """The archive file's absolute path when it was read (``path`` is as given, relative to the directory then)."""
        return self._contents.location or os.path.abspath(self._contents.path)

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __iter__(self):
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        if isinstance(self._records, ClosedContents):
            return f"Archive({str(self._records.path)!r}, closed)"
        return f"Archive({str(self._contents.path)!r}, tensors={self.names})"

    def record(self, name: str) -> TensorRecord:
        if not isinstance(name, str):
            raise ArgumentTypeError(f"tensor names are strings, not {type(name).__name__}; see Archive.names")
        try:
            return self._records[name]
        except KeyError:
            names = ", ".join(printable(n) for n in self.names[:20]) + (", ..." if len(self) > 20 else "")
            raise NotFoundError(f"no tensor named {name!r} in the archive; available: {names}") from None

    def reader(self, name: str) -> RowReader:
        """The :class:`~bnncompress.rowaccess.RowReader` of tensor ``name`` (stored values, decoded on demand)."""
        rec = self.record(name)
        found = self._readers.get(name)
        return self._kept(self._readers, name, RowReader(rec)) if found is None else found

    def __getitem__(self, name: str) -> np.ndarray:
        """The dequantized tensor ``name`` as a numpy array of its original dtype (bfloat16 -> float32)."""
        rec = self.record(name)
        if name not in self._cache:
            values = decode_whole(rec, self.reader(name))
            values.flags.writeable = False
            return self._kept(self._cache, name, values)
        return self._cache[name]

    def verify(self) -> None:
        """Decode every tensor once (not kept): ArchiveError if one does not decode (what ``bnncompress
        info -q`` runs; a row lookup decodes only the rows it needs)."""
        for name in self.names:
            decode_whole(self.record(name), RowReader(self.record(name)))

    def rows(self, name: str, indices) -> np.ndarray:
        """``self[name][indices]`` for row ``indices`` (numpy's rules), decoding only the blocks that hold them.

        ``indices``: an integer, a slice, an integer array or list of any shape, or a boolean
        mask of one entry per row; anything else raises ``TypeError``, a row beyond the tensor
        :class:`~bnncompress.errors.OutOfRangeError` (an ``IndexError``), decoded or not.

        Example:
            >>> load("small.bnc").rows("word_vectors", [0, 17]).shape    # doctest: +SKIP
            (2, 50)
        """
        rec = self.record(name)
        spec = rec.params.get("support")
        constraint = None if spec is None else constraint_of(spec, f"tensor '{name}'")  # (built once a call)
        across = constraint is not None and not is_elementwise(constraint)  # (simplex: from the whole tensor)
        whole = self[name] if across or name in self._cache else None
        return select_rows(rec, indices, whole, self.reader(name), constraint)

    # ------------------------------------------------------------------ serving (rows stay compressed)
    def served_rows(self, name: str | None = None) -> ServedRows:
        """Tensor ``name``'s (default: word vectors) reader, row cache and norms, one per tensor, shared
        by :meth:`embedding`, :meth:`vectors` and the similarity queries (:mod:`bnncompress.servedrows`)."""
        name = self.default_embedding_name() if name is None else name
        found = self._served.get(name)
        if found is None:
            where = self._contents.location or self._contents.path
            found = self._kept(self._served, name, ServedRows(self.record(name), where, reader=self.reader(name)))
        return found

    def embedding(self, name: str | None = None, cache_rows: int | None = None) -> CompressedEmbedding:
        """Tensor ``name`` (default: the word vectors) as a :class:`~bnncompress.CompressedEmbedding`:
        an ``nn.Module`` whose ``forward(ids)`` decodes only the rows a batch needs, the rest coming
        from the tensor's cache of ``cache_rows`` rows (None: keep its size, at first 10% of the rows).
        Example: ``load("small.bnc").embedding()(torch.tensor([3, 17]))``, a (2, dim) tensor."""
        from .serving import CompressedEmbedding

        served = self.served_rows(name)
        served.resize_cache(cache_rows)
        return CompressedEmbedding(served)

    @property
    def _words(self) -> dict[str, int]:
        if self._contents.vocab is None:
            raise OptionError("the archive has no vocabulary; pack it with «vocab», or use rows(name, indices)")
        if "_word_index" not in self.__dict__:  # built once: index() is a dict lookup
            self._word_index = dict(zip(self._contents.vocab, range(len(self._contents.vocab))))
        return self._word_index

    def index(self, word: str) -> int:
        """The row of ``word`` (a dict built once: O(1)); :class:`NotFoundError` if it has none."""
        row = self._words.get(word) if isinstance(word, str) else None
        if row is None:
            raise NotFoundError(f"{word!r} is not in the archive's vocabulary")
        return row

    def vectors(self, words_or_ids: Sequence[str | int] | np.ndarray, name: str | None = None) -> np.ndarray:
        """The (k, dim) rows of words and/or row ids in tensor ``name`` (default: word vectors), via its cache."""
        listed = isinstance(words_or_ids, (list, tuple))
        if isinstance(words_or_ids, str) or (not listed and np.ndim(words_or_ids) == 0):  # (a word, an int, 0-d)
            raise ArgumentTypeError("«words_or_ids» is a list of words or row ids; for one word use vector(word)")
        if listed and any(is_bool_id(i) or isinstance(i, (list, tuple, np.ndarray)) for i in words_or_ids):
            raise ArgumentTypeError("«words_or_ids» is a flat list of words or integer row ids")  # ([True, 5]: row 1)
        if any(isinstance(w, str) for w in words_or_ids):  # the vocabulary must label this tensor's rows
            self._vocab_for_shape(self.default_embedding_name() if name is None else name)
        ids = [self.index(i) if isinstance(i, str) else i for i in words_or_ids]
        return self.served_rows(name).lookup(np.asarray(ids).reshape(-1))

    def vector(self, word: str, name: str | None = None) -> np.ndarray:
        """The row of ``word`` in tensor ``name`` (default: the word vectors), from the row cache."""
        return self.vectors([word], name)[0]

    def _queries(self) -> WordQueries:
        name = self.default_embedding_name()
        return WordQueries(self.served_rows(name), self._words, self._vocab_for_shape(name))

    def most_similar(self, positive=None, negative=(), topn: int | None = 10, restrict_vocab: int | None = None):
        """gensim's ``most_similar`` (3CosAdd) on the word vectors, streaming decoded blocks
        (:meth:`bnncompress.similarity.WordQueries.most_similar`): ``a.most_similar(["king", "woman"], ["man"])``."""
        return self._queries().most_similar(positive, negative, topn, restrict_vocab)

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of the vectors of two words (gensim's ``similarity``)."""
        return self._queries().similarity(w1, w2)

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest from the mean of the words' unit vectors (gensim's ``doesnt_match``)."""
        return self._queries().doesnt_match(words)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape ``self[name]`` has (a recorded support may change the stored shape)."""
        rec = self.record(name)
        return loaded_shape(rec.shape, rec.params.get("support"))

    def arrays(self) -> dict[str, np.ndarray]:
        """All tensors as ``{name: numpy array}``."""
        return {n: self[n] for n in self.names}

    # ------------------------------------------------------------------ accounting
    @property
    def file_bytes(self) -> int:
        return self._contents.file_bytes

    @property
    def payload_bytes(self) -> int:
        return self._contents.payload_bytes

    @property
    def vocab_bytes(self) -> int:
        """Bytes the (gzip-compressed) vocabulary occupies in the file."""
        return self._contents.vocab_bytes

    @property
    def num_weights(self) -> int:
        return self._contents.num_weights

    def tensor_info(self) -> list[TensorInfo]:
        """Per-tensor sizes; the file's bytes beyond the payloads are shared in proportion to size."""
        return tensor_infos(self._contents)

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary: per tensor and in total (what ``bnncompress info --json`` prints)."""
        return summary(self._contents)

    # ------------------------------------------------------------------ conversions
    def _vocab_for_shape(self, name: str) -> list[str]:
        shape, vocab = tuple(self.record(name).shape), self._contents.vocab
        if vocab is None:
            raise OptionError(f"the archive has no vocabulary; pack it with «vocab» to get word vectors for '{name}'")
        if len(shape) != 2 or shape[0] != len(vocab) or len(self.shape(name)) != 2:  # (as it loads: a support's)
            raise OptionError(f"tensor '{name}' has shape {self.shape(name)}: no word vectors of {len(vocab)} words")
        return vocab

    def default_embedding_name(self) -> str:
        """The word vectors, as for a posterior file (:func:`bnncompress.wordvectors.embedding_tensor`)."""
        shapes = {r.name: tuple(r.shape) for r in self._records.values()}
        name = embedding_tensor(shapes, None if self._contents.vocab is None else len(self._contents.vocab))
        if name is None:
            raise OptionError("the archive has no 2-D tensor to use as an embedding; name one with «tensor»")
        return name

    def to_keyed_vectors(self, name: str | None = None) -> KeyedVectors:
        """The tensor ``name`` (default: word vectors) as gensim ``KeyedVectors`` keyed by the vocabulary."""
        from gensim.models import KeyedVectors

        name = self.default_embedding_name() if name is None else name
        words = self._vocab_for_shape(name)
        vectors = np.asarray(self[name], dtype=np.float32)
        kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
        kv.add_vectors(words, vectors)
        return kv

    def to_embedding(self, name: str | None = None, freeze: bool = True) -> torch.nn.Embedding:
        """The 2-D tensor ``name`` as ``torch.nn.Embedding.from_pretrained``, in its dtype (as :meth:`tensor`)."""
        import torch

        name = self.default_embedding_name() if name is None else name
        arr = self[name]
        if arr.ndim != 2:
            raise OptionError(f"tensor '{name}' has shape {arr.shape}; an embedding needs a 2-D tensor")
        return torch.nn.Embedding.from_pretrained(self.tensor(name), freeze=freeze)

    def load_into(self, module: torch.nn.Module, strict: bool = True, prefix: str = "") -> torch.nn.Module:
        """Copy every tensor into the parameter of ``module`` with the same name and return ``module``.

        Archive names are the posterior's site names (``fc1.weight``); with ``prefix`` (e.g. ``"net."`` for TyXe)
        only names that start with it are used, without it. With ``strict`` (the default) every archive tensor must
        have a parameter and every parameter a tensor, else :class:`~bnncompress.ModelMismatchError` lists the
        missing and unexpected names; shapes must always match. A PyroModule's ``PyroSample`` weights become buffers
        (then deterministic, equal to :meth:`condition`), found by Pyro's site names (a named root's; a shared
        layer's last) and module paths (with ``prefix``, paths alone); tensors that are not attributes of a
        PyroModule (sites sampled in its ``forward``, e.g. a noise scale) are left to :meth:`condition`.

        Example:
            >>> import torch
            >>> net = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
            >>> bnncompress.load("mlp.bnc").load_into(net)   # doctest: +SKIP
        """
        return modules.load_into(self, module, strict, prefix)

    def condition(self, model: Any) -> Any:
        """The Pyro ``model`` with every archive tensor's site fixed to its point estimate:
        ``pyro.poutine.condition(model, data={site: tensor})`` (constrained values, the posterior
        median of each site whose support the archive records).

        Example:
            >>> predictive = pyro.infer.Predictive(a.condition(model), num_samples=1)   # doctest: +SKIP
        """
        return modules.condition(self, model)

    def export(
        self,
        path: str | os.PathLike,
        format: str | None = None,
        tensor: str | None = None,
        binary: bool | None = None,
        force: bool = True,
    ) -> str:
        """Write the point estimate as word2vec vectors of one tensor (``format="word2vec"``, text
        or ``binary``, default binary for a ``.bin`` path), gensim KeyedVectors of one tensor
        (``"kv"``), a torch state_dict (``"pt"``) or numpy arrays (``"npz"``), the last two with
        the vocabulary as ``vocab`` (:data:`bnncompress.export.FORMATS`); ``format`` defaults to
        the suffix of ``path``.
        Returns the format.

        Example:
            >>> bnncompress.load("small.bnc").export("vectors.txt")   # doctest: +SKIP
            'word2vec'
        """
        return export_archive(self, path, format, tensor, binary, force)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as a CPU ``torch.Tensor`` of its original dtype (bfloat16 restored)."""
        import torch

        t = torch.tensor(self[name], device="cpu")  # (not torch's default device: meta would lose the values)
        return t.to(torch.bfloat16) if self.record(name).dtype == "bfloat16" else t

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{name: torch.Tensor}`` in the original dtypes (bfloat16 restored)."""
        return {name: self.tensor(name) for name in self.names}


def load(path: str | os.PathLike) -> Archive:
    """Open a bnncompress archive.

    Example:
        >>> a = load("small.bnc")                         # doctest: +SKIP
        >>> a["word_vectors"].shape, len(a.vocab)         # doctest: +SKIP
        ((5000, 50), 5000)
    """
    return Archive.open(path)
