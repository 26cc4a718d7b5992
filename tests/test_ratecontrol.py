import numpy as np
import pytest

import bnncompress
from bnncompress import RateControlError


@pytest.mark.parametrize("bits", [0.5, 1.0, 2.0, 3.5])
def test_bits_lands_within_two_percent(tmp_path, synthetic, bits):
    loc, scale = synthetic
    r = bnncompress.pack({"a": (loc, scale), "b": (loc[:500] * 2, scale[:500])}, tmp_path / "r.bnc", bits=bits)
    a = bnncompress.load(tmp_path / "r.bnc")
    achieved = 8 * a.payload_bytes / a.num_weights
    assert achieved == pytest.approx(bits, rel=0.02)
    assert r.payload_bits_per_weight == pytest.approx(achieved) and not r.target_missed


def test_unreachable_targets(tmp_path, synthetic):
    loc, scale = synthetic
    with pytest.raises(RateControlError, match="fewer bits"):
        bnncompress.pack({"a": (loc, scale)}, tmp_path / "r.bnc", bits=40)  # raw float32 is the most
    with pytest.raises(RateControlError, match="positive"):
        bnncompress.pack({"a": (loc, scale)}, tmp_path / "r.bnc", bits=-1)
    assert not (tmp_path / "r.bnc").exists()


def test_small_posteriors_land_within_two_percent(tmp_path):
    rng = np.random.default_rng(0)
    post = {"w": (rng.normal(size=2000), rng.uniform(0.01, 1, 2000)), "b": (rng.normal(size=20), np.full(20, 0.1))}
    for bits in (1.0, 2.0, 3.0):
        r = bnncompress.pack(post, tmp_path / "s.bnc", bits=bits)
        assert r.payload_bits_per_weight == pytest.approx(bits, rel=0.02), bits
