"""What a read archive holds (:class:`ArchiveContents`) and its size accounting: per tensor
(:class:`TensorInfo`) and as ``bnncompress info --json`` shows it (:func:`summary`)."""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArchiveError
from .forksafe import renew_after_fork
from .records import TensorRecord


class BitsPerWeight:
    """Size ratios for anything with ``num_weights``, ``payload_bytes`` and ``file_bytes``."""

    num_weights: int
    payload_bytes: int
    file_bytes: float
    vocab_bytes: int = 0  # of ``file_bytes``: the stored vocabulary (an archive's; a tensor has none)

    @property
    def payload_bits_per_weight(self) -> float:
        return 8.0 * self.payload_bytes / self.num_weights

    @property
    def file_bits_per_weight(self) -> float:
        return 8.0 * self.file_bytes / self.num_weights

    @property
    def ratio_vs_float32(self) -> float:
        return 32.0 / self.file_bits_per_weight

    @property
    def size_note(self) -> str | None:
        """One line when the container's fixed cost outweighs the payload (the file, its vocabulary
        aside, holds more than twice the payload's bytes, as for a model of a few thousand weights);
        None otherwise. A large vocabulary is not a fixed cost: it is the words' own size.

        Example:
            >>> from bnncompress.packing import PackResult
            >>> PackResult(".", 0.1, 8_000_000, 2_000_000, 4_200_000, 2.0, vocab_bytes=2_100_000).size_note is None
            True
        """
        fixed = self.file_bytes - self.payload_bytes - self.vocab_bytes
        if not fixed > self.payload_bytes:
            return None
        aside = f"; the vocabulary's {self.vocab_bytes:,} bytes aside" if self.vocab_bytes else ""
        return (
            f"the archive's fixed cost ({fixed:,.0f} bytes: the HDF5 container and each tensor's record{aside}) "
            f"outweighs the payload ({self.payload_bytes:,} bytes, {self.payload_bits_per_weight:.3f} bits/weight): "
            "file bits per weight then measure the container, payload bits the quantization"
        )


@dataclass(frozen=True)
class TensorInfo(BitsPerWeight):
    """Size accounting for one tensor of an archive (what ``bnncompress info`` shows)."""

    name: str
    shape: tuple[int, ...]
    method: str
    num_weights: int
    payload_bytes: int
    file_bytes: float
    method_used: str = ""  # what made the values (:func:`method_used`); "" = ``method``


#: What a record's ``"fallback"`` label names, where it is not the other method's own name.
_FALLBACK_METHODS = {"one model": "vbq-direction"}


def method_used(method: str, params: dict[str, Any], raw: bool = False) -> str:
    """The method that actually made a tensor's values, from its record: ``method`` itself, or
    with a note when the record says the method fell back to another (its ``"fallback"``
    parameter) or stored the values as they are.

    Example:
        >>> method_used("vbq-transform", {"fallback": "one model", "lam": 0.1})
        'vbq-transform (vbq-direction fallback)'
        >>> method_used("uniform", {"lam": 0.1}, raw=True), method_used("uniform", {})
        ('uniform (raw float32)', 'uniform')
    """
    if raw:
        return f"{method} (raw float32)"
    fallback = params.get("fallback")
    if isinstance(fallback, str) and fallback:
        return f"{method} ({_FALLBACK_METHODS.get(fallback, fallback)} fallback)"
    return method


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
    #: The file's absolute path when it was read ("" for an image in memory): what served rows reopen.
    location: str = ""

    @property
    def payload_bytes(self) -> int:
        return sum(t.payload_bytes for t in self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.num_weights for t in self.tensors)


class ClosedContents:
    """What a closed :class:`~bnncompress.Archive` holds in place of its contents and records: every use refuses."""

    def __init__(self, path: Path):
        self.path = path

    def refuse(self, *args: object) -> Any:
        raise ArchiveError(f"archive '{self.path}' is closed; open it again with bnncompress.load")

    __getitem__ = __iter__ = __len__ = __contains__ = refuse

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "path":  # pickle's probes, and path before unpickling set it
            raise AttributeError(name)
        self.refuse()


