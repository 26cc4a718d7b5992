"""``bnncompress eval``, ``sweep`` and ``train``: word-embedding quality and Bayesian skip-gram posteriors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..contents import printable
from ..devices import resolve_device
from ..errors import OptionError
from ..evaluation import METRICS, evaluate, format_table, read_word_vectors
from ..models import SkipGramConfig, check_corpus_path, read_corpus, save_posterior, train_skipgram
from ..quantizers import METHODS
from ..sweep import plot_paths, score_text
from ..sweep import sweep as _sweep
from .app import (
    Device,
    app,
    fails_cleanly,
    refuse_existing,
    refuse_stdin,
    training_progress,
)
from .stages import stage_progress
from .streams import (
    err,
    is_stdio,
    print_text,
    say,
    text_table,
)

_QUIET = "Print nothing on success, and no warnings."


def _refuse_stdout(output: str | None, what: str, flag: str = "output") -> None:
    if is_stdio(output):
        raise OptionError(f"this command cannot write {what} to standard output; pass «{flag}» FILE")


@app.command("eval")
@fails_cleanly
def eval_(
    source: Annotated[
        Path,
        typer.Argument(
            help="Archive (.bnc), posterior file (evaluates its means, medians for constrained sites), "
            "or word2vec/GloVe vectors.",
            metavar="SOURCE",
            path_type=str,  # (shown as <path>, handed over as typed: see is_stdio)
        ),
    ],
    tensor: Annotated[
        Optional[str], typer.Option("--tensor", "-t", help="Word-vector tensor to evaluate.", metavar="<name>")
    ] = None,
    restrict_vocab: Annotated[
        Optional[int], typer.Option(help="Use only the first N words (most frequent first).", metavar="<n>")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the scores only, no warnings.")] = False,
) -> None:
    """Score word vectors on analogies (questions-words) and similarity (WordSim353, SimLex-999) with gensim."""

    refuse_stdin(source)
    result = evaluate(source, tensor=tensor, restrict_vocab=restrict_vocab)
    if as_json:
        print_text(json.dumps(result, indent=2))
    else:
        print_text(format_table(result, details=not quiet))


def _number_list(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OptionError(f"{what} takes comma-separated numbers, e.g. 0.75,1,2; got {text!r}") from None


@app.command()
@fails_cleanly
def sweep(
    source: Annotated[
        Path,
        typer.Argument(
            help="Posterior file with a vocabulary (e.g. from bnncompress train).", metavar="SOURCE", path_type=str
        ),
    ],
    methods: Annotated[
        str, typer.Option(help=f"Comma-separated methods, from: {', '.join(METHODS)}.", metavar="<m1,m2,...>")
    ] = ",".join(m for m in METHODS if m != "float16"),
    bits: Annotated[
        str, typer.Option(help="Comma-separated payload rates (bits/weight).", metavar="<b1,b2,...>")
    ] = "0.75,1,1.5,2,3",
    output: Annotated[str, typer.Option("--output", "-o", help="CSV file to write.", metavar="<path>")] = "results.csv",
    plot: Annotated[
        Optional[str],
        typer.Option(help="Figure path; one PNG per metric (rd.png -> rd-analogy.png, ...).", metavar="<path>"),
    ] = None,
    tensor: Annotated[
        Optional[str], typer.Option("--tensor", "-t", help="Word-vector tensor.", metavar="<name>")
    ] = None,
    restrict_vocab: Annotated[
        Optional[int], typer.Option(help="Evaluate on the first N words only.", metavar="<n>")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=_QUIET)] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the CSV and figures if they exist.")] = False,
) -> None:
    """Pack with each method at each rate, evaluate every archive, write a CSV (and figures)."""

    refuse_stdin(source)
    _refuse_stdout(output, "the CSV")
    _refuse_stdout(plot, "figures", "plot_path")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    with stage_progress(quiet, err, "sweeping", "sweep") as report:
        rows = _sweep(
            source,
            names,
            _number_list(bits, "--bits"),
            tensor=tensor,
            restrict_vocab=restrict_vocab,
            csv_path=output,
            plot_path=plot,
            progress=report,
            force=force,
        )
    if quiet:
        return

    header = ("method", "target", "payload", "file", *METRICS)
    lines = [
        (
            r["method"],
            "" if r["target_bits"] is None else f"{r['target_bits']:g}",
            f"{r['payload_bits']:.3f}",
            f"{r['file_bits']:.3f}",
            *(score_text(r[m]) for m in METRICS),
        )
        for r in rows
        if "payload_bits" in r
    ]
    if lines and sys.stdout is not None:  # (the results are in the CSV; this is their summary)
        try:
            print_text(f"{printable(str(output))}\n\n" + text_table(header, lines, left=(0,)) + "\n(bits per weight)")
        except OSError as exc:  # (a full device: the sweep is done and written, as with >&-)
            say(f"warning: the table could not be printed ({exc.strerror or exc}); the results are in the CSV", err)
    for r in rows:
        if r.get("note"):
            rate = "" if r["target_bits"] is None else f" @ {r['target_bits']:g} bits"  # (float16: no target)
            say(f"note: {r['method']}{rate}: {r['note']}", err)
    written = [str(output)] + ([str(p) for p in plot_paths(plot).values()] if plot else [])
    say("wrote " + ", ".join(printable(w) for w in written))


@app.command()
@fails_cleanly
def train(
    corpus: Annotated[
        Path, typer.Argument(help="UTF-8 text; one sentence or document per line.", metavar="CORPUS", path_type=str)
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Posterior file to write (.pt).", metavar="<path>")],
    dim: Annotated[
        Optional[int], typer.Option(help="Embedding dimension (default 50, or that of --init).", metavar="<n>")
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="Keep this many most frequent words.", metavar="<n>")] = 5000,
    min_count: Annotated[int, typer.Option(help="Drop words rarer than this.", metavar="<n>")] = 2,
    window: Annotated[int, typer.Option(help="Context window (words each side).", metavar="<n>")] = 5,
    negatives: Annotated[int, typer.Option(help="Noise words per pair.", metavar="<n>")] = 5,
    subsample: Annotated[
        float, typer.Option(help="Frequent-word subsampling threshold (0: none).", metavar="<threshold>")
    ] = 1e-3,
    epochs: Annotated[int, typer.Option(help="Passes over the pairs.", metavar="<n>")] = 5,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.", metavar="<n>")] = SkipGramConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.", metavar="<rate>")] = SkipGramConfig.lr,
    lr_decay: Annotated[bool, typer.Option(help="Decay the learning rate linearly to 10% of --lr.")] = True,
    init: Annotated[
        Optional[str],
        typer.Option(
            help="Pretrained vectors (word2vec text or binary, GloVe text): means start there; scales are fit.",
            metavar="<path>",
        ),
    ] = None,
    refine_means: Annotated[bool, typer.Option(help="With --init: train the means too, not only the scales.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.", metavar="<n>")] = 0,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=_QUIET)] = False,
) -> None:
    """Train a Bayesian skip-gram (mean-field Gaussian, as AutoNormal) and write its posterior with the vocabulary."""
    refuse_stdin(corpus, init)
    _refuse_stdout(output, "a posterior")
    refuse_existing(output, force, corpus, init)
    config = SkipGramConfig(
        dim=dim if dim is not None else 50,
        vocab_size=vocab_size,
        min_count=min_count,
        window=window,
        negatives=negatives,
        subsample=subsample,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_decay=lr_decay,
        seed=seed,
        device=device.value,
        refine_means=refine_means and init is None,  # (said at once when there is no --init)
    )
    config.validate()  # before a vectors file of gigabytes is read, as the corpus's path and the device
    check_corpus_path(corpus)
    resolve_device(config.device)
    if init is not None:
        vectors = read_word_vectors(init)
        if dim is not None and dim != vectors.vector_size:
            raise OptionError(f"--dim {dim} differs from the {vectors.vector_size} dimensions of '{init}'; drop --dim")
        config = dataclasses.replace(config, dim=vectors.vector_size, init_vectors=vectors, refine_means=refine_means)
    config.validate()
    sentences = read_corpus(corpus)
    with training_progress(quiet) as report:
        result = train_skipgram(sentences, config, progress=report)
    save_posterior(output, result, force=force)
    if not quiet:
        say(
            f"wrote {printable(str(output))}: {len(result.vocab):,} words x {config.dim} dims, "
            f"{result.num_pairs:,} pairs/epoch, "
            f"loss/pair {result.losses[-1]:.4f}, {result.pairs_per_second:,.0f} pairs/s"
        )
