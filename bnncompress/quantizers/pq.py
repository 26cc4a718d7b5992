"""Product quantization of the means through FAISS: what compress-fasttext / fastText ``.ftz`` use.

Each row (e.g. a word vector of D values) is cut into M sub-vectors of D/M values; each
sub-vector is replaced by the nearest of ``K = 2^nbits`` centroids of its own codebook,
trained by k-means (``faiss.ProductQuantizer``). The codes are entropy-coded like any other
symbols and the codebooks are stored (and counted) in the payload. Scale-agnostic.

The rate knob picks a configuration (M, nbits): ``lam`` asks for about ``8 / lam`` bits per
weight, codebooks included, and the largest configuration within that is used, so only a
discrete set of rates exists; ``--bits`` lands on the nearest one.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..coding import num_rows, row_size
from ..errors import OptionError
from ..posterior import TensorPosterior
from .base import FittedQuantizer, QuantizedTensor, Quantizer
from .kmeans import KMeans

_MAX_NBITS = 8
_ROW_CHUNK = 1 << 14


class ProductQuantization(Quantizer):
    """FAISS product quantization of each row's means (needs tensors with rows of >= 2 values).

    Example:
        >>> import numpy as np
        >>> from bnncompress.posterior import TensorPosterior
        >>> rng = np.random.default_rng(0)
        >>> t = TensorPosterior(rng.normal(size=(2000, 8)).astype(np.float32), np.ones((2000, 8), np.float32))
        >>> q = ProductQuantization().fit(t).quantize(lam=2.0)  # at most about 4 bits per weight, codebooks included
        >>> q.subvectors, q.symbols.shape
        (2, (4000,))
    """

    name: ClassVar[str] = "pq"
    default_lam: ClassVar[float] = 2.0

    def __init__(self, seed: int = 1234):
        self.seed = int(seed)

    def fit(self, tensor: TensorPosterior) -> FittedQuantizer:
        """Product-quantize a tensor of rows; tensors without rows to cut (biases, scalars, a
        single row) get k-means weight sharing instead, PQ's one-dimensional special case."""
        if len(tensor.shape) < 2 or row_size(tensor.shape) < 2 or num_rows(tensor.shape) < 2:
            fitted = KMeans().fit(tensor)
            fitted.params["fallback"] = "kmeans"
            return fitted
        return FittedPQ(tensor, self.seed)


class FittedPQ(FittedQuantizer):
    def __init__(self, tensor: TensorPosterior, seed: int):
        self.shape = tensor.shape
        self.loc = tensor.loc.reshape(-1)
        self.scale = tensor.scale.reshape(-1)
        self.rows, self.dim = num_rows(self.shape), row_size(self.shape)
        self.seed = seed
        self.grid = np.zeros(1, np.float32)
        self.params = {}
        n = self.rows * self.dim
        configs = []
        for m in (m for m in range(1, self.dim + 1) if self.dim % m == 0):
            for nbits in range(1, _MAX_NBITS + 1):
                if (1 << nbits) <= self.rows:
                    configs.append((m * nbits / self.dim + 32.0 * (1 << nbits) * self.dim / n, m, nbits))
        self.configs = sorted(configs)
        # FAISS works in float32: squared distances of values beyond ~1e15 overflow and abort it,
        # below ~1e-15 they vanish. Scale by a power of two (exact) into [2^-40, 2^40]; 0 for usual values.
        largest = float(np.abs(self.loc).max())
        exponent = int(np.ceil(np.log2(largest))) if largest > 0 else 0
        self.shift = exponent - 40 if exponent > 40 else (exponent + 40 if exponent < -40 else 0)
        self._books: dict[tuple[int, int], np.ndarray] = {}

    @property
    def matrix(self) -> np.ndarray:
        return self.loc.reshape(self.rows, self.dim)

    def config(self, lam: float) -> tuple[int, int]:
        if not (lam > 0 and np.isfinite(lam)):
            raise OptionError(f"lambda must be a finite number > 0 for pq, got {lam}")
        budget = 8.0 / lam
        fitting = [c for c in self.configs if c[0] <= budget]
        _, m, nbits = fitting[-1] if fitting else self.configs[0]
        return m, nbits

    @property
    def values_per_symbol(self) -> int:  # every code stores one sub-vector in each of the M codebooks
        return self.dim

    def codebooks(self, lam: float) -> np.ndarray:
        """(M, K, D/M) float32 centroids for the configuration at ``lam``."""
        key = self.config(lam)
        if key not in self._books:
            try:
                import faiss
            except ImportError:
                raise OptionError("method 'pq' needs FAISS: pip install faiss-cpu (or bnncompress[eval])") from None

            m, nbits = key
            pq = faiss.ProductQuantizer(self.dim, m, nbits)
            pq.cp.seed = self.seed
            pq.cp.min_points_per_centroid = 1  # small tensors: train anyway, without faiss's warning
            pq.train(np.ascontiguousarray(self.matrix * np.float32(2.0**-self.shift), dtype=np.float32))
            books = faiss.vector_to_array(pq.centroids).reshape(m, 1 << nbits, -1).astype(np.float32)
            self._books[key] = books * np.float32(2.0**self.shift)
        return self._books[key]

    @property
    def num_symbols(self) -> int:
        return self.rows * self._m

    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        books = self.codebooks(lam)
        m, k, sub = books.shape
        self._m = m
        rows = np.arange(self.rows) if sample is None else np.unique(np.asarray(sample) // self.dim)
        codes = np.empty((len(rows), m), dtype=np.int32)
        books = books * np.float32(2.0**-self.shift)
        norms = np.einsum("mkd,mkd->mk", books, books)
        for start in range(0, len(rows), _ROW_CHUNK):
            x = self.matrix[rows[start : start + _ROW_CHUNK]].reshape(-1, m, sub).astype(np.float32)
            x *= np.float32(2.0**-self.shift)
            dist = norms[None] - 2 * np.einsum("rmd,mkd->rmk", x, books)
            codes[start : start + _ROW_CHUNK] = dist.argmin(axis=2)
        return codes.reshape(-1)

    def grid_at(self, lam: float) -> np.ndarray:
        return self.codebooks(lam).reshape(-1)

    def quantize(self, lam: float) -> QuantizedTensor:
        books = self.codebooks(lam)
        m, nbits = self.config(lam)
        codes = self.assign(lam)
        counts = np.bincount(codes, minlength=books.shape[1])
        used = np.flatnonzero(counts)
        remap = np.zeros(books.shape[1], dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        return QuantizedTensor(
            symbols=remap[codes],
            grid=np.ascontiguousarray(books[:, used, :]).reshape(-1),
            counts=counts[used].astype(np.min_scalar_type(max(int(counts.max(initial=0)), 1))),
            params={"subvectors": m, "nbits": nbits, "lam": float(lam)},
            subvectors=m,
        )
