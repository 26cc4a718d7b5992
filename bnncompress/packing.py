"""The pack pipeline: posterior source -> quantizer -> entropy coder -> archive."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import coding
from .archive import BitsPerWeight, TensorRecord, common_counts_dtype, write_archive
from .errors import OptionError, QualityWarning
from .files import check_output_path
from .posterior import Posterior, TensorPosterior, read_posterior
from .quantizers import DEFAULT_METHOD, get_quantizer
from .quantizers.vbq import DEFAULT_MAX_LEVEL
from .ratecontrol import BITS_TOLERANCE, choose_lambda

#: Called as progress(stage, done, total) while packing.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PackResult(BitsPerWeight):
    """What a pack achieved: where it wrote, the lambda used, and the sizes."""

    path: Path
    lam: float
    num_weights: int
    payload_bytes: int
    file_bytes: int
    target_bits: float | None
    warnings: tuple[str, ...] = ()

    @property
    def target_missed(self) -> bool:
        """True if ``--bits`` was given and the payload is not within 2% of it."""
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


#: The method of streamed and Dask packs (the others need a whole tensor in memory).
STREAM_METHOD = "vbq"


def _should_stream(source: Any, method: str | None) -> bool:
    if method not in (None, STREAM_METHOD) or not isinstance(source, (str, os.PathLike)):
        return False
    from .streaming import is_large

    return is_large(source)


def pack(
    source: Any,
    output: str | os.PathLike | None = None,
    *,
    vocab: str | os.PathLike | Iterable[str] | None = None,
    bits: float | None = None,
    lam: float | None = None,
    method: str | None = None,
    tensors: Sequence[str] | None = None,
    device: str = "auto",
    max_level: int = DEFAULT_MAX_LEVEL,
    options: dict[str, Any] | None = None,
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
    ``method`` is one of :data:`~bnncompress.quantizers.METHODS` (default ``vbq-direction``;
    ``vbq`` for streamed packs), ``options`` its keyword options (e.g. ``{"prune": 0.1}`` for
    ``weighted-kmeans``).
    ``tensors`` selects which tensors to pack (default: all).

    ``stream`` packs block by block with bounded memory (default: for .npy-directory,
    safetensors and HDF5 posteriors of at least ``streaming.STREAM_WEIGHTS`` weights);
    ``workers`` (a local Dask cluster of that many processes) or ``scheduler`` (a Dask
    scheduler address or ``distributed.Client``) run its tasks on Dask. All write the same bytes.

    Example:
        >>> import bnncompress, numpy as np, tempfile, os
        >>> rng = np.random.default_rng(0)
        >>> post = {"w": (rng.normal(size=(200, 50)), rng.uniform(0.01, 1, size=(200, 50)))}
        >>> r = bnncompress.pack(post, os.path.join(tempfile.mkdtemp(), "w.bnc"), bits=2.0)
        >>> abs(r.payload_bits_per_weight - 2.0) < 0.04
        True
    """
    if bits is not None and lam is not None:
        raise OptionError("give either bits or lam, not both")
    if output is None:
        if not isinstance(source, (str, os.PathLike)):
            raise OptionError("an output path is needed when the source is not a file")
        output = default_output(source)
    if isinstance(source, (str, os.PathLike)) and Path(output).resolve() == Path(source).resolve():
        raise OptionError(f"the output '{output}' is the posterior file itself; choose another output path")
    check_output_path(output, force)  # before any work
    report = progress or (lambda stage, done, total: None)
    if stream or workers is not None or scheduler is not None or (stream is None and _should_stream(source, method)):
        from .streaming import pack_blockwise

        if options:
            raise OptionError("streamed and Dask packs take no --option (they use method 'vbq')")
        note = () if method else (f"streamed pack: method {STREAM_METHOD} ({DEFAULT_METHOD} needs whole tensors)",)
        method = method or STREAM_METHOD
        result = pack_blockwise(
            source, output, vocab, bits, lam, method, tensors, device, max_level, report, workers, scheduler, force
        )
        return dataclasses.replace(result, warnings=result.warnings + note)
    method = method or DEFAULT_METHOD

    report("reading posterior", 0, 1)
    posterior: Posterior = read_posterior(source, vocab=vocab)
    if tensors:
        posterior = posterior.select(tensors, require_vocab=vocab is not None)
    report("reading posterior", 1, 1)

    quantizer = get_quantizer(method, device=device, max_level=max_level, **(options or {}))
    names = posterior.names
    fitted = [quantizer.fit(posterior.tensors[n]) for n in names]
    if bits is not None and quantizer.fixed_rate:
        raise OptionError(f"method {method!r} has a fixed rate; drop --bits (and --lam)")
    lam = choose_lambda(fitted, bits, lam, quantizer.default_lam, report)

    records, notes = [], []
    for i, (name, f) in enumerate(zip(names, fitted)):
        report("quantizing and coding", i, len(names))
        q = f.quantize(lam)
        t = posterior.tensors[name]
        notes += quality_notes(name, t, q.values())
        block_rows = coding.block_rows_for(t.shape)
        per_row = q.subvectors or coding.row_size(t.shape)
        words, offsets = coding.encode_blocks(q.symbols, q.counts, block_rows * per_row)
        records.append(
            TensorRecord(
                name=name,
                shape=t.shape,
                dtype=t.dtype,
                method=quantizer.name,
                params=q.params,
                coder=coding.CODER_ID,
                grid=q.grid,
                counts=q.counts,
                words=words,
                block_rows=block_rows,
                offsets=offsets,
                subvectors=q.subvectors,
            )
        )
    report("quantizing and coding", len(names), len(names))
    result = write_packed(output, records, posterior, lam, bits, report, force)
    for note in notes:
        warnings.warn(note, QualityWarning, stacklevel=2)
    return dataclasses.replace(result, warnings=result.warnings + tuple(notes))


