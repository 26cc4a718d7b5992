"""Posteriors read block by block, and the blockwise VBQ pack (streaming, parallel, Dask).

A posterior larger than memory is packed without ever holding it: each tensor is a
:class:`RowSource` that reads a range of rows from disk, and the pack runs as a few passes
of independent *tasks*, each a range of whole coding blocks (``TASK_SYMBOLS`` weights):

1. exact sums of the means and of their squares (the prior), gathering the rate-control
   subsample,
2. ``--bits``: lambda is searched on the subsample; each check on the full posterior is
   one pass of histograms (assign + count),
3. one pass of histograms at the chosen lambda (the entropy model), unless step 2 made it,
4. one pass that assigns, renumbers and entropy-codes each block.

Every reduction is exact (integer histograms, :mod:`bnncompress.exactsum`) and every block
is coded on its own, so the archive is byte-identical to an in-memory pack of the same
posterior, whichever executor runs the tasks: threads of this process, one task per core
(:class:`LocalExecutor`), or a Dask cluster (:mod:`bnncompress.distributed`). Memory is
bounded by a few tasks' arrays plus the coded words.

Streamable inputs (detected by content, see :func:`open_sources`):

- a directory of ``NAME.loc.npy`` / ``NAME.scale.npy`` pairs (C order), with an optional
  ``vocab.txt`` (one word per line);
- ``.safetensors`` with flat ``NAME.loc`` / ``NAME.scale`` tensors (optional ``vocab`` metadata);
- HDF5 with datasets ``NAME/loc`` and ``NAME/scale`` (or ``NAME.loc`` / ``NAME.scale``) and
  an optional ``vocab`` dataset of strings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import coding
from .errors import OptionError, PosteriorError
from .hdf5checks import LOSSLESS, check_local_dataset, plain_dataset
from .posterior import Posterior, TensorPosterior, read_vocab, validate_words

#: Posterior files with at least this many weights are streamed when ``stream`` is left to auto.
STREAM_WEIGHTS = 1 << 26
#: Weights per task (rounded to whole coding blocks): ~16 MiB of float32 loc + scale.
TASK_SYMBOLS = 1 << 21
#: A pack keeps the grid indices of its last full histogram pass (uint16: 2 bytes per weight)
#: within this budget (per Dask worker), and codes them instead of quantizing a second time.
SYMBOL_CACHE_BYTES = 1 << 29

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "bfloat16"}


# --------------------------------------------------------------------------- sources


class RowSource:
    """One tensor's posterior, read by ranges of rows (first dimension), as float32.

    Subclasses set ``name``, ``shape`` and ``dtype`` (the dtype to restore) and implement
    :meth:`_read`. Instances are small and picklable: Dask workers read their own rows.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    where: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def num_rows(self) -> int:
        return coding.num_rows(self.shape)

    @property
    def row_size(self) -> int:
        return coding.row_size(self.shape)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat float32 ``loc`` and ``scale`` of rows ``start:stop``, validated as packing requires."""
        loc, scale = self._read(start, stop)
        loc, scale = _as_float32(loc), _as_float32(scale)
        bad = int(np.count_nonzero(~np.isfinite(loc)))
        if bad:
            raise PosteriorError(f"{self.where}: loc of '{self.name}' has {bad} NaN/inf values; means must be finite")
        bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0))))
        if bad:
            raise PosteriorError(
                f"{self.where}: scale of '{self.name}' has {bad} NaN/inf or non-positive values; "
                "scales must be finite and > 0"
            )
        return loc, scale

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_tensor(self) -> TensorPosterior:
        loc, scale = self.read(0, self.num_rows)
        return TensorPosterior(loc.reshape(self.shape), scale.reshape(self.shape), self.dtype)


def _as_float32(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:  # bfloat16 bits
        return (a.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def _check_pair(name: str, where: str, loc: tuple, scale: tuple, dtypes: tuple[Any, Any]) -> str:
    if tuple(loc) != tuple(scale):
        raise PosteriorError(
            f"{where}: loc of '{name}' has shape {tuple(loc)} but scale has {tuple(scale)}; they must match"
        )
    if int(np.prod(loc, dtype=np.int64)) == 0:
        raise PosteriorError(f"{where}: tensor '{name}' is empty (shape {tuple(loc)})")
    kinds = []
    for what, dt in zip(("loc", "scale"), dtypes):
        if dt == "bfloat16":
            kinds.append("bfloat16")
            continue
        dt = np.dtype(dt)
        if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
            raise PosteriorError(f"{where}: {what} of '{name}' has dtype {dt}; it must be floating point")
        kinds.append(dt.newbyteorder("=").name)
    return kinds[0]


@dataclasses.dataclass
class ArraySource(RowSource):
    """A tensor already in memory (a :class:`TensorPosterior`), e.g. to pack it on Dask."""

    name: str
    tensor: TensorPosterior
    where: str = "python objects"

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.tensor.shape

    @property
    def dtype(self) -> str:  # type: ignore[override]
        return self.tensor.dtype

    def _read(self, start, stop):
        rs = self.row_size
        return self.tensor.loc.reshape(-1)[start * rs : stop * rs], self.tensor.scale.reshape(-1)[
            start * rs : stop * rs
        ]

    def read(self, start, stop):  # validated when the TensorPosterior was made
        return self._read(start, stop)


@dataclasses.dataclass
class _FileArray:
    """A C-order array at a byte offset in a file, read with one positioned read per range."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, or "bfloat16"

    def rows(self, start: int, stop: int) -> np.ndarray:
        dt = np.dtype("<u2") if self.dtype == "bfloat16" else np.dtype(self.dtype)
        rs = coding.row_size(self.shape)
        return np.fromfile(
            self.path, dtype=dt, count=(stop - start) * rs, offset=self.offset + start * rs * dt.itemsize
        )