def printable(text: str) -> str:
    """``text`` (a tensor name from an archive) with control characters, such as terminal escapes,
    shown as escapes: names are printed in tables and messages. Only those characters are escaped
    (one undecodable byte in a path escaped every 'ö' of the message).

    Example:
        >>> print(printable("wörter\\x1b[2J"))
        wörter\\x1b[2J
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Without Python's cyclic garbage collector: it would scan the objects made per tensor (a
    record, a dict) again and again, which is most of the time an archive of 200k tiny tensors takes.
    Sections of several threads at once: the collector is back (if it was on before the first) when the last ends
    (a section ending while another ran turned it on under the other's feet)."""
    with _SECTIONS_LOCK:
        if not _SECTIONS[0]:
            _SECTIONS[1] = gc.isenabled()
            gc.disable()
        _SECTIONS[0] += 1
    try:
        yield
    finally:
        with _SECTIONS_LOCK:
            _SECTIONS[0] = max(_SECTIONS[0] - 1, 0)  # (0 in a child forked within this section)
            if not _SECTIONS[0] and _SECTIONS[1]:
                gc.enable()


_SECTIONS: list = [0, False]  # no_gc sections running, and whether the collector was on before the first
_SECTIONS_LOCK = threading.Lock()


def _after_fork() -> None:  # a child forked during another thread's section: that section never ends in it
    global _SECTIONS_LOCK
    if _SECTIONS[0] and _SECTIONS[1]:
        gc.enable()
    _SECTIONS[:], _SECTIONS_LOCK = [0, False], threading.Lock()


renew_after_fork(sys.modules[__name__])


def support_text(spec: Any) -> str:
    """A recorded Pyro support (``params["support"]``) in one word, as ``info`` shows it; "" for none.

    Example:
        >>> support_text({"constraint": "interval", "lower_bound": 0.0, "upper_bound": 2.5}), support_text(None)
        ('interval(0, 2.5)', '')
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("constraint"), str):
        return ""
    values = [v for k, v in spec.items() if k != "constraint" and isinstance(v, (int, float, list))]
    bounds = [f"{v:g}" if isinstance(v, (int, float)) else "per element" for v in values]
    return spec["constraint"] + (f"({', '.join(bounds)})" if bounds else "")


def loaded_shape(shape: tuple[int, ...], spec: Any) -> tuple[int, ...]:
    """The shape a tensor stored as ``shape`` loads as under its recorded support ``spec``: ``simplex``
    adds an entry to the last dimension, ``corr_cholesky`` and ``corr_matrix`` turn its n (n - 1) / 2
    entries into n x n (as ``biject_to`` does); other supports keep the shape.

    Example:
        >>> loaded_shape((2, 3), {"constraint": "simplex"}), loaded_shape((3,), {"constraint": "corr_cholesky"})
        ((2, 4), (3, 3))
    """
    name = spec.get("constraint") if isinstance(spec, dict) else None
    if not shape:
        return tuple(shape)
    if name == "simplex":
        return (*shape[:-1], shape[-1] + 1)
    if name in ("corr_cholesky", "corr_matrix"):
        n = round((1 + math.sqrt(1 + 8 * shape[-1])) / 2)
        if n * (n - 1) // 2 == shape[-1]:
            return (*shape[:-1], n, n)
    return tuple(shape)


def tensor_infos(contents: ArchiveContents) -> list[TensorInfo]:
    """Per-tensor sizes; the file's bytes beyond the payloads are shared in proportion to size."""
    sizes = [(t.num_weights, t.payload_bytes) for t in contents.tensors]
    total = max(sum(w for w, _ in sizes), 1)
    shared = contents.file_bytes - sum(p for _, p in sizes)
    return [
        TensorInfo(t.name, t.shape, t.method, w, p, p + shared * w / total, method_used(t.method, t.params, t.raw))
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
                "shape": list(loaded_shape(t.shape, t.params.get("support"))),  # as loaded (a support may widen it)
                "stored_shape": list(t.shape),
                "method": t.method,
                "method_used": method_used(t.method, t.params, t.raw),  # with a fallback, the one used
                "lam": t.params.get("lam"),  # as stored; may be absent
                "support": t.params.get("support"),  # the Pyro site's constraint, if recorded (values load constrained)
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
