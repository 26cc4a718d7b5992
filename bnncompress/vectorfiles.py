"""Word vectors from word2vec text or binary and GloVe text files, told apart by their content: what
evaluation and ``bnncompress train --init`` read (gensim's own loaders accept files these refuse)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import OptionError


def read_word_vectors(path: str | os.PathLike):
    """gensim ``KeyedVectors`` from word2vec text or binary, or GloVe text (no header line), told
    apart by their content, not their names.

    Blank lines are skipped. A file whose lines do not all hold a word and the same number of
    finite values, that repeats a word, or whose header's count is not what follows, is refused
    with an :class:`OptionError` naming the line.

    Example:
        >>> kv = read_word_vectors("vectors.txt")  # doctest: +SKIP
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise OptionError(f"word-vector file '{path}' does not exist or is not a file; pass word2vec or GloVe text")
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
        if _names_gensim(head):  # (unpack's .kv)
            raise OptionError(
                f"'{path}' is a gensim KeyedVectors file (a pickle, which bnncompress never loads); pass word2vec or "
                "GloVe text (`bnncompress unpack -o vectors.txt` writes it)"
            )
        if head[:4] == b"PK\x03\x04":  # (unpack's .npz and .pt)
            raise OptionError(
                f"'{path}' is a zip file (as .npz and .pt files are), not word vectors; pass word2vec or GloVe text "
                "(`bnncompress unpack -o vectors.txt` writes it)"
            )
        fh.seek(0)
        start, number = (3, 1) if fh.read(3) == b"\xef\xbb\xbf" else (0, 1)  # after a UTF-8 byte-order mark
        fh.seek(start)  # (start, number: of the first line that is not blank)
        while not (first := fh.readline(1 << 20)).strip():
            if not first:
                raise OptionError(f"'{path}' is empty; pass word2vec or GloVe vectors")
            start, number = start + len(first), number + 1
        fields = first.split()
        if len(fields) == 2 and all(x.isdigit() for x in fields):  # word2vec: a "count dim" line first
            count, dim = int(fields[0]), int(fields[1])
            while (probe := fh.readline(_PROBE)) and not probe.strip():
                pass
            cut = len(probe) == _PROBE and not probe.endswith(b"\n")
            if cut and len(probe.split(maxsplit=1)) < 2:  # a first word longer than the probe: read past it
                probe, cut = _past_the_word(fh, probe, path, number + 1)
            binary = bool(probe) and not _text_line(probe, dim, cut) and not _text_like(probe, dim)  # (see _text_like)
            _check_header(path, count, dim, binary)
            fh.seek(start + len(first))
            if binary:
                words, vectors = _read_binary(fh, path, count, dim)
            else:
                words, vectors = _read_text(fh, path, count, dim, number + 1)
        else:  # GloVe: no header, as many vectors as lines
            fh.seek(start)
            words, vectors = _read_text(fh, path, None, len(fields) - 1, number)
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(words, vectors)
    return kv


def gensim_pickle(path: str | os.PathLike) -> bool:
    """A pickle whose first 4 kB name gensim's KeyedVectors class (``KeyedVectors.save``, bnncompress unpack's .kv)."""
    with open(path, "rb") as fh:
        return _names_gensim(fh.read(_HEAD))


#: Bytes of a file's start that tell a gensim pickle or a zip file from word vectors.
_HEAD = 4096


def _names_gensim(head: bytes) -> bool:
    return head[:1] == b"\x80" and b"gensim.models.keyedvectors" in head


#: Bytes of the first vector line read to tell word2vec text from binary.
_PROBE = 1 << 20
#: The longest first word read past the probe to find what follows it.
_WORD = 1 << 26
_NUMBER_TEXT = frozenset(b"0123456789+-.eEinfaINFA \t\r\n")
#: Characters of a number as text, a decimal comma too (of a text file whose numbers do not parse).
_NUMBER_LIKE = frozenset("0123456789+-.,eEinfaINFA")


def _past_the_word(fh, probe: bytes, path: Path, line: int) -> tuple[bytes, bool]:
    """The probe read on past a first word longer than it, to what follows the word (and whether still cut)."""
    parts, size, cut = [probe], len(probe), True
    while cut:
        more = fh.readline(_PROBE)
        if not more:
            break
        parts.append(more)
        size += len(more)
        cut = len(more) == _PROBE and not more.endswith(b"\n")
        if any(c in more for c in b" \t\r\x0b\x0c") or not cut:  # the word (or the line) ended
            break
        if size >= _WORD:  # (a guess past it would read garbage as numbers)
            raise OptionError(f"line {line} of '{path}' starts with a word longer than 64 MiB; pass word2vec or GloVe")
    return b"".join(parts), cut


def _text_line(line: bytes, dim: int, cut: bool) -> bool:
    """Whether ``line`` is a word2vec text line: a word and ``dim`` numbers (a line longer than the
    probe, ``cut``: a word and then only characters of numbers; float32 bytes are not all of those)."""
    if cut:
        values = line.split(maxsplit=1)[1:]
        return bool(values) and _NUMBER_TEXT.issuperset(values[0][:_PROBE])
    parts = line.split()
    if len(parts) != dim + 1:
        return False
    try:
        np.array(parts[1:], dtype=np.float32)
    except ValueError:
        return False
    return True


