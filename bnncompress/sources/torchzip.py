"""torch .pt files (``torch.save``'s zip format) read without importing torch.

Importing torch costs about a second, most of a small pack. Most posterior files hold only
tensors in dicts and lists, and Pyro's param stores add the constraints of their parameters;
this reader unpickles exactly that into numpy arrays and :class:`PickledConstraint` records,
with an allow-list of its own stand-ins: no class of torch, Pyro or anyone else is looked up or
run. Anything outside it (another global, a legacy non-zip file, a compressed member, a dtype
numpy lacks, a constraint without a numpy transform) raises :class:`NotPlain`, and the caller
reads the file with torch's own safe loader instead (:mod:`.torchfile`), which refuses what is
not allowed there.

Example:
    >>> from pathlib import Path
    >>> store = read_zip_pickle(Path("data/example.pt"))
    >>> store["params"]["AutoNormal.locs.word_vectors"].shape, store["constraints"]["AutoNormal.scales.word_vectors"]
    ((4000, 50), PickledConstraint('pyro.distributions.constraints', '_SoftplusPositive', {'lower_bound': 0.0}))
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import reprlib
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PosteriorError
from ..inputfiles import open_nonblocking
from .pickledconstraints import CONSTRAINT_CLASSES, NotPlain, PickledConstraint
from .picklescan import prescan

#: torch's typed storages (the persistent ids of a .pt file) as numpy dtypes, little-endian.
_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
_MAX_DIMS = 32
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4, 4


def read_zip_pickle(path: Path) -> Any:
    """The object ``torch.save`` wrote to ``path``, with numpy arrays for tensors and
    :class:`PickledConstraint` for constraints. Raises :class:`NotPlain` for anything else, and
    PosteriorError for a zip file whose tensors point outside their storage."""
    try:  # one open file for the directory, the pickle and every storage: a file saved over the path
        fh = open_nonblocking(path)  # meanwhile (a trainer's atomic save) is not read in part
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # (no regular file now: torch's loader would wait on a FIFO)
            raise PosteriorError(f"cannot read '{path}' ({exc.strerror})") from None
        raise NotPlain(f"not a zip file: {exc}") from None
    with fh:
        opened = _stamp(fh)
        try:
            archive = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError) as exc:
            raise NotPlain(f"not a zip file: {exc}") from None
        changed = PosteriorError(f"'{path}' was changed while it was read; read it again once nothing writes to it")
        try:
            with archive:
                obj = _read_archive(archive, path, fh)
        except (NotPlain, PosteriorError):
            if _stamp(fh) != opened:  # written in place meanwhile (torch.save to the same path)
                raise changed from None
            raise
        if _stamp(fh) != opened:  # ... and read whole, in two versions
            raise changed
        return obj


def _stamp(fh: Any) -> tuple[int, int]:
    """Size and modification time of the open file: a write changes them (its change time also
    changes when a new file is saved over its path, which leaves this one whole)."""
    st = os.fstat(fh.fileno())
    return (st.st_size, st.st_mtime_ns)


def _read_archive(archive: zipfile.ZipFile, path: Path, fh: Any) -> Any:
    """:func:`read_zip_pickle`'s work on the opened file ``fh``."""
    if all(info.CRC == 0 for info in archive.infolist() if info.file_size):  # torch's reader takes them
        raise NotPlain("members without checksums (torch.serialization.set_crc32_options(False))")
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise NotPlain("no single <name>/data.pkl member")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        if _member(archive, prefix + "byteorder", optional=True) not in (None, b"little"):
            raise NotPlain("a big-endian file")
        data = _member(archive, prefix + "data.pkl")
    except (zipfile.BadZipFile, EOFError) as exc:
        raise PosteriorError(f"'{path}' is a damaged zip file ({exc}); re-save it") from None
    prescan(data)
    unpickler = _Unpickler(archive, prefix, path, fh, data)
    try:
        return _plain(unpickler.load(), {})
    except (NotPlain, PosteriorError):
        raise
    except Exception as exc:  # a damaged pickle: let torch's loader say what it makes of it
        raise NotPlain(f"{type(exc).__name__}: {exc}") from None


