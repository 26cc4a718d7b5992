"""Hostile and everyday inputs to pack, eval, sweep and train (issue 22, round 3): no clobbered
input, no traceback, word vectors read by content, the conventions of gzip and zstd."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import typer
from gensim.models import KeyedVectors
from typer.testing import CliRunner

import bnncompress
from bnncompress.cli import app
from bnncompress.cli import embeddings as eval_command
from bnncompress.cli.streams import is_stdio
from bnncompress.errors import OptionError
from bnncompress.evaluation import read_word_vectors
from bnncompress.files import TEMP_SUFFIX, atomic_output, remove_stale_temporaries, write_bytes
from bnncompress.scratch import scratch_directory

runner = CliRunner()
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "example.pt")
CORPUS = "the cat sat on the mat\nthe dog sat on the log\n"


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


def one_error_line(result, *fragments):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


def _vectors(n=6, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=dim, count=0, dtype=np.float32)
    kv.add_vectors([f"w{i}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32))
    return kv


# --- 1. an output is never one of the command's inputs, not even with --force ---


def test_train_refuses_to_overwrite_its_corpus_or_init_vectors(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    one_error_line(run("train", corpus, "-o", corpus, "-f"), "is the input")
    (tmp_path / "hard.txt").hardlink_to(corpus)  # the same file under another name
    one_error_line(run("train", corpus, "-o", tmp_path / "hard.txt", "-f"), "is the input")
    (tmp_path / "link.txt").symlink_to(corpus)
    one_error_line(run("train", tmp_path / "link.txt", "-o", corpus, "-f"), "is the input")
    vectors = tmp_path / "vec.txt"
    vectors.write_text("the 1 2\ncat 3 4\n")
    one_error_line(run("train", corpus, "--init", vectors, "-o", vectors, "-f"), "is the input")
    assert corpus.read_text() == CORPUS and vectors.read_text() == "the 1 2\ncat 3 4\n"


def test_sweep_refuses_to_overwrite_its_posterior_or_its_own_csv(tmp_path):
    source = tmp_path / "emb.pt"
    source.write_bytes(open(EXAMPLE, "rb").read())
    before = source.read_bytes()
    one_error_line(run("sweep", source, "--methods", "uniform", "--bits", "2", "-o", source, "-f"), "is the input")
    plot = tmp_path / "rd.png"
    figure = tmp_path / "rd-ws353.png"
    one_error_line(
        run("sweep", source, "--methods", "uniform", "--bits", "2", "-o", figure, "--plot", plot, "-f"), "--output"
    )
    (tmp_path / "rd-analogy.png").symlink_to(source)  # a figure path that leads to the posterior
    r = run("sweep", source, "--methods", "uniform", "--bits", "2", "-o", tmp_path / "r.csv", "--plot", plot, "-f")
    assert r.exit_code == 2 and source.read_bytes() == before and not (tmp_path / "r.csv").exists()
    r = run("sweep", source, "--methods", "uniform", "--bits", "2", "-o", tmp_path / "r.csv", "--plot", source, "-f")
    one_error_line(r, "cannot be written as .pt files", "--plot")


def test_pack_refuses_a_hard_link_to_its_source(tmp_path):
    source = tmp_path / "emb.pt"
    source.write_bytes(open(EXAMPLE, "rb").read())
    (tmp_path / "emb.bnc").hardlink_to(source)
    one_error_line(run("pack", source, "-f"), "is the input")


def test_a_directory_output_is_named_at_once(tmp_path):
    (tmp_path / "d").mkdir()
    for args in (("pack", EXAMPLE), ("train", EXAMPLE)):
        one_error_line(run(*args, "-o", tmp_path / "d"), "is a directory")


@pytest.mark.parametrize(
    "args",
    [
        ("pack", EXAMPLE, "-o", "arch/"),
        ("unpack", "a.bnc", "-o", "out/", "--format", "npz"),
        ("unpack", "a.bnc", "-o", "notes.txt/", "-f"),  # (was: notes.txt replaced by word2vec text)
        ("sweep", EXAMPLE, "--methods", "float16", "--restrict-vocab", "100", "-o", "res/"),
        ("sweep", EXAMPLE, "--methods", "float16", "--restrict-vocab", "100", "-o", "r.csv", "--plot", "rd/"),
        ("train", "corpus.txt", "-o", "t/"),
        ("pack", EXAMPLE, "-o", "arch/."),  # (Path() drops a final /. too)
        ("unpack", "a.bnc", "-o", "notes.txt/.", "-f"),
        ("sweep", EXAMPLE, "--methods", "float16", "--restrict-vocab", "100", "-o", "r.csv", "--plot", "rd/."),
        ("train", "corpus.txt", "-o", "t/."),
    ],
)
def test_an_output_path_ending_in_a_slash_is_refused_as_the_api_refuses_it(tmp_path, monkeypatch, args):
    # typer's Path dropped the slash: `-o out/` wrote a file named 'out'
    monkeypatch.chdir(tmp_path)
    bnncompress.pack({"w": (np.ones((4, 3)), np.full((4, 3), 0.1))}, "a.bnc", method="float16")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "corpus.txt").write_text(CORPUS)
    one_error_line(run(*args), "names a directory (a final / or /.)")
    assert sorted(os.listdir(tmp_path)) == ["a.bnc", "corpus.txt", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- 4. long output names ---


@pytest.mark.parametrize("name", ["x" * 251 + ".bnc", "é" * 125 + ".bnc"])
def test_output_names_up_to_the_file_system_limit_can_be_written(tmp_path, name):
    target = tmp_path / name
    assert len(os.fsencode(target.name)) >= 250
    write_bytes(target, b"payload")
    assert target.read_bytes() == b"payload"
    assert [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)] == []


def test_temporaries_of_long_names_left_by_dead_processes_are_removed(tmp_path):
    target = tmp_path / ("y" * 250 + ".csv")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with atomic_output(target) as tmp:
        stale = tmp.with_name(tmp.name.replace(f".{os.getpid()}.", f".{int(dead.stdout)}."))
        stale.write_bytes(b"partial")
        assert len(os.fsencode(stale.name)) <= 255 and remove_stale_temporaries(target) == [stale]
        tmp.write_text("done")
    assert target.read_text() == "done" and not stale.exists()


def test_scratch_directories_of_processes_killed_outright_are_removed(tmp_path, monkeypatch):
    # (a sweep or `unpack -o -` killed with SIGKILL left its scratch copy in the temporary directory for good)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch_directory("archive of the sweep") as ours:
        (ours / "sweep.bnc").write_bytes(b"partial")
    assert not ours.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / ours.name.replace(f".{os.getpid()}.", f".{int(dead.stdout)}.")
    alive = tmp_path / ours.name.replace(f".{os.getpid()}.", f".{os.getppid()}.")
    elsewhere = tmp_path / (killed.name + "x")  # a live process of another PID namespace: its pid looks dead
    for d in (killed, alive, elsewhere, tmp_path / "bnncompress-numba-0"):
        d.mkdir()
        (d / "sweep.bnc").write_bytes(b"partial")
    import fcntl

    held = os.open(elsewhere, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # (its own lock, as scratch_directory holds while in use)
    try:
        with scratch_directory("archive of the sweep") as ours:
            pass
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, elsewhere.name, "bnncompress-numba-0"])


def test_a_link_put_in_place_of_a_temporary_output_is_refused_not_followed(tmp_path):
    # (the permissions of the replaced file were given by path: a link put there by whoever may write to the
    # directory passed them, and root's owner, to the link's target, and the link was renamed over the output)
    victim, target = tmp_path / "victim", tmp_path / "out.bnc"
    victim.write_bytes(b"private")
    victim.chmod(0o600)
    target.write_bytes(b"old")
    target.chmod(0o644)
    with pytest.raises(OSError, match="replaced by another process"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"new")
            tmp.unlink()
            tmp.symlink_to(victim)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600 and victim.read_bytes() == b"private"
    assert target.read_bytes() == b"old" and not target.is_symlink()


def test_a_writer_that_renames_its_own_file_over_the_temporary_path_is_accepted_a_hard_link_is_not(tmp_path):
    # (safetensors' save_file and matplotlib's PostScript writer rename a file of theirs onto the path given:
    # refused as 'replaced by another process' by the first version of the check)
    target, victim = tmp_path / "out.safetensors", tmp_path / "victim"
    with atomic_output(target) as tmp:
        own = tmp.with_name(tmp.name + ".writer")
        own.write_bytes(b"new")
        os.replace(own, tmp)
    assert target.read_bytes() == b"new"
    victim.write_bytes(b"private")
    with pytest.raises(OSError, match="replaced by another process"):
        with atomic_output(target) as tmp:
            tmp.unlink()
            os.link(victim, tmp)  # (a file that has another name: a link's target would be one)
    assert victim.read_bytes() == b"private" and target.read_bytes() == b"new"


def test_a_scratch_directory_works_where_the_file_system_has_no_locks(tmp_path, monkeypatch):
    # (flock's ENOLCK ended a sweep or `unpack -o -` with 'No locks available')
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with scratch_directory("archive of the sweep") as d:
        (d / "sweep.bnc").write_bytes(b"partial")
    assert not d.exists()


def test_pack_writes_an_archive_with_a_255_byte_name(tmp_path):
    out = tmp_path / ("a" * 251 + ".bnc")
    r = run("pack", _collapsing_posterior(tmp_path), "-o", out, "--lam", "0.01", "-q")
    assert r.exit_code == 0, r.output
    assert bnncompress.load(out).info()["total"]["num_weights"] > 0


# --- 2. word vectors: told apart by content; bad files are one line, never a wrong value ---


def test_eval_and_init_read_the_tools_own_unpacked_vectors_whatever_their_suffix(tmp_path):
    archive = tmp_path / "e.bnc"
    bnncompress.pack(EXAMPLE, archive, lam=1.0)
    assert run("unpack", archive, "-o", tmp_path / "text.bin", "--text").exit_code == 0  # text, under a .bin name
    assert run("unpack", archive, "-o", tmp_path / "binary.txt", "--binary").exit_code == 0
    expected = bnncompress.load(archive).to_keyed_vectors("word_vectors")
    for name in ("text.bin", "binary.txt"):
        kv = read_word_vectors(tmp_path / name)
        assert kv.index_to_key == expected.index_to_key
        np.testing.assert_allclose(kv.vectors, expected.vectors, rtol=1e-6, atol=1e-7)
        r = run("eval", tmp_path / name, "--restrict-vocab", "500")
        assert r.exit_code == 0 and "ws353" in r.output, r.output


def test_blank_lines_and_tabs_are_read_as_gensim_writes_them(tmp_path):
    kv = _vectors()
    kv.save_word2vec_format(str(tmp_path / "v.txt"))
    text = (tmp_path / "v.txt").read_text().splitlines()
    (tmp_path / "blank.txt").write_text("\n" + text[0] + "\n\n" + "\n\n".join(text[1:]) + "\n\n")
    (tmp_path / "glove.txt").write_text("\n".join(line.replace(" ", "\t", 1) for line in text[1:]) + "\n")
    for name in ("blank.txt", "glove.txt"):
        got = read_word_vectors(tmp_path / name)
        assert got.index_to_key == kv.index_to_key
        np.testing.assert_allclose(got.vectors, kv.vectors, rtol=1e-6)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\n\n   \n", "is empty"),
        (b"3 2\na 1 2\nb 3 4\na 5 6\n", "word 'a' appears twice in"),
        (b"a 1 2\nb 3 4\n\na 5 6\n", "(lines 1 and 4)"),
        (b"3 2\na 1 2\nb 3 4\n", "holds 2 vectors, not the 3"),
        (b"1 2\na 1 2\nb 3 4\n", "more vectors than the 1"),
        (b"a 1 2\nb 3\n", "line 2"),
        (b"a 1 2\nb nan 4\n", "line 2"),
        (b"a\nb\n", "no values"),
    ],
)
def test_bad_word_vector_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "vectors.txt"
    path.write_bytes(content)
    with pytest.raises(OptionError, match="") as caught:
        read_word_vectors(path)
    assert message in str(caught.value)
    one_error_line(run("eval", path), message)
    one_error_line(run("train", EXAMPLE, "--init", path, "-o", tmp_path / "t.pt"), message)


def test_eval_of_a_pipe_names_everything_eval_reads(tmp_path):
    # `eval <(unpack ... -o -)` and `cat a.bnc | eval /dev/stdin` said "pass a posterior file (.pt, .npz, ...)"
    fifo = tmp_path / "vectors"
    os.mkfifo(fifo)
    one_error_line(run("eval", fifo), "is not a regular file", "archives, posterior files and word2vec")


def test_a_bin_file_is_written_binary_unless_text_is_asked_for(tmp_path):
    # `unpack -o v.bin` wrote word2vec text under a .bin name, which gensim's binary=True cannot read.
    from gensim.models import KeyedVectors

    archive = tmp_path / "e.bnc"
    bnncompress.pack(EXAMPLE, archive, lam=1.0)
    expected = bnncompress.load(archive).to_keyed_vectors("word_vectors")
    assert run("unpack", archive, "-o", tmp_path / "v.bin").exit_code == 0
    bnncompress.load(archive).export(tmp_path / "p.bin")
    for name in ("v.bin", "p.bin"):
        kv = KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=True)
        assert kv.index_to_key == expected.index_to_key and np.array_equal(kv.vectors, expected.vectors)
    assert run("unpack", archive, "-o", tmp_path / "t.vec").exit_code == 0
    assert (tmp_path / "t.vec").read_bytes().startswith(b"4000 50\n") and b"\0" not in (tmp_path / "t.vec").read_bytes()


def test_duplicated_and_truncated_binary_vectors_are_refused(tmp_path):
    kv = _vectors(n=3, dim=5)
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    data = (tmp_path / "v.bin").read_bytes()
    (tmp_path / "dup.bin").write_bytes(data.replace(b"w1 ", b"w0 ", 1))
    (tmp_path / "cut.bin").write_bytes(data[:-7])
    one_error_line(run("eval", tmp_path / "dup.bin"), "'w0' appears twice", "vectors 1 and 2")
    one_error_line(run("eval", tmp_path / "cut.bin"), "ends inside vector 3")


# --- 3. conventions ---


def _console(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bnncompress", *map(str, args)], capture_output=True, **kwargs)


def test_version_and_python_dash_m_and_bare_help():
    r = _console("--version", text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"bnncompress {bnncompress.__version__}"
    r = _console(text=True)
    assert r.stderr.startswith("Usage: bnncompress") and "error" not in r.stderr and "Commands" in r.stderr


def test_every_command_has_quiet_and_readable_metavars():
    command = typer.main.get_command(app)
    for name in ("pack", "eval", "sweep", "train"):
        assert any("--quiet" in p.opts and "-q" in p.opts for p in command.commands[name].params), name
    for name in command.commands:
        r = run(name, "--help")
        assert r.exit_code == 0
        for ugly in ("list[", "<str>", "{source}", "{corpus}"):
            if name in ("pack", "eval", "sweep", "train"):
                assert ugly not in r.output, (name, ugly)


def _collapsing_posterior(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    np.savez(path, **{"w.loc": rng.normal(size=(50, 20)), "w.scale": np.full((50, 20), 5.0)})
    return path


def test_quality_warnings_are_one_line_each_and_quiet_hides_them(tmp_path):
    source = _collapsing_posterior(tmp_path)
    r = run("pack", source, "-o", tmp_path / "c.bnc", "--lam", "1")
    assert r.exit_code == 0, r.output
    warned = [line for line in r.output.splitlines() if "quantized to one value" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: tensor 'w'"), r.output
    assert "QualityWarning" not in r.output and ".py" not in r.output
    r = run("pack", source, "-o", tmp_path / "c.bnc", "--lam", "1", "-q", "-f")
    assert r.exit_code == 0 and r.output == ""


def test_pack_writes_the_archive_to_standard_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bnncompress.pack(EXAMPLE, tmp_path / "file.bnc", lam=1.0)
    r = runner.invoke(app, ["pack", EXAMPLE, "-o", "-", "--lam", "1"])
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == (tmp_path / "file.bnc").read_bytes()
    assert "wrote standard output" in r.stderr and not os.path.exists("-")


def test_the_current_directory_packs_to_standard_output(tmp_path, monkeypatch):
    # '.' named the temporary archive behind -o -: "cannot name the archive after the directory '.'; give -o"
    rng = np.random.default_rng(0)
    np.save(tmp_path / "w.loc.npy", rng.normal(size=(200, 10)).astype(np.float32))
    np.save(tmp_path / "w.scale.npy", np.full((200, 10), 0.1, np.float32))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["pack", ".", "-o", "-", "--lam", "1"])
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"\x89HDF"), r.output


def test_a_symbolic_link_loop_as_the_posterior_or_archive_is_one_line(tmp_path, monkeypatch):
    # Path.resolve raised RuntimeError('Symlink loop') from the output check: a traceback, exit 1
    monkeypatch.chdir(tmp_path)
    os.symlink("b", "a")
    os.symlink("a", "b")
    for args in (["pack", "a", "-o", "x.bnc"], ["pack", "a", "-o", "-"], ["unpack", "a", "-o", "y.npz"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output, (args, r.output)


def test_a_reader_that_leaves_early_ends_unpack_quietly(tmp_path):
    # README's `bnncompress unpack small.bnc -o - | head` ended with an "error:" line and exit 2; a
    # compressor's -c ends quietly with SIGPIPE's 141 (a docs review).
    bnncompress.pack(EXAMPLE, tmp_path / "a.bnc", lam=1.0)
    unpack = subprocess.Popen(
        [sys.executable, "-m", "bnncompress", "unpack", str(tmp_path / "a.bnc"), "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert unpack.stdout.readline().split() == [b"4000", b"50"]
    unpack.stdout.close()  # as head does after its lines
    assert unpack.wait(timeout=120) == 141 and unpack.stderr.read() == b""
    unpack.stderr.close()


def test_pack_refuses_to_write_an_archive_to_a_terminal(tmp_path):
    leader, follower = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "bnncompress", "pack", EXAMPLE, "-o", "-", "--lam", "1"],
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 2 and r.stderr.startswith("error: standard output is a terminal"), r.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        ("pack", "-", "-o", "x.bnc"),
        ("eval", "-"),
        ("sweep", "-", "--methods", "uniform", "--bits", "2"),
        ("train", "-", "-o", "t.pt"),
        ("train", EXAMPLE, "-o", "-"),
        ("sweep", EXAMPLE, "--methods", "uniform", "--bits", "2", "-o", "-"),
    ],
)
def test_standard_input_and_output_are_refused_in_one_line_where_not_supported(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    one_error_line(run(*args), "standard")
    assert not os.path.exists("-")


def test_dot_slash_dash_is_a_file_named_dash_not_standard_input_or_output(tmp_path, monkeypatch):
    # typer's Path made './-' into Path('-'), taken as standard output or input: `unpack -o ./-` wrote the
    # vectors to standard output, `info ./-` refused a real archive named '-'
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("p.npz", **{"w.loc": rng.normal(size=(6, 4)), "w.scale": np.full((6, 4), 0.1)})
    r = runner.invoke(app, ["pack", "p.npz", "-o", "./-", "--method", "float16", "-q"])
    assert r.exit_code == 0 and r.stdout_bytes == b"", r.output
    assert bnncompress.load("-").info()["total"]["num_weights"] == 24
    r = run("info", "./-")
    assert r.exit_code == 0 and "24" in r.output, r.output
    r = runner.invoke(app, ["unpack", "./-", "-o", "./-", "--format", "npz", "-f"])
    assert r.exit_code == 2 and "archive itself" in r.output  # (a file: the archive, not standard output)
    assert run("unpack", "./-", "-o", "w.npz", "-q").exit_code == 0 and np.load("w.npz")["w"].shape == (6, 4)
    _vectors().save_word2vec_format("-")
    r = run("eval", "./-")
    assert r.exit_code == 0 and "6 words" in r.output, r.output


# --- 5. Python API: parameters checked at entry ---


def test_evaluate_and_sweep_name_a_bad_parameter(tmp_path):
    kv = _vectors()
    cases = [
        (lambda: bnncompress.evaluate(kv, restrict_vocab=2.5), TypeError, "restrict_vocab"),
        (lambda: bnncompress.evaluate(kv, restrict_vocab=True), TypeError, "restrict_vocab"),
        (lambda: bnncompress.evaluate(kv, tensor=3), TypeError, "tensor"),
        (lambda: bnncompress.evaluate(kv, metrics=5), TypeError, "metrics"),
        (lambda: bnncompress.evaluate(None), TypeError, "source"),
        (lambda: bnncompress.sweep(EXAMPLE, ["uniform"], ["2"]), TypeError, "bits"),
        (lambda: bnncompress.sweep(EXAMPLE, [1], [2.0]), TypeError, "methods"),
        (lambda: bnncompress.sweep(EXAMPLE, ["uniform"], [2.0], restrict_vocab=2.5), TypeError, "restrict_vocab"),
        (lambda: bnncompress.sweep(EXAMPLE, ["uniform"], [2.0], progress=5), TypeError, "progress"),
        (lambda: bnncompress.sweep(EXAMPLE, ["uniform"], [2.0], csv_path=5), TypeError, "csv_path"),
        (lambda: bnncompress.sweep(None, ["uniform"], [2.0]), TypeError, "source"),
    ]
    for call, kind, name in cases:
        with pytest.raises(kind, match=name) as caught:
            call()
        assert isinstance(caught.value, bnncompress.OptionError)
    assert bnncompress.evaluate(kv, metrics="ws353", restrict_vocab=np.int64(3))["vocab_size"] == 3


def test_sweep_takes_one_method_name_and_one_rate():
    rows = bnncompress.sweep(EXAMPLE, "uniform", 2, restrict_vocab=500)
    assert [r["method"] for r in rows] == ["uncompressed", "uniform"] and rows[1]["target_bits"] == 2.0


# --- 6. whatever escapes the library is one line ---


@pytest.mark.parametrize("error", [MemoryError(), OverflowError("int too large to convert")])
def test_memory_and_overflow_errors_are_one_line(monkeypatch, error):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(eval_command, "evaluate", failing)
    one_error_line(run("eval", EXAMPLE))


def test_missing_tensor_message_is_not_quoted(tmp_path):
    bnncompress.pack(EXAMPLE, tmp_path / "e.bnc", lam=1.0)
    r = run("eval", tmp_path / "e.bnc", "-t", "nope")
    one_error_line(r, "no tensor named 'nope'")
    assert '"' not in r.output


@pytest.mark.slow
def test_closed_or_full_standard_streams(tmp_path):
    """pack -o - under 2>&-: os.dup gave the saved standard output fd 2, so what C code wrote to 'standard
    error' went into the archive (exit 0, unreadable); eval's scores to a closed or full standard output were
    lost with exit 0; --version to a full device was a 33-line traceback."""
    (tmp_path / "noisy.py").write_text(
        "import os, pyro, torch\nos.write(2, b'diagnostic from C code\\n')\n\ndef model():\n"
        "    prior = pyro.distributions.Normal(torch.zeros(4000, 50), 1.0).to_event(2)\n"
        "    pyro.sample('word_vectors', prior)\n    pyro.sample('context_vectors', prior)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "bnncompress", "pack", EXAMPLE, "-o", "-", "--lam", "1", "--model", "noisy:model"]
    closed = subprocess.run(cmd, capture_output=False, stdout=subprocess.PIPE, env=env, preexec_fn=lambda: os.close(2))
    assert closed.returncode == 0 and closed.stdout.startswith(b"\x89HDF")
    (tmp_path / "a.bnc").write_bytes(closed.stdout)
    bnncompress.load(tmp_path / "a.bnc").verify()
    eval_cmd = [sys.executable, "-m", "bnncompress", "eval", str(tmp_path / "a.bnc"), "--metrics", "ws353"]
    sinks = [(os.devnull, lambda: os.close(1))] + ([("/dev/full", None)] if os.path.exists("/dev/full") else [])
    for sink, before in sinks:  # standard output closed (>&-), then full
        with open(sink, "wb") as stdout:
            r = subprocess.run(eval_cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, preexec_fn=before)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            r = subprocess.run(
                [sys.executable, "-m", "bnncompress", "--version"], stdout=full, stderr=subprocess.PIPE, text=True
            )
        assert r.returncode == 2 and r.stderr == "error: No space left on device (standard output)\n", r.stderr


@pytest.mark.slow  # (a child process on a terminal)
def test_quiet_pack_writes_nothing_to_a_terminal(tmp_path):
    """numba initialises colorama when it imports, whose exit hook wrote ESC[0m to a terminal's standard output:
    -q printed something."""
    leader, follower = pty.openpty()
    try:
        cmd = [sys.executable, "-m", "bnncompress", "pack", EXAMPLE, "-o", str(tmp_path / "q.bnc"), "-q"]
        r = subprocess.run(cmd, stdout=follower, stderr=subprocess.PIPE, cwd=tmp_path)
        os.set_blocking(leader, False)
        try:
            written = os.read(leader, 1024)
        except BlockingIOError:  # (nothing there to read)
            written = b""
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 0 and written == b"" and r.stderr == b"", (written, r.stderr)


def test_only_the_literal_dash_is_a_standard_stream():
    """Typer before 0.29 ignored path_type=str and gave Path('-'): that is still standard input, as it was."""
    assert is_stdio("-") and is_stdio(Path("-")) and not is_stdio("./-") and not is_stdio(None)
