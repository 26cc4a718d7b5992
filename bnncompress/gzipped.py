"""The archive's gzip datasets (its manifest and vocabulary), and a vocabulary as an archive stores it.

A gzip dataset holds one chunk, deflated at level 9 as HDF5's filter deflates it. :class:`StoredVocabulary` makes a
large vocabulary's chunk once for a pack (a pack to a size builds an archive for every pass it measures), on a
thread of its own while the tensors are quantized, with Python's zlib where it deflates as the zlib HDF5 links does
(checked once per process). HDF5's own deflate is never run on that thread: h5py holds its lock for the whole call,
so every other HDF5 read of the process waited, and a pack that failed meanwhile hung at exit. A small vocabulary is
deflated by HDF5's filter as the archive is written, as before (the check costs more than it saves).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: h5py's settings of the archive's gzip datasets.
GZIP_SETTINGS = {"compression": "gzip", "compression_opts": 9, "shuffle": False}


def write_gzipped(f: Any, name: str, raw: bytes, chunk: bytes | None = None) -> None:
    """``raw`` as the one-chunk gzip dataset ``name`` of the open HDF5 file ``f``; ``chunk``: that chunk, made
    already (:func:`gzip_chunk`)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if chunk is None or not len(data):
        f.create_dataset(name, data=data, chunks=(max(1, len(data)),), **GZIP_SETTINGS)
        return
    dataset = f.create_dataset(name, data.shape, data.dtype, chunks=data.shape, **GZIP_SETTINGS)
    dataset.id.write_direct_chunk((0,), chunk)  # (as the filter writes it: the same file)


def gzip_chunk(raw: bytes) -> bytes | None:
    """The chunk :func:`write_gzipped` writes of ``raw`` (non-empty): zlib's, where it deflates as HDF5's filter
    (:func:`zlib_deflates_as_hdf5`), else HDF5's filter's in a file in memory (None if the filter left it raw).

    Example:
        >>> zlib.decompress(gzip_chunk(b"king\\nqueen"))
        b'king\\nqueen'
    """
    if zlib_deflates_as_hdf5():
        return zlib.compress(raw, GZIP_SETTINGS["compression_opts"])
    return _hdf5_chunk(raw)


#: Vocabularies of at least this many bytes get their chunk made once, meanwhile (a 1M-word one: 13 MB, 0.3 s of
#: deflate); smaller ones are deflated by HDF5's filter as each archive is built (P1's 20,000 words: 157 kB, 8 ms).
MEANWHILE_BYTES = 1 << 20


@functools.cache
def zlib_deflates_as_hdf5() -> bool:
    """Whether this Python's zlib deflates as the zlib HDF5 links (another build, such as zlib-ng, makes other
    bytes): compared once, on a text-like sample and an incompressible one (which deflate stores)."""
    text = "\n".join(f"w{i * 7919 % 100_003}{'ab'[i % 2] * (i % 11)}" for i in range(6_000)).encode()
    sample = text + np.random.default_rng(0).integers(0, 256, 16_384, dtype=np.uint8).tobytes()
    return zlib.compress(sample, GZIP_SETTINGS["compression_opts"]) == _hdf5_chunk(sample)


def _hdf5_chunk(raw: bytes) -> bytes | None:
    import h5py

    name = f"gzip-{uuid.uuid4().hex}.h5"  # (HDF5 refuses a core file of a name another thread has open)
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        write_gzipped(f, "raw", raw)
        skipped, chunk = f["raw"].id.read_direct_chunk((0,))
        return None if skipped else chunk  # (an optional filter that failed stores the chunk raw: mask 1)


@dataclass(frozen=True, eq=False)
class StoredVocabulary:
    """A vocabulary as an archive stores it: the words joined by newlines in UTF-8, their SHA-256, and
    (:meth:`chunk`) its gzip dataset's chunk, made once (from :meth:`chunk_meanwhile` on, for a large vocabulary: on
    a thread of its own, by zlib), or None: HDF5's filter makes it as each archive is written.

    Example:
        >>> v = StoredVocabulary.of(["king", "queen"]).chunk_meanwhile()
        >>> v.raw, v.num_words, v.chunk()  # (small: the filter deflates it as the archive is written)
        (b'king\\nqueen', 2, None)
    """

    raw: bytes
    num_words: int
    sha256: str
    _made: list[bytes] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _maker: list[threading.Thread] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, words: list[str]) -> StoredVocabulary:
        raw = "\n".join(words).encode("utf-8")
        return cls(raw, len(words), hashlib.sha256(raw).hexdigest())

    def chunk(self) -> bytes | None:
        """The gzip chunk of :attr:`raw`, made once; None for a vocabulary under :data:`MEANWHILE_BYTES` (or where
        HDF5 would store the chunk raw): :func:`write_gzipped` then lets the filter deflate it."""
        if len(self.raw) < MEANWHILE_BYTES:
            return None
        if self._maker and self._maker[0] is not threading.current_thread():
            self._maker[0].join()  # (its chunk, or nothing if it failed: made here then, its error raised here)
        with self._lock:
            if not self._made:
                self._made.append(gzip_chunk(self.raw))  # (zlib lets other threads run; HDF5 makes it here only)
            return self._made[0]

    def chunk_meanwhile(self) -> StoredVocabulary:
        """Start :meth:`chunk` on a thread of its own (a daemon: it never holds up the program's exit) for a large
        vocabulary where zlib makes it (never HDF5 there: its lock would stop every other HDF5 call meanwhile)."""
        if len(self.raw) >= MEANWHILE_BYTES and zlib_deflates_as_hdf5():
            thread = threading.Thread(target=self._chunk_quietly, name="bnncompress-vocabulary", daemon=True)
            self._maker.append(thread)
            thread.start()
        return self

    def _chunk_quietly(self) -> None:
        try:
            self.chunk()
        except BaseException:  # (said by the caller's own chunk(), which makes it again; not as a thread's traceback)
            return
