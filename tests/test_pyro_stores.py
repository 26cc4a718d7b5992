"""Pyro param stores and models as users leave them: several guides in one store, discrete sites,
stores without supports, models that fail to import, guides that cannot be packed (issue 18).
The stores are built by hand (what pyro.get_param_store().save writes): no training needed."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoIAFNormal, AutoLaplaceApproximation
from typer.testing import CliRunner

import bnncompress
from bnncompress import ArchiveError, PosteriorError
from bnncompress.cli import app
from bnncompress.errors import QualityWarning
from bnncompress.models.ptfile import save_param_store
from bnncompress.supports import constrain

A_LOC, SIGMA_LOC = [0.5, -0.25, 1.0], 0.3  # AutoNormal's values (sigma: unconstrained, its log)
LEFTOVER = [9.0, 9.0, 9.0, 9.0]  # a flat AutoDiagonalNormal over the same sites, left in the store


def model():
    a = pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    pyro.sample("obs", dist.Normal(a.sum(), sigma), obs=torch.tensor(1.0))


def _store(path, params: dict, scales: float = 0.01):
    """A param store file: ``{key: loc}`` plus each key's scale parameter, as Pyro saves one."""
    state = {"params": {}, "constraints": {}}
    for key, loc in params.items():
        loc = torch.as_tensor(loc, dtype=torch.float32)
        scale_key = key.replace(".locs.", ".scales.") if ".locs." in key else key[: -len("loc")] + "scale"
        state["params"][key], state["constraints"][key] = loc, constraints.real
        state["params"][scale_key] = torch.full_like(loc, scales)
        state["constraints"][scale_key] = constraints.softplus_positive
    torch.save(state, path)
    return path


def _quiet_pack(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bnncompress.pack(*args, method="float16", **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, QualityWarning)]


def test_two_guides_of_the_same_sites_in_one_store_are_refused(tmp_path):
    # AutoNormal tried, then AutoDiagonalNormal trained without clearing the param store (or the other way
    # round): both hold every site, and which one was trained cannot be told. The per-site one was taken,
    # silently: a guide of 5 steps replaced the one of 300.
    store = _store(
        tmp_path / "two.pt",
        {"AutoNormal.locs.a": A_LOC, "AutoNormal.locs.sigma": SIGMA_LOC, "AutoDiagonalNormal.loc": LEFTOVER},
    )
    with pytest.raises(PosteriorError, match="two guides of the same sites.*clear the store"):
        _quiet_pack(store, tmp_path / "m.bnc", model=model)
    assert not (tmp_path / "m.bnc").exists()


def test_an_auto_guide_lists_flat_part_holds_only_the_sites_its_other_parts_do_not(tmp_path):
    store = _store(tmp_path / "list.pt", {"AutoGuideList.0.locs.a": A_LOC, "AutoGuideList.1.loc": [SIGMA_LOC]})
    _quiet_pack(store, tmp_path / "m.bnc", model=model)
    a = bnncompress.load(tmp_path / "m.bnc")
    assert sorted(a.names) == ["a", "sigma"]
    np.testing.assert_allclose(a["a"], A_LOC, rtol=1e-3)
    np.testing.assert_allclose(a["sigma"], np.exp(SIGMA_LOC), rtol=1e-3)


def test_every_caveat_of_reading_a_store_is_a_python_warning(tmp_path):
    store = _store(tmp_path / "flat.pt", {"AutoDiagonalNormal.loc": [0.1, 0.2, 0.3, 0.4]})
    result, caught = _quiet_pack(store, tmp_path / "f.bnc")
    assert any("'latent'" in w for w in caught) and any("supports unknown" in w for w in caught)
    assert caught == list(result.warnings)