@dataclasses.dataclass
class FileSource(RowSource):
    """loc and scale stored as raw arrays in files (.npy, safetensors)."""

    name: str
    loc: _FileArray
    scale: _FileArray
    where: str
    dtype: str = "float32"

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.loc.shape

    def _read(self, start, stop):
        return self.loc.rows(start, stop), self.scale.rows(start, stop)


_H5_FILES: dict[str, Any] = {}


@dataclasses.dataclass
class HDF5Source(RowSource):
    """loc and scale as two datasets of an HDF5 file (any layout h5py reads, chunked too)."""

    name: str
    path: str
    loc_key: str
    scale_key: str
    shape: tuple[int, ...]
    where: str
    dtype: str = "float32"

    def _read(self, start, stop):
        import h5py

        f = _H5_FILES.get(self.path)
        if f is None:
            f = _H5_FILES[self.path] = h5py.File(self.path, "r")
        if not self.shape:
            return f[self.loc_key][()], f[self.scale_key][()]
        return f[self.loc_key][start:stop], f[self.scale_key][start:stop]


def _npy_array(path: Path) -> _FileArray:
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
            offset = fh.tell()
    except (ValueError, OSError) as exc:
        raise PosteriorError(f"cannot read '{path}' as .npy ({exc})") from None
    if fortran and len(shape) > 1:
        raise PosteriorError(f"'{path}' is stored in Fortran order; save it in C order (np.ascontiguousarray)")
    if dtype.hasobject:
        raise PosteriorError(f"'{path}' holds Python objects; store a floating-point array")
    return _FileArray(str(path), offset, tuple(shape), dtype.str)


def _npy_directory(path: Path) -> tuple[dict[str, RowSource], list[str] | None, str]:
    where = f"npy directory '{path.name}'"
    names = sorted(p.name[: -len(".loc.npy")] for p in path.glob("*.loc.npy"))
    if not names:
        raise PosteriorError(f"directory '{path}' holds no NAME.loc.npy / NAME.scale.npy pairs")
    sources: dict[str, RowSource] = {}
    for name in names:
        scale_path = path / f"{name}.scale.npy"
        if not scale_path.is_file():
            raise PosteriorError(f"{where}: '{name}.loc.npy' has no matching '{name}.scale.npy'")
        loc, scale = _npy_array(path / f"{name}.loc.npy"), _npy_array(scale_path)
        dtype = _check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
        sources[name] = FileSource(name, loc, scale, where, dtype)
    vocab = read_vocab(path / "vocab.txt") if (path / "vocab.txt").is_file() else None
    return sources, vocab, f"npy loc/scale pairs: {where}"


