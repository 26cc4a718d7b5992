"""Posteriors of Bayesian neural networks from Pyro, TyXe, bayesian-torch and IVON, loaded back
into the plain nn.Module they came from."""

from __future__ import annotations

import contextlib

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoLowRankMultivariateNormal, AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch.distributions import constraints

import bnncompress
from bnncompress import ModelMismatchError, PosteriorError, read_posterior


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class BayesNet(PyroModule):
    """The same architecture as Net with N(0, 1) priors: sample sites fc1.weight, fc1.bias, ..."""

    def __init__(self):
        super().__init__()
        self.fc1 = PyroModule[torch.nn.Linear](4, 8)
        self.fc2 = PyroModule[torch.nn.Linear](8, 3)
        for layer in (self.fc1, self.fc2):
            layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand(layer.weight.shape).to_event(2))
            layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand(layer.bias.shape).to_event(1))

    def forward(self, x, y=None):
        logits = self.fc2(torch.relu(self.fc1(x)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def _train(guide_cls, steps=30, **kw):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = BayesNet()
    guide = guide_cls(model, **kw)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(steps):
        svi.step(x, y)
    return model, guide


def test_pyro_module_autonormal_round_trip_into_plain_module(tmp_path):
    _, guide = _train(AutoNormal)
    pyro.get_param_store().save(tmp_path / "bnn.pt")
    post = read_posterior(tmp_path / "bnn.pt")
    assert sorted(post.names) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    bnncompress.pack(tmp_path / "bnn.pt", tmp_path / "bnn.bnc", lam=1e-4)
    net = bnncompress.load(tmp_path / "bnn.bnc").load_into(Net())
    means = guide.median()
    for name, p in net.named_parameters():
        scale = post.tensors[name].scale
        assert np.all(np.abs(p.detach().numpy() - means[name].detach().numpy()) <= 3 * scale + 1e-3)


@pytest.mark.parametrize("guide_cls", [AutoDiagonalNormal, AutoLowRankMultivariateNormal])
def test_continuous_guides_are_split_into_sites(guide_cls):
    _, guide = _train(guide_cls)
    post = read_posterior(guide)
    assert sorted(post.names) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert post.tensors["fc1.weight"].shape == (8, 4)
    full = guide.get_posterior()
    flat_scale = np.concatenate([post.tensors[n].scale.reshape(-1) for n in post.names])
    np.testing.assert_allclose(np.sort(flat_scale), np.sort(full.variance.sqrt().detach().numpy()), rtol=1e-5)
    assert bool(post.warnings) == (guide_cls is AutoLowRankMultivariateNormal)


def test_low_rank_param_store_uses_marginal_scales(tmp_path):
    _, guide = _train(AutoLowRankMultivariateNormal, rank=2)
    pyro.get_param_store().save(tmp_path / "lr.pt")
    post = read_posterior(tmp_path / "lr.pt")
    np.testing.assert_allclose(
        post.tensors["latent"].scale, guide.get_posterior().variance.sqrt().detach().numpy(), rtol=1e-5
    )
    assert any("correlations" in w for w in post.warnings)
    assert any(w.startswith("AutoLowRankMultivariateNormal posterior read without its model") for w in post.warnings)


def test_tyxe_style_param_store(tmp_path):
    """TyXe's AutoNormal stores ``<guide>.<site>.loc`` and a positive-constrained ``.scale``
    (TyXe 0.0.2 does not install against pyro 1.9, so this reproduces its naming exactly)."""
    loc, scale = torch.randn(8, 4), torch.rand(8, 4) + 0.01
    store = {
        "params": {"net_guide.net.0.weight.loc": loc, "net_guide.net.0.weight.scale": scale.log()},
        "constraints": {
            "net_guide.net.0.weight.loc": constraints.real,
            "net_guide.net.0.weight.scale": constraints.positive,
        },
    }
    torch.save(store, tmp_path / "tyxe.pt")
    post = read_posterior(tmp_path / "tyxe.pt")
    assert post.names == ["net.0.weight"]
    np.testing.assert_allclose(post.tensors["net.0.weight"].scale, scale.numpy(), rtol=1e-6)
    bnncompress.pack(post, tmp_path / "t.bnc", lam=1e-4)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False))
    bnncompress.load(tmp_path / "t.bnc").load_into(seq, prefix="net.")
    assert torch.allclose(seq[0].weight, loc, atol=0.2)


