"""Issue 22, round 3, archives: row indexing by numpy's rules whether or not a tensor was decoded,
load() misuse, closing, many tiny tensors, exports that keep every tensor and the vocabulary,
and the info / unpack commands' -q, -o - and errors."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bnncompress
from bnncompress import ArchiveError, OptionError, coding
from bnncompress.archive import write_archive
from bnncompress.cli import app
from bnncompress.cli.app import UnpackFormat
from bnncompress.export import FORMATS
from bnncompress.records import TensorRecord

from .forging import rewrite_manifest

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(r, pattern: str) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and pattern in lines[0], r.output
    return lines[0]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, synthetic):
    """Three tensors: 2000 x 50 in two coded blocks, a 1-D one, and a float16 3-D one; with a vocabulary."""
    loc, scale = synthetic
    rng = np.random.default_rng(1)
    post = {
        "w": (loc, scale),
        "b": (loc[:, 0].copy(), scale[:, 0].copy()),
        "h": (rng.normal(size=(40, 3, 2)).astype(np.float16), np.full((40, 3, 2), 0.05, np.float16)),
    }
    path = tmp_path_factory.mktemp("hostile") / "a.bnc"
    bnncompress.pack(post, path, vocab=[f"w{i}" for i in range(2000)], method="uniform", bits=4)
    return path


def _good(rows: int) -> list:
    last = rows - 1
    return [
        0,
        -1,
        7,
        np.int64(2),
        np.uint8(3),
        np.array(5),
        [0, 2],
        [],
        [3, last, -1, 3],
        np.array([[0, 1], [last, 0]]),
        [[1], [2], [-3]],
        np.array([1, last], dtype=np.uint64),
        slice(0, 3),
        slice(None, None, -7),
        slice(-5, None),
        slice(1, 1),
        slice(2**70, None),
    ]


_TYPE_ERRORS = [1.0, "1", np.array([0.0, 1.0]), (0, 1), None, ..., True, np.True_, [1, None], slice(0.5, 3)]


def _masks(rows: int) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.random(rows) < 0.3, np.zeros(rows, bool), np.ones(rows, bool), [True] * rows]


@pytest.mark.parametrize("name", ["w", "b", "h"])
def test_rows_match_numpy_before_and_after_decoding(archive, name):
    full = np.asarray(bnncompress.load(archive)[name])
    rows = full.shape[0]
    for index in _good(rows) + _masks(rows):
        expected = full[index]
        before = bnncompress.load(archive).rows(name, index)  # decodes only the blocks it needs
        fresh = bnncompress.load(archive)
        fresh[name]  # decoded whole and cached
        after = fresh.rows(name, index)
        for got in (before, after):
            assert type(got) is type(expected), (index, type(got))
            assert np.shape(got) == expected.shape and np.asarray(got).dtype == expected.dtype, index
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ["w", "b"])
def test_rows_refuse_other_indices_alike_before_and_after_decoding(archive, name):
    rows = 2000
    out_of_range = [rows, -rows - 1, 2**63, np.uint64(2**63 + 5), [0, rows], np.array([2**63], np.uint64), [2**64]]
    out_of_range += [np.ones(rows - 1, bool), [True, False]]
    type_errors = _TYPE_ERRORS + [np.ones((rows, 1), bool)]
    decoded = bnncompress.load(archive)
    decoded[name]
    for a in (bnncompress.load(archive), decoded):
        for index in type_errors:
            with pytest.raises(TypeError):
                a.rows(name, index)
        for index in out_of_range:
            with pytest.raises(IndexError, match="out of range|entries"):
                a.rows(name, index)
            with pytest.raises(OptionError):  # as before: out of range is also an OptionError
                a.rows(name, index)


def test_load_and_export_refuse_arguments_of_the_wrong_kind(archive, tmp_path):
    for bad in (None, b"\x89HDF\r\n\x1a\n not an archive", 3, ["a.bnc"]):
        with pytest.raises(TypeError, match="path"):
            bnncompress.load(bad)
    a = bnncompress.load(archive)
    with pytest.raises(TypeError, match="path"):
        a.export(None)
    with pytest.raises(OptionError, match="word2vec, kv, pt or npz"):
        a.export(tmp_path / "x.npz", format=["npz"])
    for name in (["w"], 3, None):
        with pytest.raises(TypeError, match="tensor names are strings"):
            a[name]
        with pytest.raises(TypeError, match="tensor names are strings"):
            a.rows(name, 0)


def test_archive_is_a_context_manager_and_refuses_use_once_closed(archive):
    with bnncompress.load(archive) as a:
        first = a.rows("w", [5])
        assert a["w"].shape == (2000, 50) and a.names == ["w", "b", "h"]
    np.testing.assert_array_equal(first, bnncompress.load(archive)["w"][[5]])
    uses = [
        lambda: a["w"],
        lambda: a.rows("w", [0]),
        lambda: a.names,
        lambda: a.vocab,
        lambda: len(a),
        lambda: "w" in a,
        lambda: list(a),
        lambda: a.info(),
        lambda: a.vector("w1"),
        lambda: a.export(archive.parent / "closed.npz"),
    ]
    for use in uses:
        with pytest.raises(ArchiveError, match="closed"):
            use()
    assert "closed" in repr(a) and not (archive.parent / "closed.npz").exists()
    a.close()  # twice is fine
    with pytest.raises(ArchiveError, match="closed"), a:
        pass


def _tiny_tensors_archive(path, count: int) -> None:
    """``count`` one-value raw tensors, written directly (packing them would take longer than the test)."""
    records = [
        TensorRecord(
            f"t{i}",
            (1,),
            "float32",
            "float16",
            {},
            coding.CODER_ID,
            grid=np.array([i], np.float32),
            counts=np.zeros(0, np.uint8),
            words=np.zeros(0, np.uint32),
            block_rows=1,
            offsets=np.array([0, 0], np.uint64),
            raw=True,
        )
        for i in range(count)
    ]
    write_archive(path, records, None, "test", "0")


@pytest.mark.slow
def test_info_of_many_tiny_tensors_takes_seconds(tmp_path):
    path = tmp_path / "tiny.bnc"
    _tiny_tensors_archive(path, 20_000)
    start = time.perf_counter()
    r = run("info", path)
    seconds = time.perf_counter() - start
    assert r.exit_code == 0 and "t19999" in r.output and "20,000" in r.output, r.output[-500:]
    assert seconds < 6, f"info of 20,000 one-value tensors took {seconds:.1f} s"  # it took 20 s and more
    start = time.perf_counter()
    with bnncompress.load(path) as a:
        assert a.rows("t123", 0) == 123 and len(a.info()["tensors"]) == 20_000
    assert time.perf_counter() - start < 4


def _vocab_tensor_archive(tmp_path, with_vocab: bool, names=("w", "vocab")):
    rng = np.random.default_rng(3)
    arrays = {}
    for name in names:
        arrays[f"{name}.loc"] = rng.normal(size=(30, 4))
        arrays[f"{name}.scale"] = np.full((30, 4), 0.05)
    if with_vocab:
        arrays["vocab"] = np.array([f"w{i}" for i in range(30)])
    src = tmp_path / f"src-{with_vocab}.npz"
    np.savez(src, **arrays)
    out = tmp_path / f"a-{with_vocab}.bnc"
    bnncompress.pack(src, out, method="uniform", bits=4)
    return out


def test_npz_and_pt_never_drop_a_tensor_named_like_the_vocabulary(tmp_path):
    path = _vocab_tensor_archive(tmp_path, with_vocab=True)
    a = bnncompress.load(path)
    for fmt in ("npz", "pt"):
        with pytest.warns(UserWarning, match="'vocab.words'"):
            a.export(tmp_path / f"out.{fmt}")
    with np.load(tmp_path / "out.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["vocab", "vocab.words", "w"]
        np.testing.assert_array_equal(npz["vocab"], a["vocab"])
        assert list(npz["vocab.words"]) == a.vocab
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    np.testing.assert_array_equal(state["vocab"].numpy(), a["vocab"])
    assert state["vocab.words"] == a.vocab
    r = run("unpack", path, "-o", tmp_path / "cli.npz")
    assert r.exit_code == 0 and "warning: a tensor is named 'vocab'" in r.output
    a.export(tmp_path / "w.npz", tensor="w")  # without the tensor 'vocab', the words have the key pack reads
    with np.load(tmp_path / "w.npz") as npz:
        assert sorted(npz.files) == ["vocab", "w"] and list(npz["vocab"]) == a.vocab
    plain = _vocab_tensor_archive(tmp_path, with_vocab=False)  # no vocabulary: 'vocab' is just a tensor
    bnncompress.load(plain).export(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as npz:
        assert sorted(npz.files) == ["vocab", "w"]
        np.testing.assert_array_equal(npz["vocab"], bnncompress.load(plain)["vocab"])


def test_npz_keeps_tensors_named_like_savez_arguments(tmp_path):
    path = _vocab_tensor_archive(tmp_path, with_vocab=False, names=("file", "allow_pickle", "a/b"))
    a = bnncompress.load(path)
    a.export(tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(a.names)
        for name in a.names:
            np.testing.assert_array_equal(npz[name], a[name])


def test_pt_and_npz_keep_the_vocabulary_as_pack_reads_it(tmp_path, archive):
    a = bnncompress.load(archive)
    a.export(tmp_path / "sd.pt")
    a.export(tmp_path / "arr.npz")
    state = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert state["vocab"] == a.vocab and state["h"].dtype == torch.float16
    with np.load(tmp_path / "arr.npz") as npz:
        assert list(npz["vocab"]) == a.vocab
        arrays = {"w.loc": npz["w"], "w.scale": np.full((2000, 50), 0.01), "vocab": npz["vocab"]}
    # pack reads a vocabulary under that key from both: given scales, the exports pack again
    scale = torch.full((2000, 50), 0.01)
    torch.save({"w": {"loc": state["w"], "scale": scale}, "vocab": state["vocab"]}, tmp_path / "p.pt")
    np.savez(tmp_path / "p.npz", **arrays)
    for src in ("p.pt", "p.npz"):
        bnncompress.pack(tmp_path / src, tmp_path / f"{src}.bnc", method="uniform", bits=2)
        assert bnncompress.load(tmp_path / f"{src}.bnc").vocab == a.vocab


def test_kv_export_by_suffix_and_format(tmp_path, archive):
    from gensim.models import KeyedVectors

    a = bnncompress.load(archive)
    out = tmp_path / "kv"
    out.mkdir()
    assert a.export(out / "v.kv") == "kv"
    r = run("unpack", archive, "-o", out / "vectors.bin.kv2", "--format", "kv", "-t", "w")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out)) == ["v.kv", "vectors.bin.kv2"]  # one file each, no side files
    for name in ("v.kv", "vectors.bin.kv2"):
        kv = KeyedVectors.load(str(out / name))
        assert kv.index_to_key == a.vocab
        np.testing.assert_array_equal(kv.vectors, a["w"].astype(np.float32))


def test_one_table_of_formats():
    assert [f.value for f in UnpackFormat] == list(FORMATS) and "kv" in FORMATS
    r = run("unpack", "--help")
    assert all(name in r.output for name in FORMATS)
    with pytest.raises(OptionError) as e:
        bnncompress.export.format_from_suffix("x.unknown")
    assert all(name in str(e.value) for name in FORMATS)


def test_unpack_to_standard_output(tmp_path, archive):
    r = run("unpack", archive, "-o", "-", "-t", "w")
    assert r.exit_code == 0 and not (tmp_path / "-").exists()
    bnncompress.load(archive).export(tmp_path / "v.txt", tensor="w")
    assert r.stdout == (tmp_path / "v.txt").read_text()
    r = run("unpack", archive, "-o", "-", "--format", "npz", "-q")
    assert r.exit_code == 0
    with np.load(io.BytesIO(r.stdout_bytes)) as npz:
        np.testing.assert_array_equal(npz["w"], bnncompress.load(archive)["w"])


def _on_a_terminal(args: list[str]) -> tuple[int, bytes]:
    """Run the command line with standard output (and error) on a pseudo-terminal."""
    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "bnncompress", *args], stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return p.wait(timeout=60), b"".join(chunks)


@pytest.mark.slow  # child processes on a pseudo-terminal
def test_binary_to_a_terminal_is_refused_text_is_not(archive):
    code, output = _on_a_terminal(["unpack", str(archive), "-o", "-", "--format", "npz"])
    lines = output.decode(errors="replace").strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "terminal" in lines[0], output
    code, output = _on_a_terminal(["unpack", str(archive), "-o", "-", "-t", "w"])
    assert code == 0 and output.decode().splitlines()[0].split() == ["2000", "50"], output[:300]


def test_info_and_unpack_quiet_and_one_line_errors(tmp_path, archive):
    r = run("info", archive, "-q")
    assert r.exit_code == 0 and r.output == ""
    r = run("unpack", archive, "-o", tmp_path / "q.npz", "-q")
    assert r.exit_code == 0 and r.output == "" and (tmp_path / "q.npz").exists()
    line = _one_line_error(run("unpack", archive, "-t", "nope", "-o", tmp_path / "n.txt"), "no tensor named 'nope'")
    assert not line.startswith('error: "') and not line.endswith('"')
    _one_line_error(run("unpack", archive, "-t", "nope", "-o", tmp_path / "n.npz"), "no tensor named 'nope'")
    _one_line_error(run("unpack", archive, "-o", tmp_path / "b.pt", "--binary"), "--binary")
    _one_line_error(run("info", "-"), "standard input")
    damaged = tmp_path / "damaged.bnc"
    damaged.write_bytes(archive.read_bytes()[:2000])
    _one_line_error(run("info", damaged, "-q"), "corrupt")


def test_info_shows_hostile_names_escaped(tmp_path):
    rng = np.random.default_rng(5)
    name = "\x1b[2J\x1b]0;owned\x07w"
    post = {name: (rng.normal(size=(8, 2)), np.full((8, 2), 0.1))}
    bnncompress.pack(post, tmp_path / "e.bnc", method="uniform", lam=0.1)
    r = run("info", tmp_path / "e.bnc")
    assert r.exit_code == 0 and "\x1b" not in r.output and "\x07" not in r.output and "\\x1b[2J" in r.output
    line = _one_line_error(run("unpack", tmp_path / "e.bnc", "-t", "nope", "-o", tmp_path / "n.npz"), "nope")
    assert "\x1b" not in line and "\\x1b[2J" in line


def test_a_missing_tensor_names_some_of_many(tmp_path):
    path = tmp_path / "many.bnc"
    _tiny_tensors_archive(path, 3000)
    line = _one_line_error(run("unpack", path, "-t", "nope", "-o", tmp_path / "n.npz"), "no tensor named 'nope'")
    assert "t19," in line and "t20," not in line and len(line) < 400


def test_a_tensor_without_rows_or_weights(tmp_path):
    rng = np.random.default_rng(6)
    post = {"s": (np.array(0.5), np.array(0.1)), "w": (rng.normal(size=(3, 2)), np.full((3, 2), 0.1))}
    bnncompress.pack(post, tmp_path / "s.bnc", method="uniform", lam=0.1)
    a = bnncompress.load(tmp_path / "s.bnc")
    with pytest.raises(IndexError, match="0-dimensional"):  # as a["s"][0] would
        a.rows("s", 0)
    empty = TensorRecord(
        "e",
        (3, 0),
        "float32",
        "float16",
        {},
        coding.CODER_ID,
        grid=np.zeros(0, np.float32),
        counts=np.zeros(0, np.uint8),
        words=np.zeros(0, np.uint32),
        block_rows=1,
        offsets=np.array([0, 0, 0, 0], np.uint64),
        raw=True,
    )
    write_archive(tmp_path / "e.bnc", [empty], None, "test", "0")
    a = bnncompress.load(tmp_path / "e.bnc")
    assert a["e"].shape == (3, 0) and a.rows("e", [2, 0]).shape == (2, 0)
    assert a.info()["tensors"][0]["payload_bits_per_weight"] is None
    r = run("info", tmp_path / "e.bnc")
    assert r.exit_code == 0 and "3x0" in r.output, r.output


# ----------------------------------------------------------------------------- forged archives (stop 37)
# Each archive below has its checksums recomputed, as a forger would: only the reader's checks stand.


def _forged(src, dst, change, vocab=Ellipsis):
    """``src`` rewritten with ``change(records)`` applied (limits unchecked, checksums recomputed)."""
    from unittest import mock

    from bnncompress.archive import archive_image, read_archive

    contents = read_archive(src)
    with mock.patch("bnncompress.archive.check_archive_limits"):
        image = archive_image(
            change(list(contents.tensors)),
            contents.vocab if vocab is Ellipsis else vocab,
            contents.source,
            contents.tool_version,
        )
    dst.write_bytes(image)
    return dst


@pytest.fixture(scope="module")
def classed(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("forged") / "c.bnc"
    loc = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))
    bnncompress.pack({"w": (loc, np.full((2000, 8), 0.1)), "b": (rng.normal(size=5), np.full(5, 0.1))}, path, lam=0.5)
    return path


def test_json_numbers_beyond_float64_or_nan_are_refused(classed, tmp_path):
    """lam = 10**400 broke info's table (raw OverflowError in Python); lam = NaN printed invalid JSON."""
    for value in (10**400, float("nan")):
        path = tmp_path / "n.bnc"
        path.write_bytes(classed.read_bytes())
        rewrite_manifest(path, lambda m, v=value: m["tensors"][0]["params"].update(lam=v))
        with pytest.raises(ArchiveError, match="the manifest holds the number"):
            bnncompress.load(path)


