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


def test_the_temporary_cache_is_never_a_directory_another_user_could_write(tmp_path, monkeypatch):
    """numba unpickles the index files in its cache: ``/tmp/bnncompress-numba-<uid>`` made first by another local
    user (mode 0777, a pickle planted) ran their code as whoever packed next (deploy hunt). The fixed name is used
    only while it is this user's directory that no one else can write to (one of ours that others could write to is
    made again, empty); another user's or a file there: a new directory of a random name, removed at exit."""
    import os

    import numba

    from bnncompress._ans import writable_cache

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "file").write_text("")
    nowhere = [str(tmp_path / "file" / "cache")]
    fixed = tmp_path / f"bnncompress-numba-{os.getuid()}"

    def chosen():
        monkeypatch.setattr(numba.config, "CACHE_DIR", "")
        return writable_cache(nowhere)

    assert chosen() == str(fixed) and (fixed.stat().st_mode & 0o777) == 0o700  # made private
    assert chosen() == str(fixed)  # (this user's own: kept across processes)
    fixed.chmod(0o777)  # as an older release left it under umask 002, or another user could have
    (fixed / "planted.nbi").write_bytes(b"not ours to unpickle")
    assert chosen() == str(fixed) and list(fixed.iterdir()) == [] and (fixed.stat().st_mode & 0o777) == 0o700
    if os.getuid() == 0:  # (a directory of another user's: only root can make one here)
        os.chown(fixed, 65534, 65534)
        other = chosen()
        assert other != str(fixed) and Path(other).is_dir() and (Path(other).stat().st_mode & 0o077) == 0
        os.chown(fixed, 0, 0)
    fixed.rmdir()
    fixed.write_text("")  # a file in its place (anyone can leave one): not a cache either
    assert chosen() != str(fixed)


def test_a_numba_cache_dir_that_takes_no_file_is_one_line(tmp_path, monkeypatch):
    """NUMBA_CACHE_DIR where nothing can be written raised numba's "cannot cache function" traceback at the first
    kernel (the CLI exited 1; a[name] raised a bare RuntimeError)."""
    import numba

    from bnncompress import OptionError
    from bnncompress._ans import writable_cache

    (tmp_path / "file").write_text("")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.raises(OptionError, match="NUMBA_CACHE_DIR=.* is not a directory numba can write"):
        writable_cache([str(tmp_path)])


def test_a_pack_refuses_an_unwritable_numba_cache_dir_before_any_kernel_module_is_imported(tmp_path, monkeypatch):
    """The check ran as the first kernel module was imported, on the pack's two threads at once: the other thread
    found the module half made and a traceback (ImportError: cannot import name 'gram') replaced the one line in 6
    of 20 packs (docs hunt). The pack and the command line check it first, where the other NUMBA_* are checked."""
    import numba

    import bnncompress
    from bnncompress import OptionError
    from bnncompress.numbaenv import check_numba_environment

    (tmp_path / "file").write_text("")
    with pytest.raises(OptionError, match="NUMBA_CACHE_DIR=/dev/null is not a directory numba can write"):
        check_numba_environment({"NUMBA_CACHE_DIR": "/dev/null"})
    check_numba_environment({"NUMBA_CACHE_DIR": str(tmp_path / "new")})  # (made, as numba would)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "file" / "cache"))  # (kernels loaded already)
    with pytest.raises(OptionError, match="NUMBA_CACHE_DIR=.* is not a directory numba can write"):
        bnncompress.pack("data/example.pt", tmp_path / "a.bnc", lam=1.0)
    assert not (tmp_path / "a.bnc").exists()


def test_the_child_imports_the_package_the_parent_imported(tmp_path, monkeypatch):
    """A checkout imported from a script's directory: the child (`python -c` in an empty directory) imported the
    installed copy, or none, so the parent compiled everything itself (228 MB against 181, deploy hunt)."""
    import bnncompress.kernelcache as kernelcache

    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    monkeypatch.setattr(kernelcache, "_marker", lambda method, spec: tmp_path / "marker")
    seen = []
    monkeypatch.setattr(
        kernelcache.subprocess,
        "run",
        lambda args, **kw: seen.append(kw["env"]["PYTHONPATH"]) or subprocess.CompletedProcess(args, 0),
    )
    compile_in_child("uniform", {})
    package_parent = str(Path(kernelcache.__file__).parent.parent)
    assert seen == [package_parent + os.pathsep + "elsewhere"]


def test_the_marker_names_the_cpu(monkeypatch):
    """numba's cache is per CPU: a cache shared by two kinds of machine (an NFS home) had one marker, so the second
    machine compiled in the packing process, which the child exists to spare (226 MB against 180)."""
    import numba

    from bnncompress.kernelcache import _marker

    here = _marker("uniform", "{}")
    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    assert here is not None and _marker("uniform", "{}") not in (None, here)


def test_the_child_fills_the_cache_this_process_reads(tmp_path, monkeypatch):
    """Where writable_cache chose a temporary cache (no NUMBA_CACHE_DIR), the child chose one of its own, removed
    when it ended, and the parent compiled every kernel again itself."""
    import numba

    import bnncompress.kernelcache as kernelcache

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "chosen"))
    monkeypatch.setattr(kernelcache, "_marker", lambda method, spec: tmp_path / "marker")
    seen = []

    def run(args, **kwargs):
        seen.append(kwargs["env"].get("NUMBA_CACHE_DIR"))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(kernelcache.subprocess, "run", run)
    compile_in_child("uniform", {})
    assert seen == [str(tmp_path / "chosen")]
