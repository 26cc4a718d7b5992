"""Hostile and everyday posterior sources and pack arguments (issue 22, round 3): links out of a
posterior directory, pipes, byte-string vocabularies, two tensors with one name, and API misuse."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
import zipfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import bnncompress
from bnncompress import OptionError, PosteriorError, read_posterior, vocabulary

WORDS = ["king", "queen", "man", "woman", "paris", "rome"]


def _posterior(rows=6, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, dim)).astype(np.float32), rng.uniform(0.05, 0.5, (rows, dim)).astype(np.float32)


def _npy_directory(path: Path, vocab=True) -> Path:
    path.mkdir()
    loc, scale = _posterior()
    np.save(path / "w.loc.npy", loc)
    np.save(path / "w.scale.npy", scale)
    if vocab:
        (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return path


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text, text
    return text


# -- 1. links that leave a posterior directory ------------------------------------------------


@pytest.mark.parametrize("member", ["vocab.txt", "w.loc.npy", "w.scale.npy"])
def test_a_link_out_of_an_npy_directory_is_refused(tmp_path, member):
    posterior = _npy_directory(tmp_path / "post")
    outside = tmp_path / "outside" / member
    outside.parent.mkdir()
    os.replace(posterior / member, outside)  # the same bytes, now reached through a link out of the directory
    (posterior / member).symlink_to(outside)
    with pytest.raises(PosteriorError, match="symbolic link") as err:
        read_posterior(posterior)
    assert member in _one_line(err.value)
    with pytest.raises(PosteriorError, match="symbolic link"):
        bnncompress.pack(posterior, tmp_path / "out.bnc", lam=0.1)
    assert not (tmp_path / "out.bnc").exists()


def test_a_link_inside_an_npy_directory_is_followed(tmp_path):
    posterior = _npy_directory(tmp_path / "post")
    os.replace(posterior / "vocab.txt", posterior / "words.txt")
    (posterior / "vocab.txt").symlink_to("words.txt")
    assert read_posterior(posterior).vocab == WORDS


def test_a_dangling_or_looping_link_is_one_line(tmp_path):
    posterior = _npy_directory(tmp_path / "post", vocab=False)
    (posterior / "vocab.txt").symlink_to(posterior / "vocab.txt")
    with pytest.raises(PosteriorError, match="vocab.txt") as err:
        read_posterior(posterior)
    _one_line(err.value)


# -- 2. pipes and other files that are not regular: refused before they are opened -------------


def _refused_without_blocking(fifo: Path, call):
    """Run ``call`` in a thread; it must raise PosteriorError at once. If it blocks on the FIFO,
    unblock it by opening the write end (so the test fails instead of hanging)."""
    outcome: dict = {}

    def run():
        try:
            call()
            outcome["result"] = "returned"
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["result"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    blocked = thread.is_alive()
    if blocked:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees end of file
        thread.join(10)
    assert not blocked, f"reading {fifo.name} blocked"
    assert isinstance(outcome["result"], PosteriorError), outcome["result"]
    assert fifo.name in _one_line(outcome["result"])
    return outcome["result"]


@pytest.mark.parametrize("member", ["w.loc.npy", "w.scale.npy", "vocab.txt"])
def test_a_fifo_in_an_npy_directory_is_refused(tmp_path, member):
    posterior = _npy_directory(tmp_path / "post")
    (posterior / member).unlink()
    os.mkfifo(posterior / member)
    err = _refused_without_blocking(posterior / member, lambda: read_posterior(posterior))
    assert "not a regular file" in str(err)


def test_a_fifo_as_the_posterior_or_the_vocabulary_is_refused(tmp_path):
    os.mkfifo(tmp_path / "post.pt")
    _refused_without_blocking(tmp_path / "post.pt", lambda: bnncompress.pack(tmp_path / "post.pt", tmp_path / "o.bnc"))
    os.mkfifo(tmp_path / "words.txt")
    err = _refused_without_blocking(
        tmp_path / "words.txt",
        lambda: bnncompress.pack({"w": _posterior()}, tmp_path / "o.bnc", vocab=tmp_path / "words.txt"),
    )
    assert "not a regular file" in str(err)  # not "does not exist"


# -- 3. byte-string vocabularies are words, not their repr -----------------------------------


def test_an_npz_vocabulary_of_bytes_is_decoded(tmp_path):
    loc, scale = _posterior()
    np.savez(tmp_path / "p.npz", **{"w.loc": loc, "w.scale": scale}, vocab=np.array([w.encode() for w in WORDS]))
    assert np.load(tmp_path / "p.npz")["vocab"].dtype.kind == "S"
    assert read_posterior(tmp_path / "p.npz").vocab == WORDS


def test_pack_decodes_a_vocabulary_of_bytes(tmp_path):
    words = [w.encode() for w in WORDS[:-1]] + ["köln".encode()]
    bnncompress.pack({"w": _posterior()}, tmp_path / "a.bnc", vocab=words, lam=0.1)
    assert bnncompress.load(tmp_path / "a.bnc").vocab == WORDS[:-1] + ["köln"]


def test_a_torch_vocabulary_of_bytes_is_decoded(tmp_path):
    loc, scale = _posterior()
    torch.save(
        {"w": {"loc": torch.from_numpy(loc), "scale": torch.from_numpy(scale)}, "vocab": [w.encode() for w in WORDS]},
        tmp_path / "p.pt",
    )
    assert read_posterior(tmp_path / "p.pt").vocab == WORDS


@pytest.mark.parametrize(
    "vocab, error, match",
    [
        ([b"king", b"\xff\xfe", b"man", b"woman", b"paris", b"rome"], PosteriorError, "UTF-8"),
        ([1, 2, 3, 4, 5, 6], TypeError, "int"),
        ([None] * 6, TypeError, "NoneType"),
        (123, TypeError, "vocab"),
        (b"vocab.txt", TypeError, "vocab"),
        ({w: i for i, w in enumerate(WORDS)}, TypeError, "vocab"),  # a dict's order need not be its rows'
        (set(WORDS), TypeError, "vocab"),
        (WORDS[:-1], PosteriorError, "5 words"),  # one row too few
        (WORDS[:-1] + [""], PosteriorError, "empty word"),
        (WORDS[:-1] + ["king"], PosteriorError, "more than once"),
    ],
)
def test_a_bad_vocabulary_is_a_clear_error(tmp_path, vocab, error, match):
    with pytest.raises(error, match=match) as err:
        bnncompress.pack({"w": _posterior()}, tmp_path / "a.bnc", vocab=vocab, lam=0.1)
    assert isinstance(err.value, bnncompress.BnnCompressError)
    _one_line(err.value)


# -- 4. two stored tensors that map to one name --------------------------------------------


def test_a_torch_dict_with_one_name_twice_is_refused(tmp_path):
    loc, scale = map(torch.from_numpy, _posterior())
    torch.save({"w": {"loc": loc, "scale": scale}, "w.loc": loc * 2, "w.scale": scale}, tmp_path / "p.pt")
    with pytest.raises(PosteriorError, match="'w.loc' and 'w'|'w' and 'w.loc'") as err:
        read_posterior(tmp_path / "p.pt")
    _one_line(err.value)
    with pytest.raises(PosteriorError, match="both hold tensor 'w'"):
        read_posterior({"w": (loc, scale), "w.loc": loc, "w.scale": scale})


def test_a_param_store_with_one_site_twice_is_refused(tmp_path):
    loc, scale = map(torch.from_numpy, _posterior())
    params = {"AutoNormal.locs.w": loc, "AutoNormal.scales.w": scale, "TyXe.w.loc": loc * 2, "TyXe.w.scale": scale}
    torch.save({"params": params, "constraints": {}}, tmp_path / "store.pt")
    with pytest.raises(PosteriorError, match="'AutoNormal.locs.w' and 'TyXe.w.loc' both hold tensor 'w'"):
        read_posterior(tmp_path / "store.pt")


def test_a_bayesian_torch_dict_with_one_layer_twice_is_refused():
    loc, scale = map(torch.from_numpy, _posterior())
    sd = {"fc.mu_weight": loc, "fc.rho_weight": scale, "fc.mu_kernel": loc, "fc.rho_kernel": scale}
    with pytest.raises(PosteriorError, match="both hold tensor 'fc.weight'"):
        read_posterior(sd)


def test_hdf5_with_one_name_twice_is_refused(tmp_path):
    loc, scale = _posterior()
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["w/loc"], f["w/scale"], f["w.loc"] = loc, scale, loc * 2
    with pytest.raises(PosteriorError, match="'w.loc'") as err:
        read_posterior(tmp_path / "p.h5")
    assert "w/loc" in _one_line(err.value)


def test_an_npz_with_one_member_twice_is_refused(tmp_path):
    loc, scale = _posterior()
    np.savez(tmp_path / "p.npz", **{"w.loc": loc, "w.scale": scale})
    np.save(tmp_path / "other.npy", loc * 2)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(tmp_path / "p.npz", "a") as zf:
        zf.write(tmp_path / "other.npy", "w.loc.npy")
    with pytest.raises(PosteriorError, match="two arrays named 'w.loc.npy'"):
        read_posterior(tmp_path / "p.npz")


def test_a_safetensors_header_with_one_key_twice_is_refused(tmp_path):
    loc, _ = _posterior()
    entry = '{"dtype": "F32", "shape": [6, 4], "data_offsets": [0, 96]}'
    header = f'{{"w.loc": {entry}, "w.scale": {entry}, "w.loc": {entry}}}'.encode()
    path = tmp_path / "p.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + np.abs(loc).tobytes())
    assert json.loads(header)  # valid JSON: the last 'w.loc' would silently win
    with pytest.raises(PosteriorError, match="names 'w.loc' twice"):
        read_posterior(path)


# -- 5. a newline vocabulary whose first word starts with '[' --------------------------------


@pytest.mark.parametrize("first", ["[PAD]", "[", "[1, 2]", '["a"'])
def test_a_safetensors_newline_vocabulary_may_start_with_a_bracket(tmp_path, first):
    loc, scale = _posterior()
    words = [first] + WORDS[1:]
    save_file({"w.loc": loc, "w.scale": scale}, tmp_path / "p.safetensors", metadata={"vocab": "\n".join(words)})
    assert read_posterior(tmp_path / "p.safetensors").vocab == words
    save_file({"w.loc": loc, "w.scale": scale}, tmp_path / "j.safetensors", metadata={"vocab": json.dumps(words)})
    assert read_posterior(tmp_path / "j.safetensors").vocab == words  # a JSON list still is one


# -- 6, 7. pack's arguments: checked at the entry, before the source is read ------------------


class _Untouchable(Mapping):
    """A source that fails the test if anything reads it."""

    def __getitem__(self, key):
        raise AssertionError("the source was read before the arguments were checked")

    def __iter__(self):
        raise AssertionError("the source was read before the arguments were checked")

    def __len__(self):
        raise AssertionError("the source was read before the arguments were checked")


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"options": "prune=0.1"}, TypeError, "options"),
        ({"options": {1: 2}}, TypeError, "options"),
        ({"vocab": 123}, TypeError, "vocab"),
        ({"output": 123}, TypeError, "output"),
        ({"progress": 5}, TypeError, "progress"),
        ({"method": 5}, OptionError, "method"),
        ({"tensors": 5}, TypeError, "tensors"),
        ({"tensors": "w"}, TypeError, "tensors"),
        ({"tensors": [b"w"]}, TypeError, "tensors"),
        ({"stream": "yes"}, TypeError, "stream"),
        ({"force": "no"}, TypeError, "force"),
        ({"lam": True}, TypeError, "lam"),
        ({"lam": "0.1"}, TypeError, "lam"),
        ({"bits": [2]}, TypeError, "bits"),
        ({"lam": 0}, OptionError, "lam"),
        ({"lam": 0.0, "method": "vbq"}, OptionError, "lam"),
        ({"lam": -1.0}, OptionError, "lam"),
        ({"lam": float("nan")}, OptionError, "lam"),
        ({"lam": float("inf")}, OptionError, "lam"),
        ({"bits": 0}, bnncompress.RateControlError, "rate"),
        ({"bits": float("nan")}, bnncompress.RateControlError, "rate"),
        ({"bits": -2.0}, bnncompress.RateControlError, "rate"),
        ({"device": "tpu"}, OptionError, "device"),
        ({"device": "cuda:x"}, OptionError, "device"),
        ({"workers": 0}, OptionError, "workers"),
    ],
)
def test_pack_checks_its_arguments_before_reading(tmp_path, kwargs, error, name):
    kwargs.setdefault("output", tmp_path / "out.bnc")
    with pytest.raises(error, match=name) as err:
        bnncompress.pack(_Untouchable(), **kwargs)
    assert isinstance(err.value, bnncompress.BnnCompressError), type(err.value)
    _one_line(err.value)
    assert not (tmp_path / "out.bnc").exists()


def test_lam_zero_is_refused_for_the_default_method_on_a_small_tensor_too(tmp_path):
    with pytest.raises(OptionError, match="lam"):
        bnncompress.pack({"w": _posterior()}, tmp_path / "a.bnc", lam=0)


def test_a_list_of_tensor_names_may_be_any_iterable(tmp_path):
    result = bnncompress.pack(
        {"w": _posterior(), "b": _posterior(3, 2)}, tmp_path / "a.bnc", tensors=iter(["w"]), lam=0.1
    )
    assert result.num_weights == len(WORDS) * 4


# -- 8. an explicit cuda without a GPU is an error for every method --------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("method", [None, "vbq", "uniform", "float16"])
def test_cuda_without_a_gpu_is_refused_for_every_method(tmp_path, method):
    with pytest.raises(OptionError, match="no CUDA GPU") as err:
        bnncompress.pack(_Untouchable(), tmp_path / "a.bnc", method=method, device="cuda")
    _one_line(err.value)
    result = bnncompress.pack({"w": _posterior()}, tmp_path / "a.bnc", method=method, device="auto")
    assert result.num_weights == len(WORDS) * 4  # auto falls back to the CPU


# The streaming hunt's second pass (stop 37).


def test_a_constant_scale_gzipped_past_1024x_is_read(tmp_path):
    """Deflate reaches about 1032:1 on a constant tensor (an untrained scale still at its initial value);
    the 1024x bound refused the file as 'declares 8,000,000 bytes but only 7,808 are stored'."""
    path = tmp_path / "const.h5"
    with h5py.File(path, "w") as f:
        f["w/loc"] = np.random.default_rng(0).normal(size=(4000, 500)).astype(np.float32)
        scale = np.full((4000, 500), 0.1, np.float32)
        f.create_dataset("w/scale", data=scale, compression="gzip", shuffle=True, chunks=(2000, 500))
        assert 4000 * 500 * 4 > 1024 * f["w/scale"].id.get_storage_size()
    assert read_posterior(path).tensors["w"].scale.max() == np.float32(0.1)


def test_an_hdf5_file_locked_by_its_writer_is_said_to_be_open_elsewhere(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "locked.h5"
    with h5py.File(path, "w") as f:
        f["w/loc"], f["w/scale"] = np.zeros((10, 3), np.float32), np.ones((10, 3), np.float32)
    script = f"import h5py, sys; f = h5py.File({str(path)!r}, 'a'); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(PosteriorError, match="open for writing in another process"):  # said: damaged
            read_posterior(path)
    finally:
        holder.communicate(b"", timeout=30)


def test_the_distinct_row_estimate_is_at_most_the_row_count():
    from bnncompress.tasks import SKETCH, distinct

    hashes = np.arange(1, SKETCH + 1, dtype=np.uint64) << np.uint64(40)  # an estimate above 200,001 rows
    assert distinct(hashes, 10**12) > 200_001 and distinct(hashes, 200_001) == 200_001


# The sources hunt's second pass (stop 37).


def test_tensors_named_mean_and_variance_in_a_plain_dict_keep_their_names(tmp_path):
    """They were read as an IVON mean/variance state dict: tensors 'loc' and 'scale', each the sqrt
    of the other's values."""
    rng = np.random.default_rng(0)
    d = {
        n: {"loc": torch.tensor(rng.normal(size=3)), "scale": torch.full((3,), s)}
        for n, s in (("mean", 0.1), ("variance", 0.2))
    }
    torch.save(d, tmp_path / "mv.pt")
    p = read_posterior(tmp_path / "mv.pt")
    assert p.names == ["mean", "variance"]
    np.testing.assert_allclose(p.tensors["variance"].scale, 0.2, rtol=1e-6)
    np.testing.assert_allclose(p.tensors["mean"].loc, d["mean"]["loc"].numpy(), rtol=1e-6)


