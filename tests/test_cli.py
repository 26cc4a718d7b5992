"""The command line: success paths, and one-line errors with exit code 2 for bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bnncompress.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def posterior_file(tmp_path, synthetic):
    loc, scale = synthetic
    path = tmp_path / "emb.pt"
    torch.save({"word_vectors.loc": torch.tensor(loc), "word_vectors.scale": torch.tensor(scale)}, path)
    (tmp_path / "vocab.txt").write_text("\n".join(f"w{i}" for i in range(loc.shape[0])))
    return path


def test_pack_info_unpack(tmp_path, posterior_file):
    r = run("pack", posterior_file, "--vocab", tmp_path / "vocab.txt", "--bits", 2)
    assert r.exit_code == 0, r.output
    archive = tmp_path / "emb.bnc"
    assert archive.exists() and "bits/weight (target 2)" in r.output
    r = run("info", archive, "--json")
    info = json.loads(r.output)
    assert info["tensors"][0]["name"] == "word_vectors" and info["vocab_words"] == 2000
    assert info["total"]["payload_bits_per_weight"] == pytest.approx(2.0, rel=0.02)
    r = run("info", archive)
    assert r.exit_code == 0 and "vs f32" in r.output and "word_vectors" in r.output and "total" in r.output
    for out, fmt in (("v.txt", None), ("sd.pt", None), ("arr.npz", None), ("v.bin", "word2vec")):
        args = ["unpack", archive, "-o", tmp_path / out] + (["--format", fmt] if fmt else [])
        assert run(*args).exit_code == 0
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"))
    assert kv.vectors.shape == (2000, 50)
    assert torch.load(tmp_path / "sd.pt", weights_only=True)["word_vectors"].shape == (2000, 50)
    with np.load(tmp_path / "arr.npz") as npz:
        assert npz["vocab"][3] == "w3"


def _assert_one_line_error(r, pattern):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and pattern in lines[0], r.output
    assert "Traceback" not in r.output


def test_bad_inputs_exit_2_with_one_line(tmp_path, posterior_file):
    _assert_one_line_error(run("pack", tmp_path / "missing.pt"), "does not exist")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 10)
    _assert_one_line_error(run("pack", tmp_path / "junk.pt"), "not a known posterior format")
    for name, loc, scale, msg in [
        ("nan.pt", [0.0, float("nan")], [1.0, 1.0], "NaN/inf"),
        ("neg.pt", [0.0, 1.0], [1.0, -1.0], "non-positive"),
        ("shape.pt", [0.0, 1.0], [1.0, 1.0, 1.0], "must match"),
    ]:
        torch.save({"w.loc": torch.tensor(loc), "w.scale": torch.tensor(scale)}, tmp_path / name)
        _assert_one_line_error(run("pack", tmp_path / name), msg)
    (tmp_path / "short.txt").write_text("a\nb\n")
    _assert_one_line_error(run("pack", posterior_file, "--vocab", tmp_path / "short.txt"), "no 2-D tensor")
    _assert_one_line_error(run("pack", posterior_file, "--bits", 99), "fewer bits")
    _assert_one_line_error(run("pack", posterior_file, "--tensor", "nope"), "no tensor named")
    _assert_one_line_error(run("info", tmp_path / "missing.bnc"), "does not exist")
    _assert_one_line_error(run("unpack", posterior_file, "-o", tmp_path / "x.txt"), "not a bnncompress archive")


def test_corrupt_archive_and_malicious_pickle(tmp_path, posterior_file):
    assert run("pack", posterior_file, "-o", tmp_path / "a.bnc").exit_code == 0
    data = (tmp_path / "a.bnc").read_bytes()
    (tmp_path / "t.bnc").write_bytes(data[: len(data) // 2])
    _assert_one_line_error(run("info", tmp_path / "t.bnc"), "corrupt")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w.loc": torch.zeros(3), "w.scale": torch.ones(3), "x": Exploit()}, tmp_path / "evil.pt")
    _assert_one_line_error(run("pack", tmp_path / "evil.pt"), "not allowed")
    assert not marker.exists()


def test_failed_pack_leaves_no_file_and_keeps_the_old_archive(tmp_path, posterior_file):
    out = tmp_path / "keep.bnc"
    assert run("pack", posterior_file, "-o", out).exit_code == 0
    before = out.read_bytes()
    assert run("pack", posterior_file, "-o", out, "--bits", 99).exit_code == 2
    assert out.read_bytes() == before
    assert run("pack", posterior_file, "-o", tmp_path / "new.bnc", "--bits", 99).exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.pt", "keep.bnc", "vocab.txt"]


def test_real_entry_point_exit_code_and_help(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bnncompress.cli", "pack", str(tmp_path / "none.pt")], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    for cmd in ("pack", "unpack", "info", "train"):
        assert run(cmd, "--help").exit_code == 0


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_a_tensor_left_out_may_hold_nans(tmp_path, suffix):
    """--tensor good packs when another tensor of the file holds a NaN (the file's tensors were all checked as it
    was opened); packing them all still refuses, naming the bad one, and writes nothing."""
    good, bad = np.ones((40, 4), np.float32), np.full((40, 4), np.nan, np.float32)
    path = tmp_path / f"two{suffix}"
    if suffix == ".pt":
        torch.save({"good.loc": torch.tensor(good), "good.scale": torch.tensor(good), "bad.loc": torch.tensor(bad),
                    "bad.scale": torch.tensor(good)}, path)  # fmt: skip
    else:
        np.savez(path, **{"good.loc": good, "good.scale": good, "bad.loc": bad, "bad.scale": good})
    r = run("pack", path, "--tensor", "good", "--method", "float16", "-o", tmp_path / "g.bnc")
    assert r.exit_code == 0, r.output
    assert run("info", tmp_path / "g.bnc", "--json").exit_code == 0
    _assert_one_line_error(run("pack", path, "-o", tmp_path / "all.bnc"), "loc of 'bad' has 160 NaN/inf values")
    assert not (tmp_path / "all.bnc").exists()
