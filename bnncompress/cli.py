"""The ``bnncompress`` command line: argument parsing and printing over the Python API.

Every error raised for bad input (a :class:`~bnncompress.BnnCompressError`, or a file the
system refuses) is printed as one line on stderr with exit code 2, without a traceback; the
API's parameter names in messages become this command line's flags. SIGINT and SIGTERM
remove any temporary file and exit with 130 and 143.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import BnnCompressError, OptionError
from .quantizers import DEFAULT_METHOD, METHODS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Compress Bayesian neural networks by their posterior uncertainty (Variational Bayesian Quantization).",
)
_err = Console(stderr=True)
_out = Console()
#: API parameter -> flag, where the flag is not just --NAME.
_FLAGS = {"options": "--option KEY=VALUE", "stream=False": "--no-stream", "force=True": "--force", "format": "--format"}


def _fails_cleanly(command):
    """Turn bad-input errors into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BnnCompressError as exc:
            _say(f"error: {exc.render(_FLAGS, prefix='--')}", _err)
            raise typer.Exit(2) from None
        except OSError as exc:
            _say(f"error: {exc.strerror or exc} ({exc.filename or 'file'})", _err)
            raise typer.Exit(2) from None

    return wrapper


def _refuse_existing(output: Path, force: bool) -> None:
    if not force and (output.exists() or output.is_symlink()):
        raise OptionError(f"'{output}' already exists; pass --force to overwrite it")


def _say(text: str, to: Console = _out) -> None:
    """Print plain text: no rich markup or highlighting (file and tensor names may contain brackets)."""
    to.print(text, markup=False, highlight=False, soft_wrap=True)


def _progress(quiet: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=quiet or not _err.is_terminal,
    )


Method = Enum("Method", [(m.replace("-", "_"), m) for m in METHODS], type=str)
_DEFAULT_METHOD = Method(DEFAULT_METHOD)


def _parse_options(pairs: list[str] | None) -> dict:
    """``["prune=0.1", "centroids=false"]`` -> ``{"prune": 0.1, "centroids": False}``."""
    options: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except (json.JSONDecodeError, RecursionError):
            options[key.replace("-", "_")] = value
    return options


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class UnpackFormat(str, Enum):
    word2vec = "word2vec"
    pt = "pt"
    npz = "npz"