def test_a_continuous_guide_nested_in_pyro_modules_is_read_as_one(tmp_path):
    """outer.inner.guide.loc / .scale / .scale_tril was read as a TyXe site 'inner.guide' whose scale
    was the raw 'scale' parameter (up to 2.7x too small), the correlation dropped without a word."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoMultivariateNormal
    from pyro.nn import PyroModule

    def model():
        pyro.sample("w", dist.Normal(torch.zeros(6), 1.0).to_event(1))

    class Inner(PyroModule):
        def __init__(self):
            super().__init__()
            self.guide = AutoMultivariateNormal(model)

    class Outer(PyroModule):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

    pyro.clear_param_store()
    torch.manual_seed(0)
    outer = Outer()
    outer.inner.guide()
    with torch.no_grad():
        for _, param in outer.named_parameters():
            param.copy_(torch.randn_like(param))
    sd = outer.inner.guide.get_posterior().variance.sqrt().detach().numpy()
    pyro.get_param_store().save(tmp_path / "nested.pt")
    pyro.clear_param_store()
    p = read_posterior(tmp_path / "nested.pt")
    assert p.names == ["latent"] and any("is not mean-field" in w for w in p.warnings)
    np.testing.assert_allclose(p.tensors["latent"].scale, sd, rtol=1e-5)


def test_a_bayesian_torch_state_dict_names_the_tensors_it_does_not_pack(tmp_path):
    """A BatchNorm between two mu/rho layers was dropped without a word."""
    rng = np.random.default_rng(0)
    sd = {
        "fc.mu_weight": torch.tensor(rng.normal(size=(3, 2))),
        "fc.rho_weight": torch.full((3, 2), -3.0),
        "fc.prior_weight_mu": torch.zeros(3, 2),
        "bn.weight": torch.ones(3),
        "bn.running_mean": torch.zeros(3),
    }
    torch.save(sd, tmp_path / "bt.pt")
    p = read_posterior(tmp_path / "bt.pt")
    assert p.names == ["fc.weight"]
    assert any("bn.weight, bn.running_mean" in w and "mu/rho" in w for w in p.warnings), p.warnings


def test_an_npy_scale_without_its_loc_is_refused(tmp_path):
    for name in ("w.loc", "w.scale", "b.scale"):  # an incomplete copy: 'b' was dropped silently
        np.save(tmp_path / f"{name}.npy", np.ones((4, 3), np.float32))
    with pytest.raises(PosteriorError, match="'b.scale.npy' has no matching '.loc.npy'"):
        read_posterior(tmp_path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"fc.mu_weight": {"loc": torch.ones(2), "scale": torch.ones(2)}, "fc.rho_weight": {"a": 1}}, "is a dict"),
        ({"mean": {"a": torch.ones(2)}, "variance": {"a": {"x": 1}}}, "is a dict"),
        ({"mean": {0: torch.ones(2)}, "variance": {0: torch.ones(2)}}, "keys must be tensor names"),
    ],
)
def test_values_that_are_no_arrays_on_the_state_dict_paths_are_one_error(tmp_path, obj, message):
    torch.save(obj, tmp_path / "x.pt")  # (raw TypeErrors, or a 'damaged archive' after the quantizing)
    with pytest.raises(PosteriorError, match=message):
        read_posterior(tmp_path / "x.pt")


def test_a_constraint_that_contains_itself_is_one_error_through_torchs_loader_too(tmp_path):
    from torch.distributions import constraints

    c = constraints.independent(constraints.real, 1)
    c.base_constraint = c
    params = {"AutoNormal.locs.w": torch.randn(4, 3).bfloat16(), "AutoNormal.scales.w": torch.rand(4, 3).bfloat16()}
    torch.save({"params": params, "constraints": {"AutoNormal.locs.w": c}}, tmp_path / "s.pt")  # bfloat16: torch.load
    with pytest.raises(PosteriorError, match="contains itself"):  # (a RecursionError before)
        read_posterior(tmp_path / "s.pt")


@pytest.mark.parametrize("word", ["a" * 1_000_000, b"a" * 1_000_000])
def test_a_vocabulary_repeating_one_long_word_is_refused_before_it_is_copied(tmp_path, word):
    # pickle's memo stores the word once: a 1 MB file of 100 references was joined into 100 MB before the
    # duplicate check (8 GB for a 10 MB word), and the one-line error quoted the whole word
    n = 100
    path = tmp_path / "bomb.pt"
    torch.save({"w.loc": torch.zeros(n, 4), "w.scale": torch.ones(n, 4), "vocab": [word] * n}, path)
    tracemalloc.start()
    try:
        with pytest.raises(PosteriorError, match="more than once") as caught:
            read_posterior(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30 << 20, f"{peak / 2**20:.0f} MiB for a {path.stat().st_size} byte file"
    assert len(str(caught.value)) < 300


def test_a_word_object_listed_many_times_is_checked_once(monkeypatch):
    # each listing of a repeated 2 MB word was scanned in full: a 2 MB file listing it 4,000 times took 41 s
    scanned = []
    pattern = vocabulary._CONTROL

    class Counting:
        def search(self, text):
            scanned.append(len(text))
            return pattern.search(text)

    monkeypatch.setattr(vocabulary, "_CONTROL", Counting())
    with pytest.raises(PosteriorError, match="more than once"):
        vocabulary.validate_words(vocabulary.decode_words(["a" * 100_000] * 1000 + ["b"], "vocab"), "vocab")
    assert len(scanned) <= 2, len(scanned)


# -- HDF5 files whose small bytes would read as far more (security hunt, second pass) --------


def _shared_descriptors(path: Path, offset: int, count: int) -> None:
    """Point ``count`` 16-byte variable-length descriptors stored at ``offset`` at the first one's heap object."""
    raw = bytearray(path.read_bytes())
    first = raw[offset : offset + 16]
    for i in range(1, count):
        raw[offset + 16 * i : offset + 16 * i + 16] = first
    path.write_bytes(bytes(raw))


