"""Writing an archive's point estimate in other formats: word2vec vectors, gensim KeyedVectors
(.kv), a torch state_dict (.pt), numpy arrays (.npz). Every file is written atomically
(:mod:`bnncompress.files`); :data:`FORMATS` is the one list of them (the CLI's choices come from it).

The pt and npz files keep the vocabulary under the key ``vocab`` (a list of words; an array of
strings), the key ``bnncompress pack`` reads a vocabulary from; where a tensor is named ``vocab``,
under ``vocab.words`` (see :func:`_vocab_key`).
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from .errors import ArgumentTypeError, OptionError
from .files import atomic_output, same_file
from .scratch import scratch_directory


class Exportable(Protocol):
    """What an export reads (a loaded :class:`bnncompress.Archive` is one): tensor names, their
    values as numpy arrays and torch tensors, the vocabulary, and the file they come from."""

    @property
    def path(self) -> os.PathLike: ...

    @property
    def names(self) -> list[str]: ...

    @property
    def vocab(self) -> list[str] | None: ...

    def __getitem__(self, name: str) -> np.ndarray: ...

    def record(self, name: str) -> Any:
        """Anything with the ``name`` of tensor ``name`` (refusing unknown names)."""

    def tensor(self, name: str) -> Any:
        """Tensor ``name`` as a ``torch.Tensor`` of its original dtype."""

    def to_keyed_vectors(self, name: str | None = None) -> Any:
        """Tensor ``name`` (default: the word vectors) as gensim ``KeyedVectors`` keyed by the vocabulary."""


@dataclass(frozen=True)
class ExportFormat:
    """One export format: the file suffixes that select it, what it holds, and whether it is text."""

    name: str
    suffixes: tuple[str, ...]
    holds: str
    text: bool = False


#: Export formats by name, in the order the CLI lists them.
FORMATS = {
    f.name: f
    for f in (
        ExportFormat("word2vec", (".txt", ".vec", ".w2v", ".bin"), "vectors of one tensor, text or binary", True),
        ExportFormat("kv", (".kv",), "gensim KeyedVectors of one tensor"),
        ExportFormat("pt", (".pt", ".pth"), "torch state_dict and vocabulary"),
        ExportFormat("npz", (".npz",), "numpy arrays and vocabulary"),
    )
}
#: The format names as a sentence lists them: "word2vec, kv, pt or npz".
FORMAT_NAMES = ", ".join(list(FORMATS)[:-1]) + " or " + list(FORMATS)[-1]
#: What each format holds, for help texts: "word2vec (vectors of one tensor, ...), kv (...), ...".
FORMAT_HELP = ", ".join(f"{f.name} ({f.holds})" for f in FORMATS.values())
_VOCAB_KEY = "vocab"
#: What word2vec readers split a line on (gensim: the space; the C tool and bnncompress: ASCII whitespace).
_WORD2VEC_SEPARATORS = frozenset(" \t\n\r\x0b\x0c")
#: Suffixes gensim's loaders decompress by (smart_open's); an export writes its formats uncompressed.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def format_from_suffix(path: str | os.PathLike) -> str:
    """The export format a file name asks for, e.g. ``vectors.txt`` -> ``word2vec``."""
    _refuse_compressed(path)
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt.name
    raise OptionError(f"cannot tell the format from '{Path(path).name}'; give «format» {FORMAT_NAMES}")


def _refuse_compressed(path: str | os.PathLike) -> None:
    """gensim reads ``x.txt.gz`` as gzip (and fails on the plain text an export writes)."""
    if Path(path).suffix.lower() in _COMPRESSED:
        raise OptionError(
            f"'{Path(path).name}' names a compressed file, but exports are written uncompressed; drop "
            f"'{Path(path).suffix}' (and compress the file afterwards)"
        )


def export_archive(
    archive: Exportable, path: str | os.PathLike, fmt: str | None, tensor: str | None, binary: bool | None, force: bool
) -> str:
    """See :meth:`bnncompress.Archive.export` (``binary=None``: binary word2vec for a ``.bin`` path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"path must be the path of the file to write (a str or os.PathLike), not {type(path).__name__}"
        )
    if binary is not None and not isinstance(binary, bool):  # binary="no" wrote binary
        raise ArgumentTypeError(f"«binary» must be True, False or None, not {binary!r:.40}")
    _refuse_compressed(path)
    fmt = fmt or format_from_suffix(path)
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise OptionError(f"unknown export format {fmt!r}; choose {FORMAT_NAMES}")
    source = getattr(archive, "location", "") or archive.path  # (absolute when read: the directory may change)
    if same_file(Path(path), Path(source)):
        raise OptionError(f"the output '{path}' is the archive itself; choose another output path")
    if binary is not None and fmt != "word2vec":  # (text or binary: either is refused, not ignored)
        raise OptionError(f"«binary» is an option of the word2vec format (text or binary), not of {fmt}")
    if binary is None:  # GoogleNews-vectors.bin: a .bin word2vec file is binary wherever it is read
        binary = fmt == "word2vec" and Path(path).suffix.lower() == ".bin"
    names = [archive.record(tensor).name] if tensor is not None else archive.names  # pt, npz: only «tensor»
    if fmt == "npz":
        _refuse_npz_names(names)
    vocab_key = _vocab_key(names, fmt) if fmt in ("pt", "npz") and archive.vocab is not None else None
    if fmt == "word2vec" and archive.vocab is not None:
        spaced = next((w for w in archive.vocab if not _WORD2VEC_SEPARATORS.isdisjoint(w)), None)
        if spaced is not None:
            raise OptionError(f"the word {spaced!r:.80} holds a space, which word2vec lines cannot; export kv or pt")
    if fmt == "npz" and vocab_key is not None:
        _refuse_wide_npz_words(archive.vocab)
    kv = archive.to_keyed_vectors(tensor) if fmt in ("word2vec", "kv") else None
    with atomic_output(path, force=force) as tmp:
        if kv is not None:
            if fmt == "word2vec":
                kv.save_word2vec_format(str(tmp), binary=binary)
            else:
                with open(tmp, "wb") as fh:  # to a file object: one file, never arrays in side files
                    kv.lifecycle_events = None  # (gensim records the time, host and file name: not reproducible)
                    kv.save(fh)
        elif fmt == "pt":
            import torch

            state: dict = {name: archive.tensor(name) for name in names}
            if vocab_key is not None:
                state[vocab_key] = list(archive.vocab)  # a list of str: torch.load(weights_only=True) reads it
            buffer = io.BytesIO()  # torch reports a failed file write as a RuntimeError: write the bytes ourselves
            torch.save(state, buffer)
            tmp.write_bytes(buffer.getvalue())
        else:
            arrays = {name: np.asarray(archive[name]) for name in names}
            if vocab_key is not None:
                arrays[vocab_key] = np.asarray(archive.vocab, dtype=str)
            _write_npz(tmp, arrays)
    return fmt


