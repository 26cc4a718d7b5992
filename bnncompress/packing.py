"""``pack``: read a posterior, run the pipeline on the right executor, write one archive.

In memory, streamed from a file, or on Dask: the same pipeline (:mod:`bnncompress.pipeline`)
with a different row source and executor, so every route writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .archive import write_archive
from .errors import OptionError, QualityWarning
from .executors import executor_for
from .files import check_output_path
from .kernelcache import compile_in_child
from .pipeline import quantize_and_code
from .posterior import Posterior
from .quantizers import DEFAULT_METHOD, get_quantizer
from .ratecontrol import BITS_TOLERANCE, check_bits, check_lambda
from .records import BitsPerWeight, TensorRecord, common_counts_dtype
from .sources import is_large, open_posterior
from .sources.rows import ArraySource

__all__ = ["PackResult", "default_output", "pack"]

#: Called as progress(stage, done, total) while packing.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PackResult(BitsPerWeight):
    """What a pack achieved: where it wrote, the lambda used, the sizes, and any warnings."""

    path: Path
    lam: float
    num_weights: int
    payload_bytes: int
    file_bytes: int
    target_bits: float | None
    warnings: tuple[str, ...] = ()

    @property
    def target_missed(self) -> bool:
        """True if ``bits`` was given and the payload is not within 2% of it."""
        if self.target_bits is None:
            return False
        return abs(self.payload_bits_per_weight - self.target_bits) > BITS_TOLERANCE * self.target_bits


def default_output(source: str | os.PathLike) -> Path:
    """``embeddings.pt`` -> ``embeddings.bnc``; a directory of .npy files ``big/`` -> ``big.bnc``."""
    path = Path(source)
    if path.is_dir() and path.name:
        return path.with_name(path.name + ".bnc")
    if not path.name or path.is_dir():
        raise OptionError(f"'{source}' is not a posterior file; pass a file such as embeddings.pt")
    return path.with_suffix(".bnc")


def pack(
    source: Any,
    output: str | os.PathLike | None = None,
    *,
    vocab: str | os.PathLike | Iterable[str] | None = None,
    bits: float | None = None,
    lam: float | None = None,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    tensors: Sequence[str] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    stream: bool | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    force: bool = True,
) -> PackResult:
    """Quantize a posterior by its uncertainty, entropy-code it, and write one archive.

    ``source`` is a posterior file, a live Pyro guide, ``{name: (loc, scale)}`` or a
    :class:`~bnncompress.posterior.Posterior`. Give ``bits`` (payload bits per weight, found
    by searching lambda) or ``lam``; with neither, the method's ``default_lam`` is used.
    ``method`` is one of :data:`~bnncompress.quantizers.METHODS` (default ``vbq-transform``),
    ``options`` its keyword options (e.g. ``{"prune": 0.1}`` for ``weighted-kmeans``).
    ``tensors`` selects which tensors to pack (default: all).

    ``stream`` reads the posterior block by block with bounded memory (default: for
    .npy-directory, safetensors and HDF5 posteriors of at least ``sources.STREAM_WEIGHTS``
    weights); ``workers`` (a local Dask cluster of that many processes) or ``scheduler`` (a
    Dask scheduler address or ``distributed.Client``) run the tasks on Dask. All write the
    same bytes. ``force=False`` refuses to replace an existing ``output``.

    Example:
        >>> import bnncompress, numpy as np, tempfile, os
        >>> rng = np.random.default_rng(0)
        >>> post = {"w": (rng.normal(size=(200, 50)), rng.uniform(0.01, 1, size=(200, 50)))}
        >>> r = bnncompress.pack(post, os.path.join(tempfile.mkdtemp(), "w.bnc"), bits=2.0)
        >>> abs(r.payload_bits_per_weight - 2.0) < 0.04
        True
    """
    output = _check_request(source, output, bits, lam, force)
    quantizer = get_quantizer(method or DEFAULT_METHOD, device=device, **(options or {}))
    if bits is not None and quantizer.fixed_rate:
        raise OptionError(f"method {quantizer.name!r} has a fixed rate; give no bits or lam")
    lazy = bool(stream) or workers is not None or scheduler is not None or (stream is None and is_large(source))
    if lazy and not quantizer.blockwise:
        raise OptionError(
            f"method {quantizer.name!r} needs whole tensors in memory: it cannot stream or run on Dask; "
            "choose another method, or stream=False without workers or scheduler"
        )
    report = progress or (lambda stage, done, total: None)
    report("reading posterior", 0, 1)
    posterior = open_posterior(source, vocab=vocab)
    if not lazy:  # read it whole now (what the user asked for, and faster for small files)
        posterior = Posterior(
            {n: ArraySource(n, t.to_tensor(), posterior.source) for n, t in posterior.tensors.items()},
            posterior.vocab,
            posterior.source,
            posterior.warnings,
        )
    if tensors:
        posterior = posterior.select(tensors, require_vocab=vocab is not None)
    report("reading posterior", 1, 1)
    if lazy and workers is None and scheduler is None:  # bounded memory: no compiler in this process
        compile_in_child(quantizer.name, options or {})
    with executor_for(workers, scheduler) as executor:
        records, lam, notes = quantize_and_code(posterior.tensors, quantizer, executor, bits, lam, report)
    result = write_packed(output, records, posterior, lam, bits, report, force)
    for note in notes:
        warnings.warn(note, QualityWarning, stacklevel=2)
    return dataclasses.replace(result, warnings=result.warnings + tuple(notes))


def _check_request(source: Any, output: Any, bits: float | None, lam: float | None, force: bool) -> Path:
    """Everything about the request that can be checked before reading: the output path too."""
    if bits is not None and lam is not None:
        raise OptionError("give either bits or lam, not both")
    if bits is not None:
        check_bits(bits)
    if lam is not None:
        check_lambda(lam)
    if output is None:
        if not isinstance(source, (str, os.PathLike)):
            raise OptionError("an output path is needed when the source is not a file")
        output = default_output(source)
    if isinstance(source, (str, os.PathLike)) and Path(output).resolve() == Path(source).resolve():
        raise OptionError(f"the output '{output}' is the posterior file itself; choose another output path")
    return check_output_path(output, force)


def write_packed(
    output: str | os.PathLike,
    records: list[TensorRecord],
    posterior: Posterior,
    lam: float,
    bits: float | None,
    report: Progress,
    force: bool = True,
) -> PackResult:
    """Write a pack's records as an archive and say what it achieved."""
    counts_dtype = common_counts_dtype(records)  # what the archive will store, so the sizes below are exact
    records = [r.with_counts_dtype(counts_dtype) for r in records]
    report("writing archive", 0, 1)
    file_bytes = write_archive(output, records, posterior.vocab, posterior.source, __version__, force)
    report("writing archive", 1, 1)
    return PackResult(
        path=Path(output),
        lam=float(lam),
        num_weights=sum(r.num_weights for r in records),
        payload_bytes=sum(r.payload_bytes for r in records),
        file_bytes=file_bytes,
        target_bits=bits,
        warnings=tuple(posterior.warnings),
    )
