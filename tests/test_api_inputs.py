"""Unusual Python inputs get the values they hold or one BnnCompressError (a helper's bug hunt of the
Python API): Posterior objects built by hand, numpy scalars, torch tensor subclasses and lazy views,
archives copied, pickled or used in a forked child, modules with tied, lazy or meta parameters."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bnncompress
from bnncompress import ArchiveError, ModelMismatchError, OptionError, PosteriorError
from bnncompress.cli import app
from bnncompress.errors import ArgumentTypeError
from bnncompress.posterior import Posterior, TensorPosterior

RNG = np.random.default_rng(0)
LOC = RNG.normal(size=(60, 40)).astype(np.float32)
SCALE = RNG.uniform(0.01, 0.3, size=(60, 40)).astype(np.float32)


@pytest.fixture(scope="module")
def archive_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "w.bnc"
    bnncompress.pack({"w": (LOC, SCALE)}, path, bits=3)
    return path


@pytest.mark.parametrize(
    "loc, scale, message",
    [
        (LOC, SCALE[:30], r"has shape \(60, 40\) but scale has \(30, 40\)"),  # the coder read past the scale
        (np.where(LOC > 2, np.nan, LOC), SCALE, "NaN/inf values"),  # said "the archive is damaged"
        (LOC, -SCALE, "non-positive values"),
        (LOC[:0], SCALE[:0], "is empty"),
    ],
)
def test_a_posterior_built_by_hand_is_checked_like_every_source(tmp_path, loc, scale, message):
    posterior = Posterior({"w": TensorPosterior(loc, scale)})
    with pytest.raises(PosteriorError, match=message):
        bnncompress.pack(posterior, tmp_path / "w.bnc", lam=0.01)
    assert not (tmp_path / "w.bnc").exists()


def test_a_posterior_built_by_hand_of_other_dtypes_packs_its_values(tmp_path):
    posterior = Posterior(
        {
            "h": TensorPosterior(LOC.astype(np.float16), SCALE.astype(np.float16), "float16"),
            "t": TensorPosterior(torch.tensor(LOC), torch.tensor(SCALE)),
        }
    )
    bnncompress.pack(posterior, tmp_path / "w.bnc", method="float16")
    a = bnncompress.load(tmp_path / "w.bnc")
    assert a["h"].dtype == np.float16 and np.array_equal(a["h"], LOC.astype(np.float16))
    np.testing.assert_allclose(a["t"], LOC, rtol=1e-3)


@pytest.mark.parametrize(
    "rate", [{"bits": np.float32(2)}, {"bits": np.int64(2)}, {"bits": Fraction(2)}, {"lam": np.float32(0.5)}]
)
def test_numpy_scalars_and_fractions_are_rates(tmp_path, rate):
    # They passed the type check, then were refused: "must be a positive number ..., got 2.0".
    result = bnncompress.pack({"w": (LOC, SCALE)}, tmp_path / "w.bnc", **rate)
    if "bits" in rate:
        assert abs(result.payload_bits_per_weight - 2) < 0.05


def test_torch_subclasses_and_lazy_views_give_their_values(tmp_path):
    class MyParameter(torch.nn.Parameter):  # a subclass from the user's module, requiring grad
        pass

    loc = MyParameter(torch.tensor(LOC))
    negated = torch.tensor(-LOC)._neg_view()  # the negative bit: its values are LOC
    bnncompress.pack({"a": (loc, torch.tensor(SCALE)), "b": (negated, SCALE)}, tmp_path / "w.bnc", method="float16")
    a = bnncompress.load(tmp_path / "w.bnc")
    for name in ("a", "b"):
        np.testing.assert_allclose(a[name], LOC, rtol=1e-3, atol=1e-4)
    lazy = torch.nn.LazyLinear(3).weight
    with pytest.raises(PosteriorError, match="uninitialized"):
        bnncompress.pack({"w": (lazy, lazy)}, tmp_path / "x.bnc")


def test_a_mean_beyond_float32_says_so_without_numpys_warning(tmp_path, recwarn):
    with pytest.raises(PosteriorError, match=r"2 NaN/inf values \(after conversion to float32"):
        bnncompress.pack({"w": (np.array([1.0, 1e39, -5e40]), np.ones(3))}, tmp_path / "w.bnc")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_paths_of_bytes_are_argument_errors(tmp_path, archive_path):
    class BytesPath:
        def __fspath__(self):
            return b"/tmp/x.bnc"

    with pytest.raises(ArgumentTypeError):
        bnncompress.load(bytes(str(archive_path), "utf-8"))
    with pytest.raises(ArgumentTypeError):
        bnncompress.pack({"w": (LOC, SCALE)}, BytesPath())


# ----------------------------------------------------------------------------- archives copied


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copied_archive_keeps_its_decoded_tensors_read_only(archive_path, how):
    a = bnncompress.load(archive_path)
    expected = a["w"].copy()
    b = pickle.loads(pickle.dumps(a)) if how == "pickle" else copy.deepcopy(a)
    with pytest.raises(ValueError, match="read-only"):
        b["w"][0, 0] += 100  # it became writeable: the edit showed in every later a["w"], rows, state_dict
    assert np.array_equal(b["w"], expected) and np.array_equal(b.rows("w", [0]), expected[:1])


def test_a_closed_archive_unpickles_and_refuses_use(archive_path):
    a = bnncompress.load(archive_path)
    a.close()
    b = pickle.loads(pickle.dumps(a))  # RecursionError
    with pytest.raises(ArchiveError, match="is closed"):
        b["w"]


def _child_packs_and_decodes(path, queue):
    a = bnncompress.load(path)
    result = bnncompress.pack({"w": (LOC, SCALE)}, path.with_name("child.bnc"), bits=3)
    queue.put((a["w"].sum(), a.rows("w", [5]).sum(), result.payload_bytes))


def test_a_forked_child_packs_and_decodes(archive_path):
    # numba's thread pool is not fork-safe: after the parent had packed and decoded, a forked child
    # (a DataLoader worker, a fork Pool) was terminated by GNU OpenMP as it decoded.
    parent = bnncompress.load(archive_path)
    expected = (parent["w"].sum(), parent.rows("w", [5]).sum())
    payload = bnncompress.pack({"w": (LOC, SCALE)}, archive_path.with_name("parent.bnc"), bits=3).payload_bytes
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_packs_and_decodes, args=(archive_path, queue))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (*expected, payload)


def _child_reads_rows(path, queue):
    queue.put(bnncompress.load(path).rows("w", [5, 2000, 2999]).sum())  # a fresh reader: block prefixes


def test_a_forked_child_reads_rows_after_the_parent_decoded(tmp_path):
    # The parent's whole decode of a large tensor loads the row kernels and starts numba's pool; a forked
    # child's first rows decode block prefixes with a parallel kernel that skipped the guard (terminated).
    loc = RNG.normal(size=(3000, 100)).astype(np.float32)
    bnncompress.pack({"w": (loc, np.full_like(loc, 0.1))}, tmp_path / "big.bnc", method="uniform", bits=2)
    parent = bnncompress.load(tmp_path / "big.bnc")
    expected = parent["w"][[5, 2000, 2999]].sum()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_reads_rows, args=(tmp_path / "big.bnc", queue))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected


# ----------------------------------------------------------------------------- modules


def test_load_into_a_module_with_tied_weights(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(8, 4, bias=False)
            self.dec = torch.nn.Linear(8, 4, bias=False)
            self.dec.weight = self.enc.weight

    w = RNG.normal(size=(4, 8)).astype(np.float32)
    for names in (["enc.weight", "dec.weight"], ["dec.weight"]):  # "not in the module: dec.weight"
        bnncompress.pack({n: (w, np.full_like(w, 1e-4)) for n in names}, tmp_path / "t.bnc", method="float16")
        module = bnncompress.load(tmp_path / "t.bnc").load_into(Tied())
        np.testing.assert_allclose(module.enc.weight.detach().numpy(), w, rtol=1e-3)


@pytest.mark.parametrize(
    "module, error, message",
    [
        (torch.nn.LazyLinear(40), ModelMismatchError, "not initialized yet"),
        (torch.nn.Linear(40, 60, device="meta"), ModelMismatchError, "meta device"),  # loaded nothing, silently
        ({"weight": None}, ArgumentTypeError, "must be a torch.nn.Module"),
    ],
)
def test_load_into_what_cannot_take_values_is_refused(tmp_path, module, error, message):
    weight = np.zeros((60, 40), np.float32)  # (a parameter the archive does not fill is not checked: strict=False)
    bnncompress.pack({"weight": (weight, np.full_like(weight, 0.1))}, tmp_path / "w.bnc", lam=0.1)
    with pytest.raises(error, match=message):
        bnncompress.load(tmp_path / "w.bnc").load_into(module, strict=False)


# ----------------------------------------------------------------------------- messages (a methods hunt)


def test_bad_row_indices_are_bnncompress_errors(archive_path):
    a = bnncompress.load(archive_path)
    for bad in ([1.0], [[True]], "3"):
        with pytest.raises(bnncompress.BnnCompressError):  # a plain TypeError before (README: all derive from it)
            a.rows("w", bad)
    with pytest.raises(TypeError):  # still a TypeError too
        a.rows("w", [1.0])


def test_a_huge_lambda_warns_only_of_what_it_lost(tmp_path):
    with pytest.warns(bnncompress.QualityWarning) as caught:  # numpy's "overflow encountered in cast" leaked
        bnncompress.pack({"w": (LOC, SCALE)}, tmp_path / "w.bnc", method="uniform", lam=1e300)
    assert all(issubclass(w.category, bnncompress.QualityWarning) for w in caught)


def test_float128_and_streamed_kmeans_messages_say_what_to_do(tmp_path):
    if hasattr(np, "float128"):
        with pytest.raises(PosteriorError, match="float16, float32 or float64 .convert it to float64"):
            bnncompress.pack({"w": (LOC.astype(np.float128), SCALE)}, tmp_path / "w.bnc")
    np.savez(tmp_path / "p.npz", **{"w.loc": LOC, "w.scale": SCALE})
    r = CliRunner().invoke(app, ["pack", str(tmp_path / "p.npz"), "--method", "kmeans", "--stream"])
    assert r.exit_code == 2 and "--no-stream without --workers or --scheduler" in r.output


# A helper's third hunt of the Python API (stop 37): each test fails without its fix.


@pytest.mark.parametrize(
    "supports, message",
    [
        ({"w": "positive"}, "unknown support 'positive'"),  # (a spec, not its name)
        ({"w": {"constraint": "interval"}}, "lacks finite lower_bound"),
        ({"w": {"constraint": "bogus"}}, "unknown support"),
        ({"w": {"constraint": "simplex"}, "v": None}, "names of its tensors"),
    ],
)
def test_a_posteriors_supports_are_checked_before_the_pack(tmp_path, supports, message):
    """They wrote an archive that every load refused (unknown support None / lacks bounds)."""
    p = Posterior({"w": TensorPosterior(LOC, SCALE)}, supports=supports)
    with pytest.raises(PosteriorError, match=message):
        bnncompress.pack(p, tmp_path / "s.bnc", lam=0.1)
    assert not (tmp_path / "s.bnc").exists()


def test_a_posteriors_real_support_given_as_none_packs(tmp_path):
    p = Posterior({"w": TensorPosterior(LOC, SCALE)}, supports={"w": None})
    bnncompress.pack(p, tmp_path / "s.bnc", lam=0.1)
    assert "support" not in bnncompress.load(tmp_path / "s.bnc").record("w").params


@pytest.mark.parametrize(
    "vocab, message",
    [
        ([f"w{i}" for i in range(59)] + [3], "is a int"),
        ([f"w{i}" for i in range(59)] + ["\ud800"], "unpaired surrogate"),
        ([f"w{i}" for i in range(59)] + ["a\nb"], "control character"),
        (["a"] * 60, "more than once"),
        ("abc", "must be a list of words"),  # became ['a', 'b', 'c']
    ],
)
def test_a_posteriors_vocabulary_is_checked_before_the_pack(tmp_path, vocab, message):
    p = Posterior({"w": TensorPosterior(LOC, SCALE)}, vocab=vocab)
    with pytest.raises(PosteriorError, match=message):
        bnncompress.pack(p, tmp_path / "v.bnc", lam=0.1)


def test_a_dict_tensor_named_vocab_is_told_that_the_key_is_the_vocabularys(tmp_path):
    for post in ({"vocab": (LOC, SCALE), "w": (LOC, SCALE)}, {"vocab": {"loc": LOC, "scale": SCALE}}):
        with pytest.raises(PosteriorError, match="key 'vocab' holds the vocabulary .* rename the tensor"):
            bnncompress.pack(post, tmp_path / "v.bnc", lam=0.1)
    with pytest.raises(PosteriorError, match=r"found dict; for a word -> index mapping d give sorted\(d, key=d.get\)"):
        bnncompress.pack({"vocab": {"a": 0}, "w": (LOC, SCALE)}, tmp_path / "v.bnc", lam=0.1)  # (key_to_index)
    words = list(np.array([f"w{i}" for i in range(60)]))  # numpy strings are words, not tensors
    assert bnncompress.read_posterior({"vocab": words, "w": (LOC, SCALE)}).vocab[:2] == ["w0", "w1"]


def test_an_empty_posterior_is_refused(tmp_path):
    """It wrote a 0-weight archive whose PackResult raised ZeroDivisionError."""
    with pytest.raises(PosteriorError, match="no posterior tensors"):
        bnncompress.pack(Posterior({}), tmp_path / "e.bnc", lam=0.1)
    with pytest.raises(PosteriorError, match="no posterior tensors"):
        bnncompress.pack(bnncompress.read_posterior({"w": (LOC, SCALE)}).select([]), tmp_path / "e.bnc", lam=0.1)


def test_select_takes_one_name_and_repr_is_short():
    p = bnncompress.read_posterior({"w": (LOC, SCALE), "b": (LOC[0], SCALE[0])}, vocab=[f"w{i}" for i in range(60)])
    assert p.select("w").names == ["w"]  # (said: no tensor named 'w'... per character)
    assert repr(p) == "Posterior(w (60, 40), b (40,); a vocabulary of 60 words; from loc/scale dict: python dict)"


def test_the_vocabulary_given_out_is_a_copy(tmp_path):
    """Sorting a.vocab relabelled every row: vector('w0') returned another word's row."""
    path = tmp_path / "v.bnc"
    bnncompress.pack({"w": (LOC, SCALE)}, path, vocab=[f"w{i}" for i in range(60)], bits=3)
    a = bnncompress.load(path)
    first = a.vector("w0").copy()
    words = a.vocab
    words.reverse()
    assert a.vocab[0] == "w0" and a.index("w0") == 0
    np.testing.assert_array_equal(a.vector("w0"), first)
    np.testing.assert_array_equal(a.to_keyed_vectors()["w0"], first)


