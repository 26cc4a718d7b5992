"""Decode paths at their edges, each one a change the rest of the suite let through (mutation hunt):
softplus above 10, per-row bounds across several blocks, duplicate tensor names, a search of every
row but the inputs, one value of a 1-D tensor, an upper-case .BIN and bfloat16's rounding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoNormal

import bnncompress
from bnncompress.rowaccess import RowReader

from .forging import rewrite_manifest


def _guide(model, **options):
    pyro.clear_param_store()
    guide = AutoNormal(model, **options)
    guide()
    return guide


def test_softplus_sites_load_as_torchs_softplus_up_to_its_threshold(tmp_path):
    def model():
        pyro.sample("s", dist.ImproperUniform(constraints.softplus_positive, (), (400,)))

    guide = _guide(model, init_loc_fn=lambda site: torch.ones(400))  # (ImproperUniform draws nothing)
    with torch.no_grad():  # unconstrained: below 10, between 10 and 20, above 20
        pyro.param("AutoNormal.locs.s").copy_(torch.linspace(-5.0, 30.0, 400))
    bnncompress.pack(guide, tmp_path / "s.bnc", lam=0.1)
    a = bnncompress.load(tmp_path / "s.bnc")
    stored = RowReader(a.record("s")).all().astype(np.float64)  # (evaluated in float64, FORMAT.md's threshold 20)
    expected = torch.nn.functional.softplus(torch.from_numpy(stored)).numpy().astype(np.float32)
    np.testing.assert_array_equal(a["s"], expected)


def test_per_row_bounds_apply_to_the_rows_of_every_streamed_block(tmp_path):
    n, d = 20000, 8
    low = torch.arange(n, dtype=torch.float32).reshape(n, 1) * 10.0

    def model():
        pyro.sample("w", dist.Uniform(low, low + 1.0).expand([n, d]).to_event(2))

    bnncompress.pack(_guide(model), tmp_path / "r.bnc", lam=0.1)
    a = bnncompress.load(tmp_path / "r.bnc")
    assert a.record("w").num_blocks > 1
    served = np.concatenate([rows for _, rows in a.served_rows("w").blocks()])
    np.testing.assert_array_equal(served, a["w"])  # (row 8192 of the second block was served as row 0's)


def test_two_tensors_of_one_name_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.bnc"
    bnncompress.pack(
        {
            "a": (rng.normal(size=(50, 4)), np.full((50, 4), 0.05)),
            "b": (rng.normal(size=(50, 4)) + 5, np.full((50, 4), 0.05)),
        },
        path,
        lam=0.1,
    )
    b = dataclasses.replace(bnncompress.load(path).record("b"), name="a")

    def rename(manifest):  # the second tensor called "a", its checksum recomputed as a forger would
        manifest["tensors"][1]["name"] = "a"
        manifest["tensors"][1]["sha256"] = b.checksum()

    rewrite_manifest(path, rename)
    with pytest.raises(bnncompress.ArchiveError, match="share a name"):
        bnncompress.load(path)


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(300, 8)), np.full((300, 8), 0.05))
    bias = (rng.normal(size=300), np.full(300, 0.05))
    path = tmp_path / "t.bnc"
    bnncompress.pack({"word_vectors": vectors, "b": bias}, path, lam=0.1, vocab=[f"w{i}" for i in range(300)])
    return bnncompress.load(path)


def test_most_similar_can_return_every_row_but_its_inputs(small):
    found = small.most_similar(["w0"], topn=9, restrict_vocab=10)
    assert sorted(w for w, _ in found) == sorted(f"w{i}" for i in range(1, 10))


def test_one_value_of_a_1d_tensor_is_a_numpy_scalar_and_an_upper_case_bin_is_binary(small, tmp_path):
    value = small.rows("b", 3)
    assert isinstance(value, np.floating) and value == small["b"][3]
    small.export(tmp_path / "VECTORS.BIN", tensor="word_vectors")
    assert b"w0 " in (head := (tmp_path / "VECTORS.BIN").read_bytes()[:40]) and not head[10:].isascii()


def test_bfloat16_values_round_as_torchs_cast_of_the_decoded_float32(tmp_path):
    rng = np.random.default_rng(0)
    loc = torch.tensor(rng.normal(size=(300, 8))).to(torch.bfloat16)
    bnncompress.pack({"w": (loc, torch.full((300, 8), 0.05).to(torch.bfloat16))}, tmp_path / "b.bnc", lam=0.1)
    a = bnncompress.load(tmp_path / "b.bnc")
    decoded = torch.from_numpy(RowReader(a.record("w")).all().astype(np.float32).reshape(300, 8))
    np.testing.assert_array_equal(a["w"], decoded.to(torch.bfloat16).float().numpy())  # an oracle of its own
