"""``bnncompress pack`` shows its stages for work over a second: a bar in a terminal, a line per
stage when stderr is not one (after LOG_AFTER seconds), nothing with -q."""

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from bnncompress.cli import app, stages
from bnncompress.cli.stages import StageDisplay, redraws

STAGES = ["reading posterior", "fitting", "searching lambda", "quantizing and coding", "writing archive"]


@pytest.fixture()
def posterior(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "post.npz"
    np.savez(path, **{"w.loc": rng.normal(size=(300, 20)), "w.scale": rng.uniform(0.05, 0.5, size=(300, 20))})
    return path


def _pack(tmp_path, posterior, *flags):
    return CliRunner().invoke(app, ["pack", str(posterior), "-o", str(tmp_path / "p.bnc"), "--bits", "2", *flags])


def test_pack_prints_a_line_per_stage_when_not_a_terminal(tmp_path, posterior, monkeypatch):
    monkeypatch.setattr(stages, "LOG_AFTER", 0.0)  # as if the pack had run long enough
    r = _pack(tmp_path, posterior)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pack: ")]
    assert [ln.split(" (")[0].removeprefix("pack: ") for ln in lines] == STAGES
    assert all(ln.endswith(" s)") for ln in lines) and "wrote" in r.stdout


def test_pack_shows_nothing_with_quiet(tmp_path, posterior, monkeypatch):
    monkeypatch.setattr(stages, "LOG_AFTER", 0.0)
    r = _pack(tmp_path, posterior, "-q")
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""


def test_short_work_shows_no_stages():
    console = Console(file=io.StringIO(), force_terminal=False)
    with StageDisplay(console, after=60.0) as show:
        for stage in STAGES:
            show(stage, 0, 1)
            show(stage, 1, 1)
    assert console.file.getvalue() == ""


def test_a_stage_is_shown_once_the_work_passes_the_delay():
    console = Console(file=io.StringIO(), force_terminal=False)
    with StageDisplay(console, after=0.05) as show:
        show("fitting", 0, 2)
        for _ in range(200):  # the timer thread prints the running stage
            if console.file.getvalue():
                break
            time.sleep(0.01)
        show("fitting", 1, 2)
        show("searching lambda", 0, 1)
    lines = console.file.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["pack: fitting", "pack: searching lambda"]


def test_terminal_gets_a_bar_with_the_stage():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with StageDisplay(console, after=0.0) as show:
        show("searching lambda", 0, 1)
        show("searching lambda", 1, 1)
    assert "searching lambda" in console.file.getvalue()


class _FullFile(io.StringIO):
    def write(self, text):
        raise OSError(28, "No space left on device")


def test_a_display_that_cannot_be_written_does_not_end_the_work():
    """rich raises ENOSPC from a full stderr (2>/dev/full): a pack past 10 s ended with exit 2 and no archive."""
    for forced in (False, True):
        console = Console(file=_FullFile(), force_terminal=forced)
        with StageDisplay(console, after=0.0) as show:
            show("fitting", 0, 1)
            show("coding", 1, 1)


def test_a_timer_that_fires_as_the_display_closes_starts_no_bar():
    """timer.cancel() does not stop a callback already running: the bar then started after the display
    had closed and kept redrawing (cursor left hidden) in 3-6 of 300 runs."""
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    display = StageDisplay(console, after=60.0)
    with display:
        pass
    display._activate()  # what the timer thread did when it fired just before __exit__ took the lock
    assert not display.active and not display.bar.live.is_started


@pytest.mark.parametrize("environ", [{"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}])
def test_a_log_with_colours_forced_gets_lines_not_a_bar(monkeypatch, environ):
    """FORCE_COLOR / TTY_COMPATIBLE (CI) made rich call a log file a terminal: the log got spinner frames."""
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    console = Console(file=io.StringIO())
    assert not redraws(console)
    assert redraws(Console(file=io.StringIO(), force_terminal=True)) and not StageDisplay(console).terminal


def test_a_bar_leaves_standard_output_as_it_is(monkeypatch):
    # rich swapped sys.stdout for its proxy while the bar showed: under `>&-` (sys.stdout None) numba's
    # colorama then called None.isatty() as the first kernel loaded, a traceback that lost a whole train
    monkeypatch.setattr(sys, "stdout", None)
    console = Console(file=io.StringIO(), force_terminal=True)
    with StageDisplay(console, after=0.0, first_stage="fitting") as show:
        show("fitting", 0, 1)
        assert sys.stdout is None


@pytest.mark.parametrize("encoding", ["ascii", "ascii:surrogateescape"])  # (the second: LC_ALL=C, PYTHONUTF8=0)
def test_messages_keep_colons_and_names_a_locale_cannot_encode(tmp_path, encoding):
    # ':x:' in a file name was said as an emoji ('ckpt❌final.bnc'); info's table under an ASCII locale
    # ended in a UnicodeEncodeError traceback for a tensor named 'wörter' (under surrogateescape too, until stop 49)
    rng = np.random.default_rng(0)
    posterior = tmp_path / "post.npz"
    np.savez(posterior, **{"wörter.loc": rng.normal(size=(50, 4)), "wörter.scale": np.full((50, 4), 0.1)})
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    out = tmp_path / "ckpt:x:fïnal.bnc"
    r = subprocess.run([sys.executable, "-m", "bnncompress", "pack", str(posterior), "-o", str(out), "--lam", "1"],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0 and "ckpt:x:f\\xefnal.bnc" in r.stdout, (r.stdout, r.stderr)  # (said by say())
    r = subprocess.run([sys.executable, "-m", "bnncompress", "info", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "w\\xf6rter" in r.stdout, r.stderr


@pytest.mark.parametrize("columns", ["0", "²"])
def test_a_columns_of_zero_does_not_silence_the_messages(tmp_path, columns):
    # (rich took COLUMNS=0 as a width of 0 and printed nothing: an error exited 2 with an empty standard error;
    # a digit int() refuses was a traceback at import)
    env = {**os.environ, "COLUMNS": columns}
    r = subprocess.run([sys.executable, "-m", "bnncompress", "pack", str(tmp_path / "none.pt")],
                       capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr
