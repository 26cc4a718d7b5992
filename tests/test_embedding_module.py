"""The embedding module in a torch model as nn.Embedding would be used (a helper's hunt of the torch
integration): under torch.compile, on the meta device, converted to other dtypes, pickled after the
working directory changed; and an archive closed while another thread decodes keeps nothing."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress.errors import ArgumentTypeError
from bnncompress.rowaccess import RowReader


def test_a_compiled_model_looks_up_rows_that_are_not_cached(example):
    # dynamo traced the row cache's numpy code into torch ops: NotImplementedError on the first cache miss
    path, full = example
    model = torch.nn.Sequential(bnncompress.load(path).embedding(cache_rows=0), torch.nn.Flatten(0))
    compiled = torch.compile(model, backend="eager")
    for ids in ([3, 4, 7], [[9, 10], [3999, 0]]):
        assert np.array_equal(compiled(torch.tensor(ids)).numpy(), full[ids].reshape(-1))


def test_meta_ids_give_a_meta_tensor_and_sparse_ids_one_error(example):
    emb = bnncompress.load(example[0]).embedding()
    out = emb.to("meta")(torch.tensor([[1, 2]], device="meta"))  # (shape inference; it raised NotImplementedError)
    assert out.is_meta and out.shape == (1, 2, 50) and out.dtype == torch.float32
    with pytest.raises(ArgumentTypeError, match="dense tensor"):  # (TypeError: can't convert Sparse layout ...)
        emb(torch.tensor([[0, 1], [1, 0]]).to_sparse())
    with pytest.raises(ArgumentTypeError, match="integers"):
        emb(torch.tensor([1.0], device="meta"))


def test_the_module_follows_dtype_conversions_as_nn_embedding(example):
    path, full = example
    emb = bnncompress.load(path).embedding()
    ids = torch.tensor([5, 17])
    assert emb(ids).dtype == torch.float32  # (the model's .half() and .double() were ignored)
    for convert, dtype in ((torch.nn.Module.half, torch.float16), (torch.nn.Module.double, torch.float64)):
        out = convert(emb)(ids)
        assert out.dtype == dtype and torch.equal(out, torch.from_numpy(full[[5, 17]]).to(dtype))
    model = torch.nn.Sequential(emb, torch.nn.Linear(50, 2)).to(torch.bfloat16)
    assert model(ids).dtype == torch.bfloat16
    assert emb.float()(ids).dtype == torch.float32 and emb.state_dict() == {}


def test_an_embedding_pickles_the_file_it_was_opened_from(example, tmp_path, monkeypatch):
    # The embedding kept the path as given and made it absolute when it was made, after a chdir: pickling
    # it then named another directory's file ("does not exist", or another archive of that name).
    path, full = example
    monkeypatch.chdir(os.path.dirname(path))
    a = bnncompress.load(os.path.basename(path))
    monkeypatch.chdir(tmp_path)
    emb = pickle.loads(pickle.dumps(a.embedding()))
    assert np.array_equal(emb(torch.tensor([1, 2])).numpy(), full[[1, 2]])
    assert a.path == type(a.path)(os.path.basename(path))  # messages keep the path as the user gave it


def test_a_tensor_decoded_while_the_archive_closes_is_not_kept(example, monkeypatch):
    a = bnncompress.load(example[0])
    decode = RowReader.all

    def closed_meanwhile(self):  # another thread closes the archive while this one decodes
        values = decode(self)
        a.close()
        return values

    monkeypatch.setattr(RowReader, "all", closed_meanwhile)
    assert a["word_vectors"].shape == (4000, 50)
    assert a._cache == {} and a._readers == {}
    with pytest.raises(bnncompress.ArchiveError, match="closed"):
        a["word_vectors"]


def test_to_embedding_keeps_the_tensors_dtype(tmp_path):
    rng = np.random.default_rng(0)
    loc = torch.tensor(rng.normal(size=(40, 6)), dtype=torch.bfloat16)
    bnncompress.pack({"w": (loc, torch.full_like(loc, 0.01))}, tmp_path / "b.bnc", method="float16")
    a = bnncompress.load(tmp_path / "b.bnc")
    emb = a.to_embedding("w")
    assert emb.weight.dtype == torch.bfloat16 and torch.equal(emb.weight, a.tensor("w"))  # (it was float32)


def test_load_into_names_buffers_as_buffers(tmp_path):
    bn = torch.nn.BatchNorm1d(4)
    tensors = {"weight": np.ones(4), "bias": np.zeros(4), "running_mean": np.arange(4.0)}
    bnncompress.pack({n: (v, np.full(4, 0.01)) for n, v in tensors.items()}, tmp_path / "n.bnc", method="float16")
    with pytest.raises(bnncompress.ModelMismatchError, match=r"running_mean: buffers, not parameters"):
        bnncompress.load(tmp_path / "n.bnc").load_into(bn)


def test_ids_that_are_not_tensors_are_checked_as_vectors_checks_them(example):
    """A list went through torch.as_tensor: [True, 5] gave rows 1 and 5, 2**64 a raw ValueError, an object
    array of ints a raw TypeError; FX, vmap and torch.export failed with unrelated torch errors."""
    path, full = example
    emb = bnncompress.load(path).embedding()
    a = bnncompress.load(path)
    bool_items = ([torch.tensor(1), torch.tensor(True)], [np.array(True), 5], [[1, np.bool_(True)]])
    for ids in ([True, 5], [[1, True]], [[1, 2], [3]], *bool_items):  # 0-d bool tensors and arrays read as 1 too
        with pytest.raises(ArgumentTypeError, match="row ids must be integers"):
            emb(ids)
    for ids in bool_items[:2]:
        with pytest.raises(ArgumentTypeError, match="flat list of words or integer row ids"):
            a.vectors(ids)
    with pytest.raises(IndexError, match="out of range"):
        emb([2**64])
    assert np.array_equal(emb(np.array([[1, 2]], dtype=object)).numpy(), full[[[1, 2]]])
    assert np.array_equal(emb([[3, 4], [0, 3999]]).numpy(), full[[[3, 4], [0, 3999]]])
    model = torch.nn.Sequential(emb, torch.nn.Linear(full.shape[1], 2))
    for trace in (
        lambda: torch.fx.symbolic_trace(model),
        lambda: torch.func.vmap(emb)(torch.tensor([[1, 2], [3, 4]])),
        lambda: torch.export.export(model, (torch.tensor([1, 2]),)),
    ):
        with pytest.raises(ArgumentTypeError, match="cannot trace it"):
            trace()


def test_load_into_and_state_dict_are_cpu_values_under_a_default_device(example):
    """Under ``with torch.device("meta")`` load_into raised 'Cannot copy out of meta tensor' and state_dict()
    returned meta tensors: values lost without a word. A module's meta parameters the archive does not fill
    do not stop a strict=False load."""
    path, full = example
    archive = bnncompress.load(path)
    model = torch.nn.Module()
    model.vectors = torch.nn.Parameter(torch.zeros(full.shape))
    with torch.device("meta"):
        assert archive.state_dict()["word_vectors"].device.type == "cpu"
        archive.load_into(model, strict=False, prefix="word_")
    assert np.array_equal(model.vectors.detach().numpy(), full)
    model.vectors.data.zero_()
    model.head = torch.nn.Linear(3, 2, device="meta")
    archive.load_into(model, strict=False, prefix="word_")
    assert np.array_equal(model.vectors.detach().numpy(), full)