def test_a_small_forged_vocabulary_or_manifest_does_not_expand_into_gigabytes(classed, tmp_path, monkeypatch):
    """118 KB of gzip expanded to 100 MB of 'ab\\n' or '[{},{},...]' took 2.6 GB before it was refused."""
    import bnncompress.manifest as manifest

    path = _forged(classed, tmp_path / "v.bnc", lambda r: r, vocab=[f"w{i}" for i in range(2000)])
    rewrite_manifest(path, lambda m: m["vocab"].update(num_words=10**7))  # more words than any tensor has rows
    with pytest.raises(ArchiveError, match="vocabulary word count does not match"):
        bnncompress.load(path)
    monkeypatch.setattr(manifest, "available_memory", lambda: 10_000)  # a parse would take 24 x 3 MB
    path = tmp_path / "m.bnc"
    path.write_bytes(classed.read_bytes())
    rewrite_manifest(path, raw=b"[" + b"{}," * 1_000_000 + b"{}]")
    with pytest.raises(ArchiveError, match="would take up to .* bytes parsed"):
        bnncompress.load(path)


def _gzipped(path, key, raw):
    import h5py

    with h5py.File(path, "r+") as f:
        del f[key]
        f.create_dataset(key, data=np.frombuffer(raw, np.uint8), chunks=(len(raw),), compression="gzip")


