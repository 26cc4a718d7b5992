"""numba kernel for :func:`bnncompress.sources.picklescan.prescan` on large pickles (a vocabulary of a
million words is five million opcodes: 2.8 s in Python, 10 ms here). Imported on first use.

Every read is bounds-checked: the bytes are untrusted, and numba does not check indices.
"""

from __future__ import annotations

from .._ans import numba  # (numba imported after its environment is checked)

#: What the walk does with an opcode, by its first byte (:data:`bnncompress.sources.picklescan.OPCODE_KINDS`).
UNKNOWN, FIXED, EXTENSION, STOP, MEMO_PUT, ONE_LINE, TWO_LINES, TEXT_PUT, LENGTH, SIGNED_LENGTH = range(10)
#: Outcomes: the walk reached STOP; or the first thing refused (the position of an unknown opcode).
PASSED, UNKNOWN_OPCODE, EXTENSION_CODE, MEMO_BEYOND, TRUNCATED, NEGATIVE_LENGTH, NO_STOP = range(7)


@numba.njit(cache=True, nogil=True)
def scan_opcodes(data, kinds, sizes, limit):  # pragma: no cover - compiled
    """(outcome, position) of the walk over the uint8 ``data``: ``kinds`` and ``sizes`` of every first
    byte (a fixed argument's size; a length's width), memo indices up to ``limit``."""
    pos, end = 0, len(data)
    while pos < end:
        at = pos
        kind = kinds[data[pos]]
        size = sizes[data[pos]]
        pos += 1
        if kind == UNKNOWN:
            return UNKNOWN_OPCODE, at
        if kind == EXTENSION:
            return EXTENSION_CODE, at
        if kind == STOP:
            return PASSED, at
        if kind == FIXED or kind == MEMO_PUT:
            if kind == MEMO_PUT:
                value = 0
                for i in range(min(size, end - pos)):  # (a truncated argument: its bytes that are there)
                    value |= numba.int64(data[pos + i]) << (8 * i)
                if value > limit:
                    return MEMO_BEYOND, at
            pos += size
        elif kind == ONE_LINE or kind == TWO_LINES or kind == TEXT_PUT:
            for _ in range(2 if kind == TWO_LINES else 1):
                newline = pos
                while newline < end and data[newline] != 10:
                    newline += 1
                if newline >= end:
                    return TRUNCATED, at
                if kind == TEXT_PUT:
                    if newline == pos:
                        return MEMO_BEYOND, at
                    digits = 0  # significant ones: 19 or more is beyond any pickle's length
                    value = 0
                    for i in range(pos, newline):
                        c = data[i]
                        if c < 48 or c > 57:
                            return MEMO_BEYOND, at
                        if digits > 0 or c != 48:
                            digits += 1
                            if digits < 19:
                                value = value * 10 + (c - 48)
                    if digits >= 19 or value > limit:
                        return MEMO_BEYOND, at
                pos = newline + 1
        else:  # a length of `size` bytes, little-endian, then that many bytes
            avail = min(size, end - pos)
            if kind == SIGNED_LENGTH and avail > 0 and data[pos + avail - 1] >= 128:
                return NEGATIVE_LENGTH, at
            if avail == 8 and data[pos + 7] >= 128:  # 2^63 or more: past the end
                return NO_STOP, at
            length = 0
            for i in range(avail):
                length |= numba.int64(data[pos + i]) << (8 * i)
            remaining = end - pos - size
            if remaining <= 0 or length >= remaining:  # the walk would end at or past the last byte
                return NO_STOP, at
            pos += size + length
    return NO_STOP, end
