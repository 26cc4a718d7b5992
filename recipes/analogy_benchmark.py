"""The analogy/similarity benchmark: train a Bayesian skip-gram on real English, sweep every method.

Corpus (all offline except one Debian package download, done here and never in tests):
- the GNU Collaborative International Dictionary of English (GCIDE, ~5 M words), from the
  Debian package ``dict-gcide`` fetched with ``apt-get download`` (no root needed);
- the shortened English Wikipedia dump and the Lee corpus that ship inside gensim.

Stages (each reuses the previous one's output if it exists):
1. ``corpus``: ``recipes/work/corpus.txt`` (one document per line, lowercased tokens; ~30 s; ``--work``
   names another directory for the corpus and the posterior);
2. ``train``: ``recipes/work/skipgram.pt`` (the posterior, ``bnncompress train``'s trainer;
   20,000 x 100, 2 epochs of 18 M pairs: ~1 min on 2 cores);
3. ``sweep``: every method at every rate, evaluated with gensim on questions-words,
   WordSim353 and SimLex-999 -> ``<results>/analogy_benchmark.{csv,md}`` + plots.

    python recipes/analogy_benchmark.py                  # all stages -> recipes/work/results/
    python recipes/analogy_benchmark.py --stage sweep    # re-run only the sweep
    python recipes/analogy_benchmark.py --quick          # < 1 min: gensim's bundled text only, small model
    python recipes/analogy_benchmark.py --results recipes/results --force   # refresh the committed results
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recipe_args import check_results, directory, methods, positive_int, rates, run

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
QUICK = {"vocab_size": 3000, "dim": 50, "epochs": 2, "batch_size": 8192, "lr": 0.02}
QUICK_METHODS, QUICK_BITS = ["vbq-transform", "vbq", "uniform"], [1.0, 2.0]
GCIDE_DICT = "usr/share/dictd/gcide.dict.dz"

_MARKUP = re.compile(r"\[[^\]]*\]|\{[^}]*\}|<[^>]*>")  # "[1913 Webster]", "{...}", "<...>" annotations


def gcide_documents() -> list[str]:
    """GCIDE entries as plain-text paragraphs (one per definition block)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "dict-gcide"], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("dict-gcide_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        with gzip.open(Path(tmp) / GCIDE_DICT, "rt", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    text = text[text.find("Begin file 1 of 26") :]
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", _MARKUP.sub(" ", text)))
    return [p for p in paragraphs if len(p.split()) >= 3]


def build_corpus(corpus: Path) -> None:
    from gensim.utils import tokenize

    sys.path.insert(0, str(HERE))
    from make_example import english_sentences

    corpus.parent.mkdir(parents=True, exist_ok=True)
    documents = [" ".join(tokenize(p, lowercase=True)) for p in gcide_documents()]
    documents += [" ".join(s) for s in english_sentences()]
    tmp = corpus.with_suffix(".tmp")
    tmp.write_text("\n".join(d for d in documents if d) + "\n", encoding="utf-8")
    tmp.replace(corpus)
    print(f"corpus: {len(documents):,} documents, {sum(len(d.split()) for d in documents):,} tokens -> {corpus}")


def train(args) -> None:
    from bnncompress.models import SkipGramConfig, TrainProgress, read_corpus, save_posterior, train_skipgram

    if args.quick:
        sys.path.insert(0, str(HERE))
        from make_example import english_sentences

        sentences = english_sentences()  # gensim's bundled Wikipedia sample and Lee corpus
    else:
        sentences = read_corpus(args.work / "corpus.txt")
    config = SkipGramConfig(
        dim=args.dim,
        vocab_size=args.vocab_size,
        min_count=5,
        window=5,
        negatives=5,
        subsample=1e-4,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=True,
        seed=args.seed,
        device="auto",
    )
    start = time.time()

    def report(p: TrainProgress) -> None:
        if p.epoch_done:
            print(
                f"epoch {p.epoch}/{p.epochs}: loss/pair {p.loss:.4f}, {p.pairs_per_second:,.0f} pairs/s "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )

    result = train_skipgram(sentences, config, progress=report)
    print(f"trained in {time.time() - start:.0f} s on {result.num_pairs:,} pairs/epoch")
    args.posterior.parent.mkdir(parents=True, exist_ok=True)
    save_posterior(args.posterior, result)
    print(f"wrote {args.posterior} ({args.posterior.stat().st_size:,} bytes)")


def sweep(args) -> None:
    from bnncompress.sweep import sweep as run_sweep
    from bnncompress.sweep import write_markdown

    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    csv = results / "analogy_benchmark.csv"
    rows = run_sweep(
        args.posterior,
        methods=args.methods,
        bits=args.bits,
        tensor="word_vectors",
        restrict_vocab=args.vocab_size,
        csv_path=csv,
        plot_path=results / "analogy_benchmark.png",
        progress=lambda stage, done, total: print(f"[{done}/{total}] {stage}", flush=True),
        force=args.force,
    )
    write_markdown(rows, results / "analogy_benchmark.md")
    print((results / "analogy_benchmark.md").read_text())


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--stage", choices=["all", "corpus", "train", "sweep"], default="all", help="stage(s) to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small model on gensim's bundled text, 3 methods at 2 rates, all stages (its own settings: "
        "--vocab-size, --dim, --epochs, --batch-size, --lr, --methods, --bits and --stage are not used; --seed is, "
        "when WORK/quick.pt is trained, and a later --quick reuses that file)",
    )
    parser.add_argument("--work", type=Path, default=WORK, help="directory of the corpus and the posterior")
    parser.add_argument(
        "--results",
        type=directory,
        help="directory for tables and plots (default: WORK/results; with --quick, WORK/quick-results)",
    )
    parser.add_argument("--force", action="store_true", help="replace the tables and plots if they exist")
    parser.add_argument("--vocab-size", type=positive_int, default=20000, help="words kept (most frequent)")
    parser.add_argument("--dim", type=positive_int, default=100, help="embedding dimension")
    parser.add_argument("--epochs", type=positive_int, default=2, help="training epochs")
    parser.add_argument("--batch-size", type=positive_int, default=16384, help="pairs per training step")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (decays linearly to 10%%)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--methods",
        type=methods,
        default="vbq-transform,vbq-direction,vbq,uniform,vbq-empirical,kmeans,weighted-kmeans,pq,float16",
        help="comma-separated methods to sweep",
    )
    parser.add_argument("--bits", type=rates, default="0.5,0.75,1,1.5,2,2.5,3", help="comma-separated bits/weight")
    args = parser.parse_args()
    corpus, args.posterior = args.work / "corpus.txt", args.work / "skipgram.pt"
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.methods, args.bits, args.stage = QUICK_METHODS, QUICK_BITS, "all"
        args.posterior = args.work / "quick.pt"
    if args.results is None:
        args.results = args.work / ("quick-results" if args.quick else "results")
    if args.stage in ("all", "sweep"):  # before the corpus and the training: the tables are not replaced unasked
        from bnncompress.sweep import plot_paths

        args.results.mkdir(parents=True, exist_ok=True)
        tables = [args.results / f"analogy_benchmark.{suffix}" for suffix in ("csv", "md")]
        check_results([*tables, *plot_paths(args.results / "analogy_benchmark.png").values()], args.force)
    if not args.quick and args.stage in ("all", "corpus") and (args.stage == "corpus" or not corpus.exists()):
        if shutil.which("apt-get") is None:
            parser.exit(
                2, "error: apt-get is needed to fetch the dict-gcide package; run on Debian/Ubuntu, or use --quick\n"
            )
        build_corpus(corpus)
    if args.stage == "train" and not args.quick and not corpus.exists():
        parser.exit(2, f"error: {corpus} does not exist; run --stage corpus first\n")
    if args.stage in ("all", "train") and (args.stage == "train" or not args.posterior.exists()):
        train(args)
    elif args.stage == "all":
        print(f"using the posterior trained before, {args.posterior} (--stage train trains it again)", flush=True)
    if args.stage == "sweep" and not args.posterior.exists():
        parser.exit(2, f"error: {args.posterior} does not exist; run --stage train first\n")
    if args.stage in ("all", "sweep"):
        sweep(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    run(main)
