"""Property-based fuzzing of the archive reader.

Every damaged archive either loads to exactly the original values or raises
``BnnCompressError``: never another exception, a crash, a hang, a silently wrong value, or
a memory blow-up from a declared size. Crafted archives (checksums recomputed after the
change, as an attacker would) must never raise anything but ``BnnCompressError`` either.

The default run tries a few hundred cases; the long run is

    HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_fuzz_archive.py -m "" --hypothesis-show-statistics

(``-m ""``: two of the five fuzzers are marked slow, which the default run leaves out)
"""

from __future__ import annotations

import dataclasses
import json
import os
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import bnncompress
from bnncompress import ArchiveError, BnnCompressError
from bnncompress.archive import archive_image, read_archive, write_archive

from .forging import rewrite_manifest

settings.register_profile(
    "default-fuzz", max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "fuzz", max_examples=5_000, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "default-fuzz"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("fuzz") / "orig.bnc"
    post = {
        "word_vectors": (rng.normal(size=(40, 6)), rng.uniform(0.01, 0.5, size=(40, 6))),
        "fc.bias": (rng.normal(size=7), np.full(7, 0.05)),
    }
    vocab = [f"w{i}" for i in range(40)]
    bnncompress.pack(post, path, vocab=vocab, lam=0.05, method="vbq")
    # A product-quantized tensor too (format version 2): merged into the same archive.
    pq_path = path.with_name("pq.bnc")
    bnncompress.pack(
        {"pq_vectors": (rng.normal(size=(40, 6)), np.ones((40, 6)))}, pq_path, vocab=vocab, lam=1.0, method="pq"
    )
    # And a transform-coded tensor (format version 3: per-column models, means, a float16 rotation).
    tc_path = path.with_name("tc.bnc")
    tc = rng.normal(size=(1100, 4)) @ rng.normal(size=(4, 4))
    tc_post = {"tc_vectors": (tc, np.full((1100, 4), 0.1))}
    bnncompress.pack(tc_post, tc_path, lam=0.05, method="vbq-transform", options={"classes": 0})
    # And a classed one (format version 4: two blocks of 2,048 and 52 rows, a class each, levels; the
    # second block's rows are shorter, so that two classes code smaller than one).
    cl_path = path.with_name("cl.bnc")
    cl = rng.normal(size=(2100, 32)) @ rng.normal(size=(32, 32))
    cl[2048:] *= 0.01
    cl_post = {"cl_vectors": (cl, rng.uniform(0.05, 1.0, size=(2100, 32)))}
    options = {"classes": 2, "transform": "pca", "class_values": False}  # a D x D int8 rotation
    bnncompress.pack(cl_post, cl_path, lam=3.0, method="vbq-transform", options=options)
    # And a class-valued one (format version 5, the default: each class's own values as int8 corrections), its
    # rotation as Householder reflectors (version 6, reflectors=true).
    cv_path = path.with_name("cv.bnc")
    cv_post = {"cv_vectors": cl_post["cl_vectors"]}
    options = {"classes": 2, "transform": "pca", "reflectors": True}
    bnncompress.pack(cv_post, cv_path, lam=3.0, method="vbq-transform", options=options)
    # And a levelled one (format version 7: too few rows for per-column models, one model as one-byte levels
    # and float16 values, the default).
    lv_path = path.with_name("lv.bnc")
    bnncompress.pack({"lv_vectors": (rng.normal(size=(60, 5)), np.full((60, 5), 0.1))}, lv_path, lam=0.05)
    parts = [read_archive(p) for p in (path, pq_path, tc_path, cl_path, cv_path, lv_path)]
    scalar, tensors = parts[0], [t for part in parts for t in part.tensors]
    write_archive(path, tensors, vocab, scalar.source, scalar.tool_version)
    a = bnncompress.load(path)
    assert a.record("pq_vectors").subvectors > 0
    assert a.record("tc_vectors").models == 4 and a.record("tc_vectors").rotation is not None
    assert a.record("cl_vectors").classes == 2 and a.record("cl_vectors").block_classes.tolist() == [0, 1]
    assert a.record("cv_vectors").class_values == 2 and a.record("cv_vectors").block_classes.tolist() == [0, 1]
    assert a.record("cl_vectors").rotation8 is not None and a.record("cv_vectors").reflectors is not None
    assert a.record("lv_vectors").levelled == 1 and len(a.record("lv_vectors").counts) > 2
    return path.read_bytes(), {n: a[n].copy() for n in a.names}, a.vocab


def load_all(path):
    a = bnncompress.load(path)
    return {n: a[n] for n in a.names}, a.vocab


def check_exact_or_error(path, expected, vocab):
    try:
        values, got_vocab = load_all(path)
    except BnnCompressError:
        return "error"
    assert got_vocab == vocab
    assert set(values) == set(expected)
    for name, arr in expected.items():
        np.testing.assert_array_equal(values[name], arr)
    return "exact"


@settings(settings.get_profile(PROFILE))
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flips(tmp_path, original, flips):
    data, expected, vocab = original
    buf = bytearray(data)
    for where, bit in flips:
        buf[int(where * len(buf))] ^= 1 << bit
    path = tmp_path / "flipped.bnc"
    path.write_bytes(bytes(buf))
    check_exact_or_error(path, expected, vocab)


@settings(settings.get_profile(PROFILE))
@given(keep=st.integers(0, 20_000))
def test_truncations(tmp_path, original, keep):
    data, expected, vocab = original
    path = tmp_path / "truncated.bnc"
    path.write_bytes(data[: keep % len(data)])
    with pytest.raises(BnnCompressError):
        load_all(path)


def _objects(f):
    found = []
    f.visititems(lambda name, obj: found.append(name))
    return ["/"] + sorted(found)


_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(st.characters(exclude_characters="\x00"), max_size=20),
    st.binary(max_size=20).map(lambda b: np.void(b) if b else b""),
    st.lists(st.integers(-(2**40), 2**40), max_size=4).map(lambda v: np.asarray(v, dtype=np.int64)),
    st.just(np.asarray([2**62, 2**62], dtype=np.int64)),
    st.just(json.dumps({"lam": 1})),
)