def _bayesian_torch_state_dict():
    """A bayesian-torch model's state dict: Conv2dReparameterization (mu_kernel) and
    LinearReparameterization (mu_weight); the library itself pulls a CUDA torch, so it is used
    only where it is already installed."""
    try:
        from bayesian_torch.layers import Conv2dReparameterization, LinearReparameterization

        model = torch.nn.Sequential(Conv2dReparameterization(1, 2, 3), LinearReparameterization(4, 3))
        return model.state_dict(), True
    except ImportError:
        sd = {
            "0.mu_kernel": torch.randn(2, 1, 3, 3),
            "0.rho_kernel": torch.full((2, 1, 3, 3), -3.0),
            "0.mu_bias": torch.randn(2),
            "0.rho_bias": torch.full((2,), -3.0),
            "1.mu_weight": torch.randn(3, 4),
            "1.rho_weight": torch.full((3, 4), -3.0),
            "1.mu_bias": torch.randn(3),
            "1.rho_bias": torch.full((3,), -3.0),
        }
        return sd, False


def test_bayesian_torch_state_dict_loads_into_the_deterministic_model(tmp_path):
    sd, _ = _bayesian_torch_state_dict()
    torch.save(sd, tmp_path / "bt.pt")
    post = read_posterior(tmp_path / "bt.pt")
    assert sorted(post.names) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    np.testing.assert_allclose(
        post.tensors["1.weight"].scale, torch.nn.functional.softplus(sd["1.rho_weight"]), rtol=1e-6
    )
    bnncompress.pack(tmp_path / "bt.pt", tmp_path / "bt.bnc", lam=1e-4)
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(4, 3))
    bnncompress.load(tmp_path / "bt.bnc").load_into(plain)
    assert torch.allclose(plain[1].weight, sd["1.mu_weight"], atol=0.05)


def test_ivon_optimizer_posterior(tmp_path):
    ivon = pytest.importorskip("ivon")
    torch.manual_seed(0)
    net = Net()
    opt = ivon.IVON(net.parameters(), lr=0.05, ess=64, weight_decay=1e-3)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    for _ in range(5):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    post = bnncompress.ivon_posterior(net, opt)
    assert post.names == [n for n, _ in net.named_parameters()]
    group = opt.param_groups[0]
    expected = 1 / np.sqrt(64 * (group["hess"][:32].numpy() + 1e-3))
    np.testing.assert_allclose(post.tensors["fc1.weight"].scale.reshape(-1), expected, rtol=1e-5)
    np.testing.assert_array_equal(post.tensors["fc1.weight"].loc, net.fc1.weight.detach().numpy())
    # the same posterior as a plain pair of state dicts on disk
    means = {n: p.detach() for n, p in net.named_parameters()}
    variances = {n: torch.tensor(post.tensors[n].scale) ** 2 for n in post.names}
    torch.save({"mean": means, "variance": variances}, tmp_path / "mv.pt")
    again = read_posterior(tmp_path / "mv.pt")
    np.testing.assert_allclose(again.tensors["fc2.bias"].scale, post.tensors["fc2.bias"].scale, rtol=1e-5)
    bnncompress.pack(tmp_path / "mv.pt", tmp_path / "mv.bnc", bits=4)
    bnncompress.load(tmp_path / "mv.bnc").load_into(Net())


def _ivon_trained(net, **options):
    ivon = pytest.importorskip("ivon")
    torch.manual_seed(0)
    opt = ivon.IVON([p for p in net.parameters() if p.requires_grad], lr=0.05, ess=64, **options)
    x = torch.randn(32, net[0].in_features if isinstance(net, torch.nn.Sequential) else 4)
    for _ in range(3):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
        opt.step()
    return opt