def _safetensors(path: Path) -> tuple[dict[str, RowSource], list[str] | None, str] | None:
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    meta = header.pop("__metadata__", None) or {}
    keys = sorted(header)
    locs = [k for k in keys if k.endswith(".loc")]
    if not locs or any(k[: -len(".loc")] + ".scale" not in header for k in locs) or len(keys) != 2 * len(locs):
        return None  # not a flat loc/scale file: the in-memory reader explains what is wrong
    where = f"'{path.name}' (safetensors)"
    sources: dict[str, RowSource] = {}
    for key in locs:
        name = key[: -len(".loc")]
        arrays = []
        for k in (key, name + ".scale"):
            entry = header[k]
            dt = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
            if dt is None:
                raise PosteriorError(f"{where}: '{k}' has dtype {entry.get('dtype')}; it must be floating point")
            arrays.append(_FileArray(str(path), 8 + n + int(entry["data_offsets"][0]), tuple(entry["shape"]), dt))
        dtype = _check_pair(name, where, arrays[0].shape, arrays[1].shape, (arrays[0].dtype, arrays[1].dtype))
        sources[name] = FileSource(name, arrays[0], arrays[1], where, dtype)
    vocab = None
    if "vocab" in meta:
        raw = meta["vocab"]
        try:
            words = json.loads(raw) if raw.lstrip().startswith("[") else raw.split("\n")
        except json.JSONDecodeError:
            raise PosteriorError(f"'{path}': metadata 'vocab' is not a JSON list of words") from None
        vocab = validate_words([str(w) for w in words], f"vocabulary in {where}")
    return sources, vocab, f"loc/scale dict: {where}"


def _hdf5(path: Path) -> tuple[dict[str, RowSource], list[str] | None, str]:
    import h5py

    where = f"HDF5 file '{path.name}'"
    found: dict[str, dict[str, Any]] = {}
    vocab = None
    with h5py.File(path, "r") as f:
        if "format" in f.attrs and f.attrs["format"] == b"bnncompress":
            raise PosteriorError(f"'{path}' is a bnncompress archive, not a posterior")

        links: list[tuple[str, Any]] = []
        f.visititems_links(lambda key, link: links.append((key, link)))  # h5py callbacks must not raise
        for key, link in links:  # before reading anything: no data from other files
            if not isinstance(link, h5py.HardLink):
                raise PosteriorError(f"{where}: '{key}' is a link to elsewhere ({type(link).__name__}); refusing it")
        for key, _ in links:
            obj = f[key]
            leaf = next((x for x in ("loc", "scale") if key.endswith(("/" + x, "." + x))), None)
            if leaf is not None and isinstance(obj, h5py.Dataset):
                check_local_dataset(obj, f"{where}: dataset '{key}'", PosteriorError, LOSSLESS)
                found.setdefault(key[: -len(leaf) - 1], {})[leaf] = obj
        words = plain_dataset(f, "vocab", f"{where}: dataset 'vocab'", PosteriorError, LOSSLESS)
        if words is not None:
            vocab = validate_words(_decode_words(words[()], where), where)
        sources: dict[str, RowSource] = {}
        for name in sorted(found):
            pair = found[name]
            if set(pair) != {"loc", "scale"}:
                missing = ({"loc", "scale"} - set(pair)).pop()
                raise PosteriorError(f"{where}: '{name}' has no matching '{missing}' dataset")
            loc, scale = pair["loc"], pair["scale"]
            dtype = _check_pair(name, where, loc.shape, scale.shape, (loc.dtype, scale.dtype))
            sources[name] = HDF5Source(name, str(path), loc.name, scale.name, tuple(loc.shape), where, dtype)
    if not sources:
        raise PosteriorError(f"{where} holds no NAME/loc and NAME/scale datasets")
    return sources, vocab, f"HDF5 loc/scale datasets: {where}"


def _decode_words(raw: Any, where: str) -> list[str]:
    try:
        return [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in np.asarray(raw).reshape(-1)]
    except UnicodeDecodeError:
        raise PosteriorError(f"{where}: the vocabulary is not UTF-8 text") from None