@pytest.mark.slow  # (hypothesis: the longest of the quick run; CI runs it with -m slow)
@settings(settings.get_profile(PROFILE))
@given(
    action=st.sampled_from(["del_attr", "set_attr", "del_obj", "replace_dataset"]),
    pick=st.integers(0, 10_000),
    value=_values,
    data_kind=st.sampled_from(["u1", "u4", "u8", "i4", "f4", "f8"]),
    length=st.integers(0, 300),
)
def test_altered_attributes_and_datasets(tmp_path, original, action, pick, value, data_kind, length):
    data, expected, vocab = original
    path = tmp_path / "altered.bnc"
    path.write_bytes(data)
    try:
        _alter(path, action, pick, value, data_kind, length)
    except (ValueError, TypeError, OSError):
        reject()  # h5py itself refused to write this change
    check_exact_or_error(path, expected, vocab)


def _alter(path, action, pick, value, data_kind, length):
    with h5py.File(path, "r+") as f:
        names = _objects(f)
        obj = f[names[pick % len(names)]]
        keys = list(obj.attrs)
        if action == "del_attr" and keys:
            del obj.attrs[keys[pick % len(keys)]]
        elif action == "set_attr" and keys:
            obj.attrs[keys[pick % len(keys)]] = value
        elif action == "del_obj" and obj.name != "/":
            del f[obj.name]
        elif action == "replace_dataset" and isinstance(obj, h5py.Dataset):
            name = obj.name
            del f[name]
            f[name] = np.random.default_rng(pick).integers(0, 255, size=length).astype(data_kind)