def test_a_manifest_or_vocabulary_is_parsed_only_within_a_budget_set_by_the_files_size(classed, tmp_path):
    """With memory to spare, a 228 kB file's gzipped '[{},{},...]' still took 2.7 GB, and a 104 kB file's 'ab\\n'
    x 33 million (the manifest saying a tensor of 33 million rows) 2.7 GB. Here files of a few kB would parse
    to 464 MB (4 M dicts) and 345 MB (5 M words): over the 256 MiB a file this small may take."""
    import hashlib

    path = tmp_path / "m.bnc"
    path.write_bytes(classed.read_bytes())
    raw = b"[" + b"{}," * 4_000_000 + b"{}]"
    rewrite_manifest(path, raw=raw)
    _gzipped(path, "manifest", raw)
    with pytest.raises(ArchiveError, match="manifest .* would take up to .* bytes parsed, more than an archive of"):
        bnncompress.load(path)
    words = 5_000_000
    vraw = b"ab\n" * (words - 1) + b"ab"  # (not b"\n".join: it takes 80 bytes a word to join them, 400 MB)
    path = _forged(classed, tmp_path / "v.bnc", lambda r: r, vocab=[f"w{i}" for i in range(2000)])
    rewrite_manifest(
        path,
        lambda m: m.update(
            tensors=[{"shape": [words, 1]}], vocab={"num_words": words, "sha256": hashlib.sha256(vraw).hexdigest()}
        ),
    )
    _gzipped(path, "vocab", vraw)
    assert path.stat().st_size < 100_000  # (a few kB: the vocabulary gzipped ~1000x)
    with pytest.raises(ArchiveError, match="5,000,000 words would take more memory than an archive of"):
        bnncompress.load(path)


