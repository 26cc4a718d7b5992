"""``pack``: read a posterior, run the pipeline on the right executor, write one archive.

In memory, streamed from a file, or on Dask: the same pipeline (:mod:`bnncompress.pipeline`)
with a different row source and executor, so every route writes the same bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__
from .archive import archive_image, write_archive
from .clusters import check_scheduler_address, check_workers, executor_for
from .contents import BitsPerWeight
from .devices import resolve_device
from .errors import ArgumentTypeError, OptionError, QualityWarning
from .files import check_output_path
from .gzipped import StoredVocabulary
from .kernelcache import compile_in_child
from .modelsites import with_model
from .pipeline import fit_jobs, quantize_and_code
from .posterior import Posterior, StoredTensor
from .progress import Progress, no_progress
from .quantizers import DEFAULT_METHOD, Quantizer, check_requirements, get_quantizer
from .quantizers.plugins import plugin_errors
from .ratecontrol import BITS_TOLERANCE, check_bits
from .records import TensorRecord, common_counts_dtype
from .sources import STREAM_WEIGHTS, is_pyro_guide, open_posterior
from .sources.hdf5bands import forget as forget_bands
from .targetsize import SIZE_TOLERANCE, code_to_size, parse_size
from .vocabulary import read_vocab

__all__ = ["PackResult", "default_output", "pack"]


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
    vocab_bytes: int = 0  # of file_bytes: the stored vocabulary
    target_size: int | None = None  # bytes, when ``size`` was given

    @property
    def target_missed(self) -> bool:
        """True if ``bits`` was given and the payload is not within 2% of it, or ``size`` was given and the
        file is not within 2% below it."""
        if self.target_size is not None:
            return not self.target_size * (1 - SIZE_TOLERANCE) <= self.file_bytes <= self.target_size
        if self.target_bits is None:
            return False
        return abs(self.payload_bits_per_weight - self.target_bits) > BITS_TOLERANCE * self.target_bits


#: Whether :func:`pack` warns its notes (they are in ``PackResult.warnings`` either way); per thread and
#: context, unlike a warnings filter (:func:`notes_unwarned`).
_WARN_NOTES: contextvars.ContextVar[bool] = contextvars.ContextVar("bnncompress_warn_notes", default=True)


@contextlib.contextmanager
def notes_unwarned() -> Iterator[None]:
    """Within the block, :func:`pack` in this thread only returns its notes in ``PackResult.warnings``
    (``sweep`` puts them in its rows): ``warnings.catch_warnings`` would change every thread's filters."""
    token = _WARN_NOTES.set(False)
    try:
        yield
    finally:
        _WARN_NOTES.reset(token)


def default_output(source: str | os.PathLike) -> Path:
    """``embeddings.pt`` -> ``embeddings.bnc``; a directory of .npy files ``big/`` -> ``big.bnc``."""
    path = Path(source)
    if path.is_dir() and path.name not in ("", ".."):
        return path.with_name(path.name + ".bnc")
    if path.is_dir():  # '.', '..' or '/': no name to give the archive (and '..' gave a hidden '...bnc' here)
        raise OptionError(f"cannot name the archive after the directory '{source}'; give «output» (-o)")
    if not path.name:
        raise OptionError(f"'{source}' is not a posterior file; pass a file such as embeddings.pt")
    return path.with_suffix(".bnc")