#: Weights with scales below this fraction of their tensor's RMS are expected to be kept within their scale.
CERTAIN_FRACTION = 1e-3


def quality_notes(name: str, tensor: TensorPosterior, values: np.ndarray) -> list[str]:
    """One-line notes on what a quantization lost that a user would not expect: a tensor of
    several distinct means collapsed to one value, rows collapsed to a constant vector, or weights whose
    posterior is very certain (scale below CERTAIN_FRACTION of the tensor's RMS) not kept
    within their scale."""
    loc, scale = tensor.loc.reshape(-1), tensor.scale.reshape(-1)
    values = values.reshape(-1)
    notes = []
    if len(loc) > 1 and values.min() == values.max() and loc.min() != loc.max():
        notes.append(f"tensor '{name}': all {len(loc):,} weights were quantized to one value ({values[0]:.4g})")
    elif len(tensor.shape) == 2 and tensor.shape[0] > 1 and tensor.shape[1] > 1:
        rows, means = values.reshape(tensor.shape[0], -1), tensor.loc.reshape(tensor.shape[0], -1)
        flat = (rows.min(axis=1) == rows.max(axis=1)) & (means.min(axis=1) != means.max(axis=1))
        if flat.any():
            notes.append(
                f"tensor '{name}': {int(flat.sum()):,} of {tensor.shape[0]:,} rows were quantized to a constant "
                "vector (their direction is lost); use more --bits"
            )
    rms = float(np.sqrt(np.mean(np.square(loc, dtype=np.float64))))
    certain = scale.astype(np.float64) < CERTAIN_FRACTION * rms
    if certain.any():
        err = np.abs(values[certain].astype(np.float64) - loc[certain])
        missed = err > scale[certain].astype(np.float64)
        if missed.any():
            notes.append(
                f"tensor '{name}': {int(missed.sum()):,} very certain weights (scale < {CERTAIN_FRACTION:g} x RMS) "
                f"are not kept within their scale (largest error {err.max():.3g}); use a finer rate (more --bits)"
            )
    return notes


def write_packed(
    output: str | os.PathLike,
    records: list[TensorRecord],
    posterior: Posterior,
    lam: float,
    bits: float | None,
    report: Progress,
    force: bool = True,
) -> PackResult:
    """Write a pack's records as an archive and say what it achieved (in-memory and streamed packs)."""
    from . import __version__

    counts_dtype = common_counts_dtype(records)  # what the archive will store, so the sizes below are exact
    records = [dataclasses.replace(r, counts=r.counts.astype(counts_dtype)) for r in records]
    report("writing archive", 0, 1)
    file_bytes = write_archive(output, records, posterior.vocab, posterior.source, __version__, force)
    report("writing archive", 1, 1)
    return PackResult(
        path=Path(output),
        lam=float(lam),
        num_weights=posterior.num_weights,
        payload_bytes=sum(r.payload_bytes for r in records),
        file_bytes=file_bytes,
        target_bits=bits,
        warnings=tuple(posterior.warnings),
    )