_ATOMS = (str, bytes, int, float, bool, type(None))
_ATOM_TYPES = frozenset(_ATOMS)


def _plain(obj: Any, memo: dict[int, Any]) -> Any:
    """The unpickled object with its tensors as arrays, if it holds only containers, atoms,
    tensors and constraints (else NotPlain). Shared and self-referencing containers are kept so."""
    if isinstance(obj, _ATOMS) and type(obj) in _ATOMS:
        return obj
    if id(obj) in memo:
        return memo[id(obj)]
    kind = type(obj)
    if kind is _Tensor:
        memo[id(obj)] = obj.array
        return obj.array
    if kind in (dict, OrderedDict):
        out = kind()
        memo[id(obj)] = out
        for key, value in kind.items(obj):
            if not (type(key) in _ATOMS or type(key) is tuple):
                raise NotPlain(f"a {type(key).__name__} key")
            out[_plain(key, memo)] = _plain(value, memo)
        return out
    if kind is list:
        out_list: list[Any] = []
        memo[id(obj)] = out_list
        out_list.extend(obj if set(map(type, obj)) <= _ATOM_TYPES else (_plain(v, memo) for v in obj))  # a vocabulary
        return out_list
    if kind is tuple:
        memo[id(obj)] = result = obj if set(map(type, obj)) <= _ATOM_TYPES else tuple(_plain(v, memo) for v in obj)
        return result
    if isinstance(obj, PickledConstraint) and type(obj).__mro__[1] is PickledConstraint:
        memo[id(obj)] = obj
        obj.state = _plain(obj.state, memo)
        return obj
    raise NotPlain(f"a pickled {kind.__name__}")


def _member_info(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo | None:
    """A member stored as it is (not compressed, not encrypted), None if absent."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
        raise NotPlain(f"member {name} is compressed or encrypted")
    return info


def _member(archive: zipfile.ZipFile, name: str, optional: bool = False) -> bytes | None:
    """A stored member's bytes (at most the file's own size, so no zip bomb); None if absent and optional."""
    info = _member_info(archive, name)
    if info is None:
        if optional:
            return None
        raise NotPlain(f"no member {name}")
    return archive.read(info)


def _read_member(fh: Any, path: Path, info: zipfile.ZipInfo, dtype: np.dtype, count: int) -> np.ndarray:
    """The first ``count`` items of a stored member, read straight into a new array (one copy, no
    temporary): its data start after the local header, whose name and extra field (torch pads it
    to align the data) have their own lengths there. A member shorter than ``count`` items, in the
    directory or in the file, is refused before anything is allocated. ``fh``: the file opened once
    (``path`` names it in messages)."""
    nbytes = count * dtype.itemsize
    short = PosteriorError(f"'{path}': storage {info.filename} is shorter than it says; is the file truncated?")
    size = os.fstat(fh.fileno()).st_size
    if info.file_size < nbytes or info.header_offset + 30 + nbytes > size:
        raise short
    fh.seek(info.header_offset)
    header = fh.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise NotPlain(f"member {info.filename} has no local header")
    name_length, extra_length = (int.from_bytes(header[k : k + 2], "little") for k in (26, 28))
    start = info.header_offset + 30 + name_length + extra_length
    if start + nbytes > size:
        raise short
    out = np.empty(count, dtype=dtype)
    fh.seek(start)
    if fh.readinto(memoryview(out).cast("B")) != nbytes:
        raise short
    if info.file_size == nbytes and zlib.crc32(memoryview(out).cast("B")) != info.CRC:  # (4 ms for 32 MB)
        raise PosteriorError(
            f"'{path}': storage {info.filename} does not match its checksum; the file is damaged or was written "
            "while it was read: read it again once nothing writes to it, or re-save it"
        )
    return out


class _Sealed:
    """What pickle's BUILD may not change: the reader's own objects."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise NotPlain(f"a state for a {type(self).__name__}")


