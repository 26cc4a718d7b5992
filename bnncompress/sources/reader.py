"""The reader seam: what a posterior file format provides, and what detection looks at.

A format is one :class:`SourceFormat` entry: a name, a detector that recognises the file by
its content (a :class:`Probe`: its first bytes, size, zip members), and a
:class:`PosteriorReader` class that opens it. :func:`bnncompress.sources.detect` tries the
entries of :data:`bnncompress.sources.FORMATS` in order, once per file.
"""

from __future__ import annotations

import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import PosteriorError
from ..inputfiles import open_readable
from ..posterior import Posterior

ZIP_MAGIC = b"PK\x03\x04"


class Probe:
    """What detection knows of a path: whether it is a directory, and for a regular file its first
    16 bytes, its size and (read once, on first use) its zip members.

    Example:
        >>> probe = Probe.of(Path("data/example.pt"))
        >>> probe.head.startswith(ZIP_MAGIC), any(m.endswith("data.pkl") for m in probe.zip_members)
        (True, True)
    """

    def __init__(self, path: Path, is_dir: bool, head: bytes = b"", size: int = 0):
        self.path, self.is_dir, self.head, self.size = path, is_dir, head, size

    @classmethod
    def of(cls, path: Path, given: str | None = None) -> Probe:
        """Probe ``path`` (named ``given`` in errors): a directory, or a regular file it can read."""
        given = str(path) if given is None else given
        if path.is_dir():
            return cls(path, True)
        if not path.exists():
            raise PosteriorError(f"'{given}' does not exist; pass a posterior file or a directory of .npy files")
        if not path.is_file():
            raise PosteriorError(
                f"'{path}' is not a regular file; pass a posterior file (.pt, .npz, .safetensors, .h5)"
            )
        with open_readable(path, f"'{path}'") as fh:  # (a FIFO put at the path since the check: refused, not waited on)
            try:
                head, size = fh.read(16), os.fstat(fh.fileno()).st_size
            except OSError as exc:
                raise PosteriorError(f"cannot read '{path}' ({exc.strerror})") from None
        return cls(path, False, head, size)

    @cached_property
    def zip_members(self) -> list[str]:
        """The member names of a zip file (empty for any other file)."""
        if not self.head.startswith(ZIP_MAGIC):
            return []
        fh = open_readable(self.path, f"'{self.path}'")
        try:
            with fh, zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
        except Exception:  # zipfile raises many kinds on damaged input
            raise PosteriorError(f"'{self.path}' looks like a zip archive but is corrupt or truncated") from None
        check_zip_layout(infos, self.size, f"'{self.path}'")
        return [info.filename for info in infos]


#: Bytes of a zip member's local header before its name: the least it takes before its data.
_LOCAL_HEADER = 30


def check_zip_layout(infos: list[zipfile.ZipInfo], size: int, where: str) -> None:
    """Refuse a zip whose members share bytes: each member's stored bytes must end before the next
    member's local header (and the last one within the file). Members that overlap pass every
    per-member size check and expand without bound (a 265 kB .npz declared 2 GB in 8 members).

    Example:
        >>> with zipfile.ZipFile("data/example.pt") as zf:
        ...     check_zip_layout(zf.infolist(), Path("data/example.pt").stat().st_size, "example.pt")
    """
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for info, after in zip(ordered, [*ordered[1:], None]):
        end = info.header_offset + _LOCAL_HEADER + info.compress_size  # (its name and extra field come on top)
        if end > (size if after is None else after.header_offset):
            raise PosteriorError(
                f"{where}: zip member '{info.filename}' runs into the bytes of another member or past the file "
                "(members sharing their bytes); refusing it"
            )


class PosteriorReader(ABC):
    """Opens one posterior file or directory whose format was detected (made by :func:`detect`).

    A subclass implements :meth:`open`; a format whose tensors can be read by rows returns
    :class:`~bnncompress.posterior.StoredTensor` objects from it, so that a pack streams them.

    Example:
        >>> from bnncompress.sources import detect
        >>> detect("data/example.pt").read().names
        ['word_vectors', 'context_vectors']
    """

    def __init__(self, path: Path):
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"

    @abstractmethod
    def open(self) -> Posterior:
        """The posterior: tensors that read from the file when asked (headers read now) where the
        format allows it, else tensors read whole now."""

    def read(self) -> Posterior:
        """The posterior with every tensor in memory."""
        return self.open().load()


@dataclass(frozen=True)
class SourceFormat:
    """One posterior file format: its ``name``, a ``detector`` that recognises it from a
    :class:`Probe` (content, never the file name), and the ``reader`` class that opens it."""

    name: str
    detector: Callable[[Probe], bool]
    reader: Callable[[Path], PosteriorReader]
