import numpy as np
import pytest
import torch

from bnncompress.inmemory import fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.quantizers import VBQ, get_quantizer
from bnncompress.quantizers.vbq import assign_torch
from bnncompress.ratecontrol import estimate_payload_bits


def levels(indices: np.ndarray, max_level: int) -> np.ndarray:
    """Bit length r of grid index m - 1 (level r holds the odd multiples of 2^(R - r))."""
    m = indices.astype(np.int64) + 1
    trailing = np.zeros_like(m)
    while np.any(m % 2 == 0):
        even = m % 2 == 0
        trailing += even
        m = np.where(even, m // 2, m)
    return max_level - trailing


def fit(loc, scale, **kw):
    return fit_in_memory(
        VBQ(device="cpu", **kw), TensorPosterior(np.asarray(loc, np.float32), np.asarray(scale, np.float32))
    )


def test_small_lambda_stays_within_a_small_multiple_of_scale(synthetic):
    loc, scale = synthetic
    f = fit(loc, scale)
    err = np.abs(f.quantize(1e-10).values() - f.loc)
    # lam -> 0 picks the nearest grid point; the grid's local spacing is the only limit
    p = np.clip(np.searchsorted(f.fitted.candidates, f.loc), 1, len(f.fitted.candidates) - 1)
    nearest = np.minimum(np.abs(f.fitted.candidates[p] - f.loc), np.abs(f.fitted.candidates[p - 1] - f.loc))
    assert np.all(err <= nearest + 1e-6)
    inside = (f.loc > f.fitted.candidates[0]) & (f.loc < f.fitted.candidates[-1])
    fine = inside & (f.fitted.candidates[p] - f.fitted.candidates[p - 1] <= f.scale)
    assert fine.mean() > 0.9 and np.all(err[fine] <= 0.5 * f.scale[fine])
    assert np.median(err / f.scale) < 0.05


def test_payload_falls_monotonically_with_lambda(synthetic):
    loc, scale = synthetic
    f = fit(loc, scale)
    bits = [estimate_payload_bits([f], lam) for lam in np.geomspace(1e-4, 100, 25)]
    assert all(b1 >= b2 for b1, b2 in zip(bits, bits[1:]))
    assert bits[0] > 6 and bits[-1] < bits[0] / 5


def test_larger_scale_never_gets_a_finer_point():
    rng = np.random.default_rng(3)
    loc = np.repeat(rng.normal(size=500), 40)
    scale = np.tile(np.geomspace(1e-3, 3.0, 40), 500)
    for lam in (0.01, 0.1, 1.0):
        lv = levels(fit(loc, scale).assign(lam), 10).reshape(500, 40)
        assert np.all(np.diff(lv, axis=1) <= 0), lam


def test_full_uncertainty_goes_to_the_prior_median_for_free():
    loc = np.random.default_rng(0).normal(size=1000)
    f = fit(loc, np.full(1000, 10.0))
    q = f.quantize(0.05)
    assert len(q.grid) == 1 and q.grid[0] == pytest.approx(loc.mean(), abs=1e-6)


def test_objective_is_minimised_over_all_candidates():
    """The two-neighbour search with early exit finds the true argmin over the whole grid."""
    rng = np.random.default_rng(7)
    loc, scale = rng.normal(size=300), np.exp(rng.normal(-1.5, 1.0, size=300))
    f = fit(loc, scale, max_level=6)
    first = f.fitted.candidates_and_first()[1]
    lvl = np.full(len(f.fitted.candidates), 14)  # tail points (beyond the prior's grid) cost 2 (max_level + 1)
    lvl[first : first + 127] = levels(np.arange(127), 6)
    for lam in (0.003, 0.05, 0.7):
        got = f.assign(lam)
        cost = (f.fitted.candidates[None, :].astype(np.float64) - loc.astype(np.float32)[:, None]) ** 2 / (
            2 * scale.astype(np.float32)[:, None].astype(np.float64) ** 2
        ) + lam * lvl[None, :]
        best = cost.min(axis=1)
        np.testing.assert_allclose(cost[np.arange(300), got], best, rtol=1e-12, atol=0)


def test_torch_path_matches_cpu_kernel(synthetic):
    """The GPU code path (torch ops) computes the same indices as the numba kernel; run here on the CPU."""
    loc, scale = synthetic
    f = fit(loc, scale)
    for lam in (1e-4, 0.02, 0.3, 5.0):
        ref = f.assign(lam)
        grid, first = f.fitted.candidates_and_first()
        got = assign_torch(torch.from_numpy(f.loc), torch.from_numpy(f.scale), torch.from_numpy(grid), 10, lam, first)
        np.testing.assert_array_equal(got.numpy(), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu(synthetic):
    loc, scale = synthetic
    t = TensorPosterior(loc, scale)
    for lam in (0.01, 0.3):
        np.testing.assert_array_equal(
            fit_in_memory(VBQ(device="cuda"), t).assign(lam), fit_in_memory(VBQ(device="cpu"), t).assign(lam)
        )


def test_unknown_method_is_an_option_error():
    from bnncompress import OptionError

    with pytest.raises(OptionError, match="unknown method"):
        get_quantizer("nope")
