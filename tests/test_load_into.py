"""load_into and the served embedding in torch code (the second torch hunt): a PyroModule's fixed weights
take the model's dtype and device, a module that cannot be written is refused before any copy, tied
parameters get one value, mismatches name a wrapper's prefix, and torch.func / torch.jit are handled."""

from __future__ import annotations

import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample

import bnncompress
from bnncompress.errors import ArgumentTypeError, ModelMismatchError, QualityWarning


def _pack(tmp_path, tensors, name="a.bnc"):
    posterior = {n: (v, np.full_like(v, 0.01)) for n, v in tensors.items()}
    return bnncompress.load(bnncompress.pack(posterior, tmp_path / name, method="float16").path)


class Regression(PyroModule):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.fc = PyroModule[torch.nn.Linear](4, 3).to(dtype)
        zero = torch.zeros((), dtype=dtype)
        self.fc.weight = PyroSample(dist.Normal(zero, 1.0).expand([3, 4]).to_event(2))
        self.fc.bias = PyroSample(dist.Normal(zero, 1.0).expand([3]).to_event(1))

    def forward(self, x):
        return self.fc(x)


def test_a_pyro_modules_fixed_weights_take_the_models_dtype(tmp_path):
    """An archive packed from numpy's float64 arrays made float64 buffers in a float32 model: forward failed
    ('mat1 and mat2 must have the same dtype'); a float64 model got float32 ones."""
    rng = np.random.default_rng(0)
    a = _pack(tmp_path, {"fc.weight": rng.normal(size=(3, 4)), "fc.bias": rng.normal(size=3)})
    for model, dtype in ((Regression(), torch.float32), (Regression(torch.float64), torch.float64)):
        model = a.load_into(model)
        assert model.fc.weight.dtype == dtype and model.fc.bias.dtype == dtype
        assert model(torch.randn(2, 4, dtype=dtype)).dtype == dtype
    model = Regression()
    del model.fc.bias
    model.fc.bias = torch.nn.Parameter(torch.zeros(3))  # a plain parameter beside the sampled weight
    model = a.load_into(model.double())  # .double() moves the module's tensors, not its priors
    assert model.fc.weight.dtype == torch.float64 and model(torch.randn(2, 4, dtype=torch.float64)).shape == (2, 3)
    with torch.inference_mode():  # buffers made under inference mode could not be saved for backward
        model = a.load_into(Regression())
    x = torch.randn(2, 4, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None


def test_parameters_made_in_inference_mode_are_refused_before_any_copy(tmp_path):
    """Layer 0 was loaded, then layer 1 raised torch's raw 'Inplace update to inference tensor'."""
    first = torch.nn.Linear(2, 2)
    with torch.inference_mode():
        second = torch.nn.Linear(2, 2)
    model = torch.nn.Sequential(first, second)
    a = _pack(tmp_path, {k: np.ones(tuple(v.shape)) for k, v in model.state_dict().items()})
    before = first.weight.detach().clone()
    with pytest.raises(ModelMismatchError, match="1.weight was made under torch.inference_mode"):
        a.load_into(model)
    assert torch.equal(first.weight, before)


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False)
        self.dec.weight = self.enc.weight


def test_tied_parameters_given_two_values_are_refused(tmp_path):
    """The last one copied was kept, silently."""
    a = _pack(tmp_path, {"enc.weight": np.ones((3, 3)), "dec.weight": np.zeros((3, 3))})
    with pytest.raises(ModelMismatchError, match="tied parameters given different values: dec.weight and enc.weight"):
        a.load_into(Tied())
    same = _pack(tmp_path, {"enc.weight": np.ones((3, 3)), "dec.weight": np.ones((3, 3))}, "same.bnc")
    assert torch.equal(same.load_into(Tied()).dec.weight, torch.ones(3, 3))