def test_ivon_posterior_inside_sampled_params_is_refused_not_packed_from_the_sample():
    net = Net()
    opt = _ivon_trained(net)
    means = net.fc1.weight.detach().clone()
    with opt.sampled_params():  # the parameters hold a draw; the means are only in ivon's generator
        assert not torch.equal(net.fc1.weight, means)
        with pytest.raises(PosteriorError, match=r"inside optimizer.sampled_params\(\)"):
            bnncompress.ivon_posterior(net, opt)
    post = bnncompress.ivon_posterior(net, opt)  # after the block: the means
    np.testing.assert_array_equal(post.tensors["fc1.weight"].loc, means.numpy())

    class Logged(type(opt)):  # a subclass with its own sampled_params around ivon's
        @contextlib.contextmanager
        def sampled_params(self, train=False):
            with super().sampled_params(train):
                yield

    opt.__class__ = Logged
    with opt.sampled_params(), pytest.raises(PosteriorError, match="sampled_params"):
        bnncompress.ivon_posterior(net, opt)


def test_ivon_posterior_names_the_parameters_and_buffers_it_leaves_out():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    net[2].requires_grad_(False)  # a frozen head, left out of the optimizer
    post = bnncompress.ivon_posterior(net, _ivon_trained(net))
    assert post.names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert any("not packed" in w and "2.weight, 2.bias" in w for w in post.warnings), post.warnings
    assert any("buffers" in w and "1.running_mean, 1.running_var" in w for w in post.warnings), post.warnings


def test_ivon_scales_of_low_precision_parameters_are_computed_in_float64():
    ivon = pytest.importorskip("ivon")
    net = torch.nn.Linear(4, 3).half()
    opt = ivon.IVON(net.parameters(), lr=0.1, ess=1e5)  # ess * hess overflows float16 (65504)
    group = opt.param_groups[0]
    exact = 1 / np.sqrt(1e5 * (group["hess"].double().numpy() + group["weight_decay"]))
    post = bnncompress.ivon_posterior(net, opt)
    np.testing.assert_allclose(post.tensors["weight"].scale.reshape(-1), exact[:12], rtol=1e-6)
    assert post.tensors["weight"].dtype == "float16"


