"""Every quantization method: archive round trip, rate control, and its defining behaviour."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import bnncompress
from bnncompress.cli import app
from bnncompress.inmemory import fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.quantizers import METHODS, get_quantizer
from bnncompress.quantizers.kmeans import weighted_lloyd

runner = CliRunner()
RATE_METHODS = [m for m in METHODS if not METHODS[m].fixed_rate]


@pytest.fixture(scope="module")
def posterior():
    """Skip-gram-like: 3000 rows x 20, frequent rows sharp, rare rows wide; plus a bias vector."""
    rng = np.random.default_rng(1)
    row_scale = np.exp(np.linspace(np.log(0.03), np.log(1.0), 3000))[:, None]
    scale = (row_scale * np.exp(0.2 * rng.normal(size=(3000, 20)))).astype(np.float32)
    loc = (rng.normal(size=(3000, 20)) * np.maximum(1 - row_scale, 0.05)).astype(np.float32)
    return {"word_vectors": (loc, scale), "bias": (rng.normal(size=50), np.full(50, 0.1))}


@pytest.mark.parametrize("method", list(METHODS))
def test_round_trip_equals_the_quantizer_output(tmp_path, posterior, method):
    if method == "pq":
        pytest.importorskip("faiss")  # (the test extra installs it; a bare install has no pq)
    result = bnncompress.pack(posterior, tmp_path / "a.bnc", method=method)
    a = bnncompress.load(tmp_path / "a.bnc")
    quantizer = get_quantizer(method, device="cpu")
    for name, (loc, scale) in posterior.items():
        fitted = fit_in_memory(quantizer, TensorPosterior(np.asarray(loc, np.float32), np.asarray(scale, np.float32)))
        expected = fitted.quantize(result.lam).values().reshape(np.shape(loc))
        if a.record(name).raw:  # smaller as its float32 values than as its code: stored exactly
            expected = np.asarray(loc, np.float32)
        np.testing.assert_array_equal(a[name], expected.astype(a[name].dtype))
        assert a.tensor_info()[a.names.index(name)].method == method
    assert result.payload_bits_per_weight < 32


@pytest.mark.parametrize("method", RATE_METHODS)
@pytest.mark.parametrize("bits", [1.0, 2.5])
def test_rate_control_lands_on_the_target(tmp_path, posterior, method, bits):
    result = bnncompress.pack(posterior, tmp_path / "a.bnc", method=method, bits=bits)
    info = bnncompress.load(tmp_path / "a.bnc").info()["total"]
    assert info["payload_bits_per_weight"] == pytest.approx(result.payload_bits_per_weight)
    # k-means and pq have discrete rates (whole clusters, whole configurations): nearest one
    tolerance = {"kmeans": 0.15, "weighted-kmeans": 0.15, "pq": 0.35}.get(method, 0.02)
    assert abs(result.payload_bits_per_weight - bits) <= tolerance * bits


def test_more_bits_less_error_for_every_method(posterior):
    loc, scale = (np.asarray(x, np.float32) for x in posterior["word_vectors"])
    t = TensorPosterior(loc, scale)
    for method in RATE_METHODS:
        errors = []
        for bits in (1.0, 3.0):
            tmp = bnncompress.pack({"w": (loc, scale)}, _tmp_file(), method=method, bits=bits)
            values = bnncompress.load(tmp.path)["w"]
            errors.append(float(np.mean((values - t.loc) ** 2)))
        assert errors[1] < errors[0], method


def _tmp_file():
    import tempfile

    return tempfile.mkdtemp() + "/a.bnc"


def test_uniform_ignores_scales_and_vbq_does_not():
    rng = np.random.default_rng(0)
    loc = rng.normal(size=5000).astype(np.float32)
    sharp, wide = np.full(5000, 0.01, np.float32), np.full(5000, 0.9, np.float32)
    u = get_quantizer("uniform")
    assert np.array_equal(
        fit_in_memory(u, TensorPosterior(loc, sharp)).assign(0.3),
        fit_in_memory(u, TensorPosterior(loc, wide)).assign(0.3),
    )
    v = get_quantizer("vbq", device="cpu")
    assert not np.array_equal(
        fit_in_memory(v, TensorPosterior(loc, sharp)).assign(0.3),
        fit_in_memory(v, TensorPosterior(loc, wide)).assign(0.3),
    )


def test_uniform_step_is_lambda_times_rms():
    loc = np.array([-1.0, 0.0, 1.0, 0.3], np.float32)
    q = fit_in_memory(get_quantizer("uniform"), TensorPosterior(loc, np.ones(4, np.float32))).quantize(0.25)
    rms = float(np.sqrt(np.mean(loc.astype(np.float64) ** 2)))
    steps = q.grid / (0.25 * rms)
    assert np.allclose(steps, np.round(steps), atol=1e-5) and 0.0 in q.grid


def test_weighted_lloyd_pulls_centroids_towards_important_points():
    x = np.array([0.0, 1.0, 10.0, 11.0])
    assert weighted_lloyd(x, np.ones(4), 2).tolist() == [0.5, 10.5]
    assert weighted_lloyd(x, np.array([9.0, 1.0, 1.0, 1.0]), 2)[0] == pytest.approx(0.1)


def test_weighted_kmeans_prunes_the_least_important_weights():
    rng = np.random.default_rng(0)
    loc = rng.normal(size=4000).astype(np.float32)
    scale = rng.uniform(0.05, 1.0, size=4000).astype(np.float32)
    fitted = fit_in_memory(get_quantizer("weighted-kmeans", prune=0.3), TensorPosterior(loc, scale))
    values = fitted.quantize(1.0).values()
    saliency = loc.astype(np.float64) ** 2 / scale.astype(np.float64) ** 2
    pruned = np.argsort(saliency, kind="stable")[:1200]
    assert np.all(values[pruned] == 0.0)
    assert np.count_nonzero(values == 0.0) >= 1200


def test_vbq_empirical_iterations_spend_fewer_bits_than_vbq_at_the_same_lambda(posterior):
    loc, scale = (np.asarray(x, np.float32) for x in posterior["word_vectors"])
    t = TensorPosterior(loc, scale)
    vbq = fit_in_memory(get_quantizer("vbq", device="cpu"), t).quantize(0.5)
    emp = fit_in_memory(get_quantizer("vbq-empirical", device="cpu"), t).quantize(0.5)
    from bnncompress.coding import information_bits

    assert information_bits(emp.counts) < information_bits(vbq.counts)
    assert set(emp.grid.tolist()) <= set(
        fit_in_memory(get_quantizer("vbq", device="cpu"), t).fitted.candidates.tolist()
    )  # no centroid moves


def test_vbq_direction_keeps_uncertain_rows_that_vbq_collapses(posterior):
    loc, scale = (np.asarray(x, np.float32) for x in posterior["word_vectors"])
    t = TensorPosterior(loc, scale)

    def zero_rows(method):
        lam = bnncompress.pack({"w": (loc, scale)}, _tmp_file(), method=method, bits=1.0).lam
        values = fit_in_memory(get_quantizer(method, device="cpu"), t).quantize(lam).values().reshape(loc.shape)
        return int(np.sum(np.ptp(values, axis=1) == 0))  # every weight at one value (the prior median)

    assert zero_rows("vbq") > 100
    assert zero_rows("vbq-direction") < 0.85 * zero_rows("vbq")  # real skip-gram at 0.75 bits: 1760 vs 2677


def test_pq_stores_codebooks_and_counts_them(tmp_path, posterior):
    result = bnncompress.pack(posterior, tmp_path / "pq.bnc", method="pq", bits=1.0)
    a = bnncompress.load(tmp_path / "pq.bnc")
    rec = a.record("word_vectors")
    assert rec.subvectors in (1, 2, 4, 5, 10, 20) and rec.num_symbols == 3000 * rec.subvectors
    assert rec.table_bytes >= len(rec.counts) * 20 * 4  # every code's sub-vectors, all codebooks
    assert a.record("bias").subvectors == 0 and a.record("bias").params["fallback"] == "kmeans"
    assert a.info()["format_version"] == 2
    rows = a.rows("word_vectors", [5, 2999, 0])
    np.testing.assert_array_equal(rows, a["word_vectors"][[5, 2999, 0]])
    assert result.payload_bytes == sum(r.payload_bytes for r in (rec, a.record("bias")))


_SPIN_REPORT = """
import os
from bnncompress.quantizers.registry import check_requirements
check_requirements("pq")
import faiss  # (loaded above: its OpenMP runtime printed its settings then)
print("left:", os.environ.get("GOMP_SPINCOUNT"))
"""


@pytest.mark.parametrize(
    "users, spincount",
    [({}, "1000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "30000000000"), ({"GOMP_SPINCOUNT": "300000"}, "300000")],
)
def test_faiss_threads_spin_briefly_unless_the_user_chose(users, spincount):
    """faiss's own libgomp spun its idle threads 300,000 times: --method pq ran 4-5x slower beside any other busy
    process. libgomp reads GOMP_SPINCOUNT once, when loaded; the variable is ours only for that import."""
    pytest.importorskip("faiss")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env |= users | {"OMP_DISPLAY_ENV": "VERBOSE"}
    run = subprocess.run([sys.executable, "-c", _SPIN_REPORT], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"GOMP_SPINCOUNT = '{spincount}'" in run.stderr
    assert f"left: {users.get('GOMP_SPINCOUNT')}" in run.stdout


def test_scalar_archives_stay_format_version_1(tmp_path, posterior):
    for method in ("vbq-direction", "vbq", "uniform"):  # one model per tensor, nothing stored raw
        bnncompress.pack(posterior, tmp_path / "a.bnc", bits=2.0, method=method)
        assert bnncompress.load(tmp_path / "a.bnc").info()["format_version"] == 1
    bnncompress.pack(posterior, tmp_path / "t.bnc", bits=2.0)  # the default: classed transform coding, and
    a = bnncompress.load(tmp_path / "t.bnc")  # the small tensor levelled
    kinds = {a.record(n).kind.name for n in a.names}
    assert a.info()["format_version"] == 7 and kinds == {"classed", "levelled"}
    old = {"small_levels": False}
    bnncompress.pack(posterior, tmp_path / "t4.bnc", bits=2.0, options=old)  # (one block: one class, version 4)
    assert bnncompress.load(tmp_path / "t4.bnc").info()["format_version"] == 4
    bnncompress.pack(posterior, tmp_path / "t3.bnc", bits=2.0, options={**old, "classes": 0})  # per-column, version 3
    assert bnncompress.load(tmp_path / "t3.bnc").info()["format_version"] == 3


def test_float16_is_an_exact_cast_and_refuses_a_rate(tmp_path, posterior):
    bnncompress.pack(posterior, tmp_path / "h.bnc", method="float16")
    loc = posterior["word_vectors"][0]
    np.testing.assert_array_equal(
        bnncompress.load(tmp_path / "h.bnc")["word_vectors"], loc.astype(np.float16).astype(np.float32)
    )
    with pytest.raises(bnncompress.OptionError, match="fixed rate"):
        bnncompress.pack(posterior, tmp_path / "h2.bnc", method="float16", bits=2.0)


def test_cli_method_and_options(tmp_path, posterior):
    np.savez(tmp_path / "p.npz", **{"w.loc": posterior["word_vectors"][0], "w.scale": posterior["word_vectors"][1]})
    ok = runner.invoke(
        app,
        [
            "pack",
            str(tmp_path / "p.npz"),
            "--method",
            "weighted-kmeans",
            "--option",
            "prune=0.2",
            "--bits",
            "1.5",
            "-o",
            str(tmp_path / "w.bnc"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert bnncompress.load(tmp_path / "w.bnc").record("w").params["prune"] == 0.2
    for bad, message in (
        (["--option", "nonsense"], "KEY=VALUE"),
        (["--option", "bogus=1"], "does not take option 'bogus'"),
        (["--method", "float16", "--bits", "2"], "fixed rate"),
    ):
        args = ["pack", str(tmp_path / "p.npz"), "-o", str(tmp_path / "x.bnc"), *bad]
        if "--method" not in bad:
            args += ["--method", "weighted-kmeans"]
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_vbq_direction_cap_limits_the_effective_scales(posterior):
    loc, scale = (np.asarray(x, np.float32) for x in posterior["word_vectors"])
    t = TensorPosterior(loc, scale)
    capped = fit_in_memory(get_quantizer("vbq-direction", device="cpu", trust=1.0, row_weight=0.0, cap=0.1), t)
    s = capped.fitted.prior.std
    effective = capped.fitted.search_scale(capped.rows.blocks()[0])
    assert effective.max() <= 0.1 * s * (1 + 1e-6)
    first = scale.reshape(-1)[: len(effective)]
    assert np.array_equal(effective, np.minimum(first, np.float32(0.1 * s)))
    with pytest.raises(bnncompress.OptionError, match="cap must be"):
        get_quantizer("vbq-direction", cap=-1)
    huge = fit_in_memory(get_quantizer("vbq-direction", device="cpu", trust=1.0, row_weight=0.0, cap=1e200), t)
    assert np.array_equal(huge.fitted.search_scale(huge.rows.blocks()[0]), first)  # caps nothing (no OverflowError)