def _text_like(line: bytes, dim: int) -> bool:
    """Whether ``line`` is printable text of a word and ``dim`` fields that are not all numbers (``0,5``):
    read as text, so that the reader names the bad number. Read as binary, values of three characters
    (four bytes with their space, a float32's size) gave numbers like 1.5e-19, and scores, exit 0."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    fields = text.split()
    if not text.endswith("\n") or len(fields) != dim + 1 or not text.rstrip("\r\n").replace("\t", " ").isprintable():
        return False
    return all(_NUMBER_LIKE.issuperset(field) for field in fields[1:])  # (random float32 bytes rarely are)


def _check_header(path: Path, count: int, dim: int, binary: bool) -> None:
    """A word2vec header promises ``count x dim`` values: the file must be big enough to hold them
    (4 bytes each in binary, 2 characters in text) before the matrix is allocated."""
    if count < 1 or dim < 1:
        raise OptionError(f"'{path}' declares {count:,} vectors of {dim:,} values; a word-vector file needs some")
    if count * dim * (4 if binary else 2) > path.stat().st_size:
        raise OptionError(f"'{path}' declares {count:,} vectors of {dim:,} values, more than the file holds")


def _read_text(fh, path: Path, count: int | None, dim: int, first_line: int) -> tuple[list[str], np.ndarray]:
    """Word2vec text (``count`` vectors after the header) or GloVe (``count`` None: every line)."""
    if dim < 1:
        raise OptionError(f"line {first_line} of '{path}' holds a word but no values; pass word2vec or GloVe vectors")
    words: dict[str, int] = {}  # word -> its line, in file order
    rows: list[np.ndarray] = []
    for number, raw in enumerate(fh, start=first_line):
        parts = raw.split()
        if not parts:
            continue  # a blank line holds nothing
        if len(rows) == count:
            raise OptionError(f"'{path}' holds more vectors than the {count:,} of its header (line {number})")
        if len(parts) != dim + 1:
            raise OptionError(
                f"line {number} of '{path}' has {len(parts) - 1} values, not {dim}; "
                "each line must be a word and its values"
            )
        try:
            word = parts[0].decode("utf-8")
            rows.append(np.array(parts[1:], dtype=np.float32))
        except (UnicodeDecodeError, ValueError):
            raise OptionError(
                f"'{path}' is not word2vec or GloVe vectors: line {number} is not a UTF-8 word followed by numbers"
            ) from None
        _add_word(words, word, number, path, "lines")
    if count is not None and len(rows) < count:
        raise OptionError(f"'{path}' holds {len(rows):,} vectors, not the {count:,} of its header")
    return _finite(words, np.stack(rows), path, "line")


def _read_binary(fh, path: Path, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """Word2vec binary: per vector, a word, a space and ``dim`` little-endian float32 (each may
    be followed by a newline, which the next word then starts with)."""
    words: dict[str, int] = {}
    vectors = np.empty((count, dim), dtype=np.float32)
    size = 4 * dim
    buf, pos = b"", 0
    for i in range(count):
        while (space := buf.find(b" ", pos)) == -1 or len(buf) - space - 1 < size:
            more = fh.read(max(1 << 20, size + 1))
            if not more:
                raise OptionError(f"'{path}' ends inside vector {i + 1:,} of the {count:,} of its header; it is cut")
            buf, pos = buf[pos:] + more, 0
        try:
            word = buf[pos:space].lstrip(b"\n").decode("utf-8")
        except UnicodeDecodeError:
            raise OptionError(f"the word of vector {i + 1:,} of '{path}' is not UTF-8 text") from None
        if not word:
            raise OptionError(f"vector {i + 1:,} of '{path}' has no word; the file is damaged")
        _add_word(words, word, i + 1, path, "vectors")
        vectors[i] = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + size
    while not (rest := buf[pos:]).strip():  # after the last vector: line breaks at most
        if not (buf := fh.read(1 << 20)):
            return _finite(words, vectors, path, "vector")
        pos = 0
    raise OptionError(
        f"'{path}' holds more than the {count:,} binary vectors of its header ({rest[:20]!r} follows); "
        "the header is wrong or the file is not word2vec binary"
    )


def _add_word(words: dict[str, int], word: str, where: int, path: Path, units: str) -> None:
    if word in words:
        raise OptionError(f"word {word!r} appears twice in '{path}' ({units} {words[word]:,} and {where:,}); keep one")
    words[word] = where


def _finite(words: dict[str, int], vectors: np.ndarray, path: Path, unit: str) -> tuple[list[str], np.ndarray]:
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        where = list(words.values())[int(bad[0])]
        raise OptionError(f"{unit} {where:,} of '{path}' has a value that is not a finite number; fix or remove it")
    return list(words), vectors
