import numpy as np
import pytest

from bnncompress import coding


def test_round_trip_is_exact_and_near_the_information_content():
    rng = np.random.default_rng(0)
    p = np.exp(-np.arange(40) / 5.0)
    symbols = rng.choice(40, size=100_000, p=p / p.sum()).astype(np.int32)
    counts = np.bincount(symbols, minlength=40)
    used = counts > 0
    remap = np.cumsum(used) - 1
    symbols, counts = remap[symbols].astype(np.int32), counts[used]
    words = coding.encode(symbols, counts)
    np.testing.assert_array_equal(coding.decode(words, counts, len(symbols)), symbols)
    info = coding.information_bits(counts)
    assert info <= 32 * len(words) <= info * 1.002 + 64


def test_single_symbol_alphabet_needs_no_words():
    words = coding.encode(np.zeros(1000, np.int32), np.array([1000]))
    assert len(words) == 0
    assert coding.decode(words, np.array([1000]), 1000).tolist() == [0] * 1000


def test_information_bits_sums_each_models_empirical_information():
    """sum over models of sum_k c_k log2(N / c_k), for one model, (M, K) and (classes, M, K) tables:
    models that use one symbol (or none) cost nothing, and unused symbols add nothing."""
    rng = np.random.default_rng(3)
    for shape in ((30,), (7, 25), (3, 5, 40)):
        counts = rng.integers(0, 500, size=shape) * (rng.random(shape) < 0.6)
        flat = counts.reshape(-1, shape[-1])
        flat[0] = 0  # a model that saw nothing
        flat[-1] = 0
        flat[-1, 2] = 77  # and one that saw one symbol
        expected = 0.0
        for c in flat.astype(np.float64):
            c = c[c > 0]
            expected += float(np.sum(c * np.log2(c.sum() / c))) if len(c) else 0.0
        assert coding.information_bits(counts) == pytest.approx(expected, rel=1e-12)
    assert coding.information_bits(np.array([0, 5, 0])) == 0.0
    assert coding.information_bits(np.array([1, 1])) == 2.0
