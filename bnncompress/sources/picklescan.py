"""The walk over a pickle's opcodes before it is unpickled (:func:`prescan`): what
:mod:`.torchzip` refuses that no ``find_class`` sees.

Example:
    >>> import pickle
    >>> prescan(pickle.dumps({"a": [1, 2.5]}))  # plain: passes
    >>> prescan(b"\\x82\\x01.")  # EXT1 1: a copyreg extension code
    Traceback (most recent call last):
    ...
    bnncompress.sources.pickledconstraints.NotPlain: an extension code
"""

from __future__ import annotations

import pickletools
import sys

import numpy as np

from .pickledconstraints import NotPlain

#: Every pickle opcode by its byte, with its argument's size (>= 0: fixed; < 0: pickletools' codes).
_OPCODES = {op.code.encode("latin-1")[0]: (op.name, op.arg.n if op.arg else 0) for op in pickletools.opcodes}
_LENGTH_BYTES = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True)}
_LENGTH_BYTES.update({pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)})


def prescan(data: bytes) -> None:
    """Refuse, before unpickling, the opcodes that act without the unpickler's ``find_class``
    (:class:`.torchzip._Unpickler`):
    extension codes (copyreg's cache of already-loaded objects) and memo indices beyond the
    pickle's length (the C unpickler allocates a memo that large). A walk over the opcodes that
    skips their arguments; a large pickle's (a big vocabulary) in numba, with the same outcomes, and any once numba
    is set up (its CPU target: a first kernel costs 0.5 s, a cached one 3 ms; then 0.3 MB take 0.2 ms, not 11)."""
    if len(data) < _KERNEL_BYTES and not any(module in sys.modules for module in _SET_UP):
        _prescan_python(data)
    else:
        _prescan_numba(data)


def _prescan_numba(data: bytes) -> None:
    from ._pickle_kernels import PASSED, UNKNOWN_OPCODE, scan_opcodes  # numba: imported on first use

    outcome, pos = scan_opcodes(np.frombuffer(data, np.uint8), OPCODE_KINDS, OPCODE_SIZES, len(data))
    if outcome == UNKNOWN_OPCODE:
        raise NotPlain(f"an unknown pickle opcode at byte {pos}")
    if outcome != PASSED:
        raise NotPlain(_REFUSED[outcome])


#: Pickles from this size are walked by numba's kernel (importing numba takes 0.6 s, which a pack pays, but a read
#: alone need not), and all once one of these modules is loaded.
_KERNEL_BYTES, _SET_UP = 4 << 20, ("bnncompress.sources._pickle_kernels", "numba.np.arraymath")
#: What the walk refuses, by :mod:`._pickle_kernels`' outcome (1 is an unknown opcode, with its position).
_REFUSED = {
    2: "an extension code",
    3: "a memo index beyond the pickle",
    4: "a truncated pickle",
    5: "a negative length in the pickle",
    6: "a pickle without STOP",
}


def _prescan_python(data: bytes) -> None:
    """:func:`prescan`'s walk in Python (4x faster than ``pickletools.genops``, which decodes the arguments)."""
    pos, end, limit = 0, len(data), len(data)
    while pos < end:
        found = _OPCODES.get(data[pos])
        if found is None:
            raise NotPlain(f"an unknown pickle opcode at byte {pos}")
        name, size = found
        pos += 1
        if name in ("EXT1", "EXT2", "EXT4"):
            raise NotPlain(_REFUSED[2])
        if name == "STOP":
            return
        if size >= 0:
            if name in ("BINPUT", "LONG_BINPUT") and int.from_bytes(data[pos : pos + size], "little") > limit:
                raise NotPlain(_REFUSED[3])
            pos += size
        elif size == pickletools.UP_TO_NEWLINE:  # GLOBAL and INST take two lines
            for _ in range(2 if name in ("GLOBAL", "INST") else 1):
                newline = data.find(b"\n", pos)
                if newline < 0:
                    raise NotPlain(_REFUSED[4])
                if name == "PUT" and (not data[pos:newline].isdigit() or int(data[pos:newline]) > limit):
                    raise NotPlain(_REFUSED[3])
                pos = newline + 1
        else:
            width, signed = _LENGTH_BYTES[size]
            length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
            if length < 0:
                raise NotPlain(_REFUSED[5])
            pos += width + length
    raise NotPlain(_REFUSED[6])


def _opcode_tables() -> tuple[np.ndarray, np.ndarray]:
    """Every first byte's kind and size for :func:`._pickle_kernels.scan_opcodes` (as :data:`_OPCODES`),
    the kinds numbered as there: unknown 0, fixed size 1, extension 2, STOP 3, BINPUT and LONG_BINPUT 4,
    one line 5, two lines 6, PUT 7, a length 8, a signed length 9."""
    kinds, sizes = np.zeros(256, np.int8), np.zeros(256, np.int64)  # kind 0: unknown
    for byte, (name, size) in _OPCODES.items():
        if name in ("EXT1", "EXT2", "EXT4"):
            kinds[byte] = 2
        elif name == "STOP":
            kinds[byte] = 3
        elif size >= 0:
            kinds[byte], sizes[byte] = (4 if name in ("BINPUT", "LONG_BINPUT") else 1), size
        elif size == pickletools.UP_TO_NEWLINE:
            kinds[byte] = 6 if name in ("GLOBAL", "INST") else 7 if name == "PUT" else 5
        else:
            width, signed = _LENGTH_BYTES[size]
            kinds[byte], sizes[byte] = (9 if signed else 8), width
    return kinds, sizes


OPCODE_KINDS, OPCODE_SIZES = _opcode_tables()