def test_a_manifest_of_many_per_element_bounds_parses_from_a_small_file():
    """Six 256 x 256 Uniform sites' bounds (790,000 numbers, gzipped to almost nothing in a 110 kB archive) parse
    to 28 MB; counting every number as a dict refused the archive the writer had just made, and older ones."""
    from bnncompress.manifest import parse_manifest

    raw = json.dumps({"tensors": [{"params": {"support": {"lower_bound": [[0.0] * 256] * 256}}}] * 12}).encode()
    assert len(parse_manifest(raw, "a test", 110_000)["tensors"]) == 12


def test_a_per_element_bound_that_does_not_fit_the_tensor_is_refused(tmp_path):
    """A (2, 4, 3) bound turned a (4, 3) tensor into (2, 4, 3) on load (unpack wrote it, exit 0)."""
    import dataclasses

    from bnncompress.posterior import Posterior, TensorPosterior

    rng = np.random.default_rng(0)
    support = {"constraint": "interval", "lower_bound": 0.0, "upper_bound": 2.0}
    p = Posterior({"u": TensorPosterior(rng.normal(size=(4, 3)), np.full((4, 3), 0.1))}, supports={"u": support})
    bnncompress.pack(p, tmp_path / "u.bnc", lam=0.1)
    wide = {**support, "lower_bound": np.zeros((2, 4, 3)).tolist()}

    def change(records):
        return [dataclasses.replace(records[0], params={**records[0].params, "support": wide})]

    _forged(tmp_path / "u.bnc", tmp_path / "f.bnc", change)
    with pytest.raises(ArchiveError, match=r"does not fit its shape \(4, 3\)"):
        bnncompress.load(tmp_path / "f.bnc")


