"""The numba block coder is constriction, bit for bit: same model, same words, same symbols."""

import numpy as np
import pytest

from bnncompress import _ans, coding


def _constriction_cdf(counts):
    """Read constriction's fixed-point CDF back: one symbol k on an empty coder leaves state = cdf[k]."""
    import constriction

    model = coding._model(counts)
    left = []
    for k in range(len(counts)):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.array([k], np.int32), model)
        words = coder.get_compressed()
        left.append(int(words[0]) if len(words) else 0)
    return np.array(left + [1 << 24], dtype=np.uint64)


def _count_tables(rng):
    yield np.array([1, 1])
    yield np.array([10**12, 1, 1])
    for k in (2, 3, 17, 300, 2047):
        yield rng.integers(1, 1000, k)
        yield np.maximum(1, (rng.pareto(0.5, k) * 10).astype(np.int64))
        yield rng.integers(1, 2**40, k)


def test_quantized_cdf_is_constrictions():
    rng = np.random.default_rng(0)
    for counts in _count_tables(rng):
        np.testing.assert_array_equal(_ans.quantized_cdf(counts), _constriction_cdf(counts))


def _reference(monkeypatch):
    monkeypatch.setenv("BNNCOMPRESS_CODER", "constriction")


def test_blocks_encode_to_constrictions_words_and_decode_back(monkeypatch):
    rng = np.random.default_rng(1)
    for i, counts in enumerate(_count_tables(rng)):
        n = int(rng.integers(1, 20000))
        symbols = rng.choice(len(counts), size=n, p=counts / counts.sum()).astype(np.int32)
        block = int(rng.integers(1, 5000))
        words, offsets = _ans.encode_blocks(symbols, counts, block)
        with monkeypatch.context() as m:
            _reference(m)
            ref_words, ref_offsets = coding.encode_blocks(symbols, counts, block)
            ref_symbols = np.concatenate(  # blocks in reverse order: any order is allowed
                [
                    coding.decode(words[int(offsets[b]) : int(offsets[b + 1])], counts, min(block, n - b * block))
                    for b in range(len(offsets) - 1)
                ][::-1]
            )
        np.testing.assert_array_equal(words, ref_words, err_msg=f"case {i}")
        np.testing.assert_array_equal(offsets, ref_offsets)
        decoded, histogram = _ans.decode_blocks(words, offsets, counts, n, block, np.arange(len(offsets) - 1)[::-1])
        np.testing.assert_array_equal(decoded, ref_symbols)
        np.testing.assert_array_equal(histogram, np.bincount(symbols, minlength=len(counts)))
        order = np.concatenate([symbols[b * block : (b + 1) * block] for b in range(len(offsets) - 1)][::-1])
        np.testing.assert_array_equal(decoded, order)


def test_kernels_and_constriction_decode_archives_alike(monkeypatch):
    counts = np.array([5000, 3000, 2000])
    rng = np.random.default_rng(2)
    symbols = rng.choice(3, size=10000, p=counts / 10000).astype(np.int32)
    counts = np.bincount(symbols, minlength=3)
    words, offsets = coding.encode_blocks(symbols, counts, 1000)
    for coder in ("numba", "constriction"):
        monkeypatch.setenv("BNNCOMPRESS_CODER", coder)
        np.testing.assert_array_equal(coding.decode_blocks(words, offsets, counts, 10000, 1000), symbols)
        np.testing.assert_array_equal(
            coding.decode_blocks(words, offsets, counts, 10000, 1000, [3]), symbols[3000:4000]
        )


@pytest.mark.parametrize("use_kernels", [True, False])
def test_malformed_words_raise_value_error(monkeypatch, use_kernels):
    if not use_kernels:
        _reference(monkeypatch)
    counts = np.array([7, 1, 2])
    symbols = np.array([0, 0, 2, 0, 1, 0, 2, 0, 0, 0], dtype=np.int32)
    words, offsets = coding.encode_blocks(symbols, counts, 10)
    with pytest.raises(ValueError, match="left over"):  # one word too many
        coding.decode_blocks(np.r_[np.uint32(5), words], np.array([0, len(words) + 1], np.uint64), counts, 10, 10)
    with pytest.raises(ValueError):  # a stream may not end in a zero word
        coding.decode_blocks(np.r_[words, np.uint32(0)], np.array([0, len(words) + 1], np.uint64), counts, 10, 10)


