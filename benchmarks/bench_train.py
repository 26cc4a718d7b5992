"""Training speed of the Bayesian skip-gram (bnncompress train) beside gensim's word2vec.

    python benchmarks/bench_train.py               # the table below (about 1.5 minutes)
    python benchmarks/bench_train.py --epochs 2    # longer runs, steadier numbers
    python benchmarks/bench_train.py --corpus lee10.txt --vocab 5000 --min-count 2 --subsample 1e-3 --batch 2048
                                                   # issue 21's setting: the `train` defaults on a small corpus
                                                   # (lee10.txt: gensim's lee_background.cor, each line through
                                                   # gensim.utils.simple_preprocess, 10 times: 581,520 tokens)

The corpus is the analogy recipe's (recipes/work/corpus.txt, 4.9 M tokens, made by
`python recipes/analogy_benchmark.py --stage corpus`) when it exists, else a synthetic
Zipf(1.1) corpus of 2 M tokens over 50,000 word types (so that the 20,000 kept words are
spread as in English). Both trainers see the same sentences, keep the 20,000 most frequent
words (min count 5), use dim 100, window 5, 5 negatives, subsampling 1e-4, one epoch:

- bnncompress: pairs/s counts every (center, context) pair after subsampling (the unit of
  issue 13's goal: >= 200 k pairs/s on 2 cores); tokens/s = corpus tokens / training time;
- gensim Word2Vec (skip-gram, 2 worker threads): tokens/s = corpus tokens / training time
  (gensim shrinks its window at random, so it scores about half as many pairs per token).

Times exclude reading the corpus; bnncompress's include building the pairs. Check `uptime`
first: other work on the machine skews every number.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' argument types
from recipe_args import fraction, positive_int, run  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "recipes" / "work" / "corpus.txt"
VOCAB, DIM, WINDOW, NEGATIVES, SUBSAMPLE, MIN_COUNT = 20000, 100, 5, 5, 1e-4, 5


def corpus(path: Path | None = None) -> tuple[list[list[str]], str]:
    from bnncompress.models import read_corpus

    if path is not None:
        return read_corpus(path), f"corpus {path.name}"
    if CORPUS.exists():
        return read_corpus(CORPUS), f"recipe corpus ({CORPUS.name})"
    rng = np.random.default_rng(0)
    ids = np.minimum(rng.zipf(1.1, 2_000_000), 50_000)
    words = np.array([f"w{i}" for i in range(50_001)])
    tokens = words[ids]
    return [list(tokens[i : i + 20]) for i in range(0, len(tokens), 20)], "synthetic Zipf corpus"


def bench_bnncompress(sentences, epochs: int, batch: int) -> dict:
    from bnncompress.models import SkipGramConfig, train_skipgram

    cfg = SkipGramConfig(
        dim=DIM,
        vocab_size=VOCAB,
        min_count=MIN_COUNT,
        window=WINDOW,
        negatives=NEGATIVES,
        subsample=SUBSAMPLE,
        epochs=epochs,
        batch_size=batch,
        lr_decay=True,
    )
    train_skipgram(sentences[:2000], SkipGramConfig(dim=DIM, vocab_size=500, epochs=1))  # numba compile/cache load
    started = time.perf_counter()
    result = train_skipgram(sentences, cfg)
    seconds = time.perf_counter() - started
    tokens = sum(len(s) for s in sentences)
    return {
        "trainer": f"bnncompress (batch {batch:,})",
        "s_per_epoch": seconds / epochs,
        "tokens_per_s": tokens * epochs / seconds,
        "pairs_per_s": result.pairs_per_second,
        "loss": result.losses[-1],
    }


def bench_gensim(sentences, epochs: int) -> dict:
    from gensim.models import Word2Vec

    model = Word2Vec(
        vector_size=DIM,
        window=WINDOW,
        negative=NEGATIVES,
        sample=SUBSAMPLE,
        min_count=MIN_COUNT,
        max_final_vocab=VOCAB,
        sg=1,
        workers=2,
        seed=0,
    )
    model.build_vocab(sentences)
    tokens = sum(len(s) for s in sentences)
    started = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - started
    return {
        "trainer": "gensim Word2Vec sg, 2 workers",
        "s_per_epoch": seconds / epochs,
        "tokens_per_s": tokens * epochs / seconds,
        "pairs_per_s": None,
        "loss": None,
    }


def main() -> None:
    global VOCAB, MIN_COUNT, SUBSAMPLE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=positive_int, default=1, help="epochs per trainer (default: 1)")
    parser.add_argument(
        "--batch",
        type=positive_int,
        nargs="+",
        default=[4096, 16384],
        help="bnncompress batch sizes (default: 4096 16384)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        help="a text corpus, one sentence a line (default: the recipe's corpus or a synthetic one, as above)",
    )
    parser.add_argument("--vocab", type=positive_int, default=VOCAB, help=f"words kept (default: {VOCAB})")
    parser.add_argument("--min-count", type=positive_int, default=MIN_COUNT, help=f"(default: {MIN_COUNT})")
    parser.add_argument("--subsample", type=fraction, default=SUBSAMPLE, help=f"(default: {SUBSAMPLE})")
    args = parser.parse_args()
    if args.corpus is not None and not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus} is not a file")
    VOCAB, MIN_COUNT, SUBSAMPLE = args.vocab, args.min_count, args.subsample
    sentences, name = corpus(args.corpus)
    tokens = sum(len(s) for s in sentences)
    print(f"{name}: {tokens:,} tokens; {VOCAB:,} words x 100 dims, 5 negatives, {args.epochs} epoch(s)")
    rows = [bench_bnncompress(sentences, args.epochs, b) for b in args.batch] + [bench_gensim(sentences, args.epochs)]
    gensim = rows[-1]["s_per_epoch"]
    print(f"{'trainer':<32} {'s/epoch':>8} {'x gensim':>8} {'tokens/s':>11} {'pairs/s':>11} {'loss/pair':>9}")
    for r in rows:
        pairs = f"{r['pairs_per_s']:>11,.0f}" if r["pairs_per_s"] else f"{'-':>11}"
        loss = f"{r['loss']:>9.4f}" if r["loss"] else f"{'-':>9}"
        ratio = r["s_per_epoch"] / gensim
        print(f"{r['trainer']:<32} {r['s_per_epoch']:>8.1f} {ratio:>8.1f} {r['tokens_per_s']:>11,.0f} {pairs} {loss}")


if __name__ == "__main__":
    run(main)
