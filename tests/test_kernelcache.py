"""A streamed pack compiles numba kernels in a child process first, once per cache."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bnncompress.kernelcache import compile_in_child


@pytest.mark.slow
def test_kernels_are_compiled_in_a_child_once_per_cache(tmp_path):
    code = (
        "from bnncompress.kernelcache import compile_in_child\n"
        "print(compile_in_child('uniform', {}), compile_in_child('uniform', {}), compile_in_child('float16', {}))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["compiled", "warm", "compiled"], r.stdout + r.stderr
    cached = {p.suffix for p in (tmp_path / "cache").rglob("*")}
    assert ".nbi" in cached and ".nbc" in cached  # the child filled numba's cache
    assert len(list((tmp_path / "cache").rglob("bnncompress-compiled-*"))) == 2  # one per method


def test_options_a_child_cannot_be_given_are_compiled_in_process():
    assert compile_in_child("uniform", {"step": object()}) == "warm"


def test_the_marker_changes_with_any_file_of_the_package(tmp_path):
    """A kernel's caller sets the argument types numba compiles for (an int16 table instead of an
    int32 one), so a change to any module, not only the kernels', must send the next streamed pack
    to the child again: the marker's key covers every file."""
    from bnncompress.kernelcache import files_key

    (tmp_path / "quantizers").mkdir()
    (tmp_path / "_kernels.py").write_text("# kernels\n")
    caller = tmp_path / "quantizers" / "caller.py"
    caller.write_text("TABLE = 'int32'\n")
    before = files_key(tmp_path)
    assert files_key(tmp_path) == before
    os.utime(caller, ns=(caller.stat().st_atime_ns, caller.stat().st_mtime_ns + 1_000_000_000))
    assert files_key(tmp_path) != before
    caller.write_text("TABLE = 'int16'\n")  # the same size, a new time
    assert files_key(tmp_path) != before


def test_an_interrupted_child_leaves_no_files(tmp_path, monkeypatch):
    # An interrupt kills the child (subprocess.run's SIGKILL, or a group's SIGTERM) before its temporary
    # directory is removed: ~1 MB of .npy files stayed in $TMPDIR. The directory is the parent's now.
    import bnncompress.kernelcache as kernelcache

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(kernelcache.tempfile, "tempdir", None)  # (tempfile reads TMPDIR once)
    monkeypatch.setattr(kernelcache, "_marker", lambda method, spec: tmp_path / "marker")

    def killed(args, **kwargs):
        workdir = args[-1]
        (Path(workdir) / "w.loc.npy").write_bytes(b"the child's file")  # as the child writes before it is killed
        raise KeyboardInterrupt

    monkeypatch.setattr(kernelcache.subprocess, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        compile_in_child("uniform", {})
    assert list(tmp_path.iterdir()) == []


def test_a_relative_cache_directory_reaches_the_child_as_the_parent_sees_it(tmp_path, monkeypatch):
    """The child runs in its own temporary directory: NUMBA_CACHE_DIR=rel put its kernels there, deleted
    with it, and the parent compiled everything again in-process (26 s against 8 s)."""
    import bnncompress.kernelcache as kernelcache

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NUMBA_CACHE_DIR", "rel")
    monkeypatch.setattr(kernelcache, "_marker", lambda method, spec: tmp_path / "marker")
    seen = []

    def run(args, **kwargs):
        seen.append(kwargs["env"]["NUMBA_CACHE_DIR"])
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(kernelcache.subprocess, "run", run)
    compile_in_child("uniform", {})
    assert seen == [str(tmp_path / "rel")]


def test_unpacked_keyed_vectors_are_the_same_bytes_every_time(tmp_path):
    """gensim recorded the save's time, host and (temporary) file name in every .kv file."""
    import numpy as np

    import bnncompress

    rng = np.random.default_rng(0)
    posterior, vocab = {"w": (rng.normal(size=(30, 4)), np.full((30, 4), 0.1))}, [f"w{i}" for i in range(30)]
    archive = bnncompress.load(bnncompress.pack(posterior, tmp_path / "a.bnc", lam=0.1, vocab=vocab).path)
    archive.export(tmp_path / "one.kv", tensor="w")
    archive.export(tmp_path / "two.kv", tensor="w")
    assert (tmp_path / "one.kv").read_bytes() == (tmp_path / "two.kv").read_bytes()


def test_kernels_are_cached_in_a_temporary_directory_where_nothing_else_can_be_written(tmp_path, monkeypatch):
    """A read-only install and home: every kernel raised "cannot cache function" (a lookup called the archive
    corrupt). Where neither numba's place beside the modules nor the user's cache takes a file, numba's cache
    is a temporary directory."""
    import numba

    from bnncompress._ans import writable_cache

    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    assert writable_cache([str(tmp_path)]) is None and numba.config.CACHE_DIR == ""
    (tmp_path / "file").write_text("")
    chosen = writable_cache([str(tmp_path / "file" / "cache")])  # (under a file: nothing can be made there)
    assert chosen == numba.config.CACHE_DIR and chosen.startswith(tempfile.gettempdir())