def test_a_store_never_loads_unconstrained_values_without_saying_so(tmp_path):
    # no name hints at a support ('theta' could be a Beta site): the warning is still given, once
    store = _store(tmp_path / "theta.pt", {"AutoNormal.locs.theta": [0.2, 0.4]})
    _, caught = _quiet_pack(store, tmp_path / "t.bnc")
    assert sum("supports unknown" in w for w in caught) == 1
    # a store that records its supports (bnncompress train writes {site: None} for real sites) is believed
    params = {"AutoNormal.locs.w": np.zeros((3, 2), np.float32), "AutoNormal.scales.w": np.ones((3, 2), np.float32)}
    kinds = {"AutoNormal.locs.w": "real", "AutoNormal.scales.w": "softplus_positive"}
    save_param_store(tmp_path / "trained.pt", params, kinds, real_sites=["w"])
    _, caught = _quiet_pack(tmp_path / "trained.pt", tmp_path / "w.bnc")
    assert not any("supports unknown" in w for w in caught), caught
    # and a recorded support is applied on load, as a model's is
    state = torch.load(store, weights_only=False)
    torch.save({**state, "supports": {"theta": {"constraint": "unit_interval"}}}, tmp_path / "unit.pt")
    _, caught = _quiet_pack(tmp_path / "unit.pt", tmp_path / "u.bnc")
    assert not any("supports unknown" in w for w in caught)
    np.testing.assert_allclose(bnncompress.load(tmp_path / "u.bnc")["theta"], 1 / (1 + np.exp([-0.2, -0.4])), rtol=1e-3)
    torch.save({**state, "supports": {"theta": {"constraint": "boolean"}}}, tmp_path / "bad.pt")
    with pytest.raises(PosteriorError, match="'supports' of 'theta'"):
        bnncompress.pack(tmp_path / "bad.pt", tmp_path / "b.bnc")


def test_a_models_discrete_sites_are_left_out_and_the_random_state_is_kept(tmp_path):
    def classifier(x):  # traced without labels: 'obs' is a latent discrete site, not part of any guide
        a = pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Categorical(logits=x[:, None] * a))

    store = _store(tmp_path / "cls.pt", {"AutoNormal.locs.a": A_LOC})
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    result, caught = _quiet_pack(store, tmp_path / "c.bnc", model=classifier, model_args=(torch.ones(4),))
    assert torch.rand(1) == expected  # tracing the model drew from its prior, then put the state back
    assert caught == [] and result.warnings == ()
    store = _store(tmp_path / "obs.pt", {"AutoNormal.locs.a": A_LOC, "AutoNormal.locs.obs": [0.0] * 4})
    with pytest.raises(PosteriorError, match="'obs' of the model is discrete"):
        bnncompress.pack(store, tmp_path / "o.bnc", model=classifier, model_args=(torch.ones(4),))


