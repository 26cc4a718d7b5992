"""Posterior readers at their edges, each one a change the rest of the suite let through (mutation hunt):
Fortran-order .npy, bfloat16 safetensors, a low-rank guide's marginal scales, a tensor that is not a
loc/scale pair, byte-order marks and CRLF in vocabularies, per-row bounds of a 2-row tensor, the
dtype a posterior restores, an empty interval and the sigmoid's clip."""

from __future__ import annotations

import h5py
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoLowRankMultivariateNormal
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch
from torch.distributions import constraints, transform_to

import bnncompress
from bnncompress import ArchiveError, PosteriorError
from bnncompress.posterior import Posterior, TensorPosterior
from bnncompress.sources import read_posterior
from bnncompress.sources.safetensors import safetensors_vocab
from bnncompress.supports import apply_constraint, constrain, constraint_of


def test_a_fortran_order_npy_is_refused_not_read_scrambled(tmp_path):
    loc = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "w.loc.npy", np.asfortranarray(loc))
    np.save(tmp_path / "w.scale.npy", np.asfortranarray(loc + 1))
    with pytest.raises(PosteriorError, match="C order"):
        read_posterior(tmp_path)


def test_bfloat16_safetensors_read_as_their_values(tmp_path):
    loc = torch.tensor([[0.5, -1.25, 3.0]], dtype=torch.bfloat16)
    save_torch({"w.loc": loc, "w.scale": torch.full((1, 3), 0.125, dtype=torch.bfloat16)}, tmp_path / "b.safetensors")
    t = read_posterior(tmp_path / "b.safetensors").tensors["w"]
    assert t.dtype == "bfloat16" and np.asarray(t.loc).tolist() == [[0.5, -1.25, 3.0]]
    assert np.asarray(t.scale).tolist() == [[0.125] * 3]


def test_a_low_rank_guides_state_dict_gives_its_marginal_scales(tmp_path):
    def model():
        pyro.sample("w", dist.Normal(torch.zeros(6), 1.0).to_event(1))

    pyro.clear_param_store()
    guide = AutoLowRankMultivariateNormal(model, rank=2)
    guide()
    with torch.no_grad():  # (a generator of its own: the process's random state is left as it was)
        guide.cov_factor.copy_(torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))
    torch.save(guide.state_dict(), tmp_path / "g.pt")
    pyro.clear_param_store()
    got = np.asarray(read_posterior(tmp_path / "g.pt").tensors["latent"].scale, np.float64)
    np.testing.assert_allclose(got, guide.get_posterior().variance.sqrt().detach().numpy(), rtol=1e-5)


def test_a_safetensors_tensor_that_is_not_a_loc_scale_pair_is_not_dropped(tmp_path):
    pairs = {"w.loc": np.zeros((4, 3), np.float32), "w.scale": np.ones((4, 3), np.float32)}
    save_numpy({**pairs, "b": np.ones(3, np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(PosteriorError, match="'b'"):
        read_posterior(tmp_path / "x.safetensors")


def test_vocabularies_with_a_byte_order_mark_or_crlf_keep_their_words(tmp_path):
    (tmp_path / "vocab.txt").write_text("king\nqueen\nman\n", encoding="utf-8-sig")
    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(3, 4)), np.full((3, 4), 0.1))
    bnncompress.pack({"word_vectors": vectors}, tmp_path / "v.bnc", vocab=tmp_path / "vocab.txt", lam=0.01)
    assert bnncompress.load(tmp_path / "v.bnc").vocab == ["king", "queen", "man"]
    assert safetensors_vocab({"vocab": "king\r\nqueen\r\nman\r\n"}, "f.safetensors") == ["king", "queen", "man"]


def test_per_row_bounds_of_a_two_row_tensor_apply_to_a_row_served_alone():
    c = constraint_of({"constraint": "interval", "lower_bound": [[0.0], [10.0]], "upper_bound": [[1.0], [20.0]]}, "t")
    whole = apply_constraint(c, np.zeros((2, 3)), "t")
    alone = apply_constraint(c, np.zeros((1, 3)), "t", rows=np.array([1]), shape=(2, 3))
    np.testing.assert_array_equal(alone, whole[1:])


def test_the_dtype_a_posterior_restores(tmp_path):
    rng = np.random.default_rng(0)
    t = TensorPosterior(rng.normal(size=(50, 8)).astype(np.float32), np.full((50, 8), 0.1, np.float32), dtype="float16")
    bnncompress.pack(Posterior({"w": t}), tmp_path / "h.bnc", lam=0.01)
    assert bnncompress.load(tmp_path / "h.bnc")["w"].dtype == np.float16  # the caller's, not its arrays'
    np.save(tmp_path / "w.loc.npy", np.linspace(-1, 1, 12).reshape(4, 3))  # float64 means, float32 sds
    np.save(tmp_path / "w.scale.npy", np.full((4, 3), 0.1, np.float32))
    assert read_posterior(tmp_path).tensors["w"].dtype == "float64"
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["w/loc"] = np.linspace(-1, 1, 12, dtype=np.float16).reshape(4, 3)
        f["w/scale"] = np.full((4, 3), 0.1, np.float16)
    assert read_posterior(tmp_path / "p.h5").tensors["w"].dtype == "float16"


def test_an_empty_interval_is_refused_and_the_sigmoid_is_clipped_as_torchs():
    with pytest.raises(ArchiveError):
        constrain({"constraint": "interval", "lower_bound": 1.0, "upper_bound": 1.0}, np.array([-3.0, 0.0, 3.0]), "t")
    x = np.array([-800.0, 40.0])
    expected = transform_to(constraints.unit_interval)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(constrain({"constraint": "unit_interval"}, x, "t"), expected)


# ----------------------------------------------------------------------------- the arrays hunt (stop 45)


def test_big_endian_float64_means_get_the_float32_spacing_note(tmp_path):
    """'>f8' means in an .npy directory or HDF5 file never got the note that some posterior sds are below
    float32's spacing (the dtype test compared with np.float64, which a big-endian dtype is not)."""
    loc = (1e6 + np.random.default_rng(1).normal(size=(300, 8))).astype(">f8")  # (float32's spacing there: 0.0625)
    scale = np.full((300, 8), 1e-5, ">f8")
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "w.loc.npy", loc)
    np.save(tmp_path / "npy" / "w.scale.npy", scale)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["w/loc"], f["w/scale"] = loc, scale
    for source in (tmp_path / "npy", tmp_path / "p.h5"):
        result = bnncompress.pack(source, tmp_path / "o.bnc", lam=0.1, force=True)
        assert any("float64 means have posterior sds below float32's spacing" in w for w in result.warnings)


