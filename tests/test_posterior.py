import os
import pickle

import numpy as np
import pytest
import torch

from bnncompress import PosteriorError, read_posterior
from bnncompress.posterior import FLAT_LATENT_NAME, Posterior, make_tensor


def test_param_store_applies_constraints(trained):
    p = read_posterior(trained["paths"]["param_store"])
    guide = trained["guide"]
    assert p.names == ["word_vectors", "context_vectors"]
    np.testing.assert_allclose(p.tensors["word_vectors"].scale, guide.scales.word_vectors.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(p.tensors["word_vectors"].loc, guide.locs.word_vectors.detach().numpy())
    assert "AutoNormal" in p.source and p.vocab is None


def test_param_store_with_vocab(trained):
    p = read_posterior(trained["paths"]["with_vocab"])
    assert p.vocab == trained["vocab"]
    assert p.vocab_tensors == ["word_vectors", "context_vectors"]


def test_guide_state_dict_and_live_guide_agree(trained):
    a = read_posterior(trained["paths"]["state_dict"], vocab=trained["paths"]["vocab"])
    b = read_posterior(trained["guide"])
    c = read_posterior(trained["paths"]["param_store"])
    for name in c.names:
        np.testing.assert_allclose(a.tensors[name].scale, c.tensors[name].scale, rtol=1e-6)
        np.testing.assert_allclose(b.tensors[name].scale, c.tensors[name].scale, rtol=1e-6)
        np.testing.assert_array_equal(a.tensors[name].loc, c.tensors[name].loc)
    assert a.vocab == trained["vocab"]


def test_auto_diagonal_normal_file_is_flat_and_live_guide_is_split(diagonal_files):
    store = read_posterior(diagonal_files["store"])
    sd = read_posterior(diagonal_files["state_dict"])
    live = read_posterior(diagonal_files["guide"])
    assert store.names == sd.names == [FLAT_LATENT_NAME]
    assert store.tensors[FLAT_LATENT_NAME].shape == (4,)
    np.testing.assert_allclose(store.tensors[FLAT_LATENT_NAME].scale, sd.tensors[FLAT_LATENT_NAME].scale, rtol=1e-6)
    assert any("flat" in w for w in store.warnings)
    # the live guide knows its sites: w (3 weights) then b (a scalar), in the flat vector's order
    assert live.names == ["w", "b"] and live.tensors["w"].shape == (3,) and live.tensors["b"].shape == ()
    flat = store.tensors[FLAT_LATENT_NAME]
    np.testing.assert_allclose(live.tensors["w"].scale, flat.scale[:3], rtol=1e-6)
    np.testing.assert_allclose(live.tensors["b"].loc, flat.loc[3], rtol=1e-6)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_plain_dicts_in_pt_npz_safetensors(tmp_path, layout):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    loc, scale = rng.normal(size=(3, 4)).astype(np.float32), np.full((3, 4), 0.1, np.float32)
    vocab = ["a", "b", "c"]
    if layout == "nested":
        torch.save({"emb": {"loc": torch.tensor(loc), "scale": torch.tensor(scale)}, "vocab": vocab}, tmp_path / "p.pt")
    else:
        torch.save({"emb.loc": torch.tensor(loc), "emb.scale": torch.tensor(scale), "vocab": vocab}, tmp_path / "p.pt")
    np.savez(tmp_path / "p.npz", **{"emb.loc": loc, "emb.scale": scale, "vocab": np.array(vocab)})
    save_file(
        {"emb.loc": loc, "emb.scale": scale}, str(tmp_path / "p.safetensors"), metadata={"vocab": '["a","b","c"]'}
    )
    for name in ("p.pt", "p.npz", "p.safetensors"):
        # content decides, not the name
        os.rename(tmp_path / name, tmp_path / "posterior.bin")
        p = read_posterior(tmp_path / "posterior.bin")
        assert p.names == ["emb"] and p.vocab == vocab, name
        np.testing.assert_array_equal(p.tensors["emb"].loc, loc)


def test_python_pairs_and_dtype():
    p = read_posterior({"w": (torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64))})
    assert p.tensors["w"].dtype == "float64" and p.tensors["w"].loc.dtype == np.float32


