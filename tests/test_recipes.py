"""The recipes run end to end (tiny settings)."""

import subprocess
import sys
from pathlib import Path

RECIPES = Path(__file__).parent.parent / "recipes"


def test_bnn_digits_recipe_writes_table_and_plot(tmp_path):
    subprocess.run(
        [sys.executable, str(RECIPES / "bnn_digits.py"), "--steps", "30", "--bits", "2,4", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    table = (tmp_path / "bnn_digits.md").read_text()
    assert "| posterior mean |" in table and "| vbq | 2 |" in table and "| vbq | 4 |" in table
    assert (tmp_path / "bnn_digits.png").stat().st_size > 10_000
