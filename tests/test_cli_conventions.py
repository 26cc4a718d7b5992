"""Command-line conventions: --force, outputs checked before work, help with defaults, 80 columns, signals."""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import bnncompress
from bnncompress.cli import app
from bnncompress.files import TEMP_SUFFIX

runner = CliRunner()
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "example.pt")


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


def test_existing_outputs_need_force(tmp_path):
    out = tmp_path / "out.bnc"
    out.write_bytes(b"precious")
    r = run("pack", EXAMPLE, "-o", out, "--lam", "1")
    assert r.exit_code == 2 and "--force" in r.output and out.read_bytes() == b"precious"
    assert run("pack", EXAMPLE, "-o", out, "--lam", "1", "--force").exit_code == 0
    vectors = tmp_path / "v.txt"
    vectors.write_text("keep")
    r = run("unpack", out, "-o", vectors)
    assert r.exit_code == 2 and "--force" in r.output and vectors.read_text() == "keep"
    assert run("unpack", out, "-o", vectors, "-f").exit_code == 0
    r = run("unpack", out, "-o", out, "--format", "npz", "-f")
    assert r.exit_code == 2 and "archive itself" in r.output


def test_sweep_checks_every_output_before_working(tmp_path):
    started = time.perf_counter()
    r = run("sweep", EXAMPLE, "--methods", "uniform", "--bits", "2", "-o", tmp_path / "nodir" / "r.csv")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run("sweep", EXAMPLE, "--methods", "uniform", "--bits", "2", "-o", tmp_path / "r.csv", "--plot", "nodir/rd.png")
    assert r.exit_code == 2 and not (tmp_path / "r.csv").exists()
    (tmp_path / "r.csv").write_text("old")
    r = run("sweep", EXAMPLE, "--methods", "uniform", "--bits", "2", "-o", tmp_path / "r.csv")
    assert r.exit_code == 2 and "--force" in r.output and (tmp_path / "r.csv").read_text() == "old"
    assert time.perf_counter() - started < 10  # refused before any packing


def test_every_option_has_help_and_shown_defaults():
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{name} --{param.name} has no help"
                if param.default not in (None, False) and not param.is_flag:
                    assert param.show_default is not False, (name, param.name)
    r = run("pack", "--help")
    assert "default: the method's own, 0.1 for vbq-transform" in " ".join(r.output.split())
    assert "[default: vbq-transform]" in " ".join(r.output.split()).replace("vbq- transform", "vbq-transform")


def test_tables_fit_80_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the heading names the archive as given: a short name, whatever pytest's tmp path
    bnncompress.pack(EXAMPLE, "e.bnc", lam=1.0)
    for args in (("info", "e.bnc"), ("eval", "e.bnc")):
        r = run(*args)
        assert r.exit_code == 0 and max(len(line) for line in r.output.splitlines()) <= 80, r.output
        assert "vbq-tr…" not in r.output
    assert "tensor: word_vectors" in run("eval", "e.bnc").output


def test_zero_vectors_are_counted_not_warned(tmp_path):
    rng = np.random.default_rng(0)
    vocab = ["king", "queen", "man", "woman", "paris", "france"] + [f"w{i}" for i in range(94)]
    loc = rng.normal(size=(100, 8))
    loc[3] = 0.0
    bnncompress.pack(
        {"word_vectors": (loc, np.full((100, 8), 0.01))}, tmp_path / "z.bnc", vocab=vocab, method="float16"
    )
    r = subprocess.run(
        [sys.executable, "-m", "bnncompress.cli", "eval", str(tmp_path / "z.bnc")], capture_output=True, text=True
    )
    assert r.returncode == 0 and "RuntimeWarning" not in r.stderr
    assert "1 of these vectors are all zeros" in r.stdout


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_exit_cleanly_and_remove_temporary_files(tmp_path, sig, code):
    rng = np.random.default_rng(0)
    rows = 1_000_000  # 50M weights: 4.8 s to pack here
    np.save(tmp_path / "w.loc.npy", rng.normal(size=(rows, 50)).astype(np.float32))
    np.save(tmp_path / "w.scale.npy", np.full((rows, 50), 0.1, np.float32))
    out = tmp_path / "out.bnc"
    cmd = [sys.executable, "-m", "bnncompress.cli", "pack", str(tmp_path), "-o", str(out), "--bits", "2"]
    # a shell starts background jobs with SIGINT ignored, and a child inherits that: the pack
    # must see the signal as a user's terminal would send it, however the tests were started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    time.sleep(2.0)  # past the imports, into the passes
    assert proc.poll() is None, "the pack finished before the signal: give it a larger posterior"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


_SIGNAL_IN_A_CALLBACK = """
import os, signal, sys
import bnncompress.packing
from bnncompress.cli.app import main

def quantize_and_code(*args, **kwargs):  # SIGTERM while numba loads a kernel, as CI once met it
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt as exc:
        raise SystemError("<function _numba_unpickle> returned a result with an exception set") from exc

bnncompress.packing.quantize_and_code = quantize_and_code
sys.argv = ["bnncompress", "pack", sys.argv[1], "-o", sys.argv[2], "--bits", "2"]
main()
"""