def _rewrite_tensor(path, index, **changes):
    """Change fields of one tensor and write the archive again with every checksum
    recomputed, as a forger would."""
    contents = read_archive(path)
    records = list(contents.tensors)
    records[index] = dataclasses.replace(records[index], **changes)
    with mock.patch("bnncompress.archive.check_archive_limits"):  # a forger's writer has no limits
        image = archive_image(records, contents.vocab, contents.source, contents.tool_version)
    path.write_bytes(image)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(settings.get_profile(PROFILE))
@given(
    index=st.integers(0, 3),
    field=st.sampled_from(
        [
            "subvectors",
            "models",
            "mean",
            "rotation",
            "name",
            "shape",
            "dtype",
            "method",
            "params",
            "coder",
            "sha256",
            "words",
            "grid",
            "counts",
            "<source>",
            "<tensors>",
            "<vocab>",
            "<tool_version>",
        ]
    ),
    value=_json_values,
)
def test_forged_manifests_fail_cleanly(tmp_path, original, index, field, value):
    data, _, _ = original
    path = tmp_path / "forged.bnc"
    path.write_bytes(data)

    def edit(manifest):
        if field.startswith("<"):
            manifest[field[1:-1]] = value
        else:
            manifest["tensors"][index][field] = value

    rewrite_manifest(path, edit)
    try:
        a = bnncompress.load(path)
        a.info()
        load_all(path)
    except BnnCompressError:
        pass


@pytest.mark.slow  # (hypothesis: the longest of the quick run; CI runs it with -m slow)
@settings(settings.get_profile(PROFILE))
@given(
    index=st.integers(0, 3),
    subvectors=st.sampled_from([None, 0, 1, 2, 3, 5]),
    shape=st.one_of(
        st.lists(st.integers(0, 2**20), max_size=3).map(tuple),
        st.just((2**39,)),
        st.just((2**20, 2**20)),
        st.just((2**31 + 5,)),
    ),
    counts=st.one_of(st.none(), st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6)),
    words=st.one_of(st.none(), st.lists(st.integers(0, 2**32 - 1), max_size=40)),
    grid=st.one_of(st.none(), st.lists(st.floats(allow_nan=True, width=32), max_size=6)),
    fit_counts=st.booleans(),
)
def test_forged_archives_fail_cleanly(tmp_path, original, index, subvectors, shape, counts, words, grid, fit_counts):
    data, _, _ = original
    path = tmp_path / "forged.bnc"
    path.write_bytes(data)
    changes = {"shape": shape}
    if subvectors is not None:
        changes["subvectors"] = subvectors
    if counts is not None:
        changes["counts"] = np.asarray(counts, dtype=np.uint32)
    if fit_counts:  # make the counts add up so that decoding is attempted
        n = int(np.prod(shape, dtype=np.float64))
        k = max(1, len(counts or [1, 1]))
        c = np.full(k, n // k, dtype=np.uint64)
        c[0] += n - int(c.sum())
        changes["counts"] = c
    if words is not None:
        changes["words"] = np.asarray(words, dtype=np.uint32)
    if grid is not None:
        changes["grid"] = np.asarray(grid, dtype=np.float32)
    _rewrite_tensor(path, index, **changes)
    try:
        load_all(path)
    except BnnCompressError:
        pass


def test_a_declared_shape_the_coded_words_cannot_hold_is_refused_before_decoding(tmp_path, original):
    # Found by the long fuzz run: 327M declared symbols of two equally likely values, from a few
    # words, had the row kernels decode them all (6 s, 1.3 GB) before the histogram check refused them.
    data, _, _ = original
    path = tmp_path / "forged.bnc"
    path.write_bytes(data)
    name = read_archive(path).tensors[0].name
    n = 2_000_000
    counts, grid = np.array([n // 2, n - n // 2], np.uint64), np.array([-1.0, 1.0], np.float32)
    _rewrite_tensor(path, 0, shape=(2000, 1000), subvectors=0, counts=counts, grid=grid)
    with pytest.raises(ArchiveError, match="more information than"):
        bnncompress.load(path)[name]
