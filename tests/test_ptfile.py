"""Param stores written without torch (bnncompress/models/ptfile.py): what torch.load, Pyro's param
store and bnncompress read back, and a train command that never imports torch."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pyro
import pytest
import torch
from pyro.distributions import constraints as pc
from torch.distributions import constraints as tc

import bnncompress
from bnncompress.models import SkipGramConfig, param_store_state, read_corpus, train_skipgram
from bnncompress.models.ptfile import save_param_store
from bnncompress.models.skipgram import save_posterior

from .conftest import LEE


def _store():
    rng = np.random.default_rng(0)
    params = {
        "AutoNormal.locs.w": rng.normal(size=(50, 7)).astype(np.float32),
        "AutoNormal.scales.w": rng.normal(size=(50, 7)).astype(np.float32),
        "AutoNormal.locs.s": np.asarray(rng.normal(), np.float32),  # 0-d
        "AutoNormal.scales.s": np.zeros((), np.float32),
        "AutoNormal.locs.e": np.zeros((0, 3), np.float32),  # empty
        "AutoNormal.scales.e": np.zeros((0, 3), np.float32),
    }
    kinds = {k: "real" if ".locs." in k else "softplus_positive" for k in params}
    return params, kinds


@pytest.mark.parametrize("how", ["weights_only", "pickle", "mmap"])
def test_torch_loads_what_was_written_without_it(tmp_path, how):
    params, kinds = _store()
    vocab = [f"w{i}é" for i in range(2500)]  # more than one APPENDS batch, and non-ASCII
    save_param_store(tmp_path / "s.pt", params, kinds, vocab)
    kwargs = {"weights_only": how != "pickle", **({"mmap": True} if how == "mmap" else {})}
    with torch.serialization.safe_globals([tc._Real, pc._SoftplusPositive]):
        loaded = torch.load(tmp_path / "s.pt", **kwargs)
    assert loaded["vocab"] == vocab
    for name, array in params.items():
        tensor = loaded["params"][name]
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == array.shape
        np.testing.assert_array_equal(tensor.numpy(), array)
    for name, kind in kinds.items():
        expected = tc.real if kind == "real" else pc.softplus_positive
        assert type(loaded["constraints"][name]) is type(expected)
    assert loaded["constraints"]["AutoNormal.scales.w"].lower_bound == 0.0


def test_pyro_and_bnncompress_read_it_and_storages_are_aligned(tmp_path):
    params, kinds = _store()
    save_param_store(tmp_path / "s.pt", params, kinds)  # no vocab: Pyro's param store takes only these keys
    store = pyro.get_param_store()
    store.clear()
    store.load(tmp_path / "s.pt")
    scale = torch.nn.functional.softplus(torch.from_numpy(params["AutoNormal.scales.w"]))
    torch.testing.assert_close(store["AutoNormal.scales.w"], scale, rtol=0, atol=0)
    store.clear()
    with pytest.raises(bnncompress.PosteriorError, match="tensor 'e' is empty"):  # read, then refused as packing does
        bnncompress.read_posterior(tmp_path / "s.pt")
    for key in ("AutoNormal.locs.e", "AutoNormal.scales.e"):
        del params[key], kinds[key]
    save_param_store(tmp_path / "s.pt", params, kinds)
    posterior = bnncompress.read_posterior(tmp_path / "s.pt")
    np.testing.assert_array_equal(posterior.tensors["w"].loc, params["AutoNormal.locs.w"])
    with zipfile.ZipFile(tmp_path / "s.pt") as archive, open(tmp_path / "s.pt", "rb") as fh:
        for info in archive.infolist():
            fh.seek(info.header_offset)
            header = fh.read(30)
            start = info.header_offset + 30 + int.from_bytes(header[26:28], "little")
            start += int.from_bytes(header[28:30], "little")
            assert start % 64 == 0, info.filename  # as torch aligns them, for torch.load(mmap=True)


def test_a_trained_posterior_is_saved_as_torch_saved_it_and_train_never_imports_torch(tmp_path):
    result = train_skipgram(read_corpus(LEE)[:60], SkipGramConfig(dim=8, epochs=1, min_count=1, seed=0))
    save_posterior(tmp_path / "ours.pt", result)
    torch.save({**param_store_state(result), "vocab": list(result.vocab)}, tmp_path / "torch.pt")
    ours, theirs = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in ("ours", "torch"))
    assert ours["vocab"] == theirs["vocab"] and list(ours["params"]) == list(theirs["params"])
    assert all(torch.equal(ours["params"][k], theirs["params"][k]) for k in theirs["params"])
    assert [type(c) for c in ours["constraints"].values()] == [type(c) for c in theirs["constraints"].values()]
    code = (
        "import sys\nfrom bnncompress.cli import main\n"
        f"sys.argv = ['bnncompress', 'train', {str(LEE)!r}, '-o', {str(tmp_path / 'cli.pt')!r}, '--dim', '8', "
        "'--epochs', '1', '-q']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules, 'pyro' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert bnncompress.read_posterior(tmp_path / "cli.pt").tensors["word_vectors"].shape[1] == 8
