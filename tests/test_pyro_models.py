"""Pyro models beyond the simple ones (a helper's hunt): bounds that depend on other sites, subsampled
plates, ImproperUniform sites, sites named like a guide's parameters, AutoStructured stores, and archives
packed without the model's supports going back into the model."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam, PyroSample

import bnncompress
from bnncompress import PosteriorError
from bnncompress.errors import QualityWarning

from .test_pyro_stores import _quiet_pack, _store


def dependent():
    a = pyro.sample("a", dist.LogNormal(0.0, 1.0))
    pyro.sample("x", dist.Uniform(0.0, a).expand([5]).to_event(1))


def test_bounds_that_depend_on_another_site_are_recorded_at_the_feasible_point_and_said(tmp_path):
    # The bound was drawn from the prior when the model was traced: two packs of one store recorded 3.78 and 3.31.
    store = _store(tmp_path / "dep.pt", {"AutoNormal.locs.a": [-3.0], "AutoNormal.locs.x": [0.0] * 5})
    bounds = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        _, caught = _quiet_pack(store, tmp_path / "d.bnc", model=dependent)
        bounds.append(bnncompress.load(tmp_path / "d.bnc").record("x").params["support"]["upper_bound"])
        assert any("bounds of site(s) x depend on other sites" in w for w in caught)
    assert bounds == [1.0, 1.0]  # a = 1 at 0 unconstrained: AutoNormal's prototype with its default init


def improper():
    pyro.sample("s", dist.ImproperUniform(dist.constraints.positive, (), (3,)))


def test_a_model_with_an_improper_site_packs_from_its_store(tmp_path):
    # Tracing drew from the prior: "ImproperUniform does not support sampling; give the arguments it needs".
    store = _store(tmp_path / "imp.pt", {"AutoNormal.locs.s": [0.0, 1.0, -1.0]})
    _quiet_pack(store, tmp_path / "i.bnc", model=improper)
    np.testing.assert_allclose(bnncompress.load(tmp_path / "i.bnc")["s"], np.exp([0.0, 1.0, -1.0]), rtol=1e-3)


def subsampled():
    with pyro.plate("units", 40, subsample_size=8):
        pyro.sample("s", dist.LogNormal(0.0, 1.0))


def test_a_site_in_a_subsampled_plate_keeps_its_support(tmp_path):
    # AutoNormal holds all 40 values; the traced site has 8: "do not have the shape of the model's site",
    # and the site loaded unconstrained.
    store = _store(tmp_path / "sub.pt", {"AutoNormal.locs.s": np.linspace(-1, 1, 40)})
    _, caught = _quiet_pack(store, tmp_path / "s.bnc", model=subsampled)
    assert not any("shape of the model's site" in w for w in caught)
    np.testing.assert_allclose(bnncompress.load(tmp_path / "s.bnc")["s"], np.exp(np.linspace(-1, 1, 40)), rtol=1e-3)


class Shifted(PyroModule):
    def __init__(self):
        super().__init__()
        self.w = PyroSample(dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        self.offset = PyroParam(torch.tensor(0.5), dist.constraints.positive)

    def forward(self):
        tau = pyro.sample("tau", dist.LogNormal(0.0, 1.0))
        return self.w * tau + self.offset


def test_a_pyro_module_with_params_loads_and_forward_sites_are_said(tmp_path):
    # Its PyroParam made load_into refuse ("missing from the archive: offset_unconstrained"), and tracing it
    # left the parameter in the user's param store; a site sampled in forward was left to the model silently.
    pyro.clear_param_store()
    store = _store(tmp_path / "net.pt", {"AutoNormal.locs.w": [1.0, 2.0], "AutoNormal.locs.tau": [0.0]})
    _quiet_pack(store, tmp_path / "n.bnc", model=Shifted())
    assert list(pyro.get_param_store().keys()) == []
    with pytest.warns(QualityWarning, match="left archive tensor.*tau to the model"):
        net = bnncompress.load(tmp_path / "n.bnc").load_into(Shifted())
    assert torch.equal(net.w, torch.tensor([1.0, 2.0]))


def located():
    pyro.sample("loc", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    pyro.sample("scale", dist.LogNormal(0.0, 1.0).expand([3]).to_event(1))


def test_sites_named_like_a_guides_parameters(tmp_path):
    # Sites 'loc' and 'scale' gave a third tensor 'scales'; a site named 'dec.locs.x' could not be read.
    store = _store(tmp_path / "ls.pt", {"AutoNormal.locs.loc": [1.0, 2, 3], "AutoNormal.locs.scale": [0.0, 0, 0]})
    _quiet_pack(store, tmp_path / "l.bnc", model=located)
    a = bnncompress.load(tmp_path / "l.bnc")
    assert a.names == ["loc", "scale"] and np.allclose(a["scale"], 1.0)
    state = torch.load(_store(tmp_path / "dot.pt", {"AutoNormal.locs.y": [2.0]}), weights_only=False)
    state["params"]["AutoNormal.locs.dec.locs.x"] = torch.tensor([1.0])  # (Pyro's keys for site 'dec.locs.x')
    state["params"]["AutoNormal.scales.dec.locs.x"] = torch.tensor([0.01])
    torch.save(state, store := tmp_path / "dot.pt")
    _quiet_pack(store, tmp_path / "d.bnc")
    assert sorted(bnncompress.load(tmp_path / "d.bnc").names) == ["dec.locs.x", "y"]


def test_an_auto_structured_store_is_refused(tmp_path):
    # Its locs were read as AutoNormal's (scalar sites as shape (1,), unconstrained), its dependencies dropped.
    store = _store(tmp_path / "st.pt", {"AutoStructured.locs.mu": [0.0], "AutoStructured.locs.sig": [0.1]})
    state = torch.load(store, weights_only=False)
    state["params"]["AutoStructured.deps.sig.mu$$$weight"] = torch.zeros(1, 1)
    torch.save(state, store)
    with pytest.raises(PosteriorError, match="AutoStructured"):
        _quiet_pack(store, tmp_path / "s.bnc")


def rate_model(y=None):
    rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0))
    with pyro.plate("n", 4):
        pyro.sample("y", dist.Poisson(rate), obs=y)


def test_condition_says_when_a_site_gets_unconstrained_values(tmp_path):
    # Packed from a store without the model, rate (posterior median 3.9) conditioned the model at log(3.9).
    store = _store(tmp_path / "r.pt", {"AutoNormal.locs.rate": np.log(3.9)})
    _quiet_pack(store, tmp_path / "r.bnc")
    with pytest.warns(QualityWarning, match=r"site\(s\) rate have a constrained support"):
        bnncompress.load(tmp_path / "r.bnc").condition(rate_model)()
    _quiet_pack(store, tmp_path / "m.bnc", model=rate_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bnncompress.load(tmp_path / "m.bnc").condition(rate_model)()  # (recorded: no warning)


def test_an_auto_guide_lists_auto_delta_part_is_packed_as_point_estimates(tmp_path):
    # AutoDelta (MAP for sigma) + AutoDiagonalNormal (the rest): the flat part was said to be the wrong size
    # for the model ("pass the model the guide was trained with"); beside an AutoNormal, sigma was dropped.
    from pyro.distributions import constraints

    from .test_pyro_stores import A_LOC, model

    state = {
        "params": {
            "AutoGuideList.0.sigma": torch.tensor(np.log(0.7)),  # as Pyro stores it: unconstrained
            "AutoGuideList.1.loc": torch.tensor(A_LOC),
            "AutoGuideList.1.scale": torch.full((3,), 0.01),
        },
        "constraints": {
            "AutoGuideList.0.sigma": constraints.positive,
            "AutoGuideList.1.loc": constraints.real,
            "AutoGuideList.1.scale": constraints.softplus_positive,
        },
    }
    torch.save(state, tmp_path / "list.pt")
    _, caught = _quiet_pack(tmp_path / "list.pt", tmp_path / "l.bnc", model=model)
    assert any("sigma are point estimates" in w for w in caught) and not any("ignored" in w for w in caught)
    a = bnncompress.load(tmp_path / "l.bnc")
    np.testing.assert_allclose(a["sigma"], 0.7, rtol=1e-3)
    np.testing.assert_allclose(a["a"], A_LOC, rtol=1e-3)


def nested_sites():
    pyro.sample("0.weight", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("1.0.weight", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    pyro.sample("z", dist.Normal(0.0, 1.0))


def test_auto_delta_sites_with_digits_in_their_names_and_sites_no_tensor_holds(tmp_path):
    # 'AutoGuideList.1.0.weight' could be site '0.weight' or '1.0.weight': both were skipped, silently, and a
    # model conditioned on the archive drew them from the prior; a site nothing in the store held was not said.
    from pyro.distributions import constraints

    params = {"AutoGuideList.1.0.weight": torch.ones(2), "AutoGuideList.1.1.0.weight": torch.full((3,), 2.0)}
    params |= {"AutoGuideList.0.locs.other": torch.zeros(1), "AutoGuideList.0.scales.other": torch.ones(1)}
    state = {"params": params, "constraints": {k: constraints.real for k in params}}
    torch.save(state, tmp_path / "s.pt")
    _, caught = _quiet_pack(tmp_path / "s.pt", tmp_path / "n.bnc", model=nested_sites)
    a = bnncompress.load(tmp_path / "n.bnc")
    assert np.allclose(a["0.weight"], 1.0) and np.allclose(a["1.0.weight"], 2.0)
    assert any("latent site(s) z are in no tensor" in w for w in caught)


class Gained(PyroModule):
    def __init__(self):
        super().__init__()
        self.gain = PyroSample(dist.LogNormal(0.0, 1.0))
        self.log_tau = PyroSample(dist.Normal(0.0, 1.0))
        self.tau = PyroSample(lambda self: self.log_tau.exp())  # deterministic: in no guide

    def forward(self):
        return self.gain * self.tau


def test_load_into_says_when_it_fills_unconstrained_values_and_skips_deterministic_samples(tmp_path):
    # load_into put log(gain) into gain without a word (condition() warned), and refused the module because
    # its deterministic PyroSample 'tau' was "missing from the archive"; condition() after it said every
    # loaded tensor "conditioned nothing".
    store = _store(tmp_path / "g.pt", {"AutoNormal.locs.gain": np.log(2.5), "AutoNormal.locs.log_tau": 0.0})
    _quiet_pack(store, tmp_path / "g.bnc")
    a = bnncompress.load(tmp_path / "g.bnc")
    with pytest.warns(QualityWarning) as caught:
        net = a.load_into(Gained())
    said = " ".join(str(w.message) for w in caught)
    assert "site(s) gain have a constrained support" in said and "tau (a prior that is a function" in said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a.condition(net)()


def test_a_stores_own_supports_record_is_kept_with_the_model_and_checked(tmp_path):
    store = _store(tmp_path / "r.pt", {"AutoNormal.locs.p": [-2.0, -2.0], "AutoNormal.locs.a": [0.0, 0, 0]})
    state = torch.load(store, weights_only=False)
    state["supports"] = {"p": {"constraint": "unit_interval"}}  # (a tensor of no site of the model: kept)
    torch.save(state, store)
    from .test_pyro_stores import model

    _quiet_pack(store, tmp_path / "r.bnc", model=model)
    np.testing.assert_allclose(bnncompress.load(tmp_path / "r.bnc")["p"], 1 / (1 + np.exp(2.0)), rtol=1e-3)
    state["supports"] = {"p": {"constraint": "corr_cholesky"}}  # 2 values are no triangle's: it does not fit
    torch.save(state, store)
    with pytest.raises(PosteriorError, match="'supports' of 'p' .* does not fit its tensor"):  # (archive unreadable)
        _quiet_pack(store, tmp_path / "x.bnc")


def test_a_site_named_latent_and_a_model_class(tmp_path):
    def latent_model():
        pyro.sample("latent", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    store = _store(tmp_path / "d.pt", {"AutoDiagonalNormal.loc": [1.0, 2.0, 3.0, 0.0]})  # "two guides of ..."
    _quiet_pack(store, tmp_path / "d.bnc", model=latent_model)
    a = bnncompress.load(tmp_path / "d.bnc")
    assert np.allclose(a["latent"], [1, 2, 3], rtol=1e-3) and np.isclose(a["s"], 1.0, rtol=1e-3)
    with pytest.raises(PosteriorError, match="samples no continuous latent site"):  # (packed all unconstrained)
        _quiet_pack(store, tmp_path / "c.bnc", model=Gained)


def test_condition_says_when_a_live_guides_site_came_back_unconstrained(tmp_path):
    # A support with more bounds than an archive records: pack said it, condition() then did not (the rule was
    # for param stores only).
    from pyro.infer.autoguide import AutoNormal

    high = torch.linspace(1.0, 2.0, 70_000)

    def bounded():
        pyro.sample("u", dist.Uniform(torch.zeros(70_000), high).to_event(1))

    pyro.clear_param_store()
    guide = AutoNormal(bounded)
    guide()
    _quiet_pack(guide, tmp_path / "u.bnc")
    with pytest.warns(QualityWarning, match=r"site\(s\) u have a constrained support"):
        bnncompress.load(tmp_path / "u.bnc").condition(bounded)()


def test_an_auto_normal_site_named_latent_is_not_called_a_flat_guide(tmp_path):
    store = _store(tmp_path / "n.pt", {"AutoNormal.locs.latent": [1.0, 2.0]})
    _, caught = _quiet_pack(store, tmp_path / "n.bnc")
    assert not any("read without its model: packed as one flat tensor" in w for w in caught)


class HyperPrior(PyroModule):
    def __init__(self):
        super().__init__()
        self.sigma_scale = PyroParam(torch.tensor(2.0), constraint=dist.constraints.positive)
        self.sigma = PyroSample(lambda self: dist.HalfNormal(self.sigma_scale))  # a learned hyper-prior

    def forward(self):
        return self.sigma


def test_load_into_says_when_a_prior_that_is_a_function_of_the_module_gets_unconstrained_values(tmp_path):
    """Its support was not looked at (a lambda has none): log(3.1) became sigma, unsaid (Pyro hunt 3)."""
    pyro.clear_param_store()
    store = _store(tmp_path / "h.pt", {"AutoNormal.locs.sigma": np.log(3.1)})
    _quiet_pack(store, tmp_path / "h.bnc")
    with pytest.warns(QualityWarning, match="site.s. sigma have a constrained support"):
        bnncompress.load(tmp_path / "h.bnc").load_into(HyperPrior())
    pyro.clear_param_store()


def test_sites_of_the_model_left_out_by_the_tensor_selection_are_said(tmp_path):
    """condition() then drew them from their priors on every call, and nothing said so."""
    store = _store(tmp_path / "g.pt", {"AutoNormal.locs.gain": np.log(2.5), "AutoNormal.locs.log_tau": 0.0})

    def model():
        pyro.sample("gain", dist.LogNormal(0.0, 1.0))
        pyro.sample("log_tau", dist.Normal(0.0, 1.0))

    with pytest.warns(QualityWarning, match="site.s. log_tau are left out by the tensor selection"):
        bnncompress.pack(store, tmp_path / "g.bnc", lam=0.1, model=model, tensors=["gain"])
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    guide = AutoNormal(model)
    guide()  # a live guide knows its model: the same selection said nothing
    with pytest.warns(QualityWarning, match="site.s. log_tau are left out by the tensor selection"):
        bnncompress.pack(guide, tmp_path / "live.bnc", lam=0.1, tensors=["gain"])
    pyro.clear_param_store()


def test_a_live_auto_guide_list_is_refused_with_the_way_that_works(tmp_path):
    """It said "use AutoNormal, ...", though its saved param store packs with the model."""
    from pyro.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal

    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    pyro.clear_param_store()
    guide = AutoGuideList(model)
    guide.append(AutoDelta(pyro.poutine.block(model, expose=["a"])))
    guide.append(AutoNormal(pyro.poutine.block(model, expose=["b"])))
    guide()
    with pytest.raises(PosteriorError, match=r"save its param store .* pack\(path, model=model\)"):
        bnncompress.pack(guide, tmp_path / "g.bnc", lam=0.1)
    pyro.get_param_store().save(tmp_path / "g.pt")
    _quiet_pack(tmp_path / "g.pt", tmp_path / "g.bnc", model=model)
    assert sorted(bnncompress.load(tmp_path / "g.bnc").names) == ["a", "b"]
    pyro.clear_param_store()


class FixedRegression(PyroModule):
    def __init__(self, computed_prior: bool = False):
        super().__init__()
        self.fc = PyroModule[torch.nn.Linear](3, 4)
        weight, bias = dist.Normal(0.0, 1.0).expand([4, 3]).to_event(2), dist.Normal(0.0, 1.0).expand([4]).to_event(1)
        self.fc.weight = PyroSample((lambda m: weight) if computed_prior else weight)
        self.fc.bias = PyroSample((lambda m: bias) if computed_prior else bias)

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(self.fc(x).sum(-1), sigma), obs=y)


def test_weights_load_into_fixes_stay_fixed_under_svi_and_shapes_are_checked_for_computed_priors(tmp_path):
    """load_into made the fixed weights nn.Parameters: the first Predictive call put them into Pyro's param
    store with requires_grad=True, and an SVI fitting only sigma then trained them. A prior that is a function
    of the module took an archive bias of shape (1,) for (4,), broadcast silently."""
    pyro.clear_param_store()
    w, b = np.arange(12, dtype=np.float32).reshape(4, 3) / 10, np.array([0.5, -0.5, 1.0, 2.0], np.float32)
    tensors = {"fc.weight": (w, np.full_like(w, 1e-3)), "fc.bias": (b, np.full_like(b, 1e-3))}
    archive = bnncompress.load(bnncompress.pack(tensors, tmp_path / "f.bnc", lam=0.1).path)
    net = archive.load_into(FixedRegression())
    x = torch.randn(20, 3)
    pyro.infer.Predictive(net, num_samples=2)(x)
    guide = pyro.infer.autoguide.AutoNormal(pyro.poutine.block(net, expose=["sigma"]))
    svi = pyro.infer.SVI(net, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    for _ in range(5):
        svi.step(x, torch.randn(20))
    assert not any(name.startswith("fc.") for name in pyro.get_param_store())
    assert np.array_equal(net.fc.weight.numpy(), archive["fc.weight"])
    assert np.array_equal(net.fc.bias.numpy(), archive["fc.bias"])
    again = {"fc.weight": (w + 1, np.full_like(w, 1e-3)), "fc.bias": (b - 1, np.full_like(b, 1e-3))}
    second = bnncompress.load(bnncompress.pack(again, tmp_path / "g.bnc", lam=0.1).path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (it kept the first archive's weights and said they were left to sample)
        second.load_into(net)
    assert np.array_equal(net.fc.weight.numpy(), second["fc.weight"])
    wrong = {**tensors, "fc.bias": (b[:1], np.full_like(b[:1], 1e-3))}
    archive = bnncompress.load(bnncompress.pack(wrong, tmp_path / "w.bnc", lam=0.1).path)
    for computed in (False, True):
        with pytest.raises(bnncompress.ModelMismatchError, match=r"fc.bias: archive \(1,\) vs module \(4,\)"):
            archive.load_into(FixedRegression(computed))
    pyro.clear_param_store()


def test_a_bound_of_one_value_everywhere_is_recorded_as_one_number():
    """Uniform(zeros, ones) over a 256 x 256 site put 131,072 numbers in the manifest: 44 such sites made the pack
    refuse its own archive (its parse over the budget), and over 65,536 elements a bound was not recorded at all."""
    import torch
    from pyro.distributions import constraints

    from bnncompress.supports import describe

    for n in (256, 512):
        spec = describe(constraints.interval(torch.zeros(n, n), torch.ones(n, n)))
        assert spec == {"constraint": "interval", "lower_bound": 0.0, "upper_bound": 1.0}
    varied = describe(constraints.interval(torch.arange(4.0), torch.full((4,), 9.0)))
    assert varied["lower_bound"] == [0.0, 1.0, 2.0, 3.0] and varied["upper_bound"] == 9.0


def test_guides_whose_locs_are_not_their_posterior_are_refused_in_stores_and_state_dicts(tmp_path):
    """An AutoGaussian param store (its posterior also rests on white_vecs / prec_sqrts) packed its locs as the
    posterior (15% off on the weights, 50% on a noise scale), with only a generic note; a guide state dict dropped
    every key it did not use without a word, so AutoGaussian, AutoHierarchicalNormalMessenger (locs + weights x the
    prior's mean) and AutoStructured state dicts packed wrong values (pyrozoo hunt)."""
    store = _store(tmp_path / "ag.pt", {"AutoGaussianDense.locs.w": [0.0, 1.0]})
    state = torch.load(store, weights_only=False)
    state["params"]["AutoGaussianDense.white_vecs.w"] = torch.zeros(2)
    torch.save(state, store)
    with pytest.raises(PosteriorError, match="AutoGaussian"):
        _quiet_pack(store, tmp_path / "ag.bnc")
    locs = {"locs.w_unconstrained": torch.zeros(2), "scales.w_unconstrained": torch.zeros(2)}
    for key, kind in (
        ("weights.w_unconstrained", "AutoHierarchicalNormalMessenger"),
        ("deps.w.s.weight", "AutoStructured"),
    ):
        torch.save({**locs, key: torch.zeros(2)}, path := tmp_path / f"{kind}.pt")
        with pytest.raises(PosteriorError, match=kind):
            _quiet_pack(path, tmp_path / f"{kind}.bnc")
    torch.save({**locs, "something_else": torch.zeros(2)}, path := tmp_path / "extra.pt")
    with pytest.warns(UserWarning, match=r"1 parameter\(s\) that are not guide loc/scale pairs: something_else"):
        bnncompress.pack(path, tmp_path / "extra.bnc")


def two_site_model():
    pyro.sample("a", dist.Normal(0.0, 1.0))
    pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def test_an_autoguidelists_flat_parts_are_named_in_the_notes(tmp_path):
    """With two flat parts neither is split (which part holds which site is not in the store), and the notes said the
    sites were in no tensor of the posterior and that packing with the model would split them, which it had been."""
    store = _store(tmp_path / "two.pt", {"AutoGuideList.0.loc": [0.5], "AutoGuideList.1.loc": [1.0, 2.0]})
    result, _ = _quiet_pack(store, tmp_path / "two.bnc", model=two_site_model)
    assert any("may be in the flat parts AutoGuideList.0.latent, AutoGuideList.1.latent" in w for w in result.warnings)
    with pytest.warns(QualityWarning, match="an AutoGuideList's flat parts are not split into sites"):
        bnncompress.load(tmp_path / "two.bnc").condition(two_site_model)()


def test_a_modules_own_weights_beside_a_guides_parameters_are_no_other_guide(tmp_path):
    """The other-guide check took any key starting with weights. (or deps., white_vecs., ...) for that guide's: a
    checkpoint of a net with a module named 'weights' and an AutoNormal's state dict was refused (second review)."""
    state = {"locs.w_unconstrained": torch.zeros(2), "scales.w_unconstrained": torch.zeros(2)}
    torch.save({**state, "weights.weight": torch.ones(2, 2), "weights.bias": torch.ones(2)}, path := tmp_path / "c.pt")
    result, _ = _quiet_pack(path, tmp_path / "c.bnc")
    assert bnncompress.load(result.path).names == ["w"]
    store = _store(tmp_path / "s.pt", {"AutoNormal.locs.w": [0.0, 1.0]})
    state = torch.load(store, weights_only=False)
    state["params"]["AutoNormal.weights.weight"] = torch.ones(2, 2)  # (a guide subclass's own module)
    torch.save(state, store)
    result, _ = _quiet_pack(store, tmp_path / "s.bnc")
    assert bnncompress.load(result.path).names == ["w"]