def test_a_signal_that_arrives_wrapped_in_another_error_still_exits_cleanly(tmp_path):
    out = tmp_path / "out.bnc"
    cmd = [sys.executable, "-c", _SIGNAL_IN_A_CALLBACK, str(EXAMPLE), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_default_signals, timeout=120)
    assert proc.returncode == 143 and proc.stderr.strip() == "terminated", proc.stderr[-3000:]
    assert not out.exists() and not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["pack", "x.pt", "--method", "nope"], "Invalid value for '--method'"),
        (["pack", "x.pt", "--device", "tpu"], "Invalid value for '--device'"),
        (["pack", "--bogus"], "No such option: --bogus"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_through_the_console_script(args, message):
    """Through ``main()`` as installed (CliRunner bypasses it): exit 2, one line, no traceback."""
    r = subprocess.run([sys.executable, "-m", "bnncompress.cli", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_the_command_line_does_not_need_click_when_typer_does_not():
    """typer >= 0.26 vendors click; `pip install bnncompress` then has no click to import."""
    code = (
        "import sys, typer\n"
        "if 'click' in sys.modules: raise SystemExit(3)  # an older typer that uses click itself\n"
        "sys.modules['click'] = None\n"
        "from bnncompress.cli import main\n"
        "sys.argv = ['bnncompress', 'info', '--help']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode == 3:
        pytest.skip("this typer imports click")
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr


@pytest.mark.slow
def test_refused_pickles_and_a_zero_file_size_limit_give_one_line(tmp_path):
    """torch warns about an unexpected pickle protocol and numba about its lock in /dev/shm under
    a file-size limit of 0: neither may add lines to the command's one-line error."""
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": os.system}, protocol=4))
    r = subprocess.run(
        [sys.executable, "-m", "bnncompress.cli", "pack", str(evil), "-o", str(tmp_path / "e.bnc")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not allowed" in r.stderr, r.stderr
    np.savez(tmp_path / "p.npz", **{"w.loc": np.ones((20, 4)), "w.scale": np.full((20, 4), 0.1)})

    def no_bytes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    cmd = [sys.executable, "-m", "bnncompress.cli", "pack", str(tmp_path / "p.npz"), "-o", str(tmp_path / "p.bnc")]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=no_bytes)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "File too large" in r.stderr, r.stderr
    assert not (tmp_path / "p.bnc").exists()


def test_packing_numpy_arrays_imports_neither_torch_nor_pyro(tmp_path):
    """Start-up: torch and pyro (1.5 s) are imported only for inputs that need them."""
    code = (
        "import sys, numpy as np, bnncompress\n"
        "w = np.linspace(-1, 1, 800).reshape(40, 20)\n"
        f"a = bnncompress.pack({{'w': (w, np.full_like(w, 0.1))}}, {str(tmp_path / 'a.bnc')!r}, bits=2.0)\n"
        "bnncompress.load(a.path)['w']\n"
        "print(sorted(m for m in ('torch', 'pyro') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


_SECOND_SIGNAL_AS_THE_LINE_IS_SAID = """
import os, signal, sys
from bnncompress.cli import main
app = sys.modules["bnncompress.cli.app"]
said = app.say
def say(text, *args, **kwargs):
    if text == "interrupted":  # a second Ctrl-C while the line is printed (rich loads its tables then)
        os.kill(os.getpid(), signal.SIGINT)
    said(text, *args, **kwargs)
def interrupted():
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, as the command starts
app.say, app.refuse_bad_numba_environment = say, interrupted
sys.argv = ["bnncompress", "info", "--help"]
main()
"""


def test_a_second_signal_while_interrupted_is_said_still_exits_130_in_one_line():
    # the handler stayed installed while the line was printed: a traceback and death by SIGINT (-2), not 130
    cmd = [sys.executable, "-c", _SECOND_SIGNAL_AS_THE_LINE_IS_SAID]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_default_signals, timeout=120)
    assert proc.returncode == 130 and proc.stderr.strip() == "interrupted", (proc.returncode, proc.stderr[-2000:])


_SIGNAL_AS_THE_INTERPRETER_SHUTS_DOWN = """
import atexit, os, signal, sys, time
from bnncompress.cli import main

def ctrl_c_at_exit():  # (as a Ctrl-C that arrives after the command, while the interpreter shuts down)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)

atexit.register(ctrl_c_at_exit)
sys.argv = ["bnncompress", "info", "--help"]
main()
"""


def test_a_signal_after_the_command_is_ignored_while_the_process_exits():
    # the handler that raises KeyboardInterrupt stayed installed: "Exception ignored in ... KeyboardInterrupt" and
    # a traceback, exit 0 (a size pack, with more to collect at exit, hit it 1 in 8 Ctrl-Cs at its end); the exit
    # hooks after it still run (a temporary numba cache directory's removal)
    cmd = [sys.executable, "-c", _SIGNAL_AS_THE_INTERPRETER_SHUTS_DOWN]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_default_signals, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, (
        proc.returncode,
        proc.stderr[-2000:],
    )