def pack(
    source: Any,
    output: str | os.PathLike | None = None,
    *,
    vocab: str | os.PathLike | Iterable[str] | None = None,
    bits: float | None = None,
    lam: float | None = None,
    size: int | str | None = None,
    method: str | None = None,
    options: dict[str, Any] | None = None,
    tensors: Sequence[str] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    stream: bool | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    force: bool = True,
    model: Any = None,
    model_args: Sequence[Any] = (),
) -> PackResult:
    """Quantize a posterior by its uncertainty, entropy-code it, and write one archive.

    ``source`` is a posterior file, a live Pyro guide, ``{name: (loc, scale)}`` or a
    :class:`~bnncompress.posterior.Posterior`. Give ``bits`` (payload bits per weight, found
    by searching lambda), ``size`` (the archive's bytes at most, within 2% below where the method
    allows: an int, or a string such as ``"200K"`` or ``"1.5MB"``, see
    :func:`~bnncompress.targetsize.parse_size`) or ``lam``; with none, the method's ``default_lam`` is used.
    ``method`` is one of :data:`~bnncompress.quantizers.METHODS` (default ``vbq-transform``),
    ``options`` its keyword options (e.g. ``{"prune": 0.1}`` for ``weighted-kmeans``).
    ``tensors`` selects which tensors to pack (default: all).

    ``stream`` reads the posterior block by block with bounded memory (default: for
    .npy-directory, flat safetensors and HDF5 posteriors of at least ``sources.STREAM_WEIGHTS``
    weights); ``workers`` (a local Dask cluster of that many processes) or ``scheduler`` (a
    Dask scheduler address or ``distributed.Client``) run the tasks on Dask. All write the
    same bytes. ``force=False`` refuses to replace an existing ``output``.

    ``model`` is the Pyro model of a Pyro posterior (a callable or a PyroModule, called as
    ``model(*model_args)`` under a trace, once, or twice where a site has bounds: a second trace at random values
    tells whether they depend on other sites): each latent site's support is recorded, so loading
    returns constrained values (the posterior median); a flat AutoDiagonalNormal ``latent`` is
    split into the model's sites. A live AutoGuide knows its model already (one given with it that gives its
    sites other kinds of support is refused).

    Example:
        >>> import bnncompress, numpy as np, tempfile, os
        >>> rng = np.random.default_rng(0)
        >>> post = {"w": (rng.normal(size=(200, 50)), rng.uniform(0.01, 1, size=(200, 50)))}
        >>> r = bnncompress.pack(post, os.path.join(tempfile.mkdtemp(), "w.bnc"), bits=2.0)
        >>> abs(r.payload_bits_per_weight - 2.0) < 0.04
        True
    """
    _check_arguments(bits, lam, method, options, progress, stream, force, workers, scheduler)
    bits, lam = (None if v is None else float(v) for v in (bits, lam))  # np.float32(2), Fraction(1, 2): numbers too
    if size is not None and (bits is not None or lam is not None):
        raise OptionError("give only one of «bits», «size» and «lam»")
    size = None if size is None else parse_size(size)
    names = _tensor_names(tensors)
    output = _check_request(source, output, force, vocab)
    if device != "auto":  # for every method (some run only on the CPU): an unknown device, or cuda without a GPU
        resolve_device(device)
    if "device" in (options or {}):  # (a TypeError from the call below)
        raise OptionError("the device is not a method option; give it as «device»")
    quantizer = get_quantizer(method or DEFAULT_METHOD, device=device, **(options or {}))
    check_requirements(quantizer.name)  # (before the posterior is read)
    if (bits is not None or lam is not None or size is not None) and quantizer.fixed_rate:
        raise OptionError(f"method {quantizer.name!r} has a fixed rate; give no «bits», «size» or «lam»")
    words = read_vocab(vocab) if vocab is not None else None  # before the (possibly slow) source
    lazy = bool(stream) or workers is not None or scheduler is not None
    _check_blockwise(quantizer, lazy)  # before reading anything, when streaming was asked for
    report = progress or no_progress
    report("reading posterior", 0, 1)
    posterior = open_posterior(source, vocab=words)  # a file that reads by rows: its headers only
    if names and model is None:  # before deciding to stream and reading (files read by rows: the others are not)
        posterior = _select(posterior, names, vocab is not None, is_pyro_guide(source))  # (a guide knows its model)
    if stream is None and not lazy and not posterior.in_memory and posterior.num_weights >= STREAM_WEIGHTS:
        lazy = True
        _check_blockwise(quantizer, lazy)
    if not lazy:  # read it whole now (what the user asked for, and faster for small files)
        posterior = posterior.load()
    if model is not None:
        posterior = with_model(posterior, model, tuple(model_args), own_supports=is_pyro_guide(source))
    if names and model is not None:  # (the model's sites are known once it has been traced)
        posterior = _select(posterior, names, vocab is not None, True)
    posterior.check()  # the tensors selected, before any is packed (one left out may hold a NaN)
    report("reading posterior", 1, 1)
    if lazy and workers is None and scheduler is None:  # bounded memory: no compiler in this process
        compile_in_child(quantizer.name, options or {})
    try:
        with executor_for(workers, scheduler) as executor, plugin_errors(quantizer):
            # (once the pack is sure to run: its chunk is made while the tensors are quantized, on a thread of its own)
            vocab_stored = None if posterior.vocab is None else StoredVocabulary.of(posterior.vocab).chunk_meanwhile()
            if size is None:
                records, lam, notes = quantize_and_code(posterior.tensors, quantizer, executor, bits, lam, report)
            else:
                jobs = fit_jobs(posterior.tensors, quantizer, executor, True, report)
                sized = code_to_size(jobs, size, lambda rs: _archive_bytes(rs, posterior, vocab_stored), report)
                records, lam, notes = sized.records, sized.lam, sized.notes
    finally:  # the decompressed HDF5 bands this pack read are not kept for the process
        forget_bands(s for t in posterior.tensors.values() if isinstance(t, StoredTensor) for s in t.stamps())
    posterior.check_unchanged()  # a file written while it was read would give an archive of two versions
    records = _with_supports(records, posterior)
    result = write_packed(output, records, posterior, lam, bits, report, force, size, vocab_stored)
    notes = list(posterior.warnings) + notes  # how the posterior was read (supports, a flat latent), then values
    for name, t in posterior.tensors.items():
        far, most = getattr(t, "beyond_float32", (0, 0.0))
        if far:
            notes.append(
                f"tensor '{name}': {far:,} float64 means have posterior sds below float32's spacing there; the "
                f"archive holds float32 values, up to {most:.3g} sds from them"
            )
    if result.target_missed and size is not None:
        notes.append(
            f"target missed: the archive is {result.file_bytes:,} bytes, more than 2% below the target size {size:,} "
            "(no lambda the search tried came closer from below: this method's rate jumps near it on this "
            "posterior); ask for another size, or give a lambda"
        )
    elif result.target_missed:
        notes.append(
            f"target missed: payload {result.payload_bits_per_weight:.3f} bits/weight is more than 2% from the "
            f"target {bits:g} (no lambda the search tried came closer: this method's rate jumps, or turns back, "
            "near it on this posterior); ask for another target, or give a lambda"
        )
    for note in notes if _WARN_NOTES.get() else ():
        warnings.warn(note, QualityWarning, stacklevel=2)
    return dataclasses.replace(result, warnings=result.warnings + tuple(n for n in notes if n not in result.warnings))