def test_info_q_decodes_every_tensor_and_finite_parameters_decoding_to_inf_are_refused(classed, tmp_path):
    """A forged rotation scale of 3e37 (finite, as the checks require) decoded to inf on every path,
    and info -q said 'sound' (exit 0) for archives every load refused (it read only the manifest)."""
    import dataclasses

    def huge(records):
        rec = records[0]
        side = {**rec.side, "rotation_scale": np.full_like(rec.side["rotation_scale"], 3e37)}
        return [dataclasses.replace(rec, side=side), *records[1:]]

    path = _forged(classed, tmp_path / "inf.bnc", huge)
    a = bnncompress.load(path)
    for read in (lambda: a["w"], lambda: a.rows("w", [0])):
        with pytest.raises(ArchiveError, match="beyond the range"):
            read()
    r = run("info", "-q", str(path))
    assert r.exit_code == 2 and "beyond the range" in r.output
    assert run("info", "-q", str(classed)).exit_code == 0


def test_forged_means_beyond_float32_are_one_error_without_numpys_warning(tmp_path):
    """Column means of 3e38 and values of 1e38 (finite float32) decoded to inf, with numpy's overflow
    warning on stderr."""
    import dataclasses
    import warnings

    def huge(records):
        rec = records[0]
        side = {**rec.side, "mean": np.full_like(rec.side["mean"], 3e38)}
        return [dataclasses.replace(rec, side=side, grid=rec.grid + np.float32(1e38)), *records[1:]]

    rng = np.random.default_rng(0)
    loc = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))
    plain = tmp_path / "p.bnc"  # (no rotation: the untransformed inverse path)
    bnncompress.pack({"w": (loc, np.full((2000, 8), 0.1))}, plain, lam=0.5, options={"transform": "none"})
    a = bnncompress.load(_forged(plain, tmp_path / "m.bnc", huge))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for read in (lambda: a["w"], lambda: a.rows("w", [0, 1999])):
            with pytest.raises(ArchiveError, match="beyond the range"):
                read()


