"""What a read archive holds (:class:`ArchiveContents`) and its size accounting: per tensor
(:class:`TensorInfo`) and as ``bnncompress info --json`` shows it (:func:`summary`)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import TensorRecord


class BitsPerWeight:
    """Size ratios for anything with ``num_weights``, ``payload_bytes`` and ``file_bytes``."""

    num_weights: int
    payload_bytes: int
    file_bytes: float

    @property
    def payload_bits_per_weight(self) -> float:
        return 8.0 * self.payload_bytes / self.num_weights

    @property
    def file_bits_per_weight(self) -> float:
        return 8.0 * self.file_bytes / self.num_weights

    @property
    def ratio_vs_float32(self) -> float:
        return 32.0 / self.file_bits_per_weight


@dataclass(frozen=True)
class TensorInfo(BitsPerWeight):
    """Size accounting for one tensor of an archive (what ``bnncompress info`` shows)."""

    name: str
    shape: tuple[int, ...]
    method: str
    num_weights: int
    payload_bytes: int
    file_bytes: float


@dataclass
class ArchiveContents:
    """A validated archive as read from disk (still entropy-coded)."""

    path: Path
    tensors: list[TensorRecord]
    vocab: list[str] | None
    source: str
    tool_version: str
    format_version: int
    file_bytes: int
    vocab_bytes: int = 0

    @property
    def payload_bytes(self) -> int:
        return sum(t.payload_bytes for t in self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.num_weights for t in self.tensors)


def printable(text: str) -> str:
    """``text`` (a tensor name from an archive) with control characters, such as terminal escapes,
    shown as escapes: names are printed in tables and messages."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Without Python's cyclic garbage collector: it would scan the objects made per tensor (a
    record, a dict) again and again, which is most of the time an archive of 200k tiny tensors takes."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def tensor_infos(contents: ArchiveContents) -> list[TensorInfo]:
    """Per-tensor sizes; the file's bytes beyond the payloads are shared in proportion to size."""
    sizes = [(t.num_weights, t.payload_bytes) for t in contents.tensors]
    total = max(sum(w for w, _ in sizes), 1)
    shared = contents.file_bytes - sum(p for _, p in sizes)
    return [
        TensorInfo(t.name, t.shape, t.method, w, p, p + shared * w / total)
        for t, (w, p) in zip(contents.tensors, sizes)
    ]


def summary(contents: ArchiveContents) -> dict[str, Any]:
    """A JSON-ready summary of an archive, per tensor and in total (``bnncompress info --json``).

    One pass over plain numbers: an archive may hold millions of tensors. Bits per weight of a
    tensor without weights (a shape with a 0 after the first dimension) are None.
    """
    with no_gc():
        return _summary(contents)


def _summary(contents: ArchiveContents) -> dict[str, Any]:
    rows = [(t, t.num_weights, t.payload_bytes, t.table_bytes) for t in contents.tensors]
    weights, payload = sum(r[1] for r in rows), sum(r[2] for r in rows)
    n, shared = max(weights, 1), contents.file_bytes - payload

    def per(bits: float, w: int) -> float | None:
        return bits / w if w else None

    tensors = []
    for t, w, p, table in rows:
        file_bytes = p + shared * w / n
        tensors.append(
            {
                "name": t.name,
                "shape": list(t.shape),
                "method": t.method,
                "lam": t.params.get("lam"),  # as stored; may be absent
                "num_weights": w,
                "payload_bytes": p,
                "table_bytes": table,
                "payload_bits_per_weight": per(8.0 * p, w),
                "file_bits_per_weight": per(8.0 * file_bytes, w),
                "ratio_vs_float32": 32.0 * w / (8.0 * file_bytes) if file_bytes else None,
            }
        )
    return {
        "path": str(contents.path),
        "format_version": contents.format_version,
        "tool_version": contents.tool_version,
        "source": contents.source,
        "vocab_words": len(contents.vocab) if contents.vocab is not None else None,
        "vocab_bytes": contents.vocab_bytes,
        "tensors": tensors,
        "total": {
            "num_weights": weights,
            "payload_bytes": payload,
            "table_bytes": sum(r[3] for r in rows),
            "file_bytes": contents.file_bytes,
            "payload_bits_per_weight": 8.0 * payload / n,
            "file_bits_per_weight": 8.0 * contents.file_bytes / n,
            "ratio_vs_float32": 32.0 * n / (8.0 * contents.file_bytes),
        },
    }
