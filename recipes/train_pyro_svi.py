"""A Bayesian skip-gram posterior trained with Pyro's own SVI, the way users bring them to bnncompress.

``bnncompress train`` fits :func:`bnncompress.models.skipgram.skipgram_model` with its own fast
trainer (:mod:`bnncompress.models.trainer`). This recipe fits the same model with the plain Pyro loop
instead,

    SVI(model, AutoNormal(model), ClippedAdam, Trace_ELBO())

(minibatches of (center, context) pairs through the model's subsample plate, ``negatives``
unigram^0.75 noise words per pair, the learning rate decaying geometrically to 10% by the last
step; the guide's means start at N(0, 0.1^2) draws rather than Pyro's default init_to_median
(``--init-loc median`` for that), its scales at AutoNormal's default init_scale 0.1; ClippedAdam's
elementwise clip is off by default, ``--clip-norm 10`` is Pyro's: with a data term scaled by
N / B ~ 1,170 it would clip nearly every gradient), and saves what a Pyro user would save: the param store
(``pyro.get_param_store().get_state()``: ``AutoNormal.locs.word_vectors``,
``AutoNormal.scales.word_vectors`` (unconstrained, ``softplus_positive``), the same for
``context_vectors``) plus the ``vocab`` list, in one .pt file that ``bnncompress pack`` /
``sweep`` read.

The corpus is the analogy benchmark's (``recipes/work/corpus.txt``, one document per line; made by
``python recipes/analogy_benchmark.py --stage corpus``); vocabulary and pairs are built as there
(min count 5, window 5, subsampling 1e-4).

The posterior ``recipes/work/svi30k.pt`` (30,000 x 50; 19.2 M pairs per epoch, 2 epochs = 2,340 steps
of 16,384 pairs; loss/pair 2.376 over the last 20 steps) was made with

    python recipes/train_pyro_svi.py --vocab-size 30000 --dim 50 --seed 1 --epochs 2 \\
        --batch-size 16384 --lr 0.02 --threads 1 --output recipes/work/svi30k.pt

in 11 min 16 s (661 s of SVI steps, 0.28 s/step, on a shared 2-core machine). Two threads took
0.2 s/step on an idle machine but 1.2-1.7 s/step while another process ran; one thread holds
0.26-0.28 s/step either way (the first steps' losses were the same with 1 and 2 threads). The
loss is Trace_ELBO's negative ELBO divided by the number of pairs. Checked with

    bnncompress sweep recipes/work/svi30k.pt --methods float16 --bits 16 -o check.csv

means (uncompressed): analogy 0.128, WordSim353 Spearman 0.649, SimLex-999 0.338.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from recipe_args import fraction, positive_float, positive_fraction, positive_int, run, seed

from bnncompress import BnnCompressError
from bnncompress.files import atomic_output, check_output_path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "work" / "corpus.txt"
OUTPUT = HERE / "work" / "svi30k.pt"


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="text file, one document per line")
    parser.add_argument("--vocab-size", type=positive_int, default=30000, help="words kept (most frequent)")
    parser.add_argument("--dim", type=positive_int, default=50, help="embedding dimension")
    parser.add_argument("--seed", type=seed, default=1, help="seed (pairs, order, noise words, Pyro)")
    parser.add_argument("--epochs", type=positive_float, default=2.0, help="passes over the pairs (may be fractional)")
    parser.add_argument("--steps", type=positive_int, default=None, help="SVI steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=positive_int, default=16384, help="pairs per SVI step")
    parser.add_argument("--lr", type=positive_float, default=0.02, help="initial learning rate")
    parser.add_argument(
        "--final-lr", type=positive_fraction, default=0.1, help="last step's lr as a fraction of --lr (at most 1)"
    )
    parser.add_argument("--clip-norm", type=positive_float, default=1e6, help="ClippedAdam's elementwise gradient clip")
    parser.add_argument(
        "--init-scale", type=positive_float, default=0.1, help="AutoNormal's init_scale (Pyro's default 0.1)"
    )
    parser.add_argument(
        "--init-loc",
        choices=["median", "small"],
        default="small",
        help="AutoNormal's init_loc_fn: Pyro's default init_to_median (means ~0.3 from the prior) or "
        "'small': N(0, 0.1^2) means, as word2vec and bnncompress train start",
    )
    parser.add_argument("--min-count", type=positive_int, default=5)
    parser.add_argument("--window", type=positive_int, default=5)
    parser.add_argument("--negatives", type=positive_int, default=5)
    parser.add_argument("--subsample", type=fraction, default=1e-4)
    parser.add_argument(
        "--threads", type=positive_int, default=2, help="torch threads (1 is much faster when the 2 cores are shared)"
    )
    parser.add_argument("--log-every", type=positive_int, default=100, help="print the loss every N steps")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="posterior .pt file to write")
    parser.add_argument("--force", action="store_true", help="replace the output if it exists")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(
            f"--corpus {args.corpus} does not exist; make it: python recipes/analogy_benchmark.py --stage corpus"
        )
    if args.output == OUTPUT:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    try:  # before minutes of training; never the corpus itself
        check_output_path(args.output, force=args.force, inputs=[args.corpus])
    except BnnCompressError as exc:
        parser.exit(2, f"error: {exc.render({'force=True': '--force'}, prefix='--')}\n")
    return args


def lr_decay(final_lr: float, steps: int) -> float:
    """ClippedAdam's ``lrd``: it multiplies the lr by ``lrd`` before each step, so step k (1-based) runs
    at lr * lrd^k and the last of ``steps`` at lr * final_lr (``1 / (steps - 1)`` overshot by a step)."""
    return final_lr ** (1.0 / steps)


def main(argv=None) -> None:
    args = parse_args(argv)
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.infer.autoguide.initialization import init_to_median

    from bnncompress.models.skipgram import build_vocab, make_pairs, read_corpus, skipgram_model

    torch.set_num_threads(args.threads)
    started = time.time()
    rng = np.random.default_rng(args.seed)
    sentences = read_corpus(args.corpus)
    vocab, counts = build_vocab(sentences, args.vocab_size, args.min_count)
    centers, contexts = make_pairs(sentences, vocab, counts, args.window, args.subsample, rng)
    del sentences
    n, v = len(centers), len(vocab)
    print(f"{v:,} words, {n:,} pairs ({time.time() - started:.0f} s)", flush=True)

    batch = min(args.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    steps = args.steps if args.steps is not None else max(1, round(args.epochs * steps_per_epoch))
    noise_weights = torch.tensor(np.asarray(counts, np.float64) ** 0.75, dtype=torch.float32)

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    model = skipgram_model(v, args.dim, n, args.negatives)
    if args.init_loc == "median":
        init_loc_fn = init_to_median
    else:

        def init_loc_fn(site):
            return 0.1 * torch.randn(site["fn"].shape())

    guide = AutoNormal(model, init_loc_fn=init_loc_fn, init_scale=args.init_scale)
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": lr_decay(args.final_lr, steps), "clip_norm": args.clip_norm})
    svi = SVI(model, guide, optim, loss=Trace_ELBO())

    centers_t = torch.from_numpy(centers.astype(np.int64))
    contexts_t = torch.from_numpy(contexts.astype(np.int64))
    order = torch.from_numpy(rng.permutation(n))
    position, window_loss, window_steps, train_start = 0, 0.0, 0, time.time()
    for step in range(1, steps + 1):
        if position + batch > n:  # next epoch: a new order
            order, position = torch.from_numpy(rng.permutation(n)), 0
        idx = order[position : position + batch]
        position += batch
        noise = torch.multinomial(noise_weights, len(idx) * args.negatives, replacement=True)
        try:
            loss = svi.step(centers_t[idx], contexts_t[idx], noise.view(len(idx), args.negatives), idx)
        except ValueError:  # Pyro's validation: a parameter became NaN/inf inside the guide
            loss = math.nan
        if not math.isfinite(loss):
            print(f"error: the loss is {loss} at step {step}: training diverged; lower --lr", file=sys.stderr)
            sys.exit(2)
        window_loss += loss / n
        window_steps += 1
        if step % args.log_every == 0 or step == steps:
            took = time.time() - train_start
            print(
                f"step {step}/{steps} (epoch {step * batch / n:.2f}): loss/pair {window_loss / window_steps:.4f} "
                f"(mean of last {window_steps}), {took:.0f} s, {step * batch / took:,.0f} pairs/s",
                flush=True,
            )
            window_loss, window_steps = 0.0, 0

    state = pyro.get_param_store().get_state()
    state["params"] = {k: t.detach().clone().contiguous() for k, t in state["params"].items()}
    state["vocab"] = list(vocab)
    state["supports"] = {"word_vectors": None, "context_vectors": None}  # both real: pack need not warn
    with atomic_output(args.output, force=args.force) as tmp:
        torch.save(state, tmp)
    print(f"trained {steps} steps in {time.time() - train_start:.0f} s (whole run {time.time() - started:.0f} s)")
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes): {sorted(state['params'])}")


if __name__ == "__main__":
    run(main)
