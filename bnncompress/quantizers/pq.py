"""Product quantization of the means through FAISS: what compress-fasttext / fastText ``.ftz`` use.

Each row (e.g. a word vector of D values) is cut into M sub-vectors of D/M values; each
sub-vector is replaced by the nearest of ``K = 2^nbits`` centroids of its own codebook,
trained by k-means (``faiss.ProductQuantizer``). The codes are entropy-coded like any other
symbols and the codebooks are stored (and counted) in the payload. Scale-agnostic.

The rate knob picks a configuration (M, nbits): ``lam`` asks for about ``8 / lam`` bits per
weight, codebooks included, and the largest configuration within that is used, so only a
discrete set of rates exists; ``--bits`` lands on the nearest one. Codebooks are trained on
the whole tensor, so this method needs it in memory (no streaming or Dask).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import OptionError
from ..geometry import num_rows, row_size
from .base import STORED_IF_NOT_DEFAULT, Block, Fallback, FittedQuantizer, Quantizer, Rows
from .checks import is_integer
from .kmeans import KMeans
from .registry import check_requirements, register_quantizer

_MAX_NBITS = 8
#: Distances (float32) computed at once: 16,384 rows x 100 subvectors x 256 codes took 1.6 GB, twice.
_CHUNK_DISTANCES = 1 << 22
_MAX_SPAN = 1e18  # largest / median |mean| at most: float32 k-means tells the bulk apart beside the largest
_F32_MAX = float(np.finfo(np.float32).max)
#: FAISS's k-means seed unless ``seed`` is given.
DEFAULT_SEED = 1234


@register_quantizer
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class ProductQuantization(Quantizer):
    """FAISS product quantization of each row's means (needs tensors with rows of >= 2 values).

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> rng = np.random.default_rng(0)
        >>> t = TensorPosterior(rng.normal(size=(2000, 8)).astype(np.float32), np.ones((2000, 8), np.float32))
        >>> q = fit_in_memory(ProductQuantization(), t).quantize(lam=2.0)  # at most ~4 bits/weight, codebooks included
        >>> q.subvectors, q.symbols.shape
        (2, (4000,))
    """

    name: ClassVar[str] = "pq"
    default_lam: ClassVar[float] = 2.0
    blockwise: ClassVar[bool] = False
    requires: ClassVar[dict[str, str]] = {"faiss": "faiss-cpu (or bnncompress[eval])"}

    seed: int = field(default=DEFAULT_SEED, metadata=STORED_IF_NOT_DEFAULT)  # archives of the default seed as before

    def __post_init__(self) -> None:
        seed = self.seed
        if not (is_integer(seed) and 0 <= seed < 2**31):
            raise OptionError(f"seed must be an integer from 0 to 2^31 - 1, got {seed!r}")
        self._normalize(seed=int(seed))

    def statistics(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        return block.loc, block.scale

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedQuantizer:
        """Product-quantize a tensor of rows; tensors without rows to cut (biases, scalars, a
        single row) get k-means weight sharing instead, PQ's one-dimensional special case."""
        if len(shape) < 2 or row_size(shape) < 2 or num_rows(shape) < 2:
            kmeans = KMeans()  # its record describes this k-means alone, as archives always have
            return Fallback(kmeans.fit(shape, stats, rows), "kmeans", kmeans.options(), stores_method_options=False)
        return FittedPQ(shape, np.concatenate([s[0] for s in stats]), self.seed)


@dataclass(frozen=True, eq=False)
class PQState:
    """FAISS's configuration at a rate, and its trained codebooks ((M, K, D/M) float32)."""

    subvectors: int
    nbits: int
    codebooks: np.ndarray