def test_an_archive_copied_with_h5py_keeps_loading_or_says_what_changed(tmp_path):
    """Counts stored big-endian (the same values; a big-endian writer's native arrays) failed the checksum,
    which hashes the spec's type name ("uint32"), not the byte order; root strings rewritten with h5py (which
    stores str and bytes as variable-length strings) were "not a bnncompress archive" or "corrupt"."""
    import h5py

    rng = np.random.default_rng(0)
    path = tmp_path / "v.bnc"
    bnncompress.pack({"w": (rng.normal(size=(3000, 8)), np.full((3000, 8), 0.01))}, path, method="vbq", bits=6)
    with h5py.File(path) as f:
        assert f["counts"].dtype.itemsize > 1
        attrs = dict(f.attrs)
    copy = tmp_path / "big.bnc"
    with h5py.File(path) as src, h5py.File(copy, "w") as dst:
        for key, value in attrs.items():
            dst.attrs[key] = value
        for key in src:
            if key == "counts":
                dst.create_dataset(key, data=src[key][()].astype(src[key].dtype.newbyteorder(">")))
            else:
                src.copy(key, dst)
    assert np.array_equal(bnncompress.load(copy)["w"], bnncompress.load(path)["w"])
    for key in ("format", "manifest_sha256"):
        edited = tmp_path / f"{key}.bnc"
        edited.write_bytes(path.read_bytes())
        with h5py.File(edited, "a") as f:
            f.attrs[key] = bytes(attrs[key])  # (h5py writes bytes as a variable-length string)
        _one_line_error(run("info", edited), f"attribute '{key}' is a variable-length string")
        _one_line_error(run("eval", edited), f"attribute '{key}' is a variable-length string")


