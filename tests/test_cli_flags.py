"""Every flag does what its help says or is refused in one line (a helper's second hunt of the CLI flags)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bnncompress.cli import app
from bnncompress.cli.stages import StageDisplay

EXAMPLE = Path(__file__).parents[1] / "data" / "example.pt"
run = CliRunner().invoke


def _one_line_exit_2(result, fragment):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("flags") / "ex.bnc"
    assert run(app, ["pack", str(EXAMPLE), "-o", str(path), "-q", "--bits", "2"]).exit_code == 0
    return path


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--option", "device=cpu"], "give it as --device"),  # a traceback (get_quantizer got device twice)
        (["--option", "trust=0.2", "--option", "trust=0.9"], "trust is given twice"),  # the last one won
        (["--option", "trust=true"], "trust must be between 0 and 1"),  # true was 1
        (["--method", "vbq-direction", "--option", "iterations=true"], "iterations must be an integer"),
        (["--method", "vbq", "--option", "max_level=true"], "max_level must be an integer"),
    ],
)
def test_method_options_of_the_wrong_kind_are_refused(tmp_path, options, fragment):
    _one_line_exit_2(run(app, ["pack", str(EXAMPLE), "-o", str(tmp_path / "a.bnc"), *options]), fragment)
    assert not (tmp_path / "a.bnc").exists()


def test_numbers_are_read_as_python_reads_them(tmp_path):
    # ".5", "1." and "+0.5" were refused: "trust must be between 0 and 1, got '.5'"
    for spelling in (".5", "+0.5", "0.5"):
        out = tmp_path / f"{spelling}.bnc"
        assert run(app, ["pack", str(EXAMPLE), "-o", str(out), "-q", "--option", f"trust={spelling}"]).exit_code == 0
    assert (tmp_path / ".5.bnc").read_bytes() == (tmp_path / "0.5.bnc").read_bytes()


def test_a_huge_lambda_leaks_no_numpy_warning(tmp_path):
    result = run(app, ["pack", str(EXAMPLE), "-o", str(tmp_path / "h.bnc"), "--lam", "1e100"])
    assert result.exit_code == 0 and "overflow" not in result.output, result.output


def test_train_flags_that_were_ignored(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 50)
    out = str(tmp_path / "p.pt")
    _one_line_exit_2(run(app, ["train", str(corpus), "-o", out, "--dim", "0"]), "--dim must be at least 1")  # (50)
    _one_line_exit_2(run(app, ["train", str(corpus), "-o", out, "--refine-means"]), "give those too")


def test_eval_and_unpack_flags_that_were_ignored(tmp_path, archive):
    vectors = tmp_path / "v.txt"
    assert run(app, ["unpack", str(archive), "-o", str(vectors)]).exit_code == 0
    _one_line_exit_2(run(app, ["eval", str(vectors), "-t", "nope"]), "word vectors have none")  # (scored them)
    _one_line_exit_2(run(app, ["unpack", str(archive), "-o", str(tmp_path / "a.npz"), "--text"]), "--binary/--text is")
    quiet = run(app, ["eval", str(archive), "-q"])
    assert quiet.exit_code == 0 and "tensor:" not in quiet.output and "ws353" in quiet.output  # scores only


def test_outputs_named_wrongly_are_said_as_such(tmp_path, archive):
    (tmp_path / "figs").mkdir()
    sweep = ["sweep", str(EXAMPLE), "--methods", "uniform", "--bits", "2", "-o", str(tmp_path / "s.csv")]
    _one_line_exit_2(run(app, [*sweep, "--plot", str(tmp_path / "figs")]), "is a directory")  # (wrote figs-*.png)
    _one_line_exit_2(run(app, [*sweep, "--plot", "-"]), "pass --plot FILE")  # (said --output)
    _one_line_exit_2(run(app, ["pack", str(EXAMPLE), "-o", str(archive / "x.bnc")]), "is a file, not a directory")
    _one_line_exit_2(run(app, ["info", str(tmp_path / "no\nsuch.bnc")]), "no\\nsuch.bnc")  # (two lines)


def test_stage_lines_name_their_command():
    console = Console(file=io.StringIO(), force_terminal=False)
    with StageDisplay(console, after=0.0, first_stage="sweeping", command="sweep"):
        pass
    assert console.file.getvalue().startswith("sweep: sweeping")  # (said pack:)
