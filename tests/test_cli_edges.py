"""The command line, the Python API and rate control at their edges, each one a change the rest of the suite
let through (mutation hunt): inputs never overwritten (sweep's CSV, pack's vocabulary, standard output
appended to an input), a module's prints kept out of an archive on standard output, no archive sent to a
terminal, the payload pack reports, the target-missed warning, lambda 0, info's total row, option names."""

from __future__ import annotations

import os
import pty
import shlex
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import bnncompress
from bnncompress import BnnCompressError, OptionError, QualityWarning
from bnncompress.cli import app
from bnncompress.cli.app import parse_options
from bnncompress.files import write_bytes

CLI = [sys.executable, "-m", "bnncompress"]


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "p.npz"
    np.savez(path, **{"w.loc": rng.normal(size=(50, 8)), "w.scale": rng.uniform(0.1, 1, size=(50, 8))})
    (tmp_path / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(50)))
    return path


def test_sweep_never_writes_its_csv_over_the_posterior_even_with_force(tmp_path):
    source = tmp_path / "example.pt"
    shutil.copy("data/example.pt", source)
    before = source.read_bytes()
    with pytest.raises(BnnCompressError):
        bnncompress.sweep(source, ["uniform"], [2.0], restrict_vocab=2000, csv_path=source, force=True)
    assert source.read_bytes() == before


def test_pack_never_writes_its_archive_over_the_vocabulary_even_with_force(npz):
    vocab = npz.parent / "vocab.txt"
    before = vocab.read_bytes()
    with pytest.raises(OptionError):
        bnncompress.pack(npz, vocab, vocab=vocab, lam=0.1, force=True)
    assert vocab.read_bytes() == before


def test_the_payload_pack_reports_is_the_one_info_reads(tmp_path):
    rng = np.random.default_rng(0)
    posterior = {
        "big": (rng.normal(size=(20000, 10)), np.full((20000, 10), 0.3)),  # wide counts
        "small": (rng.normal(size=(50, 8)), rng.uniform(0.05, 1, size=(50, 8))),
    }
    result = bnncompress.pack(posterior, tmp_path / "x.bnc", lam=0.1, method="vbq")
    info = bnncompress.load(tmp_path / "x.bnc").info()
    assert result.payload_bytes == sum(t["payload_bytes"] for t in info["tensors"])


def test_a_target_missed_by_more_than_2_percent_is_said(tmp_path):
    rng = np.random.default_rng(0)
    posterior = {"w": (rng.normal(size=(60, 20)), rng.uniform(0.05, 1, size=(60, 20)))}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bnncompress.pack(posterior, tmp_path / "x.bnc", bits=3, method="kmeans")
    miss = abs(result.payload_bits_per_weight - 3) / 3
    assert 0.02 < miss < 0.05 and result.target_missed  # (a miss a 5% tolerance would let pass silently)
    assert any(issubclass(w.category, QualityWarning) for w in caught)