def _refuse_wide_npz_words(words: list[str]) -> None:
    """npz holds the words as one fixed-width array: every word as wide as the longest (4 bytes a character)."""
    widest = max(map(len, words), default=0)
    stored = 4 * widest * len(words)
    if stored > max(1 << 26, 256 * sum(map(len, words))):  # (64 times the words' own 4 bytes a character)
        raise OptionError(
            f"npz would store each of the {len(words):,} words as wide as the longest ({widest:,} characters): "
            f"{stored / 2**20:,.0f} MiB of vocabulary; export pt"
        )


def _vocab_key(names: list[str], fmt: str) -> str:
    """``vocab``; where a tensor has that name, the first of ``vocab.words``, ``vocab.words.2``, ...
    that no tensor has (with a warning): every tensor keeps its name, and the words are kept too."""
    taken = set(names)
    candidates = itertools.chain(
        [_VOCAB_KEY, f"{_VOCAB_KEY}.words"], (f"{_VOCAB_KEY}.words.{i}" for i in itertools.count(2))
    )
    clashes = taken | ({n[: -len(".npy")] for n in names if n.endswith(".npy")} if fmt == "npz" else set())
    key = next(k for k in candidates if k not in clashes)  # (npz: numpy's npz["k.npy"] reads member k.npy)
    if key != _VOCAB_KEY:
        warnings.warn(
            f"a tensor is named '{_VOCAB_KEY}'{' (or vocab.npy)' if fmt == 'npz' else ''}: the {fmt} file keeps the "
            f"vocabulary under '{key}'",
            stacklevel=3,
        )
    return key


def _refuse_npz_names(names: list[str]) -> None:
    """Names an npz file cannot keep apart: one with a NUL (zip member names end there) and two
    named ``n`` and ``n.npy`` (numpy's ``npz["n.npy"]`` returns the member of ``n``)."""
    taken = set(names)
    nul = next((n for n in names if "\0" in n), None)
    if nul is not None:
        raise OptionError(f"tensor name {nul!r:.80} has a NUL character, which an npz file cannot hold; export pt")
    clash = next((n for n in names if n + ".npy" in taken), None)
    if clash is not None:
        raise OptionError(
            f"tensors {clash!r:.80} and {clash + '.npy'!r:.80} cannot both be kept in an npz file (numpy reads the "
            f"key {clash + '.npy'!r:.80} as tensor {clash!r:.80}); export pt, or one tensor at a time"
        )


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez(path, **arrays)`` for any names: savez would take a tensor named ``file`` or
    ``allow_pickle`` for its own argument."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            try:
                member = zf.open(name + ".npy", "w", force_zip64=True)
            except UnicodeEncodeError:
                raise OptionError(f"tensor name {name!r} cannot be stored in an npz file; export pt") from None
            with member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def export_to_stream(archive: Exportable, stream: BinaryIO, fmt: str, tensor: str | None, binary: bool | None) -> str:
    """Export to ``stream`` (``bnncompress unpack -o -`` writes text formats to a terminal this way).
    Returns the format."""
    with scratch_directory("copy of the export") as directory:
        tmp = directory / f"export{FORMATS[fmt].suffixes[0] if fmt in FORMATS else ''}"
        written = export_archive(archive, tmp, fmt, tensor, binary, force=True)
        with open(tmp, "rb") as fh:
            shutil.copyfileobj(fh, stream)
        stream.flush()
    return written