def test_state_dict_layouts_take_big_endian_and_reversed_arrays(tmp_path):
    """A guide state dict's, IVON's and bayesian-torch's arrays in another byte order or as a reversed view were
    refused as "'' is a ndarray, not an array of numbers" (torch takes neither; the message named no key)."""
    rng = np.random.default_rng(0)
    loc, raw = rng.normal(size=12), rng.normal(size=12)
    want = bnncompress.load(
        bnncompress.pack({"loc": loc, "scale_unconstrained": raw}, tmp_path / "a.bnc", lam=0.1).path
    )
    for form in (lambda a: a.astype(">f8"), lambda a: a[::-1].copy()[::-1]):
        got = bnncompress.pack(
            {"loc": form(loc), "scale_unconstrained": form(raw)}, tmp_path / "b.bnc", lam=0.1, force=True
        )
        assert np.array_equal(bnncompress.load(got.path)["latent"], want["latent"])


def test_hdf5_datasets_with_unwritten_chunks_or_no_dataspace_are_refused_in_one_line(tmp_path):
    """Chunks never written read as the fill value: gzip'd, they were packed as the posterior silently (uncompressed:
    refused, with a message about stored bytes); a dataset without a dataspace was 'damaged or truncated', with
    Python's int() error as the reason."""
    for compression in (None, "gzip"):
        with h5py.File(path := tmp_path / f"{compression}.h5", "w") as f:
            for name, fill in (("w/loc", 0.0), ("w/scale", 0.1)):
                d = f.create_dataset(name, (400, 8), "f4", chunks=(100, 8), fillvalue=fill, compression=compression)
                d[:200] = 0.5
        with pytest.raises(PosteriorError, match="2 of its 4 chunks never written"):
            bnncompress.pack(path, tmp_path / "o.bnc", lam=0.1)
    with h5py.File(path := tmp_path / "empty.h5", "w") as f:
        f["a/loc"], f["a/scale"] = np.zeros((4, 2), "f4"), np.ones((4, 2), "f4")
        f["b/loc"], f["b/scale"] = h5py.Empty("f4"), h5py.Empty("f4")
    with pytest.raises(PosteriorError, match="'b/loc' has no dataspace"):
        bnncompress.pack(path, tmp_path / "o.bnc", lam=0.1)


def test_float8_is_told_to_be_converted(tmp_path):
    loc = torch.zeros(4, 2).to(torch.float8_e4m3fn)
    with pytest.raises(PosteriorError, match="dtype float8_e4m3fn; convert it to float16 or float32"):
        bnncompress.pack({"w": (loc, torch.ones(4, 2))}, tmp_path / "o.bnc", lam=0.1)