@app.command()
@_fails_cleanly
def pack(
    source: Annotated[
        Path,
        typer.Argument(
            help="Posterior: Pyro param store or guide state dict (.pt), .npz, .safetensors, HDF5, "
            "or a directory of NAME.loc.npy / NAME.scale.npy."
        ),
    ],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Archive to write (default: SOURCE with .bnc).")
    ] = None,
    vocab: Annotated[Optional[Path], typer.Option(help="Vocabulary file, one word per line in row order.")] = None,
    bits: Annotated[Optional[float], typer.Option(help="Target payload bits per weight (searches lambda).")] = None,
    lam: Annotated[
        Optional[float],
        typer.Option(
            "--lam",
            help="Rate-distortion trade-off lambda, larger = smaller (default: the method's own, "
            f"{METHODS[DEFAULT_METHOD].default_lam:g} for {DEFAULT_METHOD}).",
        ),
    ] = None,
    method: Annotated[Method, typer.Option(help="Quantization method.")] = _DEFAULT_METHOD,
    option: Annotated[
        Optional[list[str]],
        typer.Option("--option", help="Method option KEY=VALUE, e.g. prune=0.1 for weighted-kmeans (repeatable)."),
    ] = None,
    tensor: Annotated[
        Optional[list[str]], typer.Option("--tensor", "-t", help="Pack only this tensor (repeatable; default: all).")
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to quantize.")] = Device.auto,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    stream: Annotated[
        Optional[bool],
        typer.Option(
            "--stream/--no-stream",
            help="Read and pack block by block with bounded memory "
            "(default: .npy directories, safetensors and HDF5 posteriors of 64M+ weights).",
        ),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Pack on a local Dask cluster of this many worker processes.")
    ] = None,
    scheduler: Annotated[
        Optional[str], typer.Option(help="Pack on the Dask cluster at this scheduler address (tcp://HOST:PORT).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output if it exists.")] = False,
) -> None:
    """Quantize a posterior by its uncertainty and write one compressed archive."""
    from .executors import check_scheduler_address, check_workers
    from .packing import default_output
    from .packing import pack as pack_posterior

    output = output or default_output(source)
    _refuse_existing(output, force)
    if workers is not None:
        check_workers(workers)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    with _progress(quiet) as bar:
        task = bar.add_task("packing", total=None)

        def report(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = pack_posterior(
            source,
            output,
            vocab=vocab,
            bits=bits,
            lam=lam,
            method=method.value,
            options=_parse_options(option),
            tensors=tensor,
            device=device.value,
            progress=report,
            stream=stream,
            workers=workers,
            scheduler=scheduler,
        )
    for warning in result.warnings:
        _say(f"warning: {warning}", _err)
    if result.target_missed:
        _say(
            f"warning: payload {result.payload_bits_per_weight:.3f} bits/weight is more than 2% from "
            f"--bits {bits:g}: the rates this method reaches on this posterior are too coarse to hit it more closely",
            _err,
        )
    if not quiet:
        target = f" (target {bits:g})" if bits is not None else ""
        _say(
            f"wrote {result.path}: {result.num_weights:,} weights, {result.file_bytes:,} bytes, "
            f"payload {result.payload_bits_per_weight:.3f} bits/weight{target}, "
            f"file {result.file_bits_per_weight:.3f} bits/weight, lambda {result.lam:.4g}"
        )


@app.command()
@_fails_cleanly
def info(
    archive: Annotated[Path, typer.Argument(help="Archive (.bnc) to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each tensor's shape and size: payload and file bits per weight, ratio vs float32."""
    from .loader import load

    summary = load(archive).info()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=escape(f"{archive}  ({summary['total']['file_bytes']:,} bytes)"))
    for col in ("tensor", "shape", "method", "lambda", "payload bits/w", "file bits/w", "ratio vs float32"):
        table.add_column(col, justify="left" if col in ("tensor", "method") else "right", no_wrap=col == "tensor")
    for t in summary["tensors"]:
        lam = "" if t["lam"] is None else f"{t['lam']:.4g}"
        table.add_row(
            t["name"],
            " x ".join(map(str, t["shape"])),
            t["method"],
            lam,
            f"{t['payload_bits_per_weight']:.3f}",
            f"{t['file_bits_per_weight']:.3f}",
            f"{t['ratio_vs_float32']:.1f}x",
        )
    tot = summary["total"]
    table.add_row(
        "total",
        f"{tot['num_weights']:,}",
        "",
        "",
        f"{tot['payload_bits_per_weight']:.3f}",
        f"{tot['file_bits_per_weight']:.3f}",
        f"{tot['ratio_vs_float32']:.1f}x",
        style="bold",
    )
    _out.print(table)
    vocab = f"{summary['vocab_words']:,} words ({summary['vocab_bytes']:,} bytes)" if summary["vocab_words"] else "none"
    _say(
        f"vocab: {vocab}\nsource: {summary['source']}\nformat version {summary['format_version']}, "
        f"written by bnncompress {summary['tool_version']}"
    )


@app.command()
@_fails_cleanly
def unpack(
    archive: Annotated[Path, typer.Argument(help="Archive (.bnc) to decode.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    format: Annotated[
        Optional[UnpackFormat],
        typer.Option(
            help="word2vec (text vectors of one tensor), pt (torch state_dict) or npz (default: from the suffix)."
        ),
    ] = None,
    tensor: Annotated[
        Optional[str], typer.Option("--tensor", "-t", help="Tensor for word2vec (default: the word vectors).")
    ] = None,
    binary: Annotated[bool, typer.Option(help="word2vec: write the binary format.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output if it exists.")] = False,
) -> None:
    """Decode an archive to word2vec vectors, a torch state_dict (.pt) or numpy arrays (.npz)."""
    from .export import format_from_suffix
    from .loader import load

    fmt = format.value if format else format_from_suffix(output)
    if output.resolve() == archive.resolve():
        raise OptionError(f"the output '{output}' is the archive itself; choose another output path")
    _refuse_existing(output, force)
    written = load(archive).export(output, fmt, tensor=tensor, binary=binary)
    _say(f"wrote {output} ({written})")


@app.command("eval")
@_fails_cleanly
def eval_(
    source: Annotated[
        Path, typer.Argument(help="Archive (.bnc), posterior file (evaluates its means), or word2vec/GloVe vectors.")
    ],
    tensor: Annotated[Optional[str], typer.Option("--tensor", "-t", help="Word-vector tensor to evaluate.")] = None,
    restrict_vocab: Annotated[
        Optional[int], typer.Option(help="Use only the first N words (most frequent first).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Score word vectors on analogies (questions-words) and similarity (WordSim353, SimLex-999) with gensim."""
    from .evaluation import evaluate, format_table

    result = evaluate(source, tensor=tensor, restrict_vocab=restrict_vocab)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _say(format_table(result))


def _number_list(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OptionError(f"{what} takes comma-separated numbers, e.g. 0.75,1,2; got {text!r}") from None


@app.command()
@_fails_cleanly
def sweep(
    source: Annotated[Path, typer.Argument(help="Posterior file with a vocabulary (e.g. from bnncompress train).")],
    methods: Annotated[str, typer.Option(help=f"Comma-separated methods, from: {', '.join(METHODS)}.")] = ",".join(
        m for m in METHODS if m != "float16"
    ),
    bits: Annotated[str, typer.Option(help="Comma-separated payload rates (bits/weight).")] = "0.75,1,1.5,2,3",
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV file to write.")] = Path("results.csv"),
    plot: Annotated[
        Optional[Path], typer.Option(help="Figure path; one PNG per metric (rd.png -> rd-analogy.png, ...).")
    ] = None,
    tensor: Annotated[Optional[str], typer.Option("--tensor", "-t", help="Word-vector tensor.")] = None,
    restrict_vocab: Annotated[Optional[int], typer.Option(help="Evaluate on the first N words only.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
) -> None:
    """Pack with each method at each rate, evaluate every archive, write a CSV (and figures)."""
    from .sweep import plot_paths, score_text
    from .sweep import sweep as run_sweep

    names = [m.strip() for m in methods.split(",") if m.strip()]
    with _progress(quiet) as bar:
        task = bar.add_task("sweeping", total=None)
        rows = run_sweep(
            source,
            names,
            _number_list(bits, "--bits"),
            tensor=tensor,
            restrict_vocab=restrict_vocab,
            csv_path=output,
            plot_path=plot,
            progress=lambda done, total, label: bar.update(task, description=label, completed=done, total=total),
        )
    if quiet:
        return
    from .evaluation import METRICS

    table = Table(title=escape(str(output)))
    for col in ("method", "target", "payload bits/w", "file bits/w", *METRICS):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        if "payload_bits" not in r:
            continue
        target = "" if r["target_bits"] is None else f"{r['target_bits']:g}"
        table.add_row(
            r["method"],
            target,
            f"{r['payload_bits']:.3f}",
            f"{r['file_bits']:.3f}",
            *(score_text(r[m]) for m in METRICS),
        )
    _out.print(table)
    for r in rows:
        if r.get("note"):
            _say(f"note: {r['method']} @ {r['target_bits']:g} bits: {r['note']}", _err)
    written = [str(output)] + ([str(p) for p in plot_paths(plot).values()] if plot else [])
    _say("wrote " + ", ".join(written))


@app.command()
@_fails_cleanly
def train(
    corpus: Annotated[Path, typer.Argument(help="UTF-8 text; one sentence or document per line.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Posterior file to write (.pt).")],
    dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 50,
    vocab_size: Annotated[int, typer.Option(help="Keep this many most frequent words.")] = 5000,
    min_count: Annotated[int, typer.Option(help="Drop words rarer than this.")] = 2,
    window: Annotated[int, typer.Option(help="Context window (words each side).")] = 5,
    negatives: Annotated[int, typer.Option(help="Noise words per pair.")] = 5,
    epochs: Annotated[int, typer.Option(help="Passes over the pairs.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 2048,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.02,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train a Bayesian skip-gram (Pyro, AutoNormal) and write its posterior with the vocabulary."""
    from .models.skipgram import SkipGramConfig, read_corpus, save_posterior, train_skipgram

    config = SkipGramConfig(
        dim=dim,
        vocab_size=vocab_size,
        min_count=min_count,
        window=window,
        negatives=negatives,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device.value,
    )
    config.validate()
    sentences = read_corpus(corpus)
    with _progress(quiet) as bar:
        task = bar.add_task("training", total=None)

        def report(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, description=f"training (loss/pair {loss:.3f})")

        result = train_skipgram(sentences, config, progress=report)
    save_posterior(output, result)
    if not quiet:
        _say(
            f"wrote {output}: {len(result.vocab)} words x {dim} dims, {result.num_pairs:,} pairs, "
            f"final loss/pair {result.losses[-1]:.4f}"
        )


def main() -> None:
    """Console-script entry point: one line and exit 130 / 143 on SIGINT / SIGTERM, no traceback."""
    signal.signal(signal.SIGTERM, _terminate)
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="bnncompress", standalone_mode=False)  # returns typer.Exit's code
    except _Terminated:
        _say("terminated", _err)
        sys.exit(143)
    except KeyboardInterrupt:
        _say("interrupted", _err)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _terminate(signum, frame) -> None:
    raise _Terminated


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that temporary files are removed on the way out."""


if __name__ == "__main__":  # pragma: no cover
    main()
