"""The recipes run end to end (tiny settings)."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import gensim
import pytest

import bnncompress

RECIPES = Path(__file__).parent.parent / "recipes"


def _recipe(name: str):
    """The recipe module ``name`` (recipes/ is the scripts' own directory, not a package)."""
    sys.path.insert(0, str(RECIPES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(RECIPES))


@pytest.mark.slow
def test_bnn_digits_recipe_writes_table_and_plot(tmp_path):
    subprocess.run(
        [sys.executable, str(RECIPES / "bnn_digits.py"), "--steps", "30", "--bits", "2,4", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    table = (tmp_path / "bnn_digits.md").read_text()
    assert "| posterior mean |" in table and "| vbq | 2 |" in table and "| vbq | 4 |" in table
    assert (tmp_path / "bnn_digits.png").stat().st_size > 10_000


@pytest.mark.slow
def test_pyro_svi_recipe_trains_a_param_store_that_packs(tmp_path):  # gensim's Lee corpus, Pyro's SVI
    lee = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    out = tmp_path / "svi.pt"
    args = ["--corpus", str(lee), "--vocab-size", "800", "--dim", "16", "--steps", "40", "--batch-size", "1024"]
    subprocess.run([sys.executable, str(RECIPES / "train_pyro_svi.py"), *args, "--output", str(out)], check=True)
    result = bnncompress.pack(out, tmp_path / "svi.bnc", bits=2)
    a = bnncompress.load(result.path)
    assert sorted(a.names) == ["context_vectors", "word_vectors"] and a["word_vectors"].shape == (800, 16)
    assert len(a.vocab) == 800 and abs(result.payload_bits_per_weight - 2) < 0.1


def test_regression_quick_keeps_steps_in_any_spelling():
    """--quick replaced --steps=300 and --step 300 by its 200, silently (it compared raw argv strings)."""
    sys.path.insert(0, str(RECIPES))
    try:
        import bnn_regression
    finally:
        sys.path.remove(str(RECIPES))
    for argv, steps, small in [
        (["--quick", "--steps=300"], 300, 600),
        (["--quick", "--step", "300"], 300, 600),
        (["--quick", "--small-steps=900"], 200, 900),
        (["--quick"], 200, 600),
        ([], 600, 1500),
    ]:
        args = bnn_regression.parse(argv)
        assert (args.steps, args.small_steps) == (steps, small), argv


@pytest.mark.slow  # (child processes)
def test_pyro_svi_recipe_refuses_to_write_over_its_corpus_or_a_file_and_bad_rates(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 20)
    (tmp_path / "old.pt").write_text("kept")
    script = [sys.executable, str(RECIPES / "train_pyro_svi.py"), "--corpus", str(corpus), "--steps", "1"]
    for extra, message in [
        (["--output", str(corpus)], "is the input"),  # the corpus was replaced by the posterior
        (["--output", str(tmp_path / "old.pt")], "pass --force"),
        (["--lr", "-1", "--output", str(tmp_path / "n.pt")], "not a finite number above 0"),  # trained uphill
        (["--seed", "-1", "--output", str(tmp_path / "n.pt")], "not a seed"),
    ]:
        p = subprocess.run([*script, *extra], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and message in p.stderr.strip().splitlines()[-1], p.stderr[-500:]
    assert corpus.read_text().startswith("the cat") and (tmp_path / "old.pt").read_text() == "kept"


@pytest.mark.slow  # (child processes)
def test_recipes_keep_existing_results_unless_forced_and_skip_unreachable_points(tmp_path):
    """bnn_digits and bnn_regression replaced the results files in their folder without --force (after minutes
    of training); one unreachable --bits ended bnn_digits with every finished row lost; bnn_regression with
    no target reached ended in a traceback; --per-tensor-bits outside --bits gave an empty table."""
    mine = tmp_path / "bnn_digits.md"
    mine.write_text("MY OWN NOTES")
    digits = [sys.executable, str(RECIPES / "bnn_digits.py"), "--steps", "5", "--methods", "uniform"]
    p = subprocess.run([*digits, "--bits", "4", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "pass --force" in p.stderr and mine.read_text() == "MY OWN NOTES", p.stderr[-500:]
    p = subprocess.run(
        [*digits, "--bits", "4,0.0001", "--out", str(tmp_path), "--force"], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0 and "0.0001 bits: skipped" in p.stdout, p.stderr[-500:]
    assert "| uniform | 4 |" in mine.read_text()
    regression = [sys.executable, str(RECIPES / "bnn_regression.py"), "--steps", "5", "--small-steps", "5"]
    p = subprocess.run([*regression, "--bits", "4", "--out", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "--per-tensor-bits 2 is not one of --bits" in p.stderr, p.stderr[-500:]
    p = subprocess.run(
        [
            *regression,
            "--methods",
            "uniform",
            "--bits",
            "0.0001",
            "--per-tensor-bits",
            "0.0001",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0 and (tmp_path / "results.md").exists(), p.stderr[-800:]


@pytest.mark.parametrize("stderr", ["warming up\nerror: no such method", b"warming up\nerror: no such method"])
def test_recipe_args_run_says_a_failed_tool_in_one_line_whatever_its_stderr(stderr, capsys):
    """bench_pack_load runs its cases with text=True: run() called .decode() on a str, a second traceback."""
    recipe_args = _recipe("recipe_args")

    def main():
        raise subprocess.CalledProcessError(2, ["tool", "--case", "x"], stderr=stderr)

    with pytest.raises(SystemExit) as exc:
        recipe_args.run(main)
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: tool --case x failed (error: no such method)\n"
    assert recipe_args.method("vbq") == "vbq"
    for bad in ("bogus", "vbq,uniform"):
        with pytest.raises(argparse.ArgumentTypeError):
            recipe_args.method(bad)


def test_analogy_benchmark_refuses_an_existing_figure_before_the_corpus_and_training(tmp_path, monkeypatch):
    """Only the .csv and .md were checked up front: an existing figure was refused after minutes of training."""
    analogy = _recipe("analogy_benchmark")
    results = tmp_path / "results"
    results.mkdir()
    (results / "analogy_benchmark-ws353.png").write_text("MY OWN FIGURE")
    argv = ["analogy_benchmark.py", "--stage", "sweep", "--work", str(tmp_path), "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv)  # (no posterior in --work: the sweep stage would stop there)
    with pytest.raises(bnncompress.BnnCompressError, match="analogy_benchmark-ws353.png' already exists"):
        analogy.main()
    assert (results / "analogy_benchmark-ws353.png").read_text() == "MY OWN FIGURE"


def test_pyro_svi_recipe_final_lr_is_the_last_steps_lr_and_at_most_1(tmp_path, capsys):
    """ClippedAdam decays the lr before each step: lrd = final_lr ** (1 / (steps - 1)) ran the last step
    below --final-lr (3 steps: 0.0316 for 0.1); --final-lr 2 made the lr grow."""
    import torch
    from pyro.optim.clipped_adam import ClippedAdam

    svi = _recipe("train_pyro_svi")
    for steps in (1, 3, 10):
        p = torch.nn.Parameter(torch.zeros(1))
        optim = ClippedAdam([p], lr=0.02, lrd=svi.lr_decay(0.1, steps))
        for _ in range(steps):
            p.grad = torch.ones(1)
            optim.step()
        assert optim.param_groups[0]["lr"] == pytest.approx(0.02 * 0.1), steps
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\n")
    for bad in ("2", "0"):
        with pytest.raises(SystemExit) as exc:
            svi.parse_args(["--corpus", str(corpus), "--output", str(tmp_path / "o.pt"), "--final-lr", bad])
        assert exc.value.code == 2 and "above 0 and at most 1" in capsys.readouterr().err


def test_recipes_say_an_output_folder_that_is_a_file_is_not_a_directory(tmp_path, monkeypatch, capsys):
    """--out / --results naming a file ended in "error: File exists (...)", as if the results did, --force or not."""
    afile = tmp_path / "notadir"
    afile.write_text("kept")
    calls = [
        ("bnn_regression", lambda m: m.parse(["--out", str(afile), "--force"])),
        ("bnn_digits", lambda m: m.main()),
        ("analogy_benchmark", lambda m: m.main()),
    ]
    for name, call in calls:
        option = "--results" if name == "analogy_benchmark" else "--out"
        monkeypatch.setattr(sys, "argv", [f"{name}.py", option, str(afile), "--force"])
        with pytest.raises(SystemExit) as exc:
            call(_recipe(name))
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exc.value.code == 2 and err.endswith(f"argument {option}: '{afile}' is a file, not a directory"), err
    assert afile.read_text() == "kept"
