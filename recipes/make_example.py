"""Make data/example.pt: the bundled Bayesian skip-gram posterior.

The corpus is real English text that ships inside the gensim package (its test data): the
shortened English Wikipedia dump (parsed with gensim's WikiCorpus) and the Lee background
corpus. The posterior is trained with the same code as ``bnncompress train``.

    python recipes/make_example.py            # writes recipes/work/example.pt (~3 MB, about 10 s)

It never writes over the bundled data/example.pt unless asked to (``--output data/example.pt
--force``): a rerun makes a posterior of the same model and settings, not those exact bytes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import gensim
from gensim.corpora import WikiCorpus
from recipe_args import positive_int, run

from bnncompress import BnnCompressError
from bnncompress.files import check_output_path
from bnncompress.models import SkipGramConfig, read_corpus, save_posterior, train_skipgram

TEST_DATA = Path(os.path.dirname(gensim.__file__)) / "test" / "test_data"
WIKI = TEST_DATA / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE = TEST_DATA / "lee_background.cor"
WORK = Path(__file__).resolve().parent / "work"


def english_sentences() -> list[list[str]]:
    """Token lists: one per Wikipedia article, one per Lee document (lowercased, gensim-tokenized)."""
    wiki = WikiCorpus(str(WIKI), dictionary={}, processes=1)
    articles = [list(tokens) for tokens in wiki.get_texts()]
    return articles + read_corpus(LEE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=WORK / "example.pt", help="default: %(default)s")
    parser.add_argument("--force", action="store_true", help="replace the output if it exists")
    parser.add_argument("--vocab-size", type=positive_int, default=4000, help="default: %(default)s")
    parser.add_argument("--dim", type=positive_int, default=50, help="default: %(default)s")
    parser.add_argument("--epochs", type=positive_int, default=3, help="default: %(default)s")
    args = parser.parse_args()
    if args.output == WORK / "example.pt":
        WORK.mkdir(exist_ok=True)
    try:
        check_output_path(args.output, force=args.force)  # before minutes of training
    except BnnCompressError as exc:
        parser.exit(2, f"error: {exc.render({'force=True': '--force'}, prefix='--')}\n")
    sentences = english_sentences()
    print(f"corpus: {len(sentences)} documents, {sum(map(len, sentences)):,} tokens")
    config = SkipGramConfig(
        dim=args.dim,
        vocab_size=args.vocab_size,
        min_count=5,
        window=5,
        negatives=5,
        subsample=1e-3,
        epochs=args.epochs,
        batch_size=4096,
        lr=0.02,
        seed=0,
        device="auto",
    )
    start = time.time()
    result = train_skipgram(
        sentences,
        config,
        progress=lambda p: print(f"epoch {p.epoch}/{p.epochs} loss/pair {p.loss:.4f}") if p.epoch_done else None,
    )
    print(f"trained in {time.time() - start:.0f} s on {result.num_pairs:,} pairs; loss per epoch {result.losses}")
    save_posterior(args.output, result, force=args.force)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes)")


if __name__ == "__main__":
    run(main)
