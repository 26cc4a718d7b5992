"""Packs from several threads and processes at once, and signals (a helper's hunt of concurrency and
interruption): every pack succeeds or refuses in one line, none replaces another's file without «force»."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import bnncompress
from bnncompress import OptionError, files

EXAMPLE = Path(__file__).parents[1] / "data" / "example.pt"


def test_a_file_made_between_the_last_check_and_the_rename_is_kept(tmp_path, monkeypatch):
    # Two packs to one new path without force: both passed the last check, and the second rename replaced
    # the first archive (1 in 300 rounds of two threads).
    target = tmp_path / "a.bnc"
    check = files._check_target

    def then_another_pack_writes(path, force, *args):
        found = check(path, force, *args)
        written = [p for p in tmp_path.iterdir() if p.name.endswith(files.TEMP_SUFFIX) and p.stat().st_size]
        if written and not target.exists():  # the last check, right before the rename: another pack's file appears
            target.write_bytes(b"the other pack's archive")
        return found

    monkeypatch.setattr(files, "_check_target", then_another_pack_writes)
    rng = np.random.default_rng(0)
    with pytest.raises(OptionError, match="exists"):
        bnncompress.pack({"w": (rng.normal(size=(20, 5)), np.full((20, 5), 0.1))}, target, lam=0.1, force=False)
    assert target.read_bytes() == b"the other pack's archive" and [p.name for p in tmp_path.iterdir()] == ["a.bnc"]


def test_packs_in_threads_at_once(tmp_path):
    # HDF5 refused to make a pack's in-memory image while another thread had one of the same name open
    # ("unable to truncate a file which is already open"): 5-15% of concurrent packs failed.
    rng = np.random.default_rng(0)
    posterior = {"w": (rng.normal(size=(30, 5)), np.full((30, 5), 0.1))}
    failed = []

    def packs(k):
        for i in range(15):
            try:
                bnncompress.pack(posterior, tmp_path / f"{k}-{i}.bnc", method="float16")
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failed.append(repr(exc))

    threads = [threading.Thread(target=packs, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert failed == []
    assert len({(tmp_path / f"{k}-{i}.bnc").read_bytes() for k in range(4) for i in range(15)}) == 1


_FIRST_PACKS = """
import threading, numpy as np, bnncompress
rng = np.random.default_rng(0)
posterior = {"w": (rng.normal(size=(300, 20)), np.full((300, 20), 0.1))}
failed = []
def packs(k):
    for i in range(3):
        try:
            bnncompress.pack(posterior, f"%s/{k}-{i}.bnc", lam=0.1)
        except Exception as exc:
            failed.append(repr(exc))