def test_a_model_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch):
    store = _store(tmp_path / "s.pt", {"AutoNormal.locs.a": A_LOC})
    (tmp_path / "broken.py").write_text("def model(:\n    pass\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for spec, reason in (("broken:model", "SyntaxError"), ("raising:model", "RuntimeError: no GPU here")):
        out = CliRunner().invoke(app, ["pack", str(store), "-o", "x.bnc", "--model", spec])
        assert out.exit_code == 2 and reason in out.output and "Traceback" not in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1


def test_guides_without_a_gaussian_posterior_are_refused_in_one_line(tmp_path):
    pyro.clear_param_store()
    flow = AutoIAFNormal(model, hidden_dim=[4])
    flow()
    with pytest.raises(PosteriorError, match="no closed-form mean and variance"):
        bnncompress.pack(flow, tmp_path / "f.bnc")
    laplace = AutoLaplaceApproximation(model)
    laplace()
    with pytest.raises(PosteriorError, match=r"laplace_approximation"):
        bnncompress.pack(laplace, tmp_path / "l.bnc")
    pyro.clear_param_store()


@pytest.mark.parametrize(
    "spec",
    [
        {"constraint": "nonnegative_integer"},
        {"constraint": "boolean"},
        {"constraint": "dependent"},
        {"constraint": "interval", "lower_bound": 3.0, "upper_bound": 1.0},
        {"constraint": "greater_than", "lower_bound": float("nan")},
        {"constraint": "simplex"},  # on a scalar
    ],
)
def test_a_forged_support_is_an_archive_error(spec):
    with pytest.raises(ArchiveError, match="the archive is damaged"):
        constrain(spec, np.float32(0.5), "tensor 't'")


def test_condition_says_which_tensors_named_no_site(tmp_path):
    store = _store(tmp_path / "flat.pt", {"AutoDiagonalNormal.loc": [0.1, 0.2, 0.3, 0.4]})
    _quiet_pack(store, tmp_path / "f.bnc")
    conditioned = bnncompress.load(tmp_path / "f.bnc").condition(model)
    with pytest.warns(QualityWarning, match="latent are not sample sites of the model"):
        conditioned()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conditioned()  # said once


def test_info_and_shape_give_the_shape_a_site_loads_as(tmp_path):
    # simplex and correlation-Cholesky sites are stored unconstrained with fewer entries than they load with
    from pyro.infer.autoguide import AutoNormal

    def shaped():
        with pyro.plate("groups", 2):
            pyro.sample("mix", dist.Dirichlet(torch.ones(4)))
        pyro.sample("corr", dist.LKJCholesky(3, 1.0))

    pyro.clear_param_store()
    guide = AutoNormal(shaped)
    guide()
    bnncompress.pack(guide, tmp_path / "s.bnc", method="float16")
    pyro.clear_param_store()
    a = bnncompress.load(tmp_path / "s.bnc")
    assert a.shape("mix") == a["mix"].shape == (2, 4) and a.shape("corr") == a["corr"].shape == (3, 3)
    shapes = {t["name"]: (t["shape"], t["stored_shape"]) for t in a.info()["tensors"]}
    assert shapes == {"mix": ([2, 4], [2, 3]), "corr": ([3, 3], [3])}


def test_a_site_with_a_bound_per_element_loads_inside_its_bounds(tmp_path):
    from pyro.infer.autoguide import AutoNormal

    low, high = torch.tensor([0.0, 10.0]), torch.tensor([1.0, 20.0])

    def bounded():
        pyro.sample("u", dist.Uniform(low, high).to_event(1))

    pyro.clear_param_store()
    guide = AutoNormal(bounded)
    guide()
    median = guide.median()["u"].detach().numpy()
    _, caught = _quiet_pack(guide, tmp_path / "u.bnc")
    pyro.clear_param_store()
    assert caught == []
    a = bnncompress.load(tmp_path / "u.bnc")
    np.testing.assert_allclose(a["u"], median, rtol=1e-3)
    assert a.info()["tensors"][0]["support"]["lower_bound"] == [0.0, 10.0]
    with pytest.raises(ArchiveError, match="empty interval"):
        constrain({"constraint": "interval", "lower_bound": [0.0, 5.0], "upper_bound": [1.0, 2.0]}, np.zeros(2), "t")
    with pytest.raises(ArchiveError, match="lacks finite"):
        constrain({"constraint": "interval", "lower_bound": [0.0, [1.0]], "upper_bound": 3.0}, np.zeros(2), "t")
    with pytest.raises(ArchiveError, match="does not fit"):
        constrain({"constraint": "interval", "lower_bound": [0.0, 1.0, 2.0], "upper_bound": 3.0}, np.zeros(2), "t")


def test_rows_served_a_few_at_a_time_get_their_own_bounds(tmp_path):
    # a server's cache fills a few rows at a time: bounds given per row must be taken at those rows
    from pyro.infer.autoguide import AutoNormal

    n, d = 1500, 4
    low = torch.arange(n, dtype=torch.float32).reshape(n, 1) * 10.0  # row i lives in [10 i, 10 i + 1]

    def rowwise():
        pyro.sample("w", dist.Uniform(low, low + 1.0).expand([n, d]).to_event(2))

    pyro.clear_param_store()
    guide = AutoNormal(rowwise)
    guide()
    bnncompress.pack(guide, tmp_path / "r.bnc", lam=0.1)
    pyro.clear_param_store()
    whole = bnncompress.load(tmp_path / "r.bnc")["w"]
    assert np.all((whole >= low.numpy()) & (whole <= low.numpy() + 1))
    a = bnncompress.load(tmp_path / "r.bnc")
    embedding = a.embedding("w", cache_rows=3)
    for ids in ([5], [5, 6], [1499, 0, 700, 5], list(range(40))):
        np.testing.assert_array_equal(embedding(torch.tensor(ids)).numpy(), whole[ids])
        np.testing.assert_array_equal(a.vectors(ids, "w"), whole[ids])
    served = np.concatenate([rows for _, rows in a.served_rows("w").blocks()])
    np.testing.assert_array_equal(served, whole)


def test_a_stored_tensor_unlike_the_models_site_is_said_and_loads_as_stored(tmp_path):
    def other(x=None):  # 'sigma' is a vector of 2 here, a scalar in the store
        pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        pyro.sample("sigma", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))

    store = _store(tmp_path / "s.pt", {"AutoNormal.locs.a": A_LOC, "AutoNormal.locs.sigma": SIGMA_LOC})
    _, caught = _quiet_pack(store, tmp_path / "o.bnc", model=other)
    assert any("do not have the shape of the model's site" in w and "sigma" in w for w in caught), caught
    np.testing.assert_allclose(bnncompress.load(tmp_path / "o.bnc")["sigma"], SIGMA_LOC, rtol=1e-3)  # unconstrained
