"""Small models: no tensor is stored larger than its float32 values, and what is lost is said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import bnncompress
from bnncompress import QualityWarning


@pytest.fixture(scope="module")
def mlp():
    """A 81-weight MLP's posterior (8 -> 8 -> 1), as a Bayesian MLP with AutoNormal would give."""
    rng = np.random.default_rng(0)
    shapes = {"fc1.weight": (8, 8), "fc1.bias": (8,), "fc2.weight": (1, 8), "fc2.bias": (1,)}
    return {n: (rng.normal(size=s), rng.uniform(0.01, 0.2, size=s)) for n, s in shapes.items()}


@pytest.mark.parametrize("method", ["vbq-direction", "vbq-transform", "vbq", "uniform"])
@pytest.mark.parametrize("rate", [{"bits": 2.0}, {"bits": 8.0}, {"lam": 1e-6}])
def test_no_tensor_costs_more_than_float32(tmp_path, mlp, method, rate):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnncompress.pack(mlp, tmp_path / "m.bnc", method=method, **rate)
    a = bnncompress.load(tmp_path / "m.bnc")
    for info in a.tensor_info():
        assert info.payload_bytes <= 4 * info.num_weights, (info.name, info.payload_bytes)
        record = a.record(info.name)
        if record.raw:
            np.testing.assert_array_equal(a[info.name], mlp[info.name][0].astype(np.float32).astype(np.float64))
    flat = [n for n in a.names if np.unique(a[n]).size == 1 and np.unique(mlp[n][0]).size > 1]
    messages = [str(w.message) for w in caught if issubclass(w.category, QualityWarning)]
    for name in flat:  # every collapsed tensor is named in a warning
        assert any(f"'{name}': all" in m for m in messages), (name, messages)


def test_a_single_weight_is_kept_exactly(tmp_path):
    r = bnncompress.pack({"b": (np.array([0.123456789]), np.array([1e-3]))}, tmp_path / "b.bnc", lam=1.0)
    a = bnncompress.load(r.path)
    assert a.record("b").raw and a["b"][0] == np.float64(np.float32(0.123456789))
    assert a.info()["format_version"] == 3