def _with_supports(records: list[TensorRecord], posterior: Posterior) -> list[TensorRecord]:
    """The records with each tensor's support (:mod:`bnncompress.supports`) in its params, as archived."""
    supports = posterior.supports
    return [
        dataclasses.replace(r, params={**r.params, "support": supports[r.name]}) if r.name in supports else r
        for r in records
    ]


def _archive_bytes(records: list[TensorRecord], posterior: Posterior, vocab: StoredVocabulary | None) -> int:
    """The size of the archive :func:`pack` would write for ``records`` (before their supports)."""
    return len(archive_image(_with_supports(records, posterior), vocab, posterior.source, __version__))


def _select(posterior: Posterior, names: list[str], require_vocab: bool, of_a_model: bool) -> Posterior:
    """The tensors ``names``; for a model's sites, a note naming those left out."""
    left_out = [n for n in posterior.names if n not in names] if of_a_model else []
    posterior = posterior.select(names, require_vocab=require_vocab)
    if left_out:  # (a model conditioned on the archive drew them on every call, unsaid)
        posterior.warnings.append(
            f"the model's site(s) {', '.join(left_out[:10])} are left out by the tensor selection: a model "
            "conditioned on the archive samples them from their priors"
        )
    return posterior


def _check_blockwise(quantizer: Quantizer, lazy: bool) -> None:
    if lazy and not quantizer.blockwise:
        raise OptionError(
            f"method {quantizer.name!r} needs whole tensors in memory: it cannot stream or run on Dask; "
            "choose another method, or «stream=False» without «workers» or «scheduler»"
        )


def fits_a_float(value: Any) -> bool:
    """Whether ``float(value)`` works (an int of 10**400 raises OverflowError)."""
    try:
        float(value)
        return True
    except OverflowError:
        return False


