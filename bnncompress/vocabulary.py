"""Vocabularies: the words that label the rows of embedding tensors, read and validated."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping, Set
from pathlib import Path

from .errors import ArgumentTypeError, PosteriorError
from .inputfiles import open_input


def read_vocab(
    vocab: str | os.PathLike | Iterable[str], *, within: Path | None = None, what: str | None = None
) -> list[str]:
    """Read and validate a vocabulary: a file with one word per line, or an iterable of words
    (``str``, or ``bytes`` in UTF-8) in row order.

    Example:
        >>> read_vocab(["king", b"queen"])
        ['king', 'queen']
    """
    if isinstance(vocab, (str, os.PathLike)):  # (``within``: a posterior directory the file must stay in)
        where = what or f"vocabulary file '{vocab}'"
        try:  # (newline="": a lone CR inside a word is that word's, refused below, not a line break that shifts rows)
            with open_input(Path(vocab), where, within) as fh:
                text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="").read()
        except UnicodeDecodeError as exc:
            raise PosteriorError(f"{where} is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise PosteriorError(f"cannot read {where} ({exc.strerror})") from None
        return validate_words(split_lines(text), where)
    if isinstance(vocab, (bytes, Mapping, Set)) or not isinstance(vocab, Iterable):
        raise ArgumentTypeError(
            f"«vocab» must be a file path or a list of words in row order, not a {type(vocab).__name__}"
        )
    return validate_words(decode_words(vocab, "«vocab»", type_error=ArgumentTypeError), "vocabulary")


def split_lines(text: str) -> list[str]:
    """The words of a text with one word per line (``\\n`` or ``\\r\\n``, or ``\\r`` in a text without ``\\n``;
    a final line break ends the last). A lone ``\\r`` among ``\\n`` lines stays in its word (and is refused there).

    Example:
        >>> split_lines("king\\r\\nqueen\\n"), split_lines("king\\rqueen\\r"), split_lines("ki\\rng\\nqueen")
        (['king', 'queen'], ['king', 'queen'], ['ki\\rng', 'queen'])
    """
    if "\r" in text and "\n" not in text:  # classic Mac line ends
        text = text.replace("\r", "\n")
    words = text.split("\n")
    if "\r" in text:
        words = [w.removesuffix("\r") for w in words]
    if words and words[-1] == "":
        words.pop()
    return words


def decode_words(
    items: Iterable, where: str, error: type[Exception] = PosteriorError, type_error: type[Exception] | None = None
) -> list[str]:
    """Words as ``str``: ``bytes`` (numpy ``S`` arrays, HDF5 strings) are decoded as UTF-8; any
    other type is refused (as ``type_error``, default ``error``) rather than turned into its repr."""
    if isinstance(items, (list, tuple)):  # at C speed where nothing is wrong (a million words: 1.2 s -> 0.05 s)
        kinds = set(map(type, items))
        if kinds <= {str}:
            return list(items)
        if kinds == {bytes} and not _repeats_large(items):
            try:
                words = b"\n".join(items).decode("utf-8").split("\n")
            except UnicodeDecodeError:
                words = []  # the loop below names the word
            if len(words) == len(items):  # (a word with a line break in it: the loop keeps it whole)
                return words
    words, decoded = [], {}  # (a word object listed again decodes to the same str, not to a copy)
    for i, w in enumerate(items):
        if isinstance(w, bytes):
            try:
                if id(w) not in decoded:
                    decoded[id(w)] = w.decode("utf-8")
                w = decoded[id(w)]
            except UnicodeDecodeError:
                raise error(f"{where}: word {i + 1} ({w[:20]!r}) is not UTF-8 text") from None
        elif not isinstance(w, str):
            raise (type_error or error)(f"{where}: word {i + 1} is a {type(w).__name__} ({w!r:.40}), not a string")
        words.append(str(w))
    return words


#: Control characters (Unicode category Cc) and surrogates (Cs), which no word may hold.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: In words joined by line breaks: a word that starts or ends with whitespace (``str.isspace``, as ``strip``).
_SURROUNDING_SPACE = re.compile(r"(?:\A|\n)\s|\s(?:\n|\Z)")


def storable_word(word: str) -> bool:
    """Whether an archive's vocabulary can hold ``word``: not empty, no surrounding whitespace, no control
    character or unpaired surrogate (:func:`validate_words`'s rules for one word).

    Example:
        >>> storable_word("New York"), storable_word(" padded"), storable_word("tab\\tword")
        (True, False, False)
    """
    return bool(word) and word.strip() == word and _CONTROL.search(word) is None


def validate_words(words: list[str], where: str, error: type[Exception] = PosteriorError) -> list[str]:
    """Check a word list: non-empty, no empty entries, no control characters (line breaks, NUL)
    or unpaired surrogates, no duplicates.

    Example:
        >>> validate_words(["king", "New\u00a0York"], "vocabulary")
        ['king', 'New\xa0York']
        >>> try:
        ...     validate_words(["king", "queen "], "vocabulary")
        ... except PosteriorError as exc:
        ...     print(str(exc).split(";")[0])
        vocabulary has an empty word or one with surrounding whitespace at line 2 ('queen ')
    """
    if not words:
        raise error(f"{where} is empty; it needs one word per row of the embedding")
    if not _plainly_valid(words):
        checked: set[int] = set()  # (a word object listed again: checked once, then the duplicate check says it)
        for i, w in enumerate(words):  # the first word that is wrong, and how
            if id(w) in checked:
                continue
            checked.add(id(w))
            if not isinstance(w, str) or not w or w.strip() != w:
                raise error(
                    f"{where} has an empty word or one with surrounding whitespace at line {i + 1} ({w!r:.80}); "
                    "remove it so that line numbers match rows"
                )
            if _CONTROL.search(w):
                raise error(
                    f"{where} has a word with a control character or an unpaired surrogate at line {i + 1} "
                    f"({w!r:.80}); words must be printable UTF-8 text"
                )
    if len(set(words)) != len(words):
        dup = first_repeated(words)
        raise error(f"{where} lists the word {dup!r:.80} more than once; each row needs a unique word")
    return words


def first_repeated(names: list[str]) -> str | None:
    """The first name that comes a second time, or None (a set: a header of many names is not searched N^2 times).

    Example:
        >>> first_repeated(["a", "b", "a"]), first_repeated(["a"])
        ('a', None)
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


#: Characters of all words beyond which joining them is first checked for a word object listed many times.
_LARGE = 1 << 26


def _repeats_large(items: list | tuple) -> bool:
    """Whether ``items`` (str or bytes) are long in all and list some object more than once: a pickle stores a
    repeated word once (a 2 MB file listing a 2 MB word 4,000 times), and joining copies it per listing."""
    return sum(map(len, items)) > _LARGE and len(set(map(id, items))) != len(items)


def _plainly_valid(words: list[str]) -> bool:
    """True if every word is a non-empty ``str`` with no control character and no surrounding
    whitespace, checked over all words at once; False: some word is not (look word by word)."""
    if not set(map(type, words)) <= {str} or not all(words) or _repeats_large(words):
        return False
    joined = "\n".join(words)
    spaced = joined.replace("\n", " ")
    if joined.count("\n") != len(words) - 1:
        return False
    if spaced.isprintable():  # no Cc or Cs then, and the only whitespace is U+0020 (every other is Cc or Z*)
        return not (joined[0] == " " or joined[-1] == " " or "\n " in joined or " \n" in joined)
    return _CONTROL.search(spaced) is None and _SURROUNDING_SPACE.search(joined) is None