def test_npz_export_refuses_names_numpy_would_read_as_another_tensor(tmp_path):
    # npz["x.npy"] is the member x.npy, which holds tensor 'x' (tensor 'x.npy' is member x.npy.npy): 0 for 5
    a = bnncompress.load(_vocab_tensor_archive(tmp_path, with_vocab=False, names=("x", "x.npy")))
    with pytest.raises(OptionError, match="'x' and 'x.npy' cannot both be kept in an npz file"):
        a.export(tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
    r = run("unpack", a.path, "-o", tmp_path / "cli.npz")
    assert r.exit_code == 2 and "cannot both be kept" in r.output and not (tmp_path / "cli.npz").exists()
    a.export(tmp_path / "one.npz", tensor="x.npy")  # one at a time is fine
    with np.load(tmp_path / "one.npz") as npz:
        np.testing.assert_array_equal(npz["x.npy"], a["x.npy"])
    words = bnncompress.load(_vocab_tensor_archive(tmp_path, with_vocab=True, names=("w", "vocab.npy")))
    with pytest.warns(UserWarning, match="'vocab.words'"):  # the words' key 'vocab' would be read for 'vocab.npy'
        words.export(tmp_path / "words.npz")
    with np.load(tmp_path / "words.npz") as npz:
        np.testing.assert_array_equal(npz["vocab.npy"], words["vocab.npy"])
        assert list(npz["vocab.words"]) == words.vocab


def test_npz_export_refuses_a_name_with_a_nul(tmp_path):
    # zip member names end at a NUL: 'w\0a' and 'w\0b' were both stored as 'w', the second read for both
    rng = np.random.default_rng(0)
    post = {n: (rng.normal(size=(40, 8)) + k, np.full((40, 8), 0.2)) for k, n in enumerate(["w\0a", "w\0b"])}
    bnncompress.pack(post, tmp_path / "nul.bnc", method="uniform", bits=4)
    a = bnncompress.load(tmp_path / "nul.bnc")
    with pytest.raises(OptionError, match="NUL character"):
        a.export(tmp_path / "out.npz")
    a.export(tmp_path / "out.pt")  # a dict key may hold it
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    np.testing.assert_array_equal(state["w\0b"].numpy(), a["w\0b"])


@pytest.mark.parametrize(
    "item",
    [
        b"[1.5]",
        b"[[1.5]]",
        b'{"a":1.5}',
        b'{"a":{"b":1.5}}',
        b'{"a":[1.5]}',
        b"{}",
        b'""',
        b"1.5e300",
        ('"' + "a" * 200 + '\U0001f600"').encode(),  # (one emoji: the whole text 4 bytes a character)
    ],
)
def test_the_manifests_parse_estimate_is_above_what_the_parse_takes(item):
    """Counting a number at 32 bytes and a dict's entries not at all, small lists and dicts of entries parsed to
    1.05-1.28 times the estimate: a forged manifest admitted for a 10 kB archive took 1.18 times the budget; one
    emoji made the whole text 4 bytes a character, and its parse twice the estimate."""
    import tracemalloc

    from bnncompress.manifest import parse_manifest, parse_need

    for raw in (
        b"[" + b",".join([item] * 20_000) + b"]",
        b"{" + b",".join(b'"k%d":' % i + item for i in range(20_000)) + b"}",
    ):
        tracemalloc.start()
        parsed = parse_manifest(raw, "a test", 10**9)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert parsed and peak < parse_need(raw), (raw[:30], peak, parse_need(raw))