def test_a_wrappers_prefix_is_named_and_long_lists_are_cut(tmp_path):
    layers = torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(30)))
    a = _pack(tmp_path, {k: v.numpy() for k, v in layers.state_dict().items()})
    wrapped = torch.nn.Module()
    wrapped.module = torch.nn.Sequential(*(torch.nn.Linear(2, 2) for _ in range(30)))  # as DataParallel names them
    with pytest.raises(ModelMismatchError, match="DataParallel: pass model.module") as caught:
        a.load_into(wrapped)
    assert len(str(caught.value)) < 1000 and "(50 more)" in str(caught.value)  # (was every name: 21,878 chars)
    with pytest.warns(QualityWarning, match=r"strict=False\) loaded nothing"):  # (was silent)
        a.load_into(wrapped, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a.load_into(wrapped.module, strict=False)
    before = wrapped.module[0].weight.detach().clone()
    with pytest.warns(QualityWarning, match="no archive tensor's name starts with the prefix 'nett.'"):  # (was silent:
        a.load_into(wrapped.module, strict=False, prefix="nett.")  # a mistyped prefix left every weight as it was)
    assert torch.equal(wrapped.module[0].weight, before)


def test_the_compressed_embedding_under_torch_func_and_jit(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    a = _pack(tmp_path, {"emb": vectors})
    emb, ids = a.embedding("emb"), torch.tensor([3, 17])
    grad = torch.func.grad(lambda w: (emb(ids) @ w).sum())(torch.zeros(5))  # was "doesn't have storage"
    assert torch.allclose(grad, torch.from_numpy(a["emb"][[3, 17]].sum(0)))
    with pytest.raises(ArgumentTypeError, match="torch.jit.script cannot compile the compressed lookup"):
        torch.jit.script(emb)


def test_pack_takes_a_torch_device(tmp_path):
    w = np.zeros((10, 4), np.float32)
    r = bnncompress.pack({"w": (w, w + 0.1)}, tmp_path / "d.bnc", lam=0.1, device=torch.device("cpu"))
    assert r.num_weights == 40


# ----------------------------------------------------------------------------- the modules hunt (stop 45)


def _site_layer(i, o):
    layer = PyroModule[torch.nn.Linear](i, o)
    layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([o, i]).to_event(2))
    layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand([o]).to_event(1))
    return layer


class Siamese(PyroModule):
    """One encoder under two names: Pyro samples its sites as right.* (its last name)."""

    def __init__(self, name=""):
        super().__init__(name)
        shared = _site_layer(3, 3)
        self.left, self.right, self.head = shared, shared, _site_layer(3, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.left(x)) * torch.tanh(self.right(x)))


def _traced(model, x):
    import pyro

    with pyro.poutine.trace() as tracer:
        model(x)
    return [n for n, s in tracer.trace.nodes.items() if s["type"] == "sample"]


def test_a_layer_shared_under_two_names_and_a_named_root_load(tmp_path):
    """load_into found a PyroModule's sites by module path only: a layer used under two names (a siamese net) was
    refused ("missing from the archive: left.*" though the archive holds it as right.*, Pyro's name for it; with
    strict=False it went on sampling), and a root PyroModule(name="bnn") (TyXe names its net) missed every site;
    after a load with prefix="bnn.", condition() said every tensor conditioned nothing."""
    rng = np.random.default_rng(0)
    x = torch.randn(4, 3)
    shapes = {"right.weight": (3, 3), "right.bias": (3,), "head.weight": (1, 3), "head.bias": (1,)}
    for root in ("", "bnn"):
        named = {f"{root}.{n}" if root else n: shape for n, shape in shapes.items()}
        assert sorted(_traced(Siamese(root), x)) == sorted(named)
        a = _pack(tmp_path, {n: rng.normal(size=shape) for n, shape in named.items()}, f"siamese{root}.bnc")
        for prefix in ("", f"{root}." if root else ""):
            model = a.load_into(Siamese(root), prefix=prefix)
            assert torch.equal(model.left.weight, a.tensor(next(n for n in named if n.endswith("right.weight"))))
            assert torch.equal(model(x), model(x))  # (deterministic: nothing sampled)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # (no "conditioned nothing": the loaded sites are the model's)
                a.condition(model)(x)


class MetaNet(PyroModule):
    def __init__(self):
        super().__init__()
        self.fc = PyroModule[torch.nn.Linear](3, 2)  # (its bias stays an nn.Parameter: a Pyro param)
        self.fc.weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))


def test_a_site_on_the_meta_device_and_a_shared_value_parameter_are_refused_before_any_copy(tmp_path):
    """A PyroModule built on the meta device took its site as a meta buffer, silently: the values were lost (garbage
    after to_empty). An expanded parameter (one value shared by its elements) failed with torch's RuntimeError
    after the layers before it were overwritten."""
    rng = np.random.default_rng(1)
    a = _pack(tmp_path, {"fc.weight": rng.normal(size=(2, 3))})
    with pytest.raises(ModelMismatchError, match="fc.weight would be on the meta device.*to_empty"):
        a.load_into(MetaNet().to("meta"))
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    b = _pack(tmp_path, {n: np.ones(tuple(p.shape)) for n, p in net.named_parameters()}, "b.bnc")
    net[2].bias = torch.nn.Parameter(torch.zeros(1).expand(2))
    before = net[0].weight.detach().clone()
    with pytest.raises(ModelMismatchError, match="2.bias shares one value"):
        b.load_into(net)
    assert torch.equal(net[0].weight, before)