@pytest.mark.parametrize(
    "loc, scale, message",
    [
        (np.array([0.0, np.nan]), np.ones(2), "NaN/inf"),
        (np.array([0.0, np.inf]), np.ones(2), "NaN/inf"),
        (np.zeros(2), np.array([1.0, 0.0]), "non-positive"),
        (np.zeros(2), np.array([1.0, -1.0]), "non-positive"),
        (np.zeros(2), np.array([1.0, np.nan]), "non-positive"),
        (np.zeros(2), np.ones(3), "shape"),
        (np.zeros(0), np.ones(0), "empty"),
        (np.zeros(2, dtype=np.int64), np.ones(2), "must be float16, float32 or float64"),
    ],
)
def test_bad_values_are_refused(loc, scale, message):
    with pytest.raises(PosteriorError, match=message):
        read_posterior({"w": (loc, scale)})


def test_vocab_must_fit_a_tensor(tmp_path):
    (tmp_path / "v.txt").write_text("a\nb\n")
    with pytest.raises(PosteriorError, match="no 2-D tensor has that many rows"):
        read_posterior({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, vocab=tmp_path / "v.txt")
    (tmp_path / "dup.txt").write_text("a\na\nb\n")
    with pytest.raises(PosteriorError, match="more than once"):
        read_posterior({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, vocab=tmp_path / "dup.txt")
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(PosteriorError, match="empty word"):
        read_posterior({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, vocab=tmp_path / "gap.txt")


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(PosteriorError, match="does not exist"):
        read_posterior(tmp_path / "nope.pt")
    (tmp_path / "x.pt").write_text("hello world, not a tensor file")
    with pytest.raises(PosteriorError, match="not a known posterior format"):
        read_posterior(tmp_path / "x.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    with pytest.raises(PosteriorError, match="corrupt or truncated"):
        read_posterior(tmp_path / "trunc.pt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("via", ["torch.save", "pickle"])
def test_malicious_pickle_never_runs(tmp_path, via):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"w.loc": torch.zeros(2), "w.scale": torch.ones(2), "x": _Exploit(marker)}
    if via == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(PosteriorError):
        read_posterior(path)
    assert not marker.exists()


def test_selecting_tensors_the_vocab_does_not_label():
    post = read_posterior(
        {"emb": (np.zeros((3, 2)), np.ones((3, 2))), "b": (np.zeros(4), np.ones(4))}, vocab=["a", "b", "c"]
    )
    kept = post.select(["b"])
    assert kept.vocab is None and any("not packed" in w for w in kept.warnings)
    with pytest.raises(PosteriorError, match="labels none of the selected tensors"):
        post.select(["b"], require_vocab=True)


def test_values_are_checked_for_the_tensors_a_pack_selects(tmp_path):
    """A Python dict, a read posterior and each tensor: bad values are refused where they are used (read_posterior,
    pack of that tensor, .loc), not where another tensor is."""
    import bnncompress

    good, bad = np.ones((30, 4)), np.ones((30, 4))
    bad[3, 1] = 0.0
    source = {"good": (good, good), "bad": (good, bad)}
    with pytest.raises(PosteriorError, match="scale of 'bad' has 1 NaN/inf or non-positive"):
        read_posterior(source)
    bnncompress.pack(source, tmp_path / "g.bnc", tensors=["good"], method="float16")
    np.testing.assert_array_equal(bnncompress.load(tmp_path / "g.bnc")["good"], good)
    with pytest.raises(PosteriorError, match="scale of 'bad'"):
        bnncompress.pack(source, tmp_path / "all.bnc", method="float16")
    assert not (tmp_path / "all.bnc").exists()
    from bnncompress.sources import open_posterior

    opened = open_posterior(source)  # (what pack opens: values not checked yet)
    with pytest.raises(PosteriorError, match="scale of 'bad'"):
        _ = opened.tensors["bad"].scale
    assert opened.tensors["good"].check() is opened.tensors["good"]
    built = Posterior({n: make_tensor(n, loc, scale, "built") for n, (loc, scale) in source.items()})  # (as ivon's)
    bnncompress.pack(built, tmp_path / "b.bnc", tensors=["good"], method="float16")
    np.testing.assert_array_equal(bnncompress.load(tmp_path / "b.bnc")["good"], good)


def test_a_built_posterior_keeps_the_note_on_float64_means_float32_cannot_hold(tmp_path):
    import bnncompress

    loc, scale = np.full((2000, 8), 1e4) + np.arange(8) * 1e-6, np.full((2000, 8), 1e-8)
    built = Posterior({"w": make_tensor("w", loc, scale, "built")})
    with pytest.warns(bnncompress.QualityWarning, match="float64 means have posterior sds below float32"):
        bnncompress.pack(built, tmp_path / "b.bnc", method="float16")