def _traced_peak(function):
    tracemalloc.start()
    try:
        try:
            outcome = function()
        except Exception as exc:  # noqa: BLE001 - the outcome is checked by the caller
            outcome = exc
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


def test_an_hdf5_posterior_whose_format_attribute_is_an_array_is_read(tmp_path):
    loc, scale = _posterior()
    with h5py.File(tmp_path / "p.h5", "w") as f:  # (any tool may write a root attribute of that name)
        f["w/loc"], f["w/scale"] = loc, scale
        f.attrs["format"] = np.array([1, 2])
    assert np.array_equal(read_posterior(tmp_path / "p.h5").tensors["w"].loc, loc)  # was a ValueError traceback


def test_a_format_attribute_of_shared_strings_is_not_read(tmp_path, example):
    path = tmp_path / "bomb.bnc"
    path.write_bytes(example[0].read_bytes())
    count, big = 5000, 20_000  # (over 64 kB of descriptors: dense storage, which has no checksum)
    strings = np.array([b"x" * big] + [b"abc"] * (count - 1), dtype=object)
    with h5py.File(path, "r+", libver="latest") as f:
        del f.attrs["format"]
        f.attrs.create("format", strings, dtype=h5py.string_dtype("ascii"))
    raw = path.read_bytes()
    at = raw.find((big).to_bytes(4, "little"))
    while raw[at + 16 : at + 20] != (3).to_bytes(4, "little"):  # the first descriptor, then one of length 3
        at = raw.find((big).to_bytes(4, "little"), at + 1)
    _shared_descriptors(path, at, count)  # 5,000 strings of 20 kB from a file of 300 kB: 100 MB read
    assert not bnncompress.archive.is_archive(path)
    for read in (lambda: bnncompress.load(path), lambda: read_posterior(path)):
        peak, outcome = _traced_peak(read)
        assert isinstance(outcome, bnncompress.BnnCompressError), outcome
        assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB for a {path.stat().st_size} byte file"
    assert "not a bnncompress archive" in _one_line(_traced_peak(lambda: bnncompress.load(path))[1])