class Hierarchical(PyroModule[torch.nn.Linear]):
    def __init__(self):
        super().__init__(3, 2)
        self.tau = PyroSample(dist.LogNormal(0.0, 1.0))
        self.weight = PyroSample(lambda self: dist.Normal(0.0, self.tau).expand([2, 3]).to_event(2))
        self.bias = PyroSample(dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def test_load_into_keeps_the_callers_random_state(tmp_path):
    """Checking a hierarchical prior's shape sampled its scale from torch's global generator: a seeded script's
    later draws changed once load_into ran (pack keeps the random state)."""
    rng = np.random.default_rng(2)
    a = _pack(tmp_path, {"tau": np.ones(()), "weight": rng.normal(size=(2, 3)), "bias": rng.normal(size=2)})
    model = Hierarchical()  # (nn.Linear's init draws too)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a.load_into(model)
    assert torch.equal(torch.rand(3), expected)


def test_a_flat_latent_says_to_repack_with_the_model_and_condition_checks_after_a_call_that_failed(tmp_path):
    """An AutoDiagonalNormal store packed without its model is one tensor 'latent': load_into suggested a wrapper's
    prefix (into a PyroModule, nothing), and condition()'s check ran only on the first call, marked done before it
    ran: a first call that raised (a missing argument) meant no warning ever."""
    a = _pack(tmp_path, {"latent": np.zeros(16)})
    for module in (torch.nn.Sequential(torch.nn.Linear(3, 4)), Regression()):
        with pytest.raises(ModelMismatchError, match="flat 'latent'.*pack\\(path, model=model\\)"):
            a.load_into(module)
    conditioned = a.condition(Regression())
    with pytest.raises(TypeError):
        conditioned()  # (forgot x)
    with pytest.warns(QualityWarning, match="latent are not sample sites"):
        conditioned(torch.randn(2, 4))


def test_tensors_outside_the_prefix_are_said_to_be_left_to_a_pyro_model(tmp_path):
    """With prefix=, the archive's other tensors were dropped without the 'left to the model' warning a PyroModule
    gets for tensors that are not its attributes."""
    rng = np.random.default_rng(3)
    a = _pack(
        tmp_path, {"net.fc.weight": rng.normal(size=(3, 4)), "net.fc.bias": rng.normal(size=3), "sigma": np.ones(())}
    )
    with pytest.warns(QualityWarning, match=r"left archive tensor\(s\) sigma to the model"):
        a.load_into(Regression(), prefix="net.")


class _Inner(PyroModule):
    def __init__(self):
        super().__init__()
        self.fc = _site_layer(2, 2)

    def forward(self, x):
        return self.fc(x)


class _Named(PyroModule):
    """A root named "net" with a child named "net": Pyro samples root.fc as net.fc.* and root.net.fc as
    net.net.fc.*, so the module path of root.net.fc (net.fc.*) is the site name of root.fc."""

    def __init__(self):
        super().__init__("net")
        self.fc, self.net = _site_layer(2, 2), _Inner()

    def forward(self, x):
        return self.net(self.fc(x))


def test_site_names_come_before_module_paths(tmp_path):
    """An archive of exactly the model's sites was refused as 'tied parameters given different values' (strict=False
    too): a module path that is another site's name took that site's values. With prefix=, names are module paths."""
    rng = np.random.default_rng(4)
    names = _traced(_Named(), torch.randn(3, 2))
    assert names == ["net.fc.weight", "net.fc.bias", "net.net.fc.weight", "net.net.fc.bias"]
    a = _pack(tmp_path, {n: rng.normal(size=(2, 2) if n.endswith("weight") else 2) for n in names})
    for prefix in ("", "net."):
        model = a.load_into(_Named(), prefix=prefix)
        assert torch.equal(model.fc.weight, a.tensor("net.fc.weight"))
        assert torch.equal(model.net.fc.weight, a.tensor("net.net.fc.weight"))


def test_a_tensor_named_latent_among_others_gets_the_prefix_hint(tmp_path):
    """The flat-guide hint is for an archive that is one flat 'latent': a site named latent among a model's others
    under a forgotten prefix gets the prefix advice."""
    rng = np.random.default_rng(5)
    tensors = {
        "latent": rng.normal(size=4),
        "decoder.0.weight": rng.normal(size=(2, 4)),
        "decoder.0.bias": rng.normal(size=2),
    }
    with pytest.raises(ModelMismatchError, match="pass prefix="):
        _pack(tmp_path, tensors).load_into(torch.nn.Sequential(torch.nn.Linear(4, 2)))
