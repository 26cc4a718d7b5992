"""Hostile conditions: full disks, files that pull in other files' bytes, odd output paths."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys

import h5py
import numpy as np
import pytest

import bnncompress
from bnncompress import ArchiveError, OptionError, PosteriorError
from bnncompress.files import TEMP_SUFFIX, remove_stale_temporaries

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "example.pt")


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX))


def _limit_file_size(limit):
    def apply():  # runs in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture(scope="module")
def example_npz(tmp_path_factory):
    """data/example.pt's posterior as .npz: the child processes below then need no torch import."""
    posterior = bnncompress.read_posterior(EXAMPLE)
    arrays = {f"{name}.{part}": getattr(t, part) for name, t in posterior.tensors.items() for part in ("loc", "scale")}
    path = tmp_path_factory.mktemp("example") / "example.npz"
    np.savez(path, **arrays)
    return str(path)


# the archive: 104,653 bytes; one limit in the quick run, the others with the slow tests (child processes)
@pytest.mark.parametrize(
    "limit", [pytest.param(4096, marks=pytest.mark.slow), 60_000, pytest.param(100_000, marks=pytest.mark.slow)]
)
def test_a_failed_write_never_replaces_a_good_archive(tmp_path, limit, example_npz):
    good = tmp_path / "out.bnc"
    bnncompress.pack(example_npz, good, lam=5.0)
    before = good.read_bytes()
    cmd = [sys.executable, "-m", "bnncompress.cli", "pack", example_npz, "-o", str(good), "--bits", "2", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limit_file_size(limit))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(good) in lines[0], proc.stderr
    assert good.read_bytes() == before  # untouched, and it still loads
    bnncompress.load(good)
    assert _leftovers(tmp_path) == []


def test_a_full_tmpfs_leaves_the_old_archive(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=136k", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        good = mount / "out.bnc"
        bnncompress.pack(EXAMPLE, tmp_path / "first.bnc", bits=2.0)
        good.write_bytes((tmp_path / "first.bnc").read_bytes())
        before = good.read_bytes()
        with pytest.raises(OSError) as err:
            bnncompress.pack(EXAMPLE, good, bits=2.1)
        assert err.value.filename == str(good) and "No space left" in err.value.strerror
        assert good.read_bytes() == before and _leftovers(mount) == []
    finally:
        subprocess.run(["umount", str(mount)])


def _posterior_h5(path, kind, other):
    with h5py.File(other, "w") as g:
        g["w/loc"] = np.full((4, 2), 7.0, np.float32)
    secret = path.parent / "secret.bin"
    secret.write_bytes(b"root:x:0:0:root:/root" * 4)
    with h5py.File(path, "w") as f:
        if kind == "external storage":
            f.create_dataset("w/loc", shape=(4, 2), dtype=np.float32, external=[(str(secret), 0, 32)])
        elif kind == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(4, 2), dtype=np.float32)
            layout[:] = h5py.VirtualSource(str(other), "w/loc", shape=(4, 2))
            f.create_virtual_dataset("w/loc", layout)
        elif kind == "external link":
            f["w/loc"] = h5py.ExternalLink(str(other), "w/loc")
        elif kind == "soft link":
            f["elsewhere/loc"] = np.ones((4, 2), np.float32)
            f["w/loc"] = h5py.SoftLink("/elsewhere/loc")
        elif kind == "vocab link":
            f["w/loc"] = np.ones((4, 2), np.float32)
            f["vocab"] = h5py.ExternalLink(str(other), "w/loc")
        elif kind == "never written":
            f.create_dataset("w/loc", shape=(1 << 40, 2), dtype=np.float32, chunks=(1 << 16, 2))
            f.create_dataset("w/scale", shape=(1 << 40, 2), dtype=np.float32, chunks=(1 << 16, 2))
            return
        f["w/scale"] = np.ones((4, 2), np.float32)


@pytest.mark.parametrize(
    "kind", ["external storage", "virtual dataset", "external link", "soft link", "vocab link", "never written"]
)
@pytest.mark.parametrize("stream", [False, True])
def test_posteriors_cannot_pull_in_other_files(tmp_path, kind, stream):
    path = tmp_path / "post.h5"
    _posterior_h5(path, kind, tmp_path / "other.h5")
    with pytest.raises(PosteriorError, match="refusing|never written"):
        bnncompress.pack(path, tmp_path / "out.bnc", stream=stream)
    assert not (tmp_path / "out.bnc").exists()


def test_archives_cannot_pull_in_other_files(tmp_path):
    path = tmp_path / "a.bnc"
    rng = np.random.default_rng(0)
    bnncompress.pack({"w": (rng.normal(size=(40, 4)), np.full((40, 4), 0.1))}, path, lam=0.1)
    raw = tmp_path / "words.bin"
    with h5py.File(path, "r+") as f:  # the same bytes, but stored in another file
        words = f["words"][()]
        raw.write_bytes(words.astype("<u4").tobytes())
        del f["words"]
        f.create_dataset("words", shape=words.shape, dtype="<u4", external=[(str(raw), 0, words.nbytes)])
    with pytest.raises(ArchiveError, match="another file"):
        bnncompress.load(path)


