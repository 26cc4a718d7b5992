"""Vocabularies: the words that label the rows of embedding tensors, read and validated."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .errors import PosteriorError


def read_vocab(vocab: str | os.PathLike | Iterable[str]) -> list[str]:
    """Read and validate a vocabulary: a file with one word per line, or an iterable of words.

    Example:
        >>> read_vocab(["king", "queen"])
        ['king', 'queen']
    """
    if isinstance(vocab, (str, os.PathLike)):
        path = Path(vocab)
        if not path.is_file():
            raise PosteriorError(f"vocabulary file '{path}' does not exist; pass a file with one word per line")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PosteriorError(f"vocabulary file '{path}' is not UTF-8 text ({exc.reason})") from None
        words = [w.removesuffix("\r") for w in text.split("\n")]
        if words and words[-1] == "":
            words.pop()  # the final newline
        where = f"vocabulary file '{path}'"
    else:
        words = [str(w) for w in vocab]
        where = "vocabulary"
    return validate_words(words, where)


def validate_words(words: list[str], where: str, error: type[Exception] = PosteriorError) -> list[str]:
    """Check a word list: non-empty, no empty entries, no control characters (line breaks, NUL)
    or unpaired surrogates, no duplicates."""
    if not words:
        raise error(f"{where} is empty; it needs one word per row of the embedding")
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w or w.strip() != w:
            raise error(
                f"{where} has an empty word or one with surrounding whitespace at line {i + 1} ({w!r}); "
                "remove it so that line numbers match rows"
            )
        if not w.isprintable() and any(unicodedata.category(c) in ("Cc", "Cs") for c in w):
            raise error(
                f"{where} has a word with a control character or an unpaired surrogate at line {i + 1} ({w!r}); "
                "words must be printable UTF-8 text"
            )
    if len(set(words)) != len(words):
        seen: set[str] = set()
        dup = next(w for w in words if w in seen or seen.add(w))
        raise error(f"{where} lists the word {dup!r} more than once; each row needs a unique word")
    return words
