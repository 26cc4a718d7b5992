"""Reading an archive's manifest and vocabulary safely: strict JSON (no NaN, Infinity, or number
beyond float64 and int64), checked field types, and the memory a parse may take bounded before
it starts (a small forged file must not expand into gigabytes of Python objects)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .decoded import available_memory
from .errors import ArchiveError

#: Bytes of Python objects a JSON item takes at most with its slot in a list or dict: a dict, a list, a string
#: (its text: :func:`text_bytes`), a number, and a dict's entry (its key, table slot and the parser's memo of
#: keys) (``[{},{},...]`` took 24 times its bytes; measured peaks stay below the sum).
DICT_BYTES, LIST_BYTES, STR_BYTES, NUMBER_BYTES, ENTRY_BYTES = 72, 104, 57, 32, 64  # (a list: 56, 4 slots, its own)
#: A parse (the manifest's, the vocabulary's split) may take this many bytes per byte of the archive, and
#: this many in any case: a small forged file must not expand into gigabytes (a 228 kB file's manifest of
#: ``[{},{},...]`` took 2.7 GB; a 104 kB file's ``ab\n`` x 33 million words 2.7 GB). Real archives: 3,000
#: tensors parse to 15 MB from 190 kB; six 256 x 256 per-element bounds (790,000 numbers) to 28 MB from 110 kB.
PARSE_PER_FILE_BYTE, PARSE_FLOOR = 256, 256 << 20
_FLOAT_MAX = 1.7976931348623157e308


def parse_budget(file_bytes: int) -> int:
    """Bytes a parse of an archive of ``file_bytes`` may take (:data:`PARSE_PER_FILE_BYTE`, within memory)."""
    return min(available_memory(), max(PARSE_FLOOR, PARSE_PER_FILE_BYTE * file_bytes))


def parse_need(raw: bytes) -> int:
    """At most the bytes of Python objects ``json.loads(raw)`` makes, from its brackets, quotes, commas and colons."""
    dicts, lists, strings, commas = raw.count(b"{"), raw.count(b"["), raw.count(b'"') // 2, raw.count(b",")
    need = DICT_BYTES * dicts + LIST_BYTES * lists + STR_BYTES * strings + NUMBER_BYTES * (commas + 1)
    return need + ENTRY_BYTES * raw.count(b":") + text_bytes(raw) + (1 << 16)  # (and the parser's own few objects)


def text_bytes(raw: bytes) -> int:
    """The decoded text of ``raw`` and its strings again, at CPython's 1, 2 or 4 bytes a character: a str is as
    wide as its widest character (one emoji made a manifest 4 bytes a character, twice the estimate's 4 in all)."""
    width = 1 if raw.isascii() else 4 if re.search(rb"[\xf0-\xf4]", raw) else 2
    return 2 * width * len(raw)


def parse_manifest(raw: bytes, where: str, file_bytes: int) -> Any:
    """The manifest's JSON; ArchiveError if it is not strict JSON or its parse may take more than
    :func:`parse_budget` (an upper bound counted before parsing: items by their brackets, quotes and commas)."""
    need = parse_need(raw)
    if need > parse_budget(file_bytes):
        raise ArchiveError(
            f"{where}: the manifest ({len(raw):,} bytes) would take up to {need:,} bytes parsed, more than an "
            f"archive of {file_bytes:,} bytes can need; refusing it"
        )

    def refuse(text: str) -> Any:
        raise ArchiveError(f"{where}: the manifest holds the number {text[:40]}; the archive is damaged")

    def real(text: str) -> float:
        value = float(text)
        return value if abs(value) != float("inf") else refuse(text)

    def whole(text: str) -> int:  # (kept exact: the record's checksum covers it; a bound may be a big int)
        if len(text) > 400:  # (no integer this long is below float64's largest)
            refuse(text)
        value = int(text)
        return value if abs(value) <= _FLOAT_MAX else refuse(text)

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=refuse, parse_int=whole, parse_float=real)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ArchiveError(f"{where}: the manifest is not valid JSON; the archive is damaged") from None


def require(value: Any, kind: type, what: str, where: str) -> Any:
    """``value`` if it is a ``kind`` (an int is not a bool), else ArchiveError."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArchiveError(
            f"{where}: {what} should be {kind.__name__}, found {type(value).__name__}; the archive is damaged"
        )
    return value


def check_vocab_count(raw: bytes, num_words: Any, entries: list, where: str, file_bytes: int) -> None:
    """Before the vocabulary is split into words: it declares ``num_words``, no more than the rows of
    the largest tensor, holds that many lines, and its words fit the :func:`parse_budget` (the rows come
    from the same unchecked manifest: a forged ``ab\\n`` x 33 million, 104 kB, took 2.7 GB)."""
    shapes = [e.get("shape") for e in entries if isinstance(e, dict)]
    rows = max((s[0] for s in shapes if isinstance(s, list) and s and type(s[0]) is int), default=0)
    if type(num_words) is not int or not 0 < num_words <= rows or raw.count(b"\n") + 1 != num_words:
        raise ArchiveError(f"{where}: vocabulary word count does not match the manifest; the archive is damaged")
    if STR_BYTES * num_words + text_bytes(raw) > parse_budget(file_bytes):
        raise ArchiveError(
            f"{where}: the vocabulary's {num_words:,} words would take more memory than an archive of "
            f"{file_bytes:,} bytes can need; refusing it"
        )


@dataclass(frozen=True)
class KnownFields:
    """The tensor-entry fields a reader knows (``names``), and those of them newer than the archive's
    ``version`` (``late``: side arrays of later versions, whose spans the reader would skip)."""

    names: frozenset[str]
    late: frozenset[str]
    version: int

    @classmethod
    def of(cls, fields: set[str], sides: list[tuple[Any, int]], version: int) -> KnownFields:
        """``fields`` and the side arrays (each with the version that added it), for an archive of ``version``."""
        late = frozenset(side.name for side, since in sides if since > version)
        return cls(frozenset(fields | {side.name for side, _ in sides}), late, version)


def refuse_unknown_fields(entry: dict, known: KnownFields, where: str) -> None:
    """A tensor entry's fields must all be ``known``: a record kind of a plug-in not imported here (or of a
    newer bnncompress) was read as the scalar grid, and decoded to other values, silently; a version 5
    archive's reflectors (version 6) were skipped, so its rotation was dropped."""
    unknown = set(entry) - known.names
    if unknown:
        raise ArchiveError(
            f"{where}: field {min(unknown)!r} is not one this bnncompress knows (a record kind of a plug-in not "
            "imported here, or a newer bnncompress); import the plug-in that wrote the archive, or upgrade"
        )
    late = known.late.intersection(entry)
    if late:
        what = f"'{min(late)}' is not part of format version {known.version}"
        raise ArchiveError(f"{where}: {what}; the archive is damaged")