class _Storage(_Sealed):
    """One storage of the file: a flat array read on first use."""

    __slots__ = ("archive", "member", "dtype", "numel", "_array")

    def __init__(self, archive: zipfile.ZipFile, member: str, dtype: str, numel: int):
        self.archive, self.member, self.dtype, self.numel = archive, member, np.dtype(dtype), numel
        self._array: np.ndarray | None = None

    def array(self, fh: Any, where: Path) -> np.ndarray:
        if self._array is None:
            info = _member_info(self.archive, self.member)
            if info is None:
                raise NotPlain(f"no member {self.member}")
            self._array = _read_member(fh, where, info, self.dtype, self.numel)
        return self._array


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path, fh: Any, data: bytes):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path, self.fh = archive, prefix, path, fh
        self.storages: dict[str, _Storage] = {}
        self.unclaimed = os.fstat(fh.fileno()).st_size  # bytes no storage has declared yet (each its own member)

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if (module, name) in CONSTRAINT_CLASSES:
            return type(name, (PickledConstraint,), {"module": module, "name": name})
        raise NotPlain(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise NotPlain(f"persistent id {_SHORT.repr(pid)}")
        _, kind, key, _location, numel = pid
        if not (isinstance(kind, _StorageType) and isinstance(key, str) and type(numel) is int and numel >= 0):
            raise NotPlain(f"persistent id {_SHORT.repr(pid)}")
        if key not in self.storages:
            member, nbytes = f"{self.prefix}data/{key}", numel * np.dtype(kind.dtype).itemsize
            info = _member_info(self.archive, member)
            if info is not None and info.file_size < nbytes:  # (as _read_member says it, before the budget)
                raise PosteriorError(f"'{self.path}': storage {member} is shorter than it says; is the file truncated?")
            self.unclaimed -= nbytes
            if self.unclaimed < 0:  # members each within the file, together beyond it: they share their bytes
                raise PosteriorError(f"'{self.path}': storages declare more bytes than the file holds; re-save it")
            self.storages[key] = _Storage(self.archive, member, kind.dtype, numel)
        storage = self.storages[key]
        if storage.dtype != np.dtype(kind.dtype) or storage.numel != numel:
            raise NotPlain(f"storage {key} declared twice differently")
        return storage

    def _rebuild_tensor(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        hooks: Any = None,
        metadata: Any = None,
        *rest: Any,
    ) -> _Tensor:
        """``storage[offset + sum(i_k * stride_k)]`` for every index i < size, copied; refused
        (damaged file) if any element lies outside the storage."""
        if not isinstance(storage, _Storage):
            raise NotPlain("a tensor without a storage")
        if metadata or rest:
            raise NotPlain("a tensor with metadata (neg/conj bits)")
        dims = (size, stride)
        if not all(isinstance(t, tuple) and all(type(v) is int and v >= 0 for v in t) for t in dims) or not (
            type(offset) is int and offset >= 0 and len(size) == len(stride) <= _MAX_DIMS
        ):
            raise PosteriorError(
                f"'{self.path}': a tensor with an impossible layout "
                f"(size {_SHORT.repr(size)}, stride {_SHORT.repr(stride)})"
            )
        flat = storage.array(self.fh, self.path)
        if 0 in size:
            return _Tensor(np.empty(size, dtype=flat.dtype))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(flat):
            raise PosteriorError(
                f"'{self.path}': a tensor reaches element {last:,} of a storage of {len(flat):,}; is the file damaged?"
            )
        contiguous = tuple(int(np.prod(size[k + 1 :])) for k in range(len(size)))
        count = int(np.prod(size))
        if all(s == c for n, s, c in zip(size, stride, contiguous) if n > 1):  # a run of the storage: a view
            return _Tensor(flat[offset : offset + count].reshape(size))
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * itemsize for s in stride])
        if count > len(flat):  # overlapping (expanded): a read-only view as torch's, not a copy
            view.flags.writeable = False
            return _Tensor(view)
        return _Tensor(np.array(view, copy=True, order="C"))


class _StorageType(_Sealed):
    """The stand-in for ``torch.FloatStorage`` and friends: only its dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: str):
        self.dtype = dtype


class _Tensor(_Sealed):
    """A tensor while unpickling: an array that pickle's BUILD cannot give a state (numpy's
    ``__setstate__`` would let the file reshape it); :func:`_plain` unwraps it."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None) -> _Tensor:
    if type(data) is not _Tensor:
        raise NotPlain("a parameter without a tensor")
    return data