@pytest.mark.parametrize("shape", [(2000,), (1, 2000)])  # (a (1, N) vocabulary was read in one piece)
def test_an_hdf5_vocabulary_of_shared_strings_is_refused_before_it_is_copied(tmp_path, shape):
    path, count = tmp_path / "v.h5", 2000
    words = np.array(["x" * 50_000] + [f"w{i}" for i in range(1, count)], dtype=object).reshape(shape)
    with h5py.File(path, "w") as f:
        f["w/loc"], f["w/scale"] = np.zeros((count, 2), np.float32), np.full((count, 2), 0.1, np.float32)
        f.create_dataset("vocab", data=words, dtype=h5py.string_dtype())
        offset = f["vocab"].id.get_offset()
    _shared_descriptors(path, offset, count)  # 2,000 words of 50 kB from 100 kB: 100 MB read
    peak, outcome = _traced_peak(lambda: read_posterior(path))
    assert isinstance(outcome, PosteriorError) and "sharing their stored bytes" in _one_line(outcome), outcome
    assert peak < 80 << 20, f"{peak / 2**20:.0f} MiB for a {path.stat().st_size} byte file"


def test_hdf5_datasets_that_share_their_stored_bytes_are_refused(tmp_path):
    # datasets 1.. created but never written, their layout's address patched to dataset 0's data: each passes
    # its own size check (1.4 MB read as 52 M weights)
    path, tensors, m = tmp_path / "s.h5", 20, 10_000
    with h5py.File(path, "w") as f:  # (the earliest format: no metadata checksums to fix)
        first = f.create_dataset("t0/loc", data=np.full(m, 0.5, np.float32))
        for name in ["t0/scale"] + [f"t{i}/{x}" for i in range(1, tensors) for x in ("loc", "scale")]:
            f.create_dataset(name, shape=(m,), dtype="<f4")
        f.flush()
        address = first.id.get_offset()
    unset = b"\xff" * 8 + (4 * m).to_bytes(8, "little")
    raw = path.read_bytes()
    assert raw.count(unset) == 2 * tensors - 1
    path.write_bytes(raw.replace(unset, address.to_bytes(8, "little") + (4 * m).to_bytes(8, "little")))
    with pytest.raises(PosteriorError, match="datasets sharing their stored bytes"):
        read_posterior(path)


