"""No command writes over one of its own inputs, and odd requests get one line (a helper's bug hunt):
files of a posterior directory, standard output that is the input, the --model module; safetensors
files the reference library refuses; a model that exits or fails with a long message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from typer.testing import CliRunner

import bnncompress
from bnncompress import OptionError, PosteriorError, RateControlError
from bnncompress.cli import app
from bnncompress.packing import default_output


def _npy_dir(path):
    rng = np.random.default_rng(0)
    path.mkdir()
    np.save(path / "emb.loc.npy", rng.normal(size=(200, 8)).astype(np.float32))
    np.save(path / "emb.scale.npy", np.full((200, 8), 0.1, np.float32))
    (path / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(200)))
    return path


def _one_line_exit_2(result, fragment):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output


@pytest.mark.parametrize("member", ["emb.loc.npy", "vocab.txt"])
def test_a_file_of_the_posterior_directory_is_never_the_output(tmp_path, member):
    source = _npy_dir(tmp_path / "d")
    before = (source / member).read_bytes()
    _one_line_exit_2(
        CliRunner().invoke(app, ["pack", str(source), "-o", str(source / member), "-f"]), "input directory"
    )
    with pytest.raises(OptionError, match="input directory"):
        bnncompress.pack(source, source / member)
    sweep = ["sweep", str(source), "--methods", "uniform", "--bits", "2", "-o", str(source / member)]
    _one_line_exit_2(CliRunner().invoke(app, sweep), "input directory")
    assert (source / member).read_bytes() == before
    bnncompress.pack(source, source / "new.bnc")  # a new file in the directory is fine


@pytest.mark.parametrize("redirect", ["append", "read-write"])
def test_standard_output_that_is_the_input_is_refused(tmp_path, redirect):
    source = tmp_path / "p.npz"
    rng = np.random.default_rng(0)
    np.savez(source, **{"w.loc": rng.normal(size=(50, 4)), "w.scale": np.full((50, 4), 0.1)})
    before = source.read_bytes()
    with open(source, "ab" if redirect == "append" else "r+b") as out:
        done = subprocess.run(
            [sys.executable, "-m", "bnncompress.cli", "pack", str(source), "-o", "-"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert done.returncode == 2 and "standard output is the input" in done.stderr, done.stderr
    assert source.read_bytes() == before


def test_the_model_module_is_an_input_and_a_model_that_exits_or_fails_is_one_line(tmp_path, monkeypatch):
    store = tmp_path / "store.pt"
    import torch

    torch.save(
        {
            "params": {"AutoNormal.locs.a": torch.zeros(3), "AutoNormal.scales.a": torch.ones(3)},
            "constraints": {},
        },
        store,
    )
    code = (
        "import pyro, pyro.distributions as dist\n"
        "def model():\n    pyro.sample('a', dist.Normal(0.0, 1.0).expand([3]).to_event(1))\n"
        "def exits():\n    raise SystemExit(0)\n"
        "def fails():\n    raise RuntimeError('boom\\nTrace Shapes:\\n Param Sites:')\n"
    )
    (tmp_path / "mymodel.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    run = CliRunner().invoke
    _one_line_exit_2(run(app, ["pack", str(store), "--model", "mymodel:model", "-o", "mymodel.py", "-f"]), "input")
    assert (tmp_path / "mymodel.py").read_text() == code
    _one_line_exit_2(run(app, ["pack", str(store), "--model", "mymodel:exits", "-o", "e.bnc"]), "SystemExit")
    assert not (tmp_path / "e.bnc").exists()
    _one_line_exit_2(run(app, ["pack", str(store), "--model", "mymodel:fails", "-o", "f.bnc"]), "RuntimeError: boom")
    assert str(tmp_path) not in sys.path[:-1]  # last: a stray ./h5py.py must not stand in for the library


@pytest.mark.slow  # (a child process: run by .ci/run's -m slow)
def test_the_model_modules_directory_is_left_off_the_path_after_its_import(tmp_path, monkeypatch):
    # --model put the working directory first on sys.path for the rest of the run: ./h5py.py (imported when the
    # archive is written) ran instead of the library, and the pack ended in a traceback
    (tmp_path / "mymodel.py").write_text(
        "import pyro, pyro.distributions as dist\n"
        "def model():\n    from helpers import SIZE  # (a sibling imported when the model runs)\n"
        "    pyro.sample('a', dist.Normal(0.0, 1.0).expand([SIZE]).to_event(1))\n"
    )
    (tmp_path / "helpers.py").write_text("SIZE = 3\n")
    (tmp_path / "h5py.py").write_text("raise ImportError('./h5py.py, not the library')\n")
    store = tmp_path / "store.pt"
    torch.save(
        {"params": {"AutoNormal.locs.a": torch.zeros(3), "AutoNormal.scales.a": torch.ones(3)}, "constraints": {}},
        store,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    runner = tmp_path / "bin" / "bnncompress_cli.py"  # as the console script: its own directory first on the path
    runner.parent.mkdir()
    runner.write_text("from bnncompress.cli import main\nmain()\n")
    repo = str(Path(__file__).resolve().parents[1])
    r = subprocess.run(
        [sys.executable, str(runner), "pack", str(store), "--model", "mymodel:model", "-o", "a.bnc", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": repo},
    )
    assert r.returncode == 0, r.stderr
    assert bnncompress.load(tmp_path / "a.bnc").names == ["a"]


def test_requests_a_method_cannot_meet_say_so_exactly(tmp_path):
    rng = np.random.default_rng(0)
    posterior = {"w": (rng.normal(size=(50, 4)), np.full((50, 4), 0.1))}
    with pytest.raises(RateControlError, match=r"about 3\d\.\d bits/weight at most"):  # not "0.00"
        bnncompress.pack(posterior, tmp_path / "b.bnc", bits=1e20)
    # The limits said are the search's: the largest rate it measured (vbq-direction's rate here falls with
    # lambda below 1: it said "about 0.02 at most" where lambda 1 gives 1.57), and the range's end said as such
    # (all scales 1e-13: "below the smallest payload this posterior packs to (3.85)", beyond lambda 1e24).
    outlier = np.random.default_rng(0).normal(size=(257, 31)).astype(np.float32)
    outlier[0, 0] = 1e6
    posterior = {"w": (outlier, np.full_like(outlier, 0.1))}
    with pytest.raises(RateControlError, match=r"about 1\.03 bits/weight at most"):
        bnncompress.pack(posterior, tmp_path / "o.bnc", method="vbq-direction", bits=2)
    tiny = rng.normal(size=(300, 40)).astype(np.float32)  # (scales 1e-7 reach 2 bits now, at lambda 3e13)
    with pytest.raises(RateControlError, match=r"stopped at lambda 1e\+24, the end of its range: lam beyond"):
        bnncompress.pack({"w": (tiny, np.full_like(tiny, 1e-13))}, tmp_path / "t.bnc", method="vbq", bits=2)
    with pytest.raises(OptionError, match="fixed rate"):  # was accepted, and 7 recorded as its lambda
        bnncompress.pack(posterior, tmp_path / "f.bnc", method="float16", lam=7.0)
    with pytest.raises(OptionError, match="give output"):  # '.' is a posterior directory without a name
        default_output(".")


@pytest.mark.parametrize(
    "scale_offsets, filler, extra, problem",
    [
        ([0, 800], b"", b"", "overlaps"),  # scale reads loc's bytes
        ([800, 1600], b"", b"JUNK", "after the last tensor"),
        ([804, 1604], b"\0" * 4, b"", "unused"),
    ],
)
def test_safetensors_the_reference_library_refuses_are_refused(tmp_path, scale_offsets, filler, extra, problem):
    loc = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32).tobytes()
    scale = np.full((50, 4), 0.1, np.float32).tobytes()
    entry = {"dtype": "F32", "shape": [50, 4]}
    header = {"w.loc": {**entry, "data_offsets": [0, 800]}, "w.scale": {**entry, "data_offsets": scale_offsets}}
    raw = json.dumps(header).encode()
    data = loc + (filler + scale if scale_offsets[0] >= 800 else b"") + extra
    path = tmp_path / "p.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    with pytest.raises(PosteriorError, match=problem):
        bnncompress.read_posterior(path)


def test_a_safetensors_vocabulary_loses_its_byte_order_mark(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"w.loc": rng.normal(size=(3, 2)).astype(np.float32), "w.scale": np.full((3, 2), 0.1, np.float32)}
    save_file(arrays, tmp_path / "v.safetensors", metadata={"vocab": "\ufeffking\nqueen\nman"})
    assert bnncompress.read_posterior(tmp_path / "v.safetensors").vocab == ["king", "queen", "man"]


def test_a_vocabulary_given_over_the_posteriors_own_is_said(tmp_path):
    import warnings

    from bnncompress.errors import QualityWarning

    rng = np.random.default_rng(0)
    arrays = {"w.loc": rng.normal(size=(3, 2)), "w.scale": np.full((3, 2), 0.1), "vocab": ["a", "b", "c"]}
    np.savez(tmp_path / "p.npz", **arrays)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnncompress.pack(tmp_path / "p.npz", tmp_path / "same.bnc", vocab=["a", "b", "c"])
        assert not [w for w in caught if "replaced" in str(w.message)]
        bnncompress.pack(tmp_path / "p.npz", tmp_path / "other.bnc", vocab=["x", "y", "z"])
    said = [str(w.message) for w in caught if issubclass(w.category, QualityWarning) and "replaced" in str(w.message)]
    assert said and "own vocabulary (3 words)" in said[0]
    assert bnncompress.load(tmp_path / "other.bnc").vocab == ["x", "y", "z"]


def test_analogy_sections_no_question_could_be_asked_in_are_none_not_zero():
    result = bnncompress.evaluate("data/example.pt", restrict_vocab=1000, metrics=("analogy",))
    sections = result["analogy_sections"]
    assert sections["currency"] is None and all(v is None or 0 <= v <= 1 for v in sections.values())
    assert any(v is not None for v in sections.values())


def test_a_corpus_that_is_not_utf8_is_refused_not_mangled(tmp_path):
    from bnncompress.models.skipgram import read_corpus

    (tmp_path / "latin1.txt").write_bytes("le café est très bon\n".encode("latin-1"))
    with pytest.raises(OptionError, match="not UTF-8 text \\(line 1\\)"):
        read_corpus(tmp_path / "latin1.txt")
    (tmp_path / "utf8.txt").write_text("le café est très bon\n", encoding="utf-8")
    assert read_corpus(tmp_path / "utf8.txt") == [["le", "café", "est", "très", "bon"]]


def _h5_posterior(path, value):
    import h5py

    rng = np.random.default_rng(0)
    tmp = path.with_name(path.name + ".new")
    with h5py.File(tmp, "w") as f:
        f["w/loc"] = (value + rng.normal(size=(300, 20))).astype(np.float32)
        f["w/scale"] = np.full((300, 20), 0.01, np.float32)
    tmp.replace(path)  # as a trainer saves: a new file renamed over the old one


def test_a_posterior_file_replaced_at_its_path_is_read_anew(tmp_path):
    # Streamed HDF5 reads kept one open handle per path for the process: packing the file saved over
    # the first one packed the first one's values again, silently.
    source = tmp_path / "p.h5"
    for value in (1.0, 5.0):
        _h5_posterior(source, value)
        bnncompress.pack(source, tmp_path / "a.bnc", bits=4, stream=True)
        assert abs(bnncompress.load(tmp_path / "a.bnc")["w"].mean() - value) < 0.1


@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_a_posterior_written_while_it_is_packed_is_refused(tmp_path, kind):
    # The fourth hunt: a file rewritten in place during a streamed pack gave an archive holding rows of
    # both versions, without an error.
    rng = np.random.default_rng(1)
    if kind == "npy":
        source = tmp_path / "d"
        source.mkdir()
        for name in ("a", "b"):
            np.save(source / f"{name}.loc.npy", rng.normal(size=(400, 10)).astype(np.float32))
            np.save(source / f"{name}.scale.npy", np.full((400, 10), 0.1, np.float32))
        victim = source / "a.loc.npy"
    else:
        import h5py

        source = victim = tmp_path / "p.h5"
        with h5py.File(source, "w") as f:
            for name in ("a", "b"):
                f[f"{name}/loc"] = rng.normal(size=(400, 10)).astype(np.float32)
                f[f"{name}/scale"] = np.full((400, 10), 0.1, np.float32)
    size = victim.stat().st_size

    def rewrite_once(stage, done, total):  # the user's trainer saving again, in place, mid-pack
        if stage == "quantizing and coding" and done == 1 and victim.stat().st_size == size:
            with open(victim, "r+b") as fh:
                fh.seek(size - 4000)
                fh.write(np.full(1000, 3.0, np.float32).tobytes())
                fh.write(b"!")  # one byte more: the size tells it even where times are coarse

    with pytest.raises(PosteriorError, match="changed while"):
        bnncompress.pack(source, tmp_path / "out.bnc", bits=2, stream=True, progress=rewrite_once)
    assert not (tmp_path / "out.bnc").exists()


# ----------------------------------------------------------------------------- a files hunt


EXAMPLE_PT = Path(__file__).parents[1] / "data" / "example.pt"


def test_an_output_made_while_the_command_runs_is_kept_without_force(tmp_path, monkeypatch):
    # The CLI checked the output at the start, then called the API with force=True: a file the user
    # (or a second pack) made meanwhile was replaced, exit 0.
    import bnncompress.packing as packing

    out = tmp_path / "out.bnc"
    real = packing.write_archive

    def user_saves_first(path, *args, **kwargs):
        out.write_text("my precious file\n")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(packing, "write_archive", user_saves_first)
    r = CliRunner().invoke(app, ["pack", str(EXAMPLE_PT), "-o", str(out), "--lam", "1"])
    assert r.exit_code == 2 and "already exists" in r.output
    assert out.read_text() == "my precious file\n"


def test_a_sweep_that_fails_while_writing_leaves_none_of_its_files(tmp_path, monkeypatch):
    # The CSV and each figure were renamed into place one after another: a failure at the second figure
    # (a full disk) left the CSV and the first figure.
    from matplotlib.figure import Figure

    real, calls = Figure.savefig, []

    def full_at_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", full_at_the_second)
    with pytest.raises(OSError):
        bnncompress.sweep(
            EXAMPLE_PT, ["float16"], [2], restrict_vocab=300, csv_path=tmp_path / "r.csv", plot_path=tmp_path / "rd.png"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_archive_renamed_over_the_path_while_it_opens_is_read_whole(tmp_path, monkeypatch):
    # load()/info took the size from one file and the contents from another (three separate opens).
    import h5py

    first, second = tmp_path / "a.bnc", tmp_path / "b.bnc"
    rng = np.random.default_rng(0)
    bnncompress.pack({"w": (rng.normal(size=(50, 4)), np.full((50, 4), 0.1))}, first, method="float16")
    bnncompress.pack({"w": (rng.normal(size=(900, 4)), np.full((900, 4), 0.1))}, second, method="float16")
    size = second.stat().st_size
    real, renamed = h5py.File, []

    def replaced_first(path, *args, **kwargs):
        if not renamed:
            renamed.append(second.replace(first))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", replaced_first)
    a = bnncompress.load(first)
    assert a.shape("w") == (900, 4) and a.info()["total"]["file_bytes"] == size


def test_an_archive_another_process_writes_is_said_to_be_locked(tmp_path):
    path = tmp_path / "a.bnc"
    bnncompress.pack({"w": (np.zeros((5, 2)), np.ones((5, 2)))}, path, method="float16")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py, sys, time; f = h5py.File({str(path)!r}, 'r+'); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        holder.stdout.readline()
        with pytest.raises(bnncompress.ArchiveError, match="locked by a process writing to it"):
            bnncompress.load(path)  # it said "corrupt or truncated; re-create it"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_standard_output_closed_is_one_line(tmp_path):
    bnncompress.pack(EXAMPLE_PT, tmp_path / "a.bnc", lam=1.0)
    for args in (["pack", str(EXAMPLE_PT), "-o", "-"], ["unpack", str(tmp_path / "a.bnc"), "-o", "-"]):
        done = subprocess.run(
            [sys.executable, "-m", "bnncompress", *args],
            preexec_fn=lambda: os.close(1),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert done.returncode == 2 and done.stderr.strip() == "error: standard output is closed; pass --output FILE"


def test_outputs_that_name_no_file_are_refused(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(OptionError, match="cannot name the archive after the directory '..'"):
        default_output("..")  # it wrote a hidden '...bnc' here
    for ending in ("/", "/."):
        with pytest.raises(OptionError, match=r"names a directory \(a final / or /\.\)"):
            bnncompress.pack(EXAMPLE_PT, str(tmp_path / "newname") + ending)  # it wrote a file 'newname'
    assert not (tmp_path / "newname").exists()


def test_a_read_only_umask_still_writes(tmp_path):
    # mkstemp's 0600 under umask 222 was 0400, and the final mode was set before writing: every command
    # failed with "Permission denied" for a user (root without DAC override here, if setpriv exists).
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to drop the permission override")
    (tmp_path / "w").mkdir(mode=0o777)
    script = f"umask 222; {sys.executable} -m bnncompress pack {EXAMPLE_PT} -o {tmp_path}/w/new.bnc -q --lam 1"
    done = subprocess.run(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "sh", "-c", script],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w" / "new.bnc").stat().st_mode & 0o777 == 0o444
    assert bnncompress.load(tmp_path / "w" / "new.bnc").names == ["word_vectors", "context_vectors"]


@pytest.mark.slow  # (child processes)
def test_a_model_module_that_prints_does_not_write_into_the_archive_on_stdout(tmp_path):
    """pack -o - --model: the module's prints (at import and in the model) went into the archive's bytes,
    exit 0, and info then said 'not a bnncompress archive'. The Pyro hunt's third pass."""
    import torch

    store = tmp_path / "store.pt"
    params = {"AutoNormal.locs.a": torch.zeros(3), "AutoNormal.scales.a": torch.ones(3)}
    torch.save({"params": params, "constraints": {}}, store)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("# the package\n")
    (tmp_path / "pkg" / "loud.py").write_text(
        "import pyro, pyro.distributions as dist\nprint('loading data...')\n"
        "def model():\n    print('tracing')\n    pyro.sample('a', dist.Normal(0.0, 1.0).expand([3]).to_event(1))\n"
    )
    with open(tmp_path / "out.bnc", "wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "bnncompress.cli", "pack", str(store), "-o", "-", "--model", "pkg.loud:model"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
    assert done.returncode == 0 and "loading data" in done.stderr, done.stderr
    assert bnncompress.load(tmp_path / "out.bnc").names == ["a"]
    # --force onto the package's __init__.py (only the module's own file was protected)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bnncompress.cli",
            "pack",
            str(store),
            "-o",
            "pkg/__init__.py",
            "-f",
            "--model",
            "pkg.loud:model",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "is the input" in done.stderr, done.stderr
    assert (tmp_path / "pkg" / "__init__.py").read_text() == "# the package\n"
