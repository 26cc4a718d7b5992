"""recipes/bnn_regression.py runs end to end (tiny settings) and reports finite numbers for every row."""

import csv
import math

import pytest

from .conftest import load_recipe


def _recipe():
    return load_recipe("bnn_regression")


@pytest.mark.slow  # a recipe run end to end
def test_bnn_regression_recipe_writes_tables(tmp_path):
    recipe = _recipe()
    methods = [recipe.DEFAULT_METHOD, "uniform", "vbq"]
    argv = [
        "--quick",
        "--steps",
        "30",
        "--train",
        "200",
        "--test",
        "100",
        "--hidden",
        "16",
        "--small-hidden",
        "32",
        "--small-steps",
        "100",
    ]
    result = recipe.main([*argv, "--bits", "2,4", "--per-tensor-bits", "2", "--out", str(tmp_path)])

    rows = result["rows"]
    assert [(r["method"], r["target_bits"]) for r in rows] == [(m, b) for m in methods for b in (2.0, 4.0)]
    for r in rows:
        for key in ("payload_bits", "file_bits", "rmse_vs_posterior_mean", "test_rmse", "sigma_used", "sigma_median"):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r)
        assert r["file_bits"] > r["payload_bits"]
        # sigma is a positive site: whatever space the archive returns it in, the value used is positive
        assert r["sigma_used"] > 0 and r["sigma_space"] in ("unconstrained", "constrained")
        assert abs(r["sigma_used"] - r["sigma_median"]) <= 0.1 * r["sigma_median"]
    # equal-rate table: one row per method; the first method's own file rates are within every range it has
    assert [e[0] for e in result["equal"]] == methods
    for method, *values in result["equal"]:  # NaN where a rate is outside a method's measured rates
        assert all(math.isnan(v) or (math.isfinite(v) and v >= 0) for v in values)
        assert any(math.isfinite(v) for v in values), method
    # the 1-32-1 network: a row per method, distinct values between 1 and the layer's 32 weights
    assert [s[0] for s in result["small"]] == methods
    for _, payload, file_bits, distinct, max_z, err in result["small"]:
        assert 1 <= distinct <= 32 and all(math.isfinite(v) for v in (payload, file_bits, max_z, err))
    assert {t["method"] for t in result["tensors"]} == set(methods)

    table = (tmp_path / "results.md").read_text()
    for m in methods:
        assert f"| {m} | 2 |" in table and f"| {m} | 4 |" in table
    assert "| file 2 | file 4 |" in table and "n/a" in table  # 2 file bits/w: far below what the container costs here
    with open(tmp_path / "results.csv") as f:
        kinds = {r["table"] for r in csv.DictReader(f)}
    assert kinds == {"targets", "equal_file_rate", "equal_payload_rate", "small_net_4bits"}