def test_hdf5_groups_nested_too_deep_are_refused_before_a_long_walk(tmp_path):
    loc, scale = _posterior()
    with h5py.File(tmp_path / "deep.h5", "w") as f:
        f["/".join(["g"] * 100) + "/loc"], f["/".join(["g"] * 100) + "/scale"] = loc, scale
        f["w/loc"], f["w/scale"] = loc, scale  # (a chain of 1,500 took h5py's own walk 16 s)
    with pytest.raises(PosteriorError, match="nested more than 64 deep"):
        read_posterior(tmp_path / "deep.h5")
    with h5py.File(tmp_path / "ok.h5", "w") as f:  # a few levels, and a group reached twice, are read as before:
        f["a/b/c/w/loc"], f["a/b/c/w/scale"] = loc, scale
        f["a/again"] = f["a/b"]
    assert read_posterior(tmp_path / "ok.h5").names == ["a/again/c/w", "a/b/c/w"]  # (read once, listed by each name)


def test_an_hdf5_posterior_with_damaged_object_metadata_is_one_error(tmp_path):
    path = tmp_path / "c.h5"
    loc, scale = _posterior()
    with h5py.File(path, "w", libver="latest") as f:  # (object headers with checksums)
        f["w/loc"], f["w/scale"] = loc, scale
        address = h5py.h5o.get_info(f["w/scale"].id).addr
    raw = bytearray(path.read_bytes())
    raw[address + 12] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(PosteriorError, match="cannot be read .*checksum.* it is damaged"):  # was h5py's KeyError
        read_posterior(path)