def test_lambda_0_is_refused_before_any_work(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(OptionError, match="lambda"):
        bnncompress.pack({"w": (rng.normal(size=(60, 20)), np.full((60, 20), 0.1))}, tmp_path / "x.bnc", lam=0)


def test_infos_total_row_has_payload_then_file_bits(tmp_path):
    rng = np.random.default_rng(0)
    bnncompress.pack(
        {"w": (rng.normal(size=(500, 8)), rng.uniform(0.1, 1, size=(500, 8)))}, tmp_path / "a.bnc", lam=0.1
    )
    total = bnncompress.load(tmp_path / "a.bnc").info()["total"]
    row = next(
        line
        for line in CliRunner().invoke(app, ["info", str(tmp_path / "a.bnc")]).output.splitlines()
        if line.startswith("total")
    ).split()
    assert row[-3:-1] == [f"{total['payload_bits_per_weight']:.3f}", f"{total['file_bits_per_weight']:.3f}"]


def test_option_names_take_dashes_for_underscores():
    assert parse_options(["max-level=8"]) == {"max_level": 8}


def _shell(command: str, cwd) -> subprocess.CompletedProcess:
    """``bnncompress COMMAND`` through a shell (for its redirections), in ``cwd``."""
    line = f"{shlex.quote(sys.executable)} -m bnncompress {command}"
    return subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_standard_output_appended_to_an_input_is_refused(npz, tmp_path):
    vocab = npz.parent / "vocab.txt"
    before = vocab.read_bytes()
    r = _shell("pack p.npz --vocab vocab.txt --lam 0.1 -q -o - >> vocab.txt", npz.parent)
    assert r.returncode == 2 and vocab.read_bytes() == before, r.stderr
    bnncompress.pack(npz, tmp_path / "a.bnc", vocab=vocab, lam=0.1)
    archive = (tmp_path / "a.bnc").read_bytes()
    r = _shell("unpack a.bnc -o - >> a.bnc", tmp_path)
    assert r.returncode == 2 and (tmp_path / "a.bnc").read_bytes() == archive, r.stderr
    post = tmp_path / "post"
    post.mkdir()
    np.save(post / "w.loc.npy", np.zeros((50, 8), np.float32))
    np.save(post / "w.scale.npy", np.ones((50, 8), np.float32))
    before = (post / "w.loc.npy").read_bytes()
    r = _shell("pack post --lam 0.1 -o - >> post/w.loc.npy", tmp_path)
    assert r.returncode == 2 and (post / "w.loc.npy").read_bytes() == before, r.stderr


@pytest.mark.slow
def test_a_model_modules_prints_stay_out_of_an_archive_on_standard_output(tmp_path):
    (tmp_path / "mymodel.py").write_text(
        "import torch, pyro, pyro.distributions as dist\nprint('loading my model')\n"
        "def model():\n    return pyro.sample('w', dist.Normal(torch.zeros(40, 5), 1.0).to_event(2))\n"
    )
    make_store = (
        "import sys; sys.path.insert(0, '.'); import torch, pyro, mymodel\n"
        "from pyro.infer.autoguide import AutoNormal\ng = AutoNormal(mymodel.model); g()\n"
        "torch.save(pyro.get_param_store().get_state(), 'store.pt')"
    )
    subprocess.run([sys.executable, "-c", make_store], cwd=tmp_path, check=True, capture_output=True)
    r = _shell("pack store.pt --model mymodel:model --lam 0.1 -q -o - > out.bnc", tmp_path)
    assert r.returncode == 0, r.stderr
    assert bnncompress.load(tmp_path / "out.bnc").names == ["w"]  # (the print went to standard error)


@pytest.mark.slow
def test_an_archive_is_not_written_to_a_terminal(npz):
    controller, terminal = pty.openpty()
    try:
        r = subprocess.run(
            [*CLI, "pack", "p.npz", "--lam", "0.1", "-q", "-o", "-"],
            cwd=npz.parent,
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(terminal)
    os.set_blocking(controller, False)
    try:
        sent = os.read(controller, 65536)
    except OSError:  # (nothing written: the terminal's other end reads as closed or empty)
        sent = b""
    os.close(controller)
    assert r.returncode == 2 and b"HDF" not in sent, r.stderr


def test_long_output_names_are_written_with_a_7_digit_process_id(tmp_path, monkeypatch):
    """Linux's pid_max is 4,194,304 on most 64-bit systems (this machine's 32,768 hides it): the temporary
    name beside a 255-byte output name must still fit."""
    monkeypatch.setattr(os, "getpid", lambda: 4194303)
    for n in (240, 250, 255):
        write_bytes(tmp_path / ("v" * (n - 4) + ".bnc"), b"abc")
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [240, 250, 255]


def test_a_target_just_above_the_most_a_posterior_reaches_packs_as_missed(tmp_path):
    rng = np.random.default_rng(0)
    posterior = {"w": (rng.normal(size=(60, 20)), rng.uniform(0.3, 1, size=(60, 20)))}
    with pytest.raises(bnncompress.RateControlError, match="at most") as caught:
        bnncompress.pack(posterior, tmp_path / "x.bnc", bits=30)
    top = float(str(caught.value).split("about ")[1].split(" bits/weight")[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bnncompress.pack(posterior, tmp_path / "x.bnc", bits=round(top * 1.015, 3))  # within 2%
    assert abs(result.payload_bits_per_weight - top) / top < 0.02
