"""A Pyro param store written as ``torch.save`` writes it, without importing torch.

``bnncompress train`` saves AutoNormal's param store (float32 tables, their constraints, the
vocabulary). Importing torch and Pyro only to write that file cost about 1.1 s of the command.
This module writes the same zip layout torch does (a protocol-2 ``data.pkl`` whose tensors are
``torch._utils._rebuild_tensor_v2`` over storages stored, uncompressed and 64-byte aligned, as
``data/<key>``), which ``torch.load`` (also with ``weights_only=True`` and ``mmap=True``) and
bnncompress's own reader read. Pyro's ``ParamStoreDict.load`` takes only ``params`` and ``constraints``
(this file also holds ``supports`` and ``vocab``): give those two to ``pyro.get_param_store().set_state``.

Example:
    >>> import numpy as np
    >>> save_param_store("store.pt", {"AutoNormal.locs.w": np.zeros((2, 3), np.float32)},
    ...                  {"AutoNormal.locs.w": "real"}, vocab=["a", "b"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import numpy as np

#: The constraints a param store of this package holds, as the globals pickle names them, with the
#: state torch pickles for them (None: no BUILD).
CONSTRAINTS = {
    "real": ("torch.distributions.constraints", "_Real", None),
    "softplus_positive": ("pyro.distributions.constraints", "_SoftplusPositive", {"lower_bound": 0.0}),
}
_ALIGNMENT = 64  # torch aligns every member's data to 64 bytes (so that torch.load(mmap=True) can map it)


class _Pickle:
    """Protocol-2 pickle opcodes for the few kinds of object a param store holds."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.storages: list[np.ndarray] = []

    def string(self, s: str) -> None:
        data = s.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def integer(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif 0 <= n < 65536:
            self.out += b"M" + struct.pack("<H", n)
        elif -(2**31) <= n < 2**31:
            self.out += b"J" + struct.pack("<i", n)
        else:
            data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def tuple_(self, items: Sequence[int]) -> None:
        self.out += b"("
        for n in items:
            self.integer(n)
        self.out += b"t"

    def tensor(self, array: np.ndarray) -> None:
        """``_rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())``."""
        array = np.asarray(array, order="C")  # (not ascontiguousarray, which makes a 0-d array 1-d)
        if array.dtype != np.float32:
            raise TypeError(f"param store tensors are float32 here, got {array.dtype}")
        key = len(self.storages)
        self.storages.append(array)
        strides = [s // array.itemsize for s in array.strides] if array.size else [1] * array.ndim
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"(("
        self.string("storage")
        self.global_("torch", "FloatStorage")
        self.string(str(key))
        self.string("cpu")
        self.integer(array.size)
        self.out += b"tQ"  # the persistent id tuple, BINPERSID
        self.integer(0)
        self.tuple_(array.shape)
        self.tuple_(strides)
        self.out += b"\x89"  # False: requires_grad
        self.global_("collections", "OrderedDict")
        self.out += b")Rt" + b"R"  # OrderedDict(), close the arguments, _rebuild_tensor_v2(*arguments)

    def constraint(self, kind: str) -> None:
        module, name, state = CONSTRAINTS[kind]
        self.global_(module, name)
        self.out += b")\x81"  # cls.__new__(cls): NEWOBJ
        if state:
            self.out += b"}("
            for key, value in state.items():
                self.string(key)
                self.out += b"G" + struct.pack(">d", value)
            self.out += b"ub"  # SETITEMS, BUILD

    def none(self, _: Any) -> None:
        self.out += b"N"

    def mapping(self, key: str, items: Mapping[str, Any], value: Callable[[Any], None]) -> None:
        """``key``, then a dict of ``items`` with each value written by ``value``."""
        self.string(key)
        self.out += b"}("
        for name, item in items.items():
            self.string(name)
            value(item)
        self.out += b"u"  # SETITEMS

    def strings(self, items: Sequence[str]) -> None:
        self.out += b"]"
        for start in range(0, len(items), 1000):  # APPENDS in batches, as pickle does
            self.out += b"("
            for s in items[start : start + 1000]:
                self.string(s)
            self.out += b"e"


def param_store_bytes(
    params: Mapping[str, np.ndarray],
    constraints: Mapping[str, str],
    vocab: Sequence[str] | None,
    real_sites: Sequence[str] = (),
) -> tuple[bytes, list[np.ndarray]]:
    """The pickle of ``{"params": ..., "constraints": ..., "supports": ..., "vocab": ...}`` and its
    storages, in order (``supports``: ``{site: None}`` for ``real_sites``, if any)."""
    p = _Pickle()
    p.out += b"}("
    p.mapping("params", params, p.tensor)
    p.mapping("constraints", constraints, p.constraint)
    if real_sites:
        p.mapping("supports", dict.fromkeys(real_sites), p.none)
    if vocab is not None:
        p.string("vocab")
        p.strings(list(vocab))
    p.out += b"u."
    return bytes(p.out), p.storages


def save_param_store(
    file: str | os.PathLike | IO[bytes],
    params: Mapping[str, np.ndarray],
    constraints: Mapping[str, str],
    vocab: Sequence[str] | None = None,
    real_sites: Sequence[str] = (),
) -> None:
    """Write the param store (float32 arrays, constraint names from :data:`CONSTRAINTS`), the
    record that ``real_sites`` have real supports (``"supports"``, which ``pack`` reads instead of
    warning that supports are unknown) and the vocabulary to ``file`` in torch's zip format."""
    data, storages = param_store_bytes(params, constraints, vocab, real_sites)
    prefix = "archive/"
    members: list[tuple[str, bytes | memoryview]] = [
        ("data.pkl", data),
        (".format_version", b"1"),
        (".storage_alignment", str(_ALIGNMENT).encode()),
        ("byteorder", b"little"),
    ]
    members += [(f"data/{key}", memoryview(array.reshape(-1)).cast("B")) for key, array in enumerate(storages)]
    members += [("version", b"3\n")]
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, payload in members:
            info = zipfile.ZipInfo(prefix + name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            start = archive.fp.tell() + 30 + len(info.filename.encode())
            pad = (-(start + 4)) % _ALIGNMENT  # an extra field of 4 header bytes + pad puts the data on 64
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            with archive.open(info, "w", force_zip64=len(payload) >= 2**31) as member:
                member.write(payload)