def test_a_missed_target_is_a_quality_warning(tmp_path):
    """Only the CLI said it; pack(bits=...) returned target_missed True with no warning."""
    with pytest.warns(bnncompress.QualityWarning, match="target missed: payload"):
        r = bnncompress.pack({"w": (LOC, SCALE)}, tmp_path / "k.bnc", bits=0.5, method="kmeans")
    assert r.target_missed and any(w.startswith("target missed") for w in r.warnings)


def test_export_takes_force_and_binary_as_bools_only(archive_path, tmp_path):
    """force="no" replaced the user's file; binary="no" wrote binary."""
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    a = bnncompress.load(archive_path)
    with pytest.raises(ArgumentTypeError, match="force"):
        a.export(keep, format="npz", force="no")
    with pytest.raises(ArgumentTypeError, match="binary"):
        a.export(tmp_path / "o.txt", format="npz", binary="no")
    assert keep.read_text() == "precious"


def test_load_into_refuses_a_prefix_that_is_no_str(archive_path):
    with pytest.raises(ArgumentTypeError, match="prefix"):
        bnncompress.load(archive_path).load_into(torch.nn.Linear(40, 60, bias=False), prefix=0)


def test_an_empty_archive_path_is_said(tmp_path):
    with pytest.raises(ArchiveError, match="path is empty"):
        bnncompress.load("")


def test_a_rate_too_large_for_a_float_is_an_option_error(tmp_path):
    """bits=10**400, lam=10**400 and sweep(bits=[10**400]) raised a bare OverflowError (rates hunt)."""
    posterior = {"w": (np.zeros((10, 4)), np.ones((10, 4)))}
    for kwargs in ({"bits": 10**400}, {"lam": 10**400}):
        with pytest.raises(OptionError, match="too large for a float"):
            bnncompress.pack(posterior, tmp_path / "w.bnc", **kwargs)
    with pytest.raises(OptionError, match="positive number"):
        bnncompress.sweep(Path(__file__).parent.parent / "data" / "example.pt", ["uniform"], [10**400], csv_path=None)
