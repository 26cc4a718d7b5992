"""Constrained Pyro sites back as constrained values, and archives back into Pyro models (issue 18):
real SVI on tiny models (a few hundred steps)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.nn import PyroModule, PyroSample
from typer.testing import CliRunner

import bnncompress
from bnncompress.cli import app
from bnncompress.errors import QualityWarning


class Regression(PyroModule):
    """2-32-1 tanh MLP with PyroSample weights and sigma ~ LogNormal(-1, 1): the issue's example, small."""

    def __init__(self):
        super().__init__()
        self.fc1 = PyroModule[torch.nn.Linear](2, 32)
        self.fc2 = PyroModule[torch.nn.Linear](32, 1)
        for layer in (self.fc1, self.fc2):
            layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand(layer.weight.shape).to_event(2))
            layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand(layer.bias.shape).to_event(1))

    def forward(self, x, y=None):
        mean = self.fc2(torch.tanh(self.fc1(x))).squeeze(-1)
        sigma = pyro.sample("sigma", dist.LogNormal(-1.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def data(n: int = 200):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return x, torch.sin(2 * x[:, 0]) + 0.3 * x[:, 1] + 0.3 * torch.randn(n, generator=g)


def fit(model, guide_class, args, steps: int = 300, **guide_options):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guide_class(model, **guide_options)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(steps):
        svi.step(*args)
    return guide


def constrained_model():
    """Positive, unit-interval and simplex sites, observed through a Gaussian."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    mix = pyro.sample("mix", dist.Dirichlet(torch.ones(3)))
    target = torch.cat([scale.reshape(1), p.reshape(1), mix])
    pyro.sample("obs", dist.Normal(target, 0.05).to_event(1), obs=torch.tensor([2.0, 0.8, 0.6, 0.3, 0.1]))


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """The model, its trained AutoNormal guide, the data, and the guide's saved param store."""
    x, y = data()
    model = Regression()
    guide = fit(model, AutoNormal, (x, y), init_scale=0.01)
    store = tmp_path_factory.mktemp("store") / "store.pt"
    pyro.get_param_store().save(store)
    return model, guide, x, y, store


def test_positive_site_loads_as_its_posterior_median(regression, tmp_path):
    model, guide, x, y, store = regression
    median = float(guide.median(x, y)["sigma"])
    bnncompress.pack(guide, tmp_path / "g.bnc", bits=4)
    a = bnncompress.load(tmp_path / "g.bnc")
    assert a.record("sigma").params["support"] == {"constraint": "positive"}
    for value in (a["sigma"], a.state_dict()["sigma"].numpy(), a.arrays()["sigma"]):
        assert abs(float(value) - median) < 0.1 * median  # not its log
    a.export(tmp_path / "g.npz")
    assert abs(float(np.load(tmp_path / "g.npz")["sigma"]) - median) < 0.1 * median


@pytest.mark.parametrize(
    "guide_class",
    [
        AutoNormal,
        *(pytest.param(g, marks=pytest.mark.slow) for g in (AutoDiagonalNormal, AutoLowRankMultivariateNormal)),
    ],
)
def test_positive_unit_interval_and_simplex_sites(guide_class, tmp_path):
    guide = fit(constrained_model, guide_class, (), steps=400)
    medians = guide.median()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        bnncompress.pack(guide, tmp_path / "c.bnc")
    a = bnncompress.load(tmp_path / "c.bnc")
    assert a["mix"].shape == (3,) and a.shape("mix") == (3,) and a.record("mix").shape == (2,)
    assert abs(float(a["mix"].sum()) - 1) < 1e-5 and 0 < float(a["p"]) < 1
    for site in ("scale", "p", "mix"):
        assert np.allclose(a[site], medians[site].numpy(), rtol=0.1, atol=0.02), site
    assert np.allclose(a.rows("mix", [0, 2]), a["mix"][[0, 2]])


def test_a_live_guide_with_a_model_that_gives_its_sites_other_supports_is_refused(tmp_path):
    def edited_model():  # the same sites, but p on the half-line (Gamma: nonnegative) instead of (0, 1)
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        p = pyro.sample("p", dist.Gamma(2.0, 2.0))
        mix = pyro.sample("mix", dist.Dirichlet(torch.ones(3)))
        target = torch.cat([scale.reshape(1), p.reshape(1), mix])
        pyro.sample("obs", dist.Normal(target, 0.05).to_event(1), obs=torch.tensor([2.0, 0.8, 0.6, 0.3, 0.1]))

    guide = fit(constrained_model, AutoNormal, (), steps=20)
    with pytest.raises(bnncompress.PosteriorError, match=r"p \(nonnegative; the guide's unit_interval\)"):
        bnncompress.pack(guide, tmp_path / "edited.bnc", method="float16", model=edited_model)
    assert not (tmp_path / "edited.bnc").exists()
    bnncompress.pack(guide, tmp_path / "same.bnc", method="float16", model=constrained_model)
    assert bnncompress.load(tmp_path / "same.bnc").record("p").params["support"] == {"constraint": "unit_interval"}


def test_a_live_guides_bounds_are_compared_and_supports_of_one_transform_are_the_same(tmp_path):
    def model(low=0.0, high=5.0, gamma=False):
        s = pyro.sample("s", dist.Uniform(low, high))
        r = pyro.sample("r", dist.Gamma(2.0, 1.0) if gamma else dist.LogNormal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(s + r, 0.1), obs=torch.tensor(2.0))

    guide = fit(model, AutoNormal, (), steps=10)
    with pytest.raises(bnncompress.PosteriorError, match=r"s \(interval\(1, 50\); the guide's interval\(0, 5\)\)"):
        bnncompress.pack(guide, tmp_path / "b.bnc", method="float16", model=model, model_args=(1.0, 50.0))
    # r nonnegative (Gamma) instead of positive: loaded through the same transform
    bnncompress.pack(guide, tmp_path / "g.bnc", method="float16", model=model, model_args=(0.0, 5.0, True))


def test_a_live_guides_bounds_that_depend_on_other_sites_may_differ_however_many(tmp_path):
    def model():  # twelve bounds that follow b: the warning names ten of them, none is refused
        b = pyro.sample("b", dist.LogNormal(0.0, 1.0))
        for i in range(12):
            pyro.sample(f"u{i:02d}", dist.Uniform(0.0, b))

    guide = fit(model, AutoDiagonalNormal, (), steps=5)  # its prototype: b at its prior median, not at 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        result = bnncompress.pack(guide, tmp_path / "m.bnc", method="float16", model=model)
    assert any("u09 depend on other sites" in w for w in result.warnings), result.warnings


def test_info_shows_recorded_supports(tmp_path):
    guide = fit(constrained_model, AutoNormal, (), steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        bnncompress.pack(guide, tmp_path / "c.bnc")
    out = CliRunner().invoke(app, ["info", str(tmp_path / "c.bnc")])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.strip()}
    assert "support" in lines["tensor"]
    assert lines["scale"].rstrip().endswith("positive") and lines["p"].rstrip().endswith("unit_interval")
    assert lines["mix"].rstrip().endswith("simplex")
    info = bnncompress.load(tmp_path / "c.bnc").info()
    assert {t["name"]: t["support"] for t in info["tensors"]}["scale"] == {"constraint": "positive"}
    plain = tmp_path / "plain.bnc"
    bnncompress.pack({"w": (np.zeros((4, 3)), np.ones((4, 3)))}, plain, method="float16")
    assert "support" not in CliRunner().invoke(app, ["info", str(plain)]).output  # no column without supports


def test_param_store_without_model_warns_once_and_with_model_is_constrained(regression, tmp_path):
    model, guide, x, y, store = regression
    median = float(guide.median(x, y)["sigma"])
    with pytest.warns(QualityWarning) as caught:
        result = bnncompress.pack(store, tmp_path / "plain.bnc", bits=4)
    notes = [str(w.message) for w in caught if "supports unknown" in str(w.message)]
    assert len(notes) == 1 and "sigma" in notes[0] and "fc1.weight" not in notes[0] and "model=" in notes[0]
    assert sum("supports unknown" in w for w in result.warnings) == 1
    assert abs(float(bnncompress.load(tmp_path / "plain.bnc")["sigma"]) - np.log(median)) < 0.1  # as warned

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bnncompress.pack(store, tmp_path / "m.bnc", bits=4, model=model, model_args=(x, y))
    assert not any("supports unknown" in str(w.message) for w in caught)  # the model is known
    assert not any("supports unknown" in w for w in result.warnings)
    assert abs(float(bnncompress.load(tmp_path / "m.bnc")["sigma"]) - median) < 0.1 * median


def test_cli_model_option(regression, tmp_path, monkeypatch):
    model, guide, x, y, store = regression
    median = float(guide.median(x, y)["sigma"])
    torch.save({"net": model, "x": x}, tmp_path / "net.pt")
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        f"saved = torch.load({str(tmp_path / 'net.pt')!r}, weights_only=False)\n"
        "def model():\n    return saved['net'](saved['x'])\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    out = CliRunner().invoke(app, ["pack", str(store), "-o", "cli.bnc", "--bits", "4", "--model", "mymodels:model"])
    assert out.exit_code == 0, out.output
    assert "supports unknown" not in out.output
    assert abs(float(bnncompress.load(tmp_path / "cli.bnc")["sigma"]) - median) < 0.1 * median
    out = CliRunner().invoke(app, ["pack", str(store), "-o", "bad.bnc", "--model", "mymodels"])
    assert out.exit_code == 2 and "pkg.module:attr" in out.output


def test_condition_and_load_into_agree(regression, tmp_path):
    model, guide, x, y, store = regression
    bnncompress.pack(guide, tmp_path / "g.bnc", method="float16")  # tests the way back, not a quantizer
    a = bnncompress.load(tmp_path / "g.bnc")
    conditioned = a.condition(model)
    with torch.no_grad():
        first, second = conditioned(x), conditioned(x)
        median_pred = pyro.poutine.condition(model, data=guide.median(x, y))(x)
    assert torch.equal(first, second)  # every latent site is fixed
    data_rmse = float((median_pred - y).pow(2).mean().sqrt())
    assert float((first - median_pred).pow(2).mean().sqrt()) < 0.2 * data_rmse
    trace = pyro.poutine.trace(conditioned).get_trace(x)
    assert torch.allclose(trace.nodes["sigma"]["value"], a.tensor("sigma"))

    net = Regression()
    a.load_into(net)  # PyroSample weights become fixed tensors; sigma is left to condition()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        assert torch.allclose(net(x), first, atol=1e-6)


@pytest.mark.parametrize(
    "guide_class",
    [
        AutoDiagonalNormal,
        *(pytest.param(g, marks=pytest.mark.slow) for g in (AutoLowRankMultivariateNormal, AutoMultivariateNormal)),
    ],
)
def test_flat_latent_param_store_split_into_sites_with_model(guide_class, tmp_path):
    x, y = data()
    model = Regression()
    guide = fit(model, guide_class, (x, y))
    medians = guide.median(x, y)
    store = tmp_path / "flat.pt"
    pyro.get_param_store().save(store)
    result = bnncompress.pack(store, tmp_path / "d.bnc", method="float16", model=model, model_args=(x, y))
    assert not any("'latent'" in w for w in result.warnings)
    assert any("not mean-field" in w for w in result.warnings) == (guide_class is not AutoDiagonalNormal)
    a = bnncompress.load(tmp_path / "d.bnc")
    assert sorted(a.names) == sorted(["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "sigma"])
    assert abs(float(a["sigma"]) - float(medians["sigma"])) < 0.1 * float(medians["sigma"])
    net = a.load_into(Regression())
    with torch.no_grad():
        expected = pyro.poutine.condition(model, data=medians)(x)
        assert float((net(x) - expected).pow(2).mean().sqrt()) < 0.2 * float((expected - y).pow(2).mean().sqrt())


def test_model_that_needs_arguments_or_does_not_fit_is_refused(regression, tmp_path):
    model, guide, x, y, store = regression
    with pytest.raises(bnncompress.PosteriorError, match="model_args"):
        bnncompress.pack(store, tmp_path / "a.bnc", model=model)  # forward needs x
    with pytest.raises(bnncompress.errors.ArgumentTypeError):
        bnncompress.pack(store, tmp_path / "b.bnc", model=42)
    fit(Regression(), AutoDiagonalNormal, data(), steps=5)
    pyro.get_param_store().save(tmp_path / "diag.pt")
    with pytest.raises(bnncompress.PosteriorError, match="flat 'latent'"):
        bnncompress.pack(tmp_path / "diag.pt", tmp_path / "c.bnc", model=constrained_model)


def test_the_model_is_traced_without_the_callers_pyro_handlers(regression, tmp_path):
    """pack(model=...) inside the caller's pyro.condition treated 'sigma' as observed: no support recorded, the
    unconstrained value loaded; inside the caller's poutine.trace it failed ('Multiple sample sites') and
    left its nodes in the caller's trace."""
    model, guide, x, y, store = regression
    median = float(guide.median(x, y)["sigma"])
    with pyro.condition(data={"sigma": torch.tensor(5.0)}):
        bnncompress.pack(store, tmp_path / "c.bnc", bits=4, model=model, model_args=(x, y))
    assert abs(float(bnncompress.load(tmp_path / "c.bnc")["sigma"]) - median) < 0.1 * median
    with pyro.poutine.trace() as outer:
        bnncompress.pack(store, tmp_path / "t.bnc", bits=4, model=model, model_args=(x, y))
    assert list(outer.trace.nodes) == []
