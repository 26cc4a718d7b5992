"""The trust / row_weight table of docs/METHODS.md: vbq-direction settings against the anchors.

    python recipes/tune_vbq_direction.py          # needs recipes/work/skipgram.pt (analogy_benchmark.py)

Each setting is packed at each rate with --bits rate control and scored with gensim's evaluators
(analogy / WordSim353 / SimLex-999, restrict_vocab 20000); ~15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from recipe_args import positive_int, run
from recipe_args import rates as rates_arg

import bnncompress
from bnncompress import read_posterior
from bnncompress.sweep import score_text

SETTINGS = [
    ("vbq", {}),
    ("uniform", {}),
    ("vbq-direction", {"trust": 1.0, "row_weight": 1.0}),
    ("vbq-direction", {"trust": 0.75, "row_weight": 1.0}),
    ("vbq-direction", {"trust": 0.75, "row_weight": 0.75}),
    ("vbq-direction", {"trust": 0.75, "row_weight": 0.5}),
    ("vbq-direction", {"trust": 0.5, "row_weight": 1.0}),
    ("vbq-direction", {"trust": 0.5, "row_weight": 0.0}),
    ("vbq-direction", {"trust": 0.25, "row_weight": 1.0}),
]


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument(
        "--posterior",
        default=str(Path(__file__).parent / "work" / "skipgram.pt"),
        help="skip-gram posterior (made by analogy_benchmark.py --stage train)",
    )
    parser.add_argument(
        "--bits", type=rates_arg, default="0.75,1.5,2.5", help="comma-separated payload bits per weight"
    )
    parser.add_argument("--restrict-vocab", type=positive_int, default=20000, help="words scored (most frequent first)")
    args = parser.parse_args()
    if not Path(args.posterior).exists():
        parser.exit(
            2,
            f"error: {args.posterior} does not exist; make it with "
            "`python recipes/analogy_benchmark.py --stage train` or pass --posterior\n",
        )
    posterior = read_posterior(args.posterior).select(["word_vectors"], require_vocab=True)
    rates = args.bits
    print("| method | options | " + " | ".join(f"{b:g} bits" for b in rates) + " |")
    print("|---|---|" + "---|" * len(rates))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.bnc"
        for method, options in SETTINGS:
            cells = []
            for bits in rates:
                bnncompress.pack(posterior, path, bits=bits, method=method, options=options)
                s = bnncompress.evaluate(path, restrict_vocab=args.restrict_vocab)
                cells.append(" / ".join(score_text(s[m]) for m in ("analogy", "ws353", "simlex")))
            print(f"| {method} | {options or ''} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    run(main)