def _check_arguments(
    bits: Any, lam: Any, method: Any, options: Any, progress: Any, stream: Any, force: Any, workers: Any, scheduler: Any
) -> None:
    """The types and ranges of :func:`pack`'s arguments, checked before anything is read."""
    for name, value in (("bits", bits), ("lam", lam)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ArgumentTypeError(f"«{name}» must be a number, not a {type(value).__name__}")
        if value is not None and not fits_a_float(value):  # (10**400: float() raised a bare OverflowError)
            raise OptionError(f"«{name}» is too large for a float; give a finite number")
    if bits is not None and lam is not None:
        raise OptionError("give either «bits» or «lam», not both")
    if bits is not None:
        check_bits(float(bits))
    if lam is not None and not 0 < lam < math.inf:  # most methods refuse 0 only once fitted: refuse it for all, now
        raise OptionError(f"«lam» (lambda) must be a finite number > 0, got {lam}")
    if method is not None and not isinstance(method, str):
        raise ArgumentTypeError(f"«method» must be a method name (a str), not a {type(method).__name__}")
    if options is not None and not (isinstance(options, Mapping) and all(isinstance(k, str) for k in options)):
        raise ArgumentTypeError(
            f"«options» must be a dict of method options such as {{'prune': 0.1}}, not a {type(options).__name__}"
        )
    if progress is not None and not callable(progress):
        raise ArgumentTypeError(f"«progress» must be a function progress(stage, done, total), not {progress!r:.40}")
    if stream is not None and not isinstance(stream, bool):
        raise ArgumentTypeError(f"«stream» must be True, False or None, not {stream!r:.40}")
    if not isinstance(force, bool):  # force="no" would overwrite
        raise ArgumentTypeError(f"«force» must be True or False, not {force!r:.40}")
    if workers is not None and scheduler is not None:
        raise OptionError("give either «workers» (a local cluster) or «scheduler» (an existing one), not both")
    if workers is not None:
        check_workers(workers)
    if isinstance(scheduler, str):
        check_scheduler_address(scheduler)


def _tensor_names(tensors: Any) -> list[str] | None:
    """``tensors`` as a list of names (None or empty: all tensors)."""
    if tensors is None:
        return None
    names = list(tensors) if isinstance(tensors, Iterable) and not isinstance(tensors, (str, bytes)) else None
    if names is None or not all(isinstance(t, str) for t in names):
        raise ArgumentTypeError(f"«tensors» must be a list of tensor names (str), not {tensors!r:.60}")
    return names


def _check_request(source: Any, output: Any, force: bool, vocab: Any = None) -> Path:
    """Everything about the request that can be checked before reading: the output path too."""
    if output is not None and (not isinstance(output, (str, os.PathLike)) or not isinstance(os.fspath(output), str)):
        raise ArgumentTypeError(f"«output» must be a file path (str or os.PathLike), not a {type(output).__name__}")
    if output is None:
        if not isinstance(source, (str, os.PathLike)):
            raise OptionError("«output» is needed when the source is not a file; give an archive path")
        output = default_output(source)
    if isinstance(source, (str, os.PathLike)) and os.path.realpath(output) == os.path.realpath(source):  # (loops too)
        raise OptionError(f"the output '{output}' is the posterior file itself; choose another output path")
    inputs = [x for x in (source, vocab) if isinstance(x, (str, os.PathLike))]  # (a directory: its files too)
    return check_output_path(output, force, inputs)


def write_packed(
    output: str | os.PathLike,
    records: list[TensorRecord],
    posterior: Posterior,
    lam: float,
    bits: float | None,
    report: Progress,
    force: bool = True,
    size: int | None = None,
    vocab: StoredVocabulary | None = None,
) -> PackResult:
    """Write a pack's records as an archive and say what it achieved (``bits`` or ``size``: its target); ``vocab``:
    the posterior's vocabulary as stored, if made already."""
    counts_dtype = common_counts_dtype(records)  # what the archive will store, so the sizes below are exact
    records = [r.with_counts_dtype(counts_dtype) for r in records]
    report("writing archive", 0, 1)
    written = write_archive(output, records, vocab or posterior.vocab, posterior.source, __version__, force)
    report("writing archive", 1, 1)
    return PackResult(
        path=Path(output),
        lam=float(lam),
        num_weights=sum(r.num_weights for r in records),
        payload_bytes=sum(r.payload_bytes for r in records),
        file_bytes=written.file_bytes,
        target_bits=bits,
        warnings=tuple(posterior.warnings),
        vocab_bytes=written.vocab_bytes,
        target_size=size,
    )