class FittedPQ(FittedQuantizer):
    """Product quantization fitted to a tensor's rows; its state at a rate is a :class:`PQState`."""

    def __init__(self, shape: tuple[int, ...], loc: np.ndarray, seed: int):
        self.shape = shape
        self.rows, self.dim = num_rows(shape), row_size(shape)
        self.matrix = loc.reshape(self.rows, self.dim)
        self.seed = seed
        n = self.rows * self.dim
        configs = []
        for m in (m for m in range(1, self.dim + 1) if self.dim % m == 0):
            for nbits in range(1, _MAX_NBITS + 1):
                if (1 << nbits) <= self.rows:
                    configs.append((m * nbits / self.dim + 32.0 * (1 << nbits) * self.dim / n, m, nbits))
        self.configs = sorted(configs)
        # FAISS works in float32: squared distances of values beyond ~1e15 overflow and abort it,
        # below ~1e-15 they vanish. Scale by a power of two (exact) into [2^-40, 2^40]; 0 for usual values.
        magnitude = np.abs(loc, dtype=np.float64)
        largest = float(magnitude.max())
        typical = float(np.median(magnitude[magnitude > 0])) if largest > 0 else 0.0
        if largest > _MAX_SPAN * typical:  # the bulk would underflow to one point beside the largest values
            raise OptionError(
                f"method 'pq' cannot quantize means whose magnitudes span more than {_MAX_SPAN:.0e} "
                f"(largest {largest:.3g}, median {typical:.3g}); use another method"
            )
        exponent = int(np.ceil(np.log2(largest))) if largest > 0 else 0
        self.shift = exponent - 40 if exponent > 40 else (exponent + 40 if exponent < -40 else 0)
        self._books: dict[tuple[int, int], np.ndarray] = {}

    @property
    def values_per_symbol(self) -> int:  # type: ignore[override]  # a code stores a sub-vector in each codebook
        return self.dim

    def config(self, lam: float) -> tuple[int, int]:
        if not (lam > 0 and np.isfinite(lam)):
            raise OptionError(f"lambda must be a finite number > 0 for pq, got {lam}")
        budget = 8.0 / lam
        fitting = [c for c in self.configs if c[0] <= budget]
        _, m, nbits = fitting[-1] if fitting else self.configs[0]
        return m, nbits

    def at(self, lam: float, rows: Rows) -> PQState:
        key = self.config(lam)
        if key not in self._books:
            self._books[key] = self._train(*key)
        return PQState(*key, self._books[key])

    def _train(self, m: int, nbits: int) -> np.ndarray:
        """(M, K, D/M) float32 centroids."""
        check_requirements("pq")
        import faiss

        pq = faiss.ProductQuantizer(self.dim, m, nbits)
        pq.cp.seed = self.seed
        pq.cp.min_points_per_centroid = 1  # small tensors: train anyway, without faiss's warning
        pq.train(np.ascontiguousarray(self.matrix * np.float32(2.0**-self.shift), dtype=np.float32))
        books = faiss.vector_to_array(pq.centroids).reshape(m, 1 << nbits, -1).astype(np.float64)
        books = np.clip(books * 2.0**self.shift, -_F32_MAX, _F32_MAX)  # a centroid of ±3.4e38 stays finite
        return books.astype(np.float32)

    def subvectors(self, state: PQState) -> int:
        return state.subvectors

    def assign(self, block: Block, state: PQState) -> np.ndarray:
        m, books = state.subvectors, state.codebooks
        sub = books.shape[2]
        if block.positions is None:
            x_rows = block.loc.reshape(-1, self.dim)
        else:
            x_rows = self.matrix[np.unique(block.positions // self.dim)]
        books = books * np.float32(2.0**-self.shift)
        norms = np.einsum("mkd,mkd->mk", books, books)
        codes = np.empty((len(x_rows), m), dtype=np.int32)
        chunk = max(1, _CHUNK_DISTANCES // (m * books.shape[1]))  # rows whose (rows, m, k) distances fit
        for start in range(0, len(x_rows), chunk):
            x = x_rows[start : start + chunk].reshape(-1, m, sub).astype(np.float32)
            x *= np.float32(2.0**-self.shift)
            dist = norms[None] - 2 * np.einsum("rmd,mkd->rmk", x, books)
            codes[start : start + chunk] = dist.argmin(axis=2)
        return codes.reshape(-1)

    def grid(self, state: PQState) -> np.ndarray:
        return state.codebooks.reshape(-1)

    def params(self, state: PQState) -> dict[str, Any]:
        return {"subvectors": state.subvectors, "nbits": state.nbits}