@pytest.mark.parametrize("guide_class", ["AutoRegressiveMessenger", "AutoNormal"])
def test_a_messenger_guides_store_read_as_autonormal_says_its_values_may_be_wrong(tmp_path, guide_class):
    from pyro.infer import autoguide

    def model():
        pyro.sample("a", dist.Normal(3.0, 2.0).expand([3]).to_event(1))

    class Wrapper(PyroModule):  # a module holding its guide: the store's keys are guide.locs.a, guide.scales.a
        def __init__(self):
            super().__init__()
            self.guide = getattr(autoguide, guide_class)(model)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    wrapper = Wrapper()
    svi = SVI(model, wrapper.guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(5):
        svi.step()
    assert sorted(pyro.get_param_store().keys()) == ["guide.locs.a", "guide.scales.a"]
    pyro.get_param_store().save(tmp_path / "store.pt")
    warned = [w for w in read_posterior(tmp_path / "store.pt").warnings if "AutoRegressiveMessenger" in w]
    assert len(warned) == (guide_class != "AutoNormal"), warned


def test_load_into_reports_mismatches(tmp_path):
    rng = np.random.default_rng(0)
    post = {
        "fc1.weight": (rng.normal(size=(8, 4)), np.full((8, 4), 0.1)),
        "fc1.bias": (rng.normal(size=8), np.full(8, 0.1)),
        "extra": (rng.normal(size=3), np.full(3, 0.1)),
    }
    bnncompress.pack(post, tmp_path / "m.bnc", lam=0.01)
    a = bnncompress.load(tmp_path / "m.bnc")
    with pytest.raises(
        ModelMismatchError, match=r"missing from the archive: fc2.bias, fc2.weight.*not in the module: extra"
    ):
        a.load_into(Net())
    net = a.load_into(Net(), strict=False)
    np.testing.assert_array_equal(net.fc1.bias.detach().numpy(), a["fc1.bias"])
    wrong = Net()
    wrong.fc1 = torch.nn.Linear(5, 8)
    with pytest.raises(ModelMismatchError, match=r"fc1.weight: archive \(8, 4\) vs module \(8, 5\)"):
        a.load_into(wrong, strict=False)


def test_mean_variance_errors(tmp_path):
    torch.save({"mean": {"a": torch.zeros(2)}, "variance": {"b": torch.ones(2)}}, tmp_path / "x.pt")
    with pytest.raises(PosteriorError, match="same tensor names"):
        read_posterior(tmp_path / "x.pt")
    torch.save({"mean": {"a": torch.zeros(2)}, "variance": {"a": -torch.ones(2)}}, tmp_path / "y.pt")
    with pytest.raises(PosteriorError, match="negative"):
        read_posterior(tmp_path / "y.pt")


def test_multivariate_normal_files_use_marginal_scales(tmp_path):
    from pyro.infer.autoguide import AutoMultivariateNormal

    _, guide = _train(AutoMultivariateNormal)
    pyro.get_param_store().save(tmp_path / "mvn_store.pt")
    torch.save(guide.state_dict(), tmp_path / "mvn_sd.pt")
    expected = guide.get_posterior().variance.sqrt().detach().numpy()
    for path in ("mvn_store.pt", "mvn_sd.pt"):
        post = read_posterior(tmp_path / path)
        np.testing.assert_allclose(post.tensors["latent"].scale, expected, rtol=1e-5)
        assert any("not mean-field" in w for w in post.warnings)


def test_guide_list_and_stray_params(tmp_path):
    from pyro.infer.autoguide import AutoGuideList
    from pyro.infer.autoguide.initialization import init_to_median

    pyro.clear_param_store()
    model = BayesNet()
    guide = AutoGuideList(model)
    guide.append(AutoNormal(pyro.poutine.block(model, expose=["fc1.weight", "fc1.bias"])))
    guide.append(
        AutoDiagonalNormal(pyro.poutine.block(model, hide=["fc1.weight", "fc1.bias"]), init_loc_fn=init_to_median)
    )
    guide(torch.randn(4, 4), torch.randint(0, 3, (4,)))
    pyro.param("noise.loc", torch.tensor(0.5))
    pyro.param("noise.scale", torch.tensor(1.0))
    pyro.get_param_store().save(tmp_path / "list.pt")
    post = read_posterior(tmp_path / "list.pt")
    assert sorted(post.names) == ["fc1.bias", "fc1.weight", "latent"]
    assert post.tensors["latent"].shape == (8 * 3 + 3,)
    assert any("ignored 2 parameter(s)" in w and "noise.loc" in w for w in post.warnings)


def test_load_into_prefix_uses_only_prefixed_names(tmp_path):
    rng = np.random.default_rng(0)
    post = {
        "net.weight": (rng.normal(size=(3, 2)), np.full((3, 2), 0.1)),
        "weight": (rng.normal(size=(3, 2)), np.full((3, 2), 0.1)),
        "net.bias": (rng.normal(size=3), np.full(3, 0.1)),
    }
    bnncompress.pack(post, tmp_path / "p.bnc", lam=0.01)
    a = bnncompress.load(tmp_path / "p.bnc")
    with pytest.raises(ModelMismatchError, match="not in the module: weight"):
        a.load_into(torch.nn.Linear(2, 3), prefix="net.")
    layer = a.load_into(torch.nn.Linear(2, 3), prefix="net.", strict=False)
    np.testing.assert_array_equal(layer.weight.detach().numpy(), a["net.weight"].astype(np.float32))


def test_a_guide_state_dict_names_its_guide(tmp_path):
    # A multivariate normal guide's state dict, packed without the model, was said to be an AutoDiagonalNormal's.
    from pyro.infer.autoguide import AutoMultivariateNormal

    def tiny():
        pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    pyro.clear_param_store()
    guide = AutoMultivariateNormal(tiny)
    guide()
    torch.save(guide.state_dict(), tmp_path / "sd.pt")
    post = read_posterior(tmp_path / "sd.pt")
    assert any(w.startswith("AutoMultivariateNormal posterior read without its model") for w in post.warnings)
