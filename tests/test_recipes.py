"""The recipes run end to end (tiny settings)."""

import subprocess
import sys
from pathlib import Path

import gensim
import pytest

import bnncompress

RECIPES = Path(__file__).parent.parent / "recipes"


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