threads = [threading.Thread(target=packs, args=(k,)) for k in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(failed)
"""


def test_the_first_packs_of_a_process_in_two_threads(tmp_path):
    # One thread read numba's settings from sys.modules while the other was still importing it:
    # "partially initialized module 'numba' has no attribute 'config'".
    done = subprocess.run([sys.executable, "-c", _FIRST_PACKS % tmp_path], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


_SWALLOWED = """
import os, signal, sys
import bnncompress.cli.archives as archives
from bnncompress.cli.app import main
real = archives._pack

class Dies:
    def __del__(self):  # as Dask's client's gc callbacks and __del__ methods run during a pack
        os.kill(os.getpid(), signal.SIGTERM)

def pack(*args, **kwargs):
    Dies()  # the handler's KeyboardInterrupt is raised in __del__: Python ignores it
    return real(*args, **kwargs)

archives._pack = pack
sys.argv = ["bnncompress", "pack", %r, "-o", %r]
main()
"""


def test_a_signal_whose_interrupt_was_swallowed_still_ends_the_command(tmp_path):
    # SIGTERM to `pack --workers 2` sometimes ran on and exited 0: its KeyboardInterrupt was raised inside a
    # gc callback or __del__ of Dask's, which Python ignores.
    script = _SWALLOWED % (str(EXAMPLE), str(tmp_path / "a.bnc"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 143 and done.stderr.strip().endswith("terminated"), done.stderr[-2000:]


def test_an_output_directory_that_cannot_be_written_is_said_before_the_work(tmp_path, monkeypatch):
    # (chattr +i, a read-only mount): train ran for minutes, then "error: Operation not permitted"
    from typer.testing import CliRunner

    import bnncompress.cli.embeddings as embeddings
    from bnncompress.cli import app

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    trained = []
    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    monkeypatch.setattr(embeddings, "train_skipgram", lambda *a, **k: trained.append(1))
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\n" * 20)
    result = CliRunner().invoke(app, ["train", str(corpus), "-o", str(tmp_path / "e.pt")])
    assert result.exit_code == 2 and "cannot write in the output directory" in result.output and trained == []


# The processes-and-files hunt's second pass (stop 37).


def test_export_refuses_its_own_archive_after_a_change_of_directory(tmp_path, monkeypatch):
    """export('../cwd/own.bnc') after os.chdir wrote an npz over the archive it was exporting (the
    check resolved the archive's path as given against the new working directory)."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    bnncompress.pack(EXAMPLE, "own.bnc", lam=1.0)
    a = bnncompress.load("own.bnc")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(OptionError, match="is the archive itself"):
        a.export("../cwd/own.bnc", format="npz")
    assert bnncompress.load(tmp_path / "cwd" / "own.bnc").names == a.names
    a.export("own.bnc", format="npz")  # a file of the same name elsewhere is not the archive
    assert (tmp_path / "work" / "own.bnc").read_bytes().startswith(b"PK")


def test_the_kernel_compiling_child_runs_no_module_of_the_working_directory(tmp_path, monkeypatch):
    """`python -c` puts the working directory first on sys.path: a json.py there ran in the child."""
    import bnncompress.kernelcache as kernelcache

    (tmp_path / "json.py").write_text("raise SystemExit('the json.py of the working directory ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kernelcache, "_marker", lambda method, spec: tmp_path / "marker")
    monkeypatch.setattr(kernelcache, "_CHILD", "import json, sys; sys.exit(0 if json.dumps([1]) == '[1]' else 3)")
    assert kernelcache.compile_in_child("uniform", {}) == "compiled"


_SIGNAL_WHILE_BUILDING = """
import os, signal, sys, typer.main
real = typer.main.get_command
def get_command(app):
    os.kill(os.getpid(), signal.%s)  # (a signal in the window before the command runs)
    return real(app)
typer.main.get_command = get_command
from bnncompress.cli import main
sys.argv = ["bnncompress", "info", "missing.bnc"]
main()
"""


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_signal_while_the_command_is_built_is_one_line(tmp_path, signame, code):
    """It printed a 46-line traceback and the process died by SIGINT, also for SIGTERM; SIGHUP (the
    terminal closed) was not handled: no cleanup of a pack's temporary files."""
    script = _DEFAULT_DISPOSITIONS + _SIGNAL_WHILE_BUILDING % signame
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == code and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]


#: Under nohup or a script's `&`, SIGHUP and SIGINT arrive ignored, and the CLI rightly keeps them so: the
#: child takes a terminal's dispositions first (set in the child, not by preexec_fn in a threaded parent).
_DEFAULT_DISPOSITIONS = """import signal
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
"""


def test_the_umask_is_read_without_setting_it(monkeypatch):
    """Reading it set the umask to 0 for a moment: another thread's new files were world-writable."""
    import os

    umask = os.umask(0o027)
    try:
        monkeypatch.setattr(files.os, "umask", lambda mask: pytest.fail("the umask was set"))
        assert files._umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(umask)


@pytest.mark.parametrize(
    "env, refused",
    [
        ({"NUMBA_THREADING_LAYER_PRIORITY": "foo"}, True),  # (numba's 60-line traceback, exit 1)
        ({"NUMBA_THREADING_LAYER_PRIORITY": "tbb"}, True),
        ({"NUMBA_THREADING_LAYER_PRIORITY": "workqueue omp tbb"}, False),
        ({"NUMBA_DISABLE_JIT": "false"}, False),  # numba reads it as its default, 0 (refused before)
        ({"NUMBA_DISABLE_JIT": "1"}, True),
    ],
)
def test_numba_variables_are_read_as_numba_reads_them(env, refused):
    from bnncompress.numbaenv import check_numba_environment

    if refused:
        with pytest.raises(OptionError, match=next(iter(env))):
            check_numba_environment(env)
    else:
        check_numba_environment(env)


def test_a_numba_variable_numba_cannot_read_is_a_warning_of_one_line_without_its_traceback(tmp_path):
    """numba reads NUMBA_DISABLE_JIT=yes as 0 and warns with the traceback of its parse quoted: the command said
    that traceback, flattened, as its warning (docs hunt)."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "yes"}
    args = [sys.executable, "-m", "bnncompress", "pack", str(Path("data/example.pt").resolve()), "-o", "a.bnc"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env)
    said = "warning: NUMBA_DISABLE_JIT=yes is not a value numba can read: numba uses its default; unset it or see"
    assert done.returncode == 0 and done.stderr.splitlines() == [said + " numba's documentation"], done.stderr[-2000:]


def test_an_ignored_hangup_stays_ignored(tmp_path):
    """nohup (or `cmd &` in a script) ignores SIGHUP: main replaced it with its handler, so closing the
    terminal killed the pack nohup was meant to keep (exit 129)."""
    script = "import signal\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + _SIGNAL_WHILE_BUILDING % "SIGHUP"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "missing.bnc" in done.stderr, done.stderr[-2000:]  # (info's own error)


def test_redirecting_standard_output_leaks_no_descriptor(monkeypatch):
    import os

    from bnncompress.cli.streams import stdout_to_stderr

    monkeypatch.setattr(sys, "stderr", None)  # (started with 2>&-: /dev/null was opened and never closed)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with stdout_to_stderr():
            pass
    assert len(os.listdir("/proc/self/fd")) == before


_FORKED_CHILD = """
import os, signal, sys, numpy as np, torch, bnncompress
a = bnncompress.load(sys.argv[1])
torch.manual_seed(0)
torch.nn.Linear(100, 2)(torch.randn(4096, 100)).sum().backward()  # torch's GNU OpenMP threads start
torch.randn(1000, 1000) @ torch.randn(1000, 1000)
if sys.argv[2] == "train":  # the parent trains (numba's OpenMP pool starts), then a child trains too
    from bnncompress.models import SkipGramConfig, train_skipgram
    corpus = [["a", "b", "c", "d"] * 50] * 20
    train_skipgram(corpus, SkipGramConfig(dim=8, epochs=1, min_count=1))
pid = os.fork()
if pid == 0:
    signal.alarm(120)  # a hang ends here: killed by SIGALRM
    if sys.argv[2] == "train":
        train_skipgram(corpus, SkipGramConfig(dim=8, epochs=1, min_count=1))
    else:
        assert np.array_equal(a.rows("w", np.arange(0, 20000, 7)), a["w"][::7])
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child", status)
"""


@pytest.mark.slow  # children that compile kernels
@pytest.mark.parametrize("work", ["lookup", "train"])
def test_a_child_forked_after_torch_or_training_runs_the_kernels(tmp_path, work):
    """A DataLoader worker or a fork Pool child looked rows up with numba's parallel kernel after the parent
    had used torch (both use the system's GNU OpenMP): it hung; a child training after its parent trained
    was terminated ("fork() called from a process already using GNU OpenMP"): the trainer's kernels ran
    parallel in it. A forked child runs the serial twins."""
    path, rng = tmp_path / "e.bnc", np.random.default_rng(0)
    bnncompress.pack({"w": (rng.normal(size=(20000, 100)), np.full((20000, 100), 0.3))}, path, lam=1.0)
    run = subprocess.run([sys.executable, "-c", _FORKED_CHILD, str(path), work], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "child 0", run.stdout + run.stderr[-2000:]


def test_a_child_forked_while_another_thread_evaluates_can_evaluate():
    """evaluation's lock (held while gensim swaps key_to_index) stayed held in a child forked meanwhile."""
    import os

    from bnncompress import evaluation

    with evaluation._GENSIM_SWAPS:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if evaluation._GENSIM_SWAPS.acquire(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