def test_an_hdf5_vocabulary_of_variable_length_numbers_is_refused_unread(tmp_path):
    with h5py.File(tmp_path / "n.h5", "w") as f:  # (the same element kind as strings: its length was not counted)
        f["w/loc"], f["w/scale"] = np.zeros((3, 2), np.float32), np.full((3, 2), 0.1, np.float32)
        vocab = f.create_dataset("vocab", (3,), dtype=h5py.vlen_dtype(np.uint8))
        vocab[...] = [np.arange(n, dtype=np.uint8) for n in (1, 2, 3)]
    with pytest.raises(PosteriorError, match="must hold strings, found variable-length uint8"):
        read_posterior(tmp_path / "n.h5")


def test_a_two_dimensional_variable_length_vocabulary_keeps_its_order(tmp_path):
    words = np.array([f"w{i}" for i in range(12)], dtype=object).reshape(3, 4)  # (read along its longest axis)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["w/loc"], f["w/scale"] = np.zeros((12, 2), np.float32), np.full((12, 2), 0.1, np.float32)
        f.create_dataset("vocab", data=words, dtype=h5py.string_dtype())
    assert read_posterior(tmp_path / "v.h5").vocab == [f"w{i}" for i in range(12)]


def test_one_hdf5_dataset_under_many_names_is_refused_but_tied_weights_are_read(tmp_path):
    # no forgery: gzip'd constants under 500 hard-linked names declare 4 GB (2,000 names: a 2.3 MB file read as
    # 2e9 weights); a dataset under two names (tied weights) is read, as before (counting every name refused it)
    loc, scale = np.zeros((100_000, 10), np.float32), np.full((100_000, 10), 0.1, np.float32)
    with h5py.File(tmp_path / "h.h5", "w") as f:
        f.create_dataset("t0/loc", data=loc, compression="gzip")
        f.create_dataset("t0/scale", data=scale, compression="gzip")
        for i in range(1, 500):
            f[f"t{i}/loc"], f[f"t{i}/scale"] = f["t0/loc"], f["t0/scale"]
    with pytest.raises(PosteriorError, match="one dataset under many names"):
        read_posterior(tmp_path / "h.h5")
    with h5py.File(tmp_path / "tied.h5", "w") as f:
        f["enc/loc"], f["enc/scale"], f["dec/scale"] = loc[:1000], scale[:1000], scale[:1000]
        f["dec/loc"] = f["enc/loc"]
    assert read_posterior(tmp_path / "tied.h5").names == ["dec", "enc"]
    loc, scale = np.zeros((200_000, 10), np.float32), np.full((200_000, 10), 0.1, np.float32)
    with h5py.File(tmp_path / "const.h5", "w") as f:  # an untrained posterior's gzip'd constants, tied: 1,300x the file
        f.create_dataset("enc/loc", data=loc, compression="gzip", chunks=(100_000, 10))
        f.create_dataset("enc/scale", data=scale, compression="gzip", chunks=(100_000, 10))
        f["dec/loc"], f["dec/scale"] = f["enc/loc"], f["enc/scale"]
    assert read_posterior(tmp_path / "const.h5").names == ["dec", "enc"]


def test_hdf5_links_are_walked_in_name_order_in_files_that_track_creation_order(tmp_path):
    loc, scale = _posterior()
    with h5py.File(tmp_path / "o.h5", "w", track_order=True) as f:  # (netCDF4 and xarray files do)
        f["z/w/loc"], f["z/w/scale"] = loc, scale
        f["a"] = f["z"]  # the group under a second name, created later: walked by the first in name order
    assert read_posterior(tmp_path / "o.h5").names == ["a/w", "z/w"]
