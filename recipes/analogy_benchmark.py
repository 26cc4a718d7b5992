"""The analogy/similarity benchmark: train a Bayesian skip-gram on real English, sweep every method.

Corpus (all offline except one Debian package download, done here and never in tests):
- the GNU Collaborative International Dictionary of English (GCIDE, ~5 M words), from the
  Debian package ``dict-gcide`` fetched with ``apt-get download`` (no root needed);
- the shortened English Wikipedia dump and the Lee corpus that ship inside gensim.

Stages (each reuses the previous one's output if it exists):
1. ``corpus``: ``recipes/work/corpus.txt`` (one document per line, lowercased tokens);
2. ``train``: ``recipes/work/skipgram.pt`` (the posterior; ``bnncompress train`` code);
3. ``sweep``: every method at every rate, evaluated with gensim on questions-words,
   WordSim353 and SimLex-999 -> ``recipes/results/analogy_benchmark.{csv,md}`` + plots.

    python recipes/analogy_benchmark.py               # all stages (~1 h on 2 cores, minutes on a GPU)
    python recipes/analogy_benchmark.py --stage sweep # re-run only the sweep
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

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
CORPUS = WORK / "corpus.txt"
POSTERIOR = WORK / "skipgram.pt"
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


def build_corpus() -> None:
    from gensim.utils import tokenize

    sys.path.insert(0, str(HERE))
    from make_example import english_sentences

    WORK.mkdir(exist_ok=True)
    documents = [" ".join(tokenize(p, lowercase=True)) for p in gcide_documents()]
    documents += [" ".join(s) for s in english_sentences()]
    tmp = CORPUS.with_suffix(".tmp")
    tmp.write_text("\n".join(d for d in documents if d) + "\n", encoding="utf-8")
    tmp.replace(CORPUS)
    print(f"corpus: {len(documents):,} documents, {sum(len(d.split()) for d in documents):,} tokens -> {CORPUS}")


def train(args) -> None:
    from bnncompress.models import SkipGramConfig, read_corpus, save_posterior, train_skipgram

    sentences = read_corpus(CORPUS)
    config = SkipGramConfig(
        dim=args.dim,
        vocab_size=args.vocab_size,
        min_count=5,
        window=5,
        negatives=5,
        subsample=1e-4,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=0.01,
        seed=0,
        device="auto",
    )
    start = time.time()

    def report(step: int, total: int, loss: float) -> None:
        if step % 500 == 0 or step == total:
            print(f"step {step}/{total} loss/pair {loss:.4f} ({time.time() - start:.0f} s)", flush=True)

    result = train_skipgram(sentences, config, progress=report)
    print(f"trained in {time.time() - start:.0f} s on {result.num_pairs:,} pairs; loss per epoch {result.losses}")
    save_posterior(POSTERIOR, result)
    print(f"wrote {POSTERIOR} ({POSTERIOR.stat().st_size:,} bytes)")


def sweep(args) -> None:
    from bnncompress.sweep import sweep as run_sweep
    from bnncompress.sweep import write_markdown

    RESULTS.mkdir(exist_ok=True)
    csv = RESULTS / "analogy_benchmark.csv"
    rows = run_sweep(
        POSTERIOR,
        methods=args.methods.split(","),
        bits=[float(b) for b in args.bits.split(",")],
        tensor="word_vectors",
        restrict_vocab=args.vocab_size,
        csv_path=csv,
        plot_path=RESULTS / "analogy_benchmark.png",
        progress=lambda done, total, label: print(f"[{done}/{total}] {label}", flush=True),
    )
    write_markdown(rows, RESULTS / "analogy_benchmark.md")
    print((RESULTS / "analogy_benchmark.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", "corpus", "train", "sweep"], default="all")
    parser.add_argument("--vocab-size", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument(
        "--methods", default="vbq-direction,vbq,uniform,vbq-empirical,kmeans,weighted-kmeans,pq,float16"
    )
    parser.add_argument("--bits", default="0.5,0.75,1,1.5,2,2.5,3")
    args = parser.parse_args()
    if args.stage in ("all", "corpus") and (args.stage == "corpus" or not CORPUS.exists()):
        if shutil.which("apt-get") is None:
            sys.exit("error: apt-get is needed to fetch the dict-gcide package; run on Debian/Ubuntu")
        build_corpus()
    if args.stage in ("all", "train") and (args.stage == "train" or not POSTERIOR.exists()):
        train(args)
    if args.stage in ("all", "sweep"):
        sweep(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