def open_sources(path: str | os.PathLike) -> tuple[dict[str, RowSource], list[str] | None, str] | None:
    """The tensors of a streamable posterior file (reading headers only), its vocabulary and
    a description; None if ``path`` is a posterior that can only be read whole (.pt, .npz)."""
    path = Path(path)
    if path.is_dir():
        return _npy_directory(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(_HDF5_MAGIC):
        return _hdf5(path)
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return _safetensors(path)
    return None


def read_in_memory(path: str | os.PathLike) -> Posterior:
    """Read a streamable posterior whole (what :func:`bnncompress.read_posterior` does for them)."""
    opened = open_sources(path)
    if opened is None:  # pragma: no cover - callers check the format first
        raise PosteriorError(f"'{path}' is not a streamable posterior")
    sources, vocab, description = opened
    return Posterior({n: s.to_tensor() for n, s in sources.items()}, vocab, description)


# --------------------------------------------------------------------------- executors


class LocalExecutor:
    """Runs tasks on ``threads`` threads of this process (default: one per core), each task
    single-threaded; reading files and the numba kernels release the GIL, so tasks overlap
    I/O and computing. At most ``threads + 1`` tasks are in flight (bounded memory)."""

    def __init__(self, threads: int | None = None):
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.cache_bytes = SYMBOL_CACHE_BYTES  # results stay in this process: symbols can be kept

    def scatter(self, obj: Any) -> Any:
        return obj

    def map(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[Any]:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            pending: deque = deque()
            for args in tasks:
                pending.append(pool.submit(_single_threaded, fn, *args))
                if len(pending) > self.threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def map_split(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[tuple[Any, Any]]:
        """Like :meth:`map` for tasks returning ``(result, kept)``: yields ``result`` and a
        handle to ``kept`` that later tasks may take as an argument (here: ``kept`` itself)."""
        return self.map(fn, tasks)


def _single_threaded(fn: Callable, *args: Any) -> Any:
    """Run a task with numba on one thread (the executor runs one task per core)."""
    import numba

    numba.set_num_threads(1)
    return fn(*args)


# --------------------------------------------------------------------------- tasks (run on workers)


def _task_moments(source: RowSource, start: int, stop: int, positions: np.ndarray):
    from .exactsum import ExactSum

    loc, scale = source.read(start, stop)
    local = positions - start * source.row_size
    return ExactSum.of_float32(loc), ExactSum.of_squares(loc), loc[local], scale[local]


def _fitted(loc: np.ndarray, scale: np.ndarray, prior, max_level: int, device: str):
    from .devices import resolve_device
    from .quantizers.vbq import FittedVBQ

    device = device if device == "cpu" else resolve_device(device)  # "cpu" needs no torch import
    return FittedVBQ(TensorPosterior(loc, scale), prior, max_level, device)


def _task_histogram(source: RowSource, start: int, stop: int, prior, max_level: int, device: str, lam: float, keep):
    loc, scale = source.read(start, stop)
    f = _fitted(loc, scale, prior, max_level, device)
    indices = f.assign(lam)
    return np.bincount(indices, minlength=len(f.grid)), (indices.astype(np.uint16) if keep else None)


def _task_encode_kept(indices, remap, counts, block_size):
    words, offsets = coding.encode_blocks(np.take(remap, indices), counts, block_size)
    return words, np.diff(offsets)


def _task_encode(source, start, stop, prior, max_level, device, lam, remap, counts, block_size):
    loc, scale = source.read(start, stop)
    symbols = _fitted(loc, scale, prior, max_level, device).assign(lam)
    np.take(remap, symbols, out=symbols)
    words, offsets = coding.encode_blocks(symbols, counts, block_size)
    return words, np.diff(offsets)


# --------------------------------------------------------------------------- the blockwise pack


def task_ranges(source: RowSource, executor: Any = None) -> list[tuple[int, int]]:
    """Row ranges of the tasks: whole coding blocks, about TASK_SYMBOLS weights each (or
    the executor's ``task_symbols``: Dask pays a few ms of scheduling per task)."""
    symbols = getattr(executor, "task_symbols", TASK_SYMBOLS)
    block_rows = coding.block_rows_for(source.shape)
    rows_per_task = block_rows * max(1, symbols // max(block_rows * source.row_size, 1))
    return [(a, min(a + rows_per_task, source.num_rows)) for a in range(0, source.num_rows, rows_per_task)]


class BlockwiseVBQ:
    """A tensor's VBQ fit made block by block; offers what rate control needs
    (``grid``, ``shape``, ``num_weights``, ``assign`` on the subsample, ``histogram``)."""

    values_per_symbol = 1  # scalar quantization: one grid value per symbol, one symbol per weight

    def __init__(self, source: RowSource, handle: Any, prior, max_level: int, device: str, executor, samples):
        self.source, self.handle, self.prior = source, handle, prior
        self.max_level, self.device, self.executor = max_level, device, executor
        self.shape = source.shape
        self.num_weights = self.num_symbols = source.size
        self.ranges = task_ranges(source, executor)
        template = _fitted(np.zeros(1, np.float32), np.ones(1, np.float32), prior, max_level, "cpu")
        self.grid, self.params = template.grid, template.params
        self.sample_positions, self.sample_loc, self.sample_scale = samples
        self._histograms: dict[float, np.ndarray] = {}
        self.kept: tuple[float, list[np.ndarray]] | None = None  # (lam, grid indices per task)

    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        if sample is None or not np.array_equal(sample, self.sample_positions):
            raise ValueError("a blockwise fit assigns its rate-control subsample only")
        return _fitted(self.sample_loc, self.sample_scale, self.prior, self.max_level, self.device).assign(lam)

    def histogram(self, lam: float, sample: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Counts of every grid index at ``lam`` (on the subsample, or on all weights) and how many were counted."""
        if sample is not None:
            indices = self.assign(lam, sample)
            return np.bincount(indices, minlength=len(self.grid)), len(indices)
        if lam not in self._histograms:
            self.release()
            keep = len(self.grid) <= 1 << 16 and 2 * self.num_weights <= getattr(self.executor, "cache_bytes", 0)
            args = [(self.handle, a, b, self.prior, self.max_level, self.device, lam, keep) for a, b in self.ranges]
            total = np.zeros(len(self.grid), dtype=np.int64)
            kept = []
            for h, indices in self.executor.map_split(_task_histogram, args):
                total += h
                kept.append(indices)
            self._histograms[lam] = total
            if keep:
                self.kept = (lam, kept)
                self.executor.cache_bytes -= 2 * self.num_weights
        return self._histograms[lam], self.num_weights

    def release(self) -> None:
        """Drop the kept grid indices and return their bytes to the executor's budget."""
        if self.kept is not None:
            self.kept = None
            self.executor.cache_bytes += 2 * self.num_weights


def _fit_priors(sources: list[RowSource], handles: list[Any], executor, sample_positions, report):
    from .priors import GaussianPrior

    priors, samples = [], []
    done, total = 0, sum(len(task_ranges(s, executor)) for s in sources)
    for source, handle, positions in zip(sources, handles, sample_positions):
        rs = source.row_size
        args = []
        for a, b in task_ranges(source, executor):
            lo, hi = np.searchsorted(positions, [a * rs, b * rs])
            args.append((handle, a, b, positions[lo:hi]))
        sums = squares = None
        locs, scales = [], []
        for part_sum, part_squares, loc, scale in executor.map(_task_moments, args):
            sums = part_sum if sums is None else sums + part_sum
            squares = part_squares if squares is None else squares + part_squares
            locs.append(loc)
            scales.append(scale)
            done += 1
            report("fitting priors", done, total)
        priors.append(GaussianPrior.from_sums(sums, squares))
        samples.append((positions, np.concatenate(locs), np.concatenate(scales)))
    return priors, samples


def quantize_and_code(
    posterior: Posterior,
    *,
    bits: float | None,
    lam: float | None,
    max_level: int,
    device: str,
    executor: Any,
    report: Callable[[str, int, int], None],
) -> tuple[list, float]:
    """VBQ-quantize and entropy-code every tensor of ``posterior`` (whose tensors are
    :class:`RowSource`) block by block; returns the archive's records and the lambda used."""
    from .archive import TensorRecord
    from .quantizers.vbq import VBQ
    from .ratecontrol import choose_lambda, sample_positions

    names = posterior.names
    sources: list[RowSource] = [posterior.tensors[n] for n in names]
    handles = [executor.scatter(s) if isinstance(s, ArraySource) else s for s in sources]
    sizes = [s.size for s in sources]
    positions = sample_positions(sizes) if bits is not None else None
    if positions is None:
        positions = [np.zeros(0, np.int64)] * len(sources)
    priors, samples = _fit_priors(sources, handles, executor, positions, report)
    fitted = [
        BlockwiseVBQ(s, h, p, max_level, device, executor, x) for s, h, p, x in zip(sources, handles, priors, samples)
    ]
    lam = choose_lambda(fitted, bits, lam, VBQ.default_lam, report)

    records = []
    for i, (name, f) in enumerate(zip(names, fitted)):
        report("quantizing and coding", i, len(names))
        counts, _ = f.histogram(lam)
        used = np.flatnonzero(counts)  # as compact(): the grid values used, their counts, the renumbering
        grid = np.ascontiguousarray(f.grid[used], dtype=np.float32)
        used_counts = counts[used].astype(np.min_scalar_type(max(int(counts.max(initial=0)), 1)))
        remap = np.zeros(len(counts), dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        block_rows = coding.block_rows_for(f.shape)
        block_size = block_rows * coding.row_size(f.shape)
        if len(used) <= 1:
            words = np.zeros(0, dtype=np.uint32)
            offsets = np.zeros(coding.num_blocks(f.shape, block_rows) + 1, dtype=np.uint64)
        else:
            if f.kept is not None and f.kept[0] == lam:  # code the indices of the histogram pass
                task, args = _task_encode_kept, [(kept, remap, used_counts, block_size) for kept in f.kept[1]]
            else:
                task = _task_encode
                args = [
                    (f.handle, a, b, f.prior, max_level, device, lam, remap, used_counts, block_size)
                    for a, b in f.ranges
                ]
            parts, lengths = [], []
            for words_part, lengths_part in executor.map(task, args):
                parts.append(words_part)
                lengths.append(lengths_part)
            words = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
            offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.uint64)
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        f.release()
        records.append(
            TensorRecord(
                name=name,
                shape=f.shape,
                dtype=f.source.dtype,
                method=VBQ.name,
                params={**f.params, "lam": float(lam)},
                coder=coding.CODER_ID,
                grid=grid,
                counts=used_counts,
                words=words,
                block_rows=block_rows,
                offsets=offsets,
            )
        )
    report("quantizing and coding", len(names), len(names))
    return records, float(lam)


def posterior_of_sources(source: Any, vocab: str | os.PathLike | Iterable[str] | None) -> Posterior:
    """A :class:`Posterior` whose tensors are :class:`RowSource` objects: read lazily from a
    streamable file, or wrapping the in-memory tensors of any other source."""
    from .posterior import _check_vocab, read_posterior

    opened = open_sources(source) if isinstance(source, (str, os.PathLike)) else None
    if opened is None:
        posterior = read_posterior(source, vocab=vocab)
        tensors = {n: ArraySource(n, t, posterior.source) for n, t in posterior.tensors.items()}
        return Posterior(tensors, posterior.vocab, posterior.source, list(posterior.warnings))
    sources, stored_vocab, description = opened
    posterior = Posterior(dict(sources), stored_vocab, description)
    if vocab is not None:
        posterior.vocab = read_vocab(vocab)
    if posterior.vocab is not None:
        _check_vocab(posterior)
    return posterior


def is_large(source: Any) -> bool:
    """True for a streamable posterior file with at least STREAM_WEIGHTS weights."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    try:
        opened = open_sources(source)
    except PosteriorError:
        return False  # the normal reader reports it
    return opened is not None and sum(s.size for s in opened[0].values()) >= STREAM_WEIGHTS


def pack_blockwise(
    source, output, vocab, bits, lam, method, tensors, device, max_level, report, workers, scheduler, force=True
):
    """:func:`bnncompress.pack`, block by block (see the module doc); called by it."""
    import contextlib

    from .quantizers import VBQ, get_quantizer

    if method != VBQ.name:
        raise OptionError(
            f"streaming, --workers and --scheduler pack with method 'vbq' only, not {method!r}; "
            "pass --method vbq, or --no-stream for a posterior that fits in memory"
        )
    get_quantizer(method, max_level=max_level, device=device)  # validates the options here, before any work
    if lam is not None and not (lam >= 0):
        raise OptionError(f"lambda must be >= 0, got {lam}")
    report("reading posterior", 0, 1)
    posterior = posterior_of_sources(source, vocab)
    if tensors:
        posterior = posterior.select(tensors, require_vocab=vocab is not None)
    report("reading posterior", 1, 1)
    if workers is not None or scheduler is not None:
        from .distributed import dask_executor

        context = dask_executor(workers, scheduler)
    else:
        context = contextlib.nullcontext(LocalExecutor())
    with context as executor:
        records, lam = quantize_and_code(
            posterior, bits=bits, lam=lam, max_level=max_level, device=device, executor=executor, report=report
        )
    from .packing import write_packed

    return write_packed(output, records, posterior, lam, bits, report, force)