def test_per_column_models_are_constrictions_model_family(monkeypatch):
    """(M, K) counts: symbol i of a block uses row i mod M, as constriction's Categorical family
    with one probability row per symbol (zero counts pad columns to a common alphabet)."""
    rng = np.random.default_rng(7)
    for models, k, rows in ((1, 5, 300), (3, 4, 200), (16, 9, 517), (7, 2, 1000)):
        counts = np.zeros((models, k), dtype=np.int64)
        symbols = np.empty(rows * models, dtype=np.int32)
        for m in range(models):
            used = rng.integers(1, k + 1)
            p = rng.dirichlet(np.ones(used))
            column = rng.choice(used, size=rows, p=p)
            symbols[m::models] = column
            counts[m] = np.bincount(column, minlength=k)
        block = models * int(rng.integers(1, 60))
        words, offsets = _ans.encode_blocks(symbols, counts, block)
        with monkeypatch.context() as m:
            _reference(m)
            ref_words, ref_offsets = coding.encode_blocks(symbols, counts, block)
            ref = coding.decode_blocks(ref_words, ref_offsets, counts, len(symbols), block)
        np.testing.assert_array_equal(words, ref_words)
        np.testing.assert_array_equal(offsets, ref_offsets)
        np.testing.assert_array_equal(ref, symbols)
        decoded, histogram = _ans.decode_blocks(
            words, offsets, counts, len(symbols), block, np.arange(len(offsets) - 1)
        )
        np.testing.assert_array_equal(decoded, symbols)
        np.testing.assert_array_equal(histogram, counts)
        assert coding.information_bits(counts) <= 32 * len(words) + 64 * (len(offsets) - 1)


def test_small_kernel_calls_run_their_serial_twin_and_large_ones_may_run_in_parallel(tmp_path, monkeypatch):
    """Below PARALLEL_WORK a kernel runs as its serial twin (the same results): no numba thread to wait for, which
    beside a busy process cost single-row lookups and small tensors' packs 10-20x. A row lookup and a small
    tensor's pack start no parallel region; a large encode still may."""
    import bnncompress

    assert _ans._parallel(_ans.encode_blocks_into, _ans._encode_blocks_serial, 1000) is _ans._encode_blocks_serial
    regions = []
    one_region = _ans.one_region_at_a_time
    record = lambda p, s, *a: regions.append(p.__name__) or one_region(p, s, *a)  # noqa: E731
    monkeypatch.setattr(_ans, "one_region_at_a_time", record)
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(300, 16)).astype(np.float32)
    for method in ("vbq", "vbq-direction", "vbq-empirical"):
        bnncompress.pack({"w": (loc, np.full_like(loc, 0.1))}, tmp_path / f"{method}.bnc", method=method, bits=3.0)
    bnncompress.load(tmp_path / "vbq.bnc").rows("w", [7])
    from bnncompress.quantizers import transform

    monkeypatch.setattr(transform, "_MIN_ROWS_PER_COLUMN", 1)  # (per-column models for 2,048 rows of 256)
    wide = rng.normal(size=(2048, 256)).astype(np.float32)
    bnncompress.pack({"w": (wide, np.full_like(wide, 0.3))}, tmp_path / "t.bnc", lam=0.5, options={"transform": "pca"})
    a, regions[:] = bnncompress.load(tmp_path / "t.bnc"), []  # (the pack's own large kernels may run in parallel)
    assert a.record("w").params["rotated"]
    for row in (5, 1500, 2047, 5):  # prefixes, then (row kernels loaded) single rows from checkpoints
        a.rows("w", [row])
    assert regions == []
    if _ans.numba_threads() > 1:  # (a machine of one core runs every kernel serially)
        symbols = rng.integers(0, 3, 1 << 18).astype(np.int32)
        counts = np.bincount(symbols, minlength=3)
        words, offsets = _ans.encode_blocks(symbols, counts, 1 << 15)
        assert regions == ["encode_blocks_into"]
        decoded = coding.decode_blocks(words, offsets, counts, len(symbols), 1 << 15)
        np.testing.assert_array_equal(decoded, symbols)
