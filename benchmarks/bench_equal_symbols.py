"""Coded size at equal symbols: format version 3 (per-column counts, float16 rotation) vs the default
record (version 4: classed levels, int8 rotation; version 5 adds each class's values as int8
corrections; version 6, with ``--option reflectors=true``, stores the rotation as int8 Householder
reflectors, half the entries), bits/weight of every part of each transform-coded tensor.

    python benchmarks/bench_equal_symbols.py recipes/work/skipgram.pt --bits 1
    python benchmarks/bench_equal_symbols.py recipes/work/skipgram.pt --bits 1 --option reflectors=true

Packs the posterior with ``--option classes=0`` (the version 3 record), decodes its symbols, codes
the same symbols the default's way (position classes as ``vbq-transform`` picks them, levels, the
real ANS words, and the class values' bytes: a correction per nonzero level and a unit per column)
and prints one table. The default's rotation costs what the default archive (packed with the
``--option``s given) stores for it; with that matrix the quantizer's symbols would differ slightly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import bnncompress
from bnncompress import coding
from bnncompress.archive import read_archive
from bnncompress.cli.app import parse_options
from bnncompress.records import level_weights, levels_of, position_classes
from bnncompress.records.base import TensorRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' argument types
from recipe_args import positive_float, run  # noqa: E402

PARTS = ("words", "tables", "grid", "mean", "rotation", "jump", "class values")


def version3_parts(r: TensorRecord) -> dict[str, int]:
    d = r.marks["models"]
    rotation = r.side.get("rotation")
    stored = {"words": r.words.nbytes, "tables": r.counts.nbytes, "grid": r.grid.nbytes, "mean": 4 * d}
    rotation_bytes = 0 if rotation is None else rotation.nbytes
    return {**stored, "rotation": rotation_bytes, "jump": r.jump_table_bytes, "class values": 0}


def default_parts(r: TensorRecord, classes: int, class_values: bool, rotation_bytes: int) -> dict[str, int]:
    """The same symbols coded with ``classes`` position classes and levels (decoded back as a check),
    (``class_values``) the class values' corrections and units, and the default's stored rotation."""
    table, d = r.model_counts, r.marks["models"]
    symbols = coding.decode_blocks(r.words, r.offsets, table, r.num_symbols, r.block_size)
    block_class = position_classes(r.num_blocks, classes)
    rows = symbols.reshape(-1, d)
    row_class = block_class[np.arange(len(rows)) // r.block_rows]
    widths = (table > 0).sum(axis=1)
    levels = np.zeros((classes, d, table.shape[1]), np.uint8)
    for c in range(classes):
        mine = rows[row_class == c]
        for j in range(d):
            levels[c, j, : widths[j]] = levels_of(np.bincount(mine[:, j], minlength=table.shape[1])[: widths[j]])
    weights = level_weights(levels)
    words, offsets = coding.encode_blocks(symbols, weights, r.block_size, classes=block_class)
    back = coding.decode_blocks(words, offsets, weights, r.num_symbols, r.block_size, classes=block_class)
    assert np.array_equal(back, symbols)
    tables = classes * int(widths.sum()) + 2 * d + r.num_blocks  # levels, widths, a class per block
    stored = {"words": words.nbytes, "tables": tables, "grid": r.grid.nbytes, "mean": 4 * d}
    values = int(np.count_nonzero(levels)) + 4 * d if class_values else 0
    return {**stored, "rotation": rotation_bytes, "jump": r.jump_table_bytes, "class values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("posterior", type=Path)
    parser.add_argument("--bits", type=positive_float, default=1.0)
    parser.add_argument("--option", action="append", help="KEY=VALUE for the default's pack, as `pack --option`")
    args = parser.parse_args()
    if not args.posterior.exists():
        parser.error(f"{args.posterior} does not exist; pass a posterior file")
    with tempfile.TemporaryDirectory() as tmp:
        v3 = Path(tmp) / "v3.bnc"
        bnncompress.pack(args.posterior, v3, bits=args.bits, options={"classes": 0})
        default = Path(tmp) / "default.bnc"
        bnncompress.pack(args.posterior, default, bits=args.bits, options=parse_options(args.option) or None)
        tensors = read_archive(default).tensors
        classes = {t.name: t.marks.get("classes", t.marks.get("class_values", 1)) for t in tensors}
        valued = {t.name: "class_values" in t.marks for t in tensors}
        rotations = {t.name: sum(a.nbytes for k, a in t.side.items() if k.startswith(("rotation", "reflector")))
                     for t in tensors}  # fmt: skip
        print(f"{args.posterior} at --bits {args.bits:g}: bits/weight ({' + '.join(PARTS)})")
        print("| tensor | version 3 | the default's record, the same symbols | change |")
        print("|---|---|---|---|")
        v3_tensors = read_archive(v3).tensors
        for r in v3_tensors:
            if r.kind.name != "columns":
                continue
            old, new = version3_parts(r), default_parts(r, classes[r.name], valued[r.name], rotations[r.name])
            w = r.num_weights / 8
            cells = [" + ".join(f"{p[k] / w:.3f}" for k in PARTS) + f" = {sum(p.values()) / w:.3f}" for p in (old, new)]
            change = 100 * (sum(new.values()) / sum(old.values()) - 1)
            print(f"| {r.name} {r.shape} C={classes[r.name]} | {cells[0]} | {cells[1]} | {change:+.1f}% |")
        if all(r.kind.name != "columns" for r in v3_tensors):
            kinds = ", ".join(f"{r.name}: {r.kind.name}" for r in v3_tensors)
            print(f"note: no tensor has a per-column record at --bits {args.bits:g} ({kinds}): nothing to compare")


if __name__ == "__main__":
    run(main)
