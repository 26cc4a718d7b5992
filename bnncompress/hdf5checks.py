"""Checks that an HDF5 object holds only its own file's bytes, made before any data is read.

HDF5 can take a dataset's bytes from elsewhere: external raw storage (any local file, even a
FIFO), virtual datasets (other HDF5 files), and external or soft links. A posterior or
archive received from someone else could use them to pull local files into an archive that is
then shared, or to hang a reader. bnncompress never writes them and refuses them on reading.
"""

from __future__ import annotations

import math
import os
from typing import Any

#: The first 8 bytes of every HDF5 file.
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: A dataset may declare at most this many bytes per stored byte: deflate's own ceiling is about 1032
#: (258-byte matches of under 2 bits each), which a constant scale written with gzip reaches (1024 refused it).
MAX_EXPANSION = 1100
#: HDF5 filter ids: deflate (gzip) only, as archives use it; and the lossless filters posteriors may use.
GZIP = (1,)
LOSSLESS = (1, 2, 3, 32000)  # deflate, shuffle, fletcher32, h5py's lzf


def plain_dataset(group: Any, key: str, what: str, error: type[Exception], filters: tuple[int, ...] = ()) -> Any:
    """``group[key]`` if it is a dataset reached by hard links (``key`` may be a path, ``a/b``: every
    group on the way too), else None if absent; refuses external and soft links (without following
    them) and anything :func:`check_local_dataset` refuses."""
    import h5py

    obj, parts = group, key.split("/")
    for depth, part in enumerate(parts):
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            where = "" if depth == len(parts) - 1 else f" (its group '{part}')"
            raise error(f"{what}{where} is a link to elsewhere ({type(link).__name__}); refusing to follow it")
        obj = obj[part]
        if not isinstance(obj, h5py.Group if depth < len(parts) - 1 else h5py.Dataset):
            return None
    check_local_dataset(obj, what, error, filters)
    return obj


def scalar_attribute(attrs: Any, key: str) -> Any:
    """``attrs[key]`` if it is one value, else None without reading it: an array attribute of variable-length
    strings that all point at one heap object reads as that object times the count (1 MB read as 4 GB).

    Example:
        >>> import h5py, io, numpy as np
        >>> with h5py.File(io.BytesIO(), "w") as f:
        ...     f.attrs["one"], f.attrs["many"] = np.bytes_(b"x"), [b"x", b"y"]
        ...     one, many, no = (scalar_attribute(f.attrs, key) for key in ("one", "many", "no"))
        >>> bytes(one), many, no
        (b'x', None, None)
    """
    if key not in attrs or attrs.get_id(key).shape not in ((), None):
        return None
    return attrs[key]


def check_local_dataset(ds: Any, what: str, error: type[Exception], filters: tuple[int, ...] = ()) -> None:
    """Refuse a dataset whose bytes could come from outside its own file (external raw storage,
    a virtual dataset), that needs an HDF5 filter not in ``filters`` (e.g. :data:`GZIP`), or
    whose declared size is not backed by stored bytes (never written, or absurdly compressed)."""
    from h5py import h5d

    if ds.shape is None:  # (h5py.Empty: a dataset without a dataspace)
        raise error(f"{what} has no dataspace (an empty HDF5 dataset): it holds no values; refusing it")
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if layout == getattr(h5d, "VIRTUAL", 3) or plist.get_external_count() > 0:
        raise error(f"{what} takes its data from another file (external storage or a virtual dataset); refusing it")
    if layout not in (h5d.CONTIGUOUS, h5d.CHUNKED, h5d.COMPACT):
        raise error(f"{what} has an unknown HDF5 storage layout ({layout}); refusing it")
    used = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(code not in filters for code in used):
        raise error(f"{what} uses HDF5 filters {used} that are not allowed here; store it without them")
    declared = int(ds.size) * int(ds.dtype.itemsize)
    if declared == 0 or layout == h5d.COMPACT:
        return
    if layout == h5d.CHUNKED:  # (unwritten chunks read as the fill value: not the posterior's)
        grid = [-(-size // chunk) for size, chunk in zip(ds.shape, ds.chunks)]
        total, written = math.prod(grid), int(ds.id.get_num_chunks())
        if written < total:
            raise error(
                f"{what} has {total - written:,} of its {total:,} chunks never written (they would read as the fill "
                "value, not the posterior's); write every row; refusing it"
            )
    stored = int(ds.id.get_storage_size())
    if stored == 0:
        raise error(f"{what} declares {declared:,} bytes but none are stored (never written); refusing it")
    limit = MAX_EXPANSION if used else 1
    if stored * limit < declared:
        raise error(f"{what} declares {declared:,} bytes but only {stored:,} are stored; refusing it")


def open_hdf5(path: str | os.PathLike) -> Any:
    """``h5py.File(path, "r")`` with HDF5's sec2 driver whatever ``HDF5_DRIVER`` says: only its handle
    (``f.id.get_vfd_handle()``) is a file descriptor, which ``os.fstat`` checks against the file expected
    (stdio's and core's are pointers: every archive read as corrupt)."""
    import h5py

    return h5py.File(path, "r", driver="sec2")


def open_unreplaced(path: os.PathLike, opened: os.stat_result, error: type[Exception]) -> Any:
    """``h5py.File(path, "r")`` if it is still the file ``opened`` describes (whose size and first
    bytes were read), else ``error``: another file was renamed over the path meanwhile."""

    f = open_hdf5(path)
    now = os.fstat(f.id.get_vfd_handle())
    if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
        f.close()
        raise error(f"'{path}' was replaced while it was being opened")
    return f


def image_hint(said: str) -> str:
    """Why HDF5 could not open an archive image the writer just made (``said``: the reader's message): with
    HDF5 1.14 (h5py < 3.16), the image taken of the open in-memory file fails its own metadata checksum."""
    import h5py

    if h5py.version.hdf5_version_tuple >= (2,) or "corrupt or truncated" not in said:
        return ""
    return f"; with HDF5 {h5py.version.hdf5_version} the writer's images do not read back: install h5py>=3.16 (HDF5 2)"
