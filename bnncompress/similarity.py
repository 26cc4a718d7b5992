"""Word-similarity queries on a tensor that stays compressed, with gensim's semantics.

``most_similar`` (3CosAdd), ``similarity`` and ``doesnt_match`` compute what gensim's
``KeyedVectors`` methods of the same names return for the decoded vectors: vectors are
unit-normalised, words given as input are left out of the results, and ``(word, weight)``
pairs are accepted. The whole-vocabulary scan streams the decoded coding blocks of a
:class:`~bnncompress.servedrows.ServedRows` (one block of float32 rows at a time) against row
norms it computes once; the query's own words come through the row cache.

Example:
    >>> a = bnncompress.load("small.bnc")                           # doctest: +SKIP
    >>> a.most_similar(positive=["king", "woman"], negative=["man"], topn=3)   # doctest: +SKIP
    [('queen', 0.71...), ...]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from .errors import ArgumentTypeError, NotFoundError, OptionError
from .servedrows import ServedRows


def _as_list(value: Any) -> list:
    """gensim's ``_ensure_list``: one word (or one 1-D vector) becomes a list of one."""
    if value is None:
        return []
    if isinstance(value, (str, int, np.integer)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [value]
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return list(value)
    return list(value)


class WordQueries:
    """The similarity queries over ``served`` rows labelled by ``index`` (word -> row) and ``words``."""

    def __init__(self, served: ServedRows, index: Mapping[str, int], words: Sequence[str]):
        self.served, self.index, self.words = served, index, words

    def _row(self, key: Any) -> int:
        """The row of a word (or of an integer row id, as gensim's ``get_index`` allows)."""
        if isinstance(key, str):
            if key not in self.index:
                raise NotFoundError(f"{key!r} is not in the archive's vocabulary")
            return self.index[key]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(self.words):
            return int(key)
        raise NotFoundError(f"{key!r} is not a word of the vocabulary (nor a row id in 0 .. {len(self.words) - 1})")

    def _known(self, key: Any) -> bool:
        """``key`` is a word of the vocabulary or a row id (gensim's ``has_index_for``)."""
        if isinstance(key, str):
            return key in self.index
        return isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(self.words)

    def _unit(self, rows: list[int]) -> np.ndarray:
        """The rows' vectors divided by their norms (float32), via the row cache."""
        vectors = np.asarray(self.served.lookup(np.asarray(rows, np.int64)), dtype=np.float32)
        return vectors / self.served.norms[rows][:, None]

    def scores(self, mean: np.ndarray, stop: int) -> np.ndarray:
        """Cosine of every row before ``stop`` with the unit vector ``mean``, streaming the blocks."""
        norms = self.served.norms
        dists = np.empty(stop, np.float32)
        for first, rows in self.served.blocks():
            if first >= stop:
                break
            rows = rows[: stop - first]
            dists[first : first + len(rows)] = rows @ mean / norms[first : first + len(rows)]
        return dists

    def most_similar(
        self, positive: Any = None, negative: Any = (), topn: int | None = 10, restrict_vocab: int | None = None
    ) -> list[tuple[str, float]] | np.ndarray:
        """gensim's ``KeyedVectors.most_similar`` (3CosAdd): the ``topn`` words closest to the
        weighted mean of the unit vectors of ``positive`` (weight 1) and ``negative`` (weight -1)
        words or ``(word, weight)`` pairs (1-D arrays count as vectors), searching the first
        ``restrict_vocab`` rows; input words are left out. ``topn=None``: every score; ``topn < 1``: []."""
        if isinstance(topn, Integral) and topn < 1:
            return []  # as gensim (topn=None: every score)
        if topn is not None and not isinstance(topn, Integral):
            raise ArgumentTypeError(f"«topn» is a number of words (an int) or None for every score, not {topn!r}")
        if restrict_vocab is not None and (not isinstance(restrict_vocab, Integral) or restrict_vocab < 0):
            raise OptionError(f"«restrict_vocab» is a row count >= 0 (or None: every row), not {restrict_vocab!r}")
        positive, negative = _as_list(positive), _as_list(negative)  # once: an iterator is read once
        items = positive + negative
        weights = np.concatenate((np.ones(len(positive)), -np.ones(len(negative))))
        keys = []
        for i, item in enumerate(items):
            if isinstance(item, (str, int, np.integer, np.ndarray)):
                keys.append(item)
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                keys.append(item[0])
                weights[i] = item[1]
            else:
                raise ArgumentTypeError(f"«positive» and «negative» hold words or (word, weight) pairs, not {item!r}")
        if not keys:
            raise OptionError("most_similar needs at least one word in «positive» or «negative»")
        rows = [self._row(k) for k in keys if not isinstance(k, np.ndarray)]
        units = iter(self._unit(rows)) if rows else iter(())
        mean = _gensim_mean(keys, weights, units, self.served.shape[1])
        stop = self.served.shape[0] if not restrict_vocab else min(int(restrict_vocab), self.served.shape[0])
        dists = self.scores(mean, stop)
        if not topn:
            return dists
        inputs = set(rows)
        best = _top(dists, topn + len(rows))
        return [(self.words[i], float(dists[i])) for i in best if i not in inputs][:topn]

    def similarity(self, w1: str, w2: str) -> float:
        """Cosine similarity of two words (gensim's ``similarity``)."""
        rows = [self._row(w1), self._row(w2)]
        if not self.served.norms[rows].all():  # a row quantized to zeros: gensim's unitvec keeps it zero
            return 0.0
        u = self._unit(rows)
        return float(np.dot(u[0], u[1]))

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest from the mean of the others' unit vectors (gensim's ``doesnt_match``);
        words not in the vocabulary are ignored with a warning, as gensim does."""
        if isinstance(words, str):
            raise ArgumentTypeError("«words» is a list of words, not one string")
        words = list(words)
        used = [w for w in words if self._known(w)]  # words, or row ids as gensim allows
        if len(used) < len(words):
            missing = [w for w in words if not self._known(w)]
            warnings.warn(f"words {missing} are not in the vocabulary; ignoring them", UserWarning, stacklevel=3)
        if not used:
            raise OptionError("doesnt_match needs at least one word of the vocabulary in «words»")
        vectors = self._unit([self._row(w) for w in used])
        mean = _gensim_mean(list(vectors), np.ones(len(used), np.float32), None, vectors.shape[1])  # gensim's sums:
        return sorted(zip(vectors @ mean, used), reverse=True)[-1][1]  # two words tie, and the last bit decides


def _gensim_mean(keys: list, weights: np.ndarray, units: Any, size: int) -> np.ndarray:
    """The unit query vector of 3CosAdd with the very operations of gensim's ``get_mean_vector`` and
    ``matutils.unitvec`` (float32 sums of float64 products, a float64 mean scaled by BLAS's
    ``dnrm2`` and ``dscal``): the query is gensim's to the last bit (a score may still differ from gensim's
    by a unit in the last place: rows' norms and products are computed block by block)."""
    from scipy.linalg.blas import dnrm2, dscal  # (loaded with numba already: its BLAS check)

    mean = np.zeros(size, np.float32)
    for key, weight in zip(keys, weights):
        vector = key if isinstance(key, np.ndarray) else next(units)
        if vector.shape != mean.shape:
            raise OptionError(f"a vector in «positive» or «negative» has shape {vector.shape}, not {mean.shape}")
        mean += weight * vector
    if np.abs(weights).sum() > 0:  # (weights all 0: gensim leaves the sum as it is)
        mean = mean / np.abs(weights).sum()
    length = dnrm2(mean) if mean.size else 0.0
    return (dscal(1.0 / length, mean) if length > 0 else mean).astype(np.float32)  # a zero mean stays zero


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest ``scores``, largest first (gensim's ``matutils.argsort``)."""
    negated = -scores
    if n >= scores.size:
        return np.argsort(negated)[:n]
    best = np.argpartition(negated, n)[:n]
    return best.take(np.argsort(negated.take(best)))
