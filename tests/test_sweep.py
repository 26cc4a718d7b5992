"""`bnncompress sweep`: every method at every rate, a CSV and one figure per metric."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bnncompress
from bnncompress import OptionError
from bnncompress.cli import app
from bnncompress.sweep import COLUMNS, METRICS, plot, plot_paths, sweep

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "data" / "example.pt"


@pytest.mark.slow  # the sweep recipe's command end to end
def test_sweep_writes_csv_rows_for_every_method_and_rate(tmp_path):
    rows = sweep(
        EXAMPLE,
        ["uniform", "vbq-direction", "float16"],
        [1.0, 3.0],
        restrict_vocab=2000,
        csv_path=tmp_path / "r.csv",
        plot_path=tmp_path / "rd.png",
    )
    got = [(r["method"], r["target_bits"]) for r in rows]
    assert got == [
        ("uncompressed", None),
        ("uniform", 1.0),
        ("uniform", 3.0),
        ("vbq-direction", 1.0),
        ("vbq-direction", 3.0),
        ("float16", None),
    ]
    with open(tmp_path / "r.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == COLUMNS and len(table) == 6
    for line in table[1:]:
        assert float(line["file_bits"]) > float(line["payload_bits"]) > 0
        assert line["ws353"] != "" and float(line["pack_seconds"]) > 0
    assert abs(float(table[1]["payload_bits"]) - 1.0) < 0.05
    for path in plot_paths(tmp_path / "rd.png").values():
        assert path.stat().st_size > 10_000


def test_cli_sweep_and_unreachable_targets_noted(tmp_path, trained):
    out = tmp_path / "s.csv"
    result = runner.invoke(
        app,
        [
            "sweep",
            str(trained["paths"]["with_vocab"]),
            "--methods",
            "uniform,vbq",
            "--bits",
            "2,1000",
            "-o",
            str(out),
            "--plot",
            str(tmp_path / "p.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    unreachable = [r for r in table if r["target_bits"] == "1000"]
    assert len(unreachable) == 2 and all("more than this method reaches" in r["note"] for r in unreachable)
    assert (tmp_path / "p-simlex.png").exists()


def test_cli_sweep_rejects_bad_lists(trained):
    for args, message in ((["--methods", "nope"], "unknown method"), (["--bits", "1,x"], "comma-separated numbers")):
        result = runner.invoke(app, ["sweep", str(trained["paths"]["with_vocab"]), *args])
        assert result.exit_code == 2 and message in result.output


def test_a_repeated_method_or_rate_is_swept_once(tmp_path):
    # The fourth hunt: `--methods uniform,uniform` packed and wrote every point twice.
    rows = sweep(EXAMPLE, ["float16", "uniform", "float16"], [2, 2.0], restrict_vocab=300, tensor="word_vectors")
    got = [(r["method"], r["target_bits"]) for r in rows]
    assert got == [("uncompressed", None), ("float16", None), ("uniform", 2.0)]


def test_a_float16_rows_note_is_printed_and_notes_keep_their_words(tmp_path):
    """A note on a fixed-rate row (float16: no target) crashed the table's notes with a TypeError; notes kept
    only what followed their first ': ' ('temperature' for 'ignored 1 parameter(s) ...: temperature')."""
    import torch

    store = torch.load(EXAMPLE, weights_only=False)
    store["params"]["temperature"] = torch.tensor(1.0)  # a user's own pyro.param beside the guide's
    store["constraints"]["temperature"] = store["constraints"]["AutoNormal.locs.word_vectors"]
    torch.save(store, tmp_path / "extra.pt")
    args = ["sweep", str(tmp_path / "extra.pt"), "--methods", "float16", "-o", str(tmp_path / "s.csv")]
    result = runner.invoke(app, [*args, "--restrict-vocab", "300"])
    assert result.exit_code == 0, result.output
    assert "note: uncompressed: ignored 1 parameter(s)" in result.output and "temperature" in result.output
    with open(tmp_path / "s.csv", newline="") as fh:  # (how the posterior was read: the uncompressed row's note)
        assert next(r for r in csv.DictReader(fh) if r["method"] == "uncompressed")["note"].startswith("ignored 1 p")


def test_a_figure_made_while_the_outputs_are_written_leaves_none_of_them_written(tmp_path, monkeypatch):
    # without --force each output checked its own target as it was renamed: the SimLex figure was written,
    # then the WordSim353 one refused, the CSV and analogy figure not written (interrupts hunt)
    figures = plot_paths(tmp_path / "rd.png")
    module = sys.modules["bnncompress.sweep"]  # (bnncompress.sweep is the function)
    draw = module.plot

    def plot_then_another_process_writes(*args):
        draw(*args)  # (every output's temporary is made by now)
        figures["ws353"].write_bytes(b"theirs")

    monkeypatch.setattr(module, "plot", plot_then_another_process_writes)
    with pytest.raises(OptionError, match="already exists"):
        sweep(EXAMPLE, ["uniform"], [2.0], restrict_vocab=2000, csv_path=tmp_path / "r.csv",
              plot_path=tmp_path / "rd.png", force=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rd-ws353.png"]
    assert figures["ws353"].read_bytes() == b"theirs"


@pytest.mark.slow  # (a child process: run by .ci/run's -m slow)
def test_a_full_standard_output_loses_the_summary_not_the_sweep(tmp_path):
    # the CSV was written, then the table's write failed: exit 2 'No space left on device' for a sweep that was
    # done (with >&- it exited 0)
    out = tmp_path / "s.csv"
    cmd = [sys.executable, "-m", "bnncompress", "sweep", str(EXAMPLE), "--methods", "uniform", "--bits", "2", "-o"]
    with open("/dev/full", "w") as full:
        r = subprocess.run([*cmd, str(out), "--restrict-vocab=2000"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0 and "could not be printed" in r.stderr and out.stat().st_size > 0, r.stderr


def test_how_the_posterior_was_read_is_the_uncompressed_rows_note_not_every_rows(tmp_path):
    # 'site supports unknown' (420 characters) was the note of every method x rate: 35 times with the defaults
    state = torch.load(EXAMPLE, weights_only=False)
    del state["supports"]
    torch.save(state, tmp_path / "nosupports.pt")
    rows = sweep(tmp_path / "nosupports.pt", ["uniform"], [2.0, 3.0], restrict_vocab=2000, csv_path=tmp_path / "c")
    assert ["supports unknown" in r["note"] for r in rows] == [True, False, False]  # (the uncompressed row's)


def test_a_method_whose_library_is_missing_is_said_before_any_work(tmp_path, monkeypatch):
    # without FAISS, a sweep packed and scored every other method, then stopped at pq with no CSV
    monkeypatch.setitem(sys.modules, "faiss", None)  # (as if not installed: importing it raises ImportError)
    packed = []
    monkeypatch.setattr(sys.modules["bnncompress.sweep"], "pack", lambda *a, **k: packed.append(a))  # (the module)
    with pytest.raises(OptionError, match="method 'pq' needs faiss: pip install faiss-cpu"):
        sweep(EXAMPLE, methods=["uniform", "pq"], bits=[1], csv_path=tmp_path / "r.csv")
    assert packed == []
    with pytest.raises(OptionError, match="needs faiss"):  # pack: before the posterior is read
        bnncompress.pack(tmp_path / "absent.pt", tmp_path / "o.bnc", method="pq")


def test_the_figures_show_every_measured_point_and_only_fixed_rate_methods_as_reference_lines(tmp_path, monkeypatch):
    # kmeans overshot its largest target (0.75 -> 1.0024 bits/w): the axis ended at 1.1 x 0.75, and where one
    # point was left it was drawn as a dotted "reference" line, as float16 is
    from matplotlib.figure import Figure

    def row(method, target, payload, *scores):
        return {"method": method, "target_bits": target, "payload_bits": payload, **dict(zip(METRICS, scores))}

    rows = [
        row("uncompressed", None, 32.0, 0.1, 0.5, 0.04),
        row("kmeans", 0.5, 0.0013, 0.0, None, None),
        row("kmeans", 0.75, 1.0024, 0.02, 0.23, 0.06),
        {"method": "kmeans", "target_bits": 0.25, "note": "missed"},
        row("float16", None, 16.0, 0.1, 0.5, 0.04),
    ]
    seen = {}

    def savefig(fig, fname, **kwargs):
        ax = fig.axes[0]
        seen[ax.get_ylabel()] = (ax.get_xlim(), {line.get_label(): line for line in ax.lines})

    monkeypatch.setattr(Figure, "savefig", savefig)
    plot(rows, tmp_path / "rd.png")
    assert sorted(seen) == ["analogy", "simlex", "ws353"]
    for metric, ((left, right), lines) in seen.items():
        kmeans = [(x, y) for x, y in zip(lines["kmeans"].get_xdata(), lines["kmeans"].get_ydata())]
        assert kmeans == [(r["payload_bits"], r[metric]) for r in rows[1:3] if r[metric] is not None], metric
        assert all(left <= x <= right for x, _ in kmeans), (metric, right)
        assert lines["kmeans"].get_marker() == "o"
        reference = lines["float16 (16.0 bits/w)"]  # off the axis: its score as a horizontal line
        assert list(reference.get_ydata()) == [rows[4][metric]] * 2 and reference.get_linestyle() == ":"


def test_an_empty_plot_path_is_one_line(tmp_path):
    """`--plot ''` (typer's Path made it '.', a directory) reached plot_paths as '' and raised a ValueError."""
    with pytest.raises(OptionError, match="plot_path is empty"):
        sweep(EXAMPLE, ["float16"], [2.0], restrict_vocab=100, csv_path=tmp_path / "r.csv", plot_path="")
    args = ["sweep", str(EXAMPLE), "--methods", "float16", "-o", str(tmp_path / "s.csv"), "--plot", ""]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--plot is empty" in result.output


def test_the_uncompressed_row_scores_the_posterior_the_packs_were_made_from(tmp_path, monkeypatch):
    # (it read the file again by path: a checkpoint saved there meanwhile was scored instead, silently)
    sweep_module = sys.modules["bnncompress.sweep"]  # (the package's attribute is the function)
    path = tmp_path / "post.pt"
    path.write_bytes(EXAMPLE.read_bytes())
    before = bnncompress.evaluate(path, restrict_vocab=2000)
    store = torch.load(EXAMPLE, weights_only=False)
    locs = store["params"]["AutoNormal.locs.word_vectors"]
    store["params"]["AutoNormal.locs.word_vectors"] = locs[
        torch.randperm(len(locs), generator=torch.Generator().manual_seed(0))
    ]
    real = sweep_module.read_posterior

    def read_then_a_trainer_saves(source):
        posterior = real(source)
        torch.save(store, path)  # the next epoch's checkpoint: rows shuffled, other scores
        return posterior

    monkeypatch.setattr(sweep_module, "read_posterior", read_then_a_trainer_saves)
    rows = sweep(path, ["float16"], [2.0], restrict_vocab=2000)
    assert bnncompress.evaluate(path, restrict_vocab=2000)["ws353"] != pytest.approx(before["ws353"], abs=0.01)
    assert [rows[0][m] for m in METRICS] == [before[m] for m in METRICS]
    assert rows[1]["ws353"] == pytest.approx(before["ws353"], abs=0.01)
