import numpy as np

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