def test_overwriting_keeps_the_destinations_permissions(tmp_path):
    out = tmp_path / "private.bnc"
    out.write_bytes(b"old")
    out.chmod(0o600)
    bnncompress.pack({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bnncompress.load(out)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root gives a file to another user")
def test_root_overwriting_a_users_archive_leaves_it_the_users_and_never_setuid(tmp_path):
    # (it became root's: a 0640 archive its owner could no longer read; a 6755 file's setuid bits were copied)
    out, other = tmp_path / "users.bnc", 65534  # nobody
    out.write_bytes(b"old")
    os.chown(out, other, other)
    out.chmod(0o6750)
    bnncompress.pack({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, out)
    st = out.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (other, other, 0o750)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_only_regular_files_are_replaced(tmp_path, kind):
    out = tmp_path / "out.bnc"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink":
        (tmp_path / "target").write_bytes(b"keep")
        out.symlink_to(tmp_path / "target")
    else:
        out.mkdir()
    with pytest.raises(OptionError):
        bnncompress.pack({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, out)
    assert kind != "symlink" or (tmp_path / "target").read_bytes() == b"keep"


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "out.bnc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    import socket

    host = socket.gethostname().replace(".", "-")
    stale = tmp_path / f".out.bnc.{host}.{pid}.abcd{TEMP_SUFFIX}"
    mine = tmp_path / f".out.bnc.{host}.{os.getpid()}.efgh{TEMP_SUFFIX}"
    other_host = tmp_path / f".out.bnc.elsewhere.{pid}.ijkl{TEMP_SUFFIX}"
    for p in (stale, mine, other_host):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(out) == [stale]
    assert mine.exists() and other_host.exists()


@pytest.mark.parametrize("word", ["a\x00", "\ud800", "tab\tword", "bell\x07"])
def test_vocabulary_words_must_be_printable_text(tmp_path, word):
    with pytest.raises(PosteriorError, match="control character|surrogate"):
        bnncompress.pack({"w": (np.zeros((2, 2)), np.ones((2, 2)))}, tmp_path / "o.bnc", vocab=[word, "b"])


def test_vocabularies_checked_all_at_once_pass_and_fail_as_word_by_word():
    # validate_words checks a vocabulary at C speed first; it must accept exactly what the word-by-word checks accept
    import random
    import unicodedata

    from bnncompress.vocabulary import _plainly_valid, decode_words, validate_words

    def word_by_word(words):  # the rules, as the reader had them before
        for w in words:
            if not isinstance(w, str) or not w or w.strip() != w:
                return False
            if any(unicodedata.category(c) in ("Cc", "Cs") for c in w):
                return False
        return True

    tricky = [
        " ",
        "\t",
        "\n",
        "\r",
        "\x00",
        "\x7f",
        "\x85",
        "\x9f",
        "\xa0",
        "\u200d",
        "\ud800",
        "\udfff",
        "\u3000",
        "\u2028",
    ]
    tricky += ["\u1680", "\u202f", "\x1c", "é", "🙂"]
    rng = random.Random(0)
    for _ in range(20000):
        words = [
            "".join(rng.choice(tricky) if rng.random() < 0.25 else rng.choice("ab") for _ in range(rng.randint(0, 5)))
        ]
        words += [rng.choice(["king", "queen", "New\xa0York"])] if rng.random() < 0.5 else []
        assert _plainly_valid(words) == word_by_word(words), words
        try:
            validate_words(list(words), "v")
            accepted = True
        except PosteriorError:
            accepted = False
        assert accepted == (word_by_word(words) and len(set(words)) == len(words)), words
        as_bytes = [w.encode("utf-8", "surrogatepass") for w in words]  # a surrogate is not UTF-8
        try:
            expected = [w.decode("utf-8") for w in as_bytes]
        except UnicodeDecodeError:
            expected = None
        if expected is None:
            with pytest.raises(PosteriorError, match="is not UTF-8 text"):
                decode_words(as_bytes, "v")
        else:
            assert decode_words(as_bytes, "v") == expected


@pytest.mark.parametrize("fmt", [*(pytest.param(f, marks=pytest.mark.slow) for f in ("pt", "word2vec", "kv")), "npz"])
def test_a_failed_export_is_one_line_and_keeps_the_old_file(tmp_path, fmt):
    archive = tmp_path / "a.bnc"
    bnncompress.pack(EXAMPLE, archive, lam=5.0)
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(b"keep")
    cmd = [sys.executable, "-m", "bnncompress.cli", "unpack", str(archive), "-o", str(out), "--format", fmt, "-f"]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limit_file_size(2000))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert out.read_bytes() == b"keep" and _leftovers(tmp_path) == []


def test_a_failed_write_to_standard_output_names_no_temporary_path(tmp_path):
    # 'error: File too large (/tmp/bnncompress-_t0yinqu/example.bnc)': a path gone by the time it is read
    archive = tmp_path / "a.bnc"
    bnncompress.pack(EXAMPLE, archive, lam=5.0)
    cmd = [sys.executable, "-m", "bnncompress.cli", "unpack", str(archive), "-o", "-", "--format", "npz"]
    with open(os.devnull, "wb") as sink:
        proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.PIPE, text=True, preexec_fn=_limit_file_size(2000))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "a temporary copy of standard output in " in proc.stderr and "bnncompress-" not in proc.stderr
