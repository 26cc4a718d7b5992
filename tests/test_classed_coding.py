"""Classed entropy models: (C, M, K) float weights and one class per block, coded as constriction
codes each block with its class's M models (kernels and constriction agree bit for bit)."""

from __future__ import annotations

import constriction
import numpy as np
import pytest

import bnncompress
from bnncompress import _ans, _rows_kernels, coding
from bnncompress.errors import ArchiveError
from bnncompress.rowaccess import RowReader

CASES = [(c, m) for c in (1, 2, 3) for m in (1, 5)]


def _classed(rng, classes_n: int, models: int, k: int = 9, rows: int = 1100, block_rows: int = 150):
    """Symbols of ``rows`` rows of ``models`` columns in blocks of ``block_rows`` rows (the last one
    short), each block drawn from its random class's models (random supports: some zero weights),
    and float weights positive exactly where a (class, column) has symbols."""
    blocks = -(-rows // block_rows)
    classes = rng.integers(0, classes_n, blocks)
    classes[: min(classes_n, blocks)] = np.arange(min(classes_n, blocks))  # every class used
    p = np.zeros((classes_n, models, k))
    for c in range(classes_n):
        for m in range(models):
            support = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
            p[c, m, support] = rng.dirichlet(np.full(len(support), 0.7))
    symbols = np.empty((rows, models), dtype=np.int32)
    for b in range(blocks):
        part = symbols[b * block_rows : (b + 1) * block_rows]
        for m in range(models):
            part[:, m] = rng.choice(k, size=len(part), p=p[classes[b], m])
    symbols = symbols.reshape(-1)
    weights = _histogram(symbols, classes, classes_n, models, k, block_rows * models).astype(np.float64)
    weights *= rng.uniform(0.3, 3.0, weights.shape)  # weights, not counts: same support
    return symbols, weights, classes, block_rows * models


def _histogram(symbols, classes, classes_n, models, k, block_size):
    hist = np.zeros((classes_n, models, k), dtype=np.int64)
    for b, start in enumerate(range(0, len(symbols), block_size)):
        part = symbols[start : start + block_size].reshape(-1, models)
        for m in range(models):
            hist[classes[b], m] += np.bincount(part[:, m], minlength=k)
    return hist


def _constriction_words(symbols, weights, classes, block_size):
    """The reference: constriction itself, block by block, one probability row per symbol."""
    parts, models = [], weights.shape[1]
    for b, start in enumerate(range(0, len(symbols), block_size)):
        s = np.ascontiguousarray(symbols[start : start + block_size])
        table = weights[classes[b]]
        p = table / table.sum(axis=1, keepdims=True)
        coder = constriction.stream.stack.AnsCoder()
        family = constriction.stream.model.Categorical(perfect=False)
        coder.encode_reverse(s, family, np.ascontiguousarray(p[np.arange(len(s)) % models]))
        parts.append(coder.get_compressed())
    offsets = np.zeros(len(parts) + 1, dtype=np.uint64)
    np.cumsum([len(w) for w in parts], out=offsets[1:])
    return np.concatenate(parts), offsets


def _each_coder(monkeypatch):
    """Yield "numba", then "constriction" with ``BNNCOMPRESS_CODER`` set for the loop body."""
    for coder in ("numba", "constriction"):
        with monkeypatch.context() as m:
            if coder == "constriction":
                m.setenv("BNNCOMPRESS_CODER", "constriction")
            yield coder


@pytest.mark.parametrize("classes_n, models", CASES)
def test_kernels_code_classed_blocks_as_constriction(monkeypatch, classes_n, models):
    rng = np.random.default_rng(10 * classes_n + models)
    symbols, weights, classes, block = _classed(rng, classes_n, models)
    n, blocks = len(symbols), len(classes)
    ref_words, ref_offsets = _constriction_words(symbols, weights, classes, block)
    words, offsets = coding.encode_blocks(symbols, weights, block, classes=classes)
    np.testing.assert_array_equal(words, ref_words)
    np.testing.assert_array_equal(offsets, ref_offsets)
    subset = [blocks - 1, 0, blocks // 2, blocks - 1]  # the short last block, out of order, repeated
    expected = np.concatenate([symbols[b * block : (b + 1) * block] for b in subset])
    lengths = [min(block, n - b * block) for b in subset]
    lengths[1], lengths[2] = 2 * models, block  # prefixes of whole rows, and a whole block
    prefixes = np.concatenate([symbols[b * block : b * block + length] for b, length in zip(subset, lengths)])
    for coder in _each_coder(monkeypatch):
        if coder == "constriction":
            again, again_offsets = coding.encode_blocks(symbols, weights, block, classes=classes)
            np.testing.assert_array_equal(again, ref_words)
            np.testing.assert_array_equal(again_offsets, ref_offsets)
        full = coding.decode_blocks(words, offsets, weights, n, block, classes=classes)
        np.testing.assert_array_equal(full, symbols, err_msg=coder)
        part = coding.decode_blocks(words, offsets, weights, n, block, subset, classes=classes)
        np.testing.assert_array_equal(part, expected, err_msg=coder)
        got = coding.decode_prefixes(words, offsets, weights, n, block, subset, lengths, classes=classes)
        np.testing.assert_array_equal(got, prefixes, err_msg=coder)
    symbols_k, histogram = _ans.decode_blocks(words, offsets, weights, n, block, np.arange(blocks), classes)
    np.testing.assert_array_equal(symbols_k, symbols)
    np.testing.assert_array_equal(histogram, _histogram(symbols, classes, classes_n, models, weights.shape[2], block))
    np.testing.assert_array_equal(histogram, coding.symbol_histogram(symbols, weights, classes, block))


@pytest.mark.parametrize("coder", ["numba", "constriction"])
def test_bad_classes_raise_value_error(monkeypatch, coder):
    if coder == "constriction":
        monkeypatch.setenv("BNNCOMPRESS_CODER", "constriction")
    rng = np.random.default_rng(3)
    symbols, weights, classes, block = _classed(rng, 2, 5)
    n = len(symbols)
    words, offsets = coding.encode_blocks(symbols, weights, block, classes=classes)
    for bad, match in (
        (classes[:-1], "classes for"),
        (np.r_[classes, 0], "classes for"),
        (np.where(classes == 1, 2, classes), "outside"),
        (np.where(classes == 1, -1, classes), "outside"),
        (classes.astype(np.float64), "integers"),
        (None, "need classes"),
    ):
        with pytest.raises(ValueError, match=match):
            coding.encode_blocks(symbols, weights, block, classes=bad)
        with pytest.raises(ValueError, match=match):
            coding.decode_blocks(words, offsets, weights, n, block, classes=bad)
        with pytest.raises(ValueError, match=match):
            coding.decode_blocks(words, offsets, weights, n, block, [0], classes=bad)
        with pytest.raises(ValueError, match=match):
            coding.decode_prefixes(words, offsets, weights, n, block, [0], [5], classes=bad)
    with pytest.raises(ValueError, match="only"):  # classes with (M, K) counts
        coding.decode_blocks(words, offsets, weights[0], n, block, classes=classes)
    empty = weights.copy()
    empty[1, 3] = 0.0  # a model of a used class without weight
    with pytest.raises(ValueError, match="model 3 of class 1"):
        coding.decode_blocks(words, offsets, empty, n, block, classes=classes)
    negative = weights.copy()
    negative[0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="nonnegative"):
        coding.encode_blocks(symbols, negative, block, classes=classes)


def test_an_unused_class_may_be_empty():
    rng = np.random.default_rng(4)
    symbols, weights, classes, block = _classed(rng, 2, 5)
    weights = np.concatenate([weights, np.zeros((1, *weights.shape[1:]))])  # class 2: no blocks, no weight
    words, offsets = coding.encode_blocks(symbols, weights, block, classes=classes)
    decoded = coding.decode_blocks(words, offsets, weights, len(symbols), block, classes=classes)
    np.testing.assert_array_equal(decoded, symbols)


@pytest.mark.parametrize("coder", ["numba", "constriction"])
def test_histogram_check_catches_weights_where_no_symbol_occurs(monkeypatch, coder):
    if coder == "constriction":
        monkeypatch.setenv("BNNCOMPRESS_CODER", "constriction")
    rng = np.random.default_rng(5)
    symbols, weights, classes, block = _classed(rng, 3, 5)
    n = len(symbols)
    unused = np.argwhere(weights == 0)
    assert len(unused)
    extra = weights.copy()
    extra[tuple(unused[0])] = 0.5  # a weight > 0 for a symbol that never occurs there
    words, offsets = coding.encode_blocks(symbols, extra, block, classes=classes)
    with pytest.raises(ValueError, match="entropy model's tables"):
        coding.decode_blocks(words, offsets, extra, n, block, classes=classes)
    blocks = list(range(len(classes)))  # blocks asked for by name: no histogram check
    np.testing.assert_array_equal(
        coding.decode_blocks(words, offsets, extra, n, block, blocks, classes=classes), symbols
    )
    # the other way round: a symbol whose weight is 0 still codes (the minimum probability), but is caught
    c, m, s = (int(i) for i in unused[0])
    b = int(np.flatnonzero(classes == c)[0])
    bad = symbols.copy()
    bad[b * block + m] = s
    words, offsets = coding.encode_blocks(bad, weights, block, classes=classes)
    np.testing.assert_array_equal(coding.decode_blocks(words, offsets, weights, n, block, blocks, classes=classes), bad)
    with pytest.raises(ValueError, match="entropy model's tables"):
        coding.decode_blocks(words, offsets, weights, n, block, classes=classes)


@pytest.mark.parametrize("models", [1, 5])
def test_one_class_codes_as_the_two_dimensional_table(monkeypatch, models):
    rng = np.random.default_rng(6 + models)
    symbols, _, classes, block = _classed(rng, 1, models)
    counts = _histogram(symbols, classes, 1, models, 9, block)[0]
    table = counts if models > 1 else counts[0]
    words, offsets = coding.encode_blocks(symbols, table, block)
    for scale in (1.0, 2.0**40):  # the same probabilities; 2**40 x the counts: no information-content check
        weights = counts[None].astype(np.float64) * scale
        for coder in _each_coder(monkeypatch):
            classed_words, classed_offsets = coding.encode_blocks(symbols, weights, block, classes=classes)
            np.testing.assert_array_equal(classed_words, words, err_msg=coder)
            np.testing.assert_array_equal(classed_offsets, offsets, err_msg=coder)
            decoded = coding.decode_blocks(words, offsets, weights, len(symbols), block, classes=classes)
            np.testing.assert_array_equal(decoded, symbols, err_msg=coder)


class _Kind:
    """A record kind's row-decoding side: a value per (column, symbol), the same for every class."""

    coded = True
    values_per_class = False

    def __init__(self, values: np.ndarray, valid: np.ndarray):
        self.table = (values[:, :, None], valid, _rows_kernels.PLAIN, np.zeros(len(values)), np.eye(1))

    def value_table(self, record) -> tuple:
        return self.table


class _ClassedRecord:
    """What :class:`RowReader` reads of a record, for a tensor coded with classed models."""

    name = "classed"

    def __init__(self, symbols, weights, classes, block_rows, values):
        models = weights.shape[1]
        self.shape = (len(symbols) // models, models)
        self.block_rows, self.symbols_per_row = block_rows, models
        self.block_size = block_rows * models
        self.num_symbols = self.num_weights = len(symbols)
        self.num_blocks = len(classes)
        self.model_counts, self.block_classes, self.counts = weights, classes, weights.reshape(-1)
        self.words, self.offsets = coding.encode_blocks(symbols, weights, self.block_size, classes=classes)
        self.payload_bytes = self.words.nbytes + 8 * len(self.offsets)
        self.values_table = values
        self.kind = _Kind(values, (weights > 0).any(axis=0))

    def dequantize(self, symbols: np.ndarray, row_blocks: np.ndarray | None = None) -> np.ndarray:
        columns = np.arange(len(symbols)) % self.symbols_per_row
        return self.values_table[columns, symbols].astype(np.float32)

    def values(self, decode, blocks=None) -> np.ndarray:
        args = (self.words, self.offsets, self.model_counts, self.num_symbols, self.block_size, blocks)
        return self.dequantize(decode(*args, classes=self.block_classes))


@pytest.mark.parametrize("classes_n, models, rows, block_rows", [(3, 5, 2300, 400), (2, 1, 9100, 2000)])
def test_row_reader_decodes_classed_rows_as_the_full_decode(monkeypatch, classes_n, models, rows, block_rows):
    rng = np.random.default_rng(20 + classes_n)
    symbols, weights, classes, block = _classed(rng, classes_n, models, rows=rows, block_rows=block_rows)
    values = rng.normal(size=(models, weights.shape[2])).astype(np.float32)
    rec = _ClassedRecord(symbols, weights, classes, block_rows, values)
    expected = rec.dequantize(symbols).reshape(rec.shape)
    reader = RowReader(rec)
    assert reader.checkpoint_every < block_rows  # several checkpoints per block
    small = np.array([rows - 1, 0, block_rows + 1, block_rows - 1, rows - 1])
    np.testing.assert_array_equal(reader.rows(small), expected[small])  # block prefixes
    assert reader._checkpoints is None
    many = rng.integers(0, rows, 3000)
    np.testing.assert_array_equal(reader.rows(many), expected[many])  # fused pass, then checkpoints
    assert reader._checkpoints is not None
    np.testing.assert_array_equal(reader.all().reshape(rec.shape), expected)
    np.testing.assert_array_equal(np.concatenate([v for _, v in RowReader(rec).blocks()]), expected)
    np.testing.assert_array_equal(RowReader(rec)._decode(None).reshape(rec.shape), expected)
    np.testing.assert_array_equal(RowReader(rec).all().reshape(rec.shape), expected)  # fused, checkpoints on the way
    monkeypatch.setenv("BNNCOMPRESS_CODER", "constriction")
    np.testing.assert_array_equal(RowReader(rec).rows(many), expected[many])  # whole blocks, by constriction


def test_row_reader_checks_the_classed_histogram():
    rng = np.random.default_rng(30)
    symbols, weights, classes, block = _classed(rng, 2, 5, rows=2300, block_rows=400)
    extra = weights.copy()
    extra[tuple(np.argwhere(weights == 0)[0])] = 1.0
    rec = _ClassedRecord(symbols, extra, classes, 400, np.zeros((5, 9), np.float32))
    with pytest.raises(ArchiveError, match="entropy model's tables"):
        RowReader(rec).all()
    with pytest.raises(ArchiveError, match="entropy model's tables"):
        RowReader(rec)._decode(None)
    rec.block_classes = classes[:-1]
    with pytest.raises(ArchiveError, match="classes for"):
        RowReader(rec).all()


def test_cheapest_class_merge_is_the_best_halving():
    """Of C, C/2, ... classes (neighbours 2i and 2i + 1 merged), the one with the fewest bits: the
    counts' information plus a level byte per (class, symbol some class uses)."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        classes = int(rng.choice([1, 2, 3, 4, 8]))
        counts = rng.integers(0, 40, size=(classes, 3, 12)) * (rng.random((classes, 3, 12)) < 0.7)
        counts *= rng.integers(1, 30, size=(classes, 1, 1))  # classes of different sizes
        used = int((counts > 0).any(axis=0).sum())
        options, c = [counts], counts
        while len(c) % 2 == 0:
            c = c.reshape(len(c) // 2, 2, *c.shape[1:]).sum(axis=1)
            options.append(c)
        bits = [coding.information_bits(o) + 8 * len(o) * used for o in options]
        merged = coding.cheapest_class_merge(counts)
        assert len(merged) == len(options[int(np.argmin(bits))]) and merged.sum() == counts.sum()
        # a subsample's counts, each standing for 32 symbols, decide as the whole tensor's would (rate
        # control estimates with them: deciding on the unscaled counts made its rate curve jump)
        assert len(coding.cheapest_class_merge(counts, scale=32.0)) == len(coding.cheapest_class_merge(32 * counts))


def test_classes_are_kept_only_where_the_rows_differ_along_the_tensor(tmp_path):
    """Rows whose uncertainty grows along the tensor (word vectors in frequency order) keep their
    position classes; the same rows shuffled code as one class, smaller than with the classes'
    tables; rate control counts the classes the coder keeps, so --bits still lands on its target."""
    rng = np.random.default_rng(0)
    rows, d = 40_000, 16  # 10 coding blocks of 4,096 rows: 2 position classes
    loc = rng.normal(size=(rows, d)) @ rng.normal(size=(d, d)) / 4
    scale = np.repeat(np.linspace(0.05, 1.5, rows)[:, None], d, axis=1)
    shuffle = rng.permutation(rows)
    for post, kept in (({"w": (loc, scale)}, 2), ({"w": (loc[shuffle], scale[shuffle])}, 1)):
        r = bnncompress.pack(post, tmp_path / "c.bnc", bits=1.0, options={"transform": "pca"})
        rec = bnncompress.load(tmp_path / "c.bnc").record("w")
        assert rec.kind.name == ("class-valued" if kept > 1 else "classed")  # one class: no class values
        assert (rec.class_values or rec.classes) == kept
        assert r.payload_bits_per_weight == pytest.approx(1.0, rel=0.02)
