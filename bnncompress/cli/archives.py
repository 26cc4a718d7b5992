"""``bnncompress pack``, ``info`` and ``unpack``: making, describing and decoding archives."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..clusters import check_scheduler_address, check_workers
from ..contents import printable, support_text
from ..errors import OptionError
from ..export import FORMAT_HELP, FORMATS, export_to_stream, format_from_suffix
from ..files import check_stdout_not_an_input
from ..loader import load
from ..packing import default_output, notes_unwarned
from ..packing import pack as _pack
from ..quantizers import DEFAULT_METHOD, METHODS
from .app import (
    METHOD_HELP,
    Device,
    UnpackFormat,
    app,
    fails_cleanly,
    method_choice,
    parse_options,
    refuse_existing,
    refuse_stdin,
)
from .stages import stage_progress
from .streams import (
    err,
    is_stdio,
    out,
    print_text,
    say,
    stdout_file,
    stdout_to_stderr,
    text_table,
)


@app.command()
@fails_cleanly
def pack(
    source: Annotated[
        Path,
        typer.Argument(
            help="Posterior: Pyro param store or guide state dict (.pt), .npz, .safetensors, HDF5, "
            "or a directory of NAME.loc.npy / NAME.scale.npy.",
            metavar="SOURCE",
            path_type=str,  # (shown as <path>, handed over as typed: see is_stdio)
        ),
    ],
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            help="Archive to write, - for standard output (default: SOURCE with .bnc).",
            metavar="<path>",
        ),
    ] = None,
    vocab: Annotated[
        Optional[str], typer.Option(help="Vocabulary file, one word per line in row order.", metavar="<path>")
    ] = None,
    bits: Annotated[
        Optional[float], typer.Option(help="Target payload bits per weight (searches lambda).", metavar="<bits>")
    ] = None,
    size: Annotated[
        Optional[str],
        typer.Option(
            help="Target archive size: the file is at most this many bytes, within 2% below where the method "
            "allows (searches lambda); K, M, G are powers of 1024, KB, MB, GB of 1000, e.g. 200K or 1.5MB.",
            metavar="<size>",
        ),
    ] = None,
    lam: Annotated[
        Optional[float],
        typer.Option(
            "--lam",
            metavar="<lambda>",
            help="Rate-distortion trade-off lambda, larger = smaller (default: the method's own, "
            f"{METHODS[DEFAULT_METHOD].default_lam:g} for {DEFAULT_METHOD}).",
        ),
    ] = None,
    method: Annotated[str, typer.Option(help=METHOD_HELP, callback=method_choice, metavar="<method>")] = DEFAULT_METHOD,
    option: Annotated[
        Optional[list[str]],
        typer.Option(
            "--option",
            help="Method option KEY=VALUE, e.g. prune=0.1 for weighted-kmeans (repeatable).",
            metavar="<key=value>",
        ),
    ] = None,
    tensor: Annotated[
        Optional[list[str]],
        typer.Option("--tensor", "-t", help="Pack only this tensor (repeatable; default: all).", metavar="<name>"),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to quantize.")] = Device.auto,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success, and no warnings.")] = False,
    stream: Annotated[
        Optional[bool],
        typer.Option(
            "--stream/--no-stream",
            help="Read and pack block by block with bounded memory "
            "(default: .npy directories, safetensors and HDF5 posteriors of 64M+ weights).",
        ),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Pack on a local Dask cluster of this many worker processes.", metavar="<n>")
    ] = None,
    scheduler: Annotated[
        Optional[str],
        typer.Option(help="Pack on the Dask cluster at this scheduler address (tcp://HOST:PORT).", metavar="<address>"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output if it exists.")] = False,
    model: Annotated[
        Optional[str],
        typer.Option(
            help="The Pyro model of a param store, imported from your code: a callable or PyroModule, called "
            "without arguments (wrap one that needs data, observations too: def model(): return net(x, y)); "
            "records each site's support so values load constrained.",
            metavar="<pkg.module:attr>",
        ),
    ] = None,
) -> None:
    """Quantize a posterior by its uncertainty and write one compressed archive."""

    refuse_stdin(source, vocab)
    to_stdout = is_stdio(output)
    output = output if output is not None else default_output(source)  # (as typed: 'arch/' is refused)
    if not to_stdout:
        refuse_existing(output, force, source, vocab)
    if workers is not None:
        check_workers(workers)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    with stdout_to_stderr(to_stdout):  # (the module's prints went into the archive's bytes)
        pyro_model = None if model is None else import_model(model)
    model_files = _module_files(model.partition(":")[0]) if model else []  # the module and its packages
    if to_stdout:
        check_stdout_not_an_input([x for x in (source, vocab, *model_files) if x is not None])
    elif model_files:
        refuse_existing(output, force, source, vocab, *model_files)  # your model's code is an input too
    with (
        stdout_file(_stdout_name(source)) if to_stdout else contextlib.nullcontext(output) as target,
        stdout_to_stderr(to_stdout),
        stage_progress(quiet, err, "reading posterior") as report,
        notes_unwarned(),  # they are in result.warnings, printed below
    ):
        result = _pack(
            source,
            target,
            vocab=vocab,
            bits=bits,
            lam=lam,
            size=size,
            method=method,
            options=parse_options(option),
            tensors=tensor,
            device=device.value,
            progress=report,
            stream=stream,
            workers=workers,
            scheduler=scheduler,
            model=pyro_model,
            force=force or to_stdout,  # checked again right before the rename: a file made meanwhile is kept
        )
    if quiet:
        return
    for warning in result.warnings:
        say(f"warning: {warning}", err)
    if result.size_note:
        say(f"note: {result.size_note}", err)
    aim = f" (target {bits:g})" if bits is not None else ""
    room = f" (target {result.target_size:,})" if result.target_size is not None else ""
    say(
        f"wrote {'standard output' if to_stdout else printable(str(result.path))}: {result.num_weights:,} weights, "
        f"{result.file_bytes:,} bytes{room}, payload {result.payload_bits_per_weight:.3f} bits/weight{aim}, "
        f"file {result.file_bits_per_weight:.3f} bits/weight, lambda {result.lam:.4g}",
        err if to_stdout else out,
    )


@app.command()
@fails_cleanly
def info(
    archive: Annotated[Path, typer.Argument(help="Archive (.bnc) to describe.", metavar="ARCHIVE", path_type=str)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print nothing: check the archive, every tensor decoded (exit code 0 if it is sound)."
        ),
    ] = False,
) -> None:
    """Show each tensor's shape and size: payload and file bits per weight, ratio vs float32."""

    refuse_stdin(archive)
    with load(archive) as a:
        if quiet:
            a.verify()
            return
        summary = a.info()
    if as_json:
        print_text(json.dumps(summary, indent=2))
        return
    rows = [
        (
            printable(t["name"]),
            "x".join(map(str, t["shape"])),
            printable(t["method_used"]),  # with a fallback, the method that made the values
            "" if not isinstance(t["lam"], (int, float)) else f"{t['lam']:.4g}",
            _number(t["payload_bits_per_weight"], ".3f"),
            _number(t["file_bits_per_weight"], ".3f"),
            _number(t["ratio_vs_float32"], ".1f", "x"),
        )
        for t in summary["tensors"]
    ]
    tot = summary["total"]
    rows.append(
        (
            "total",
            f"{tot['num_weights']:,}",
            "",
            "",
            f"{tot['payload_bits_per_weight']:.3f}",
            f"{tot['file_bits_per_weight']:.3f}",
            f"{tot['ratio_vs_float32']:.1f}x",
        )
    )
    header = ("tensor", "shape", "method", "lambda", "payload", "file", "vs f32")
    supports = [printable(support_text(t["support"])) for t in summary["tensors"]]
    if any(supports):  # sites of a Pyro model with constrained supports: say which (values load constrained)
        header += ("support",)
        rows = [row + (text,) for row, text in zip(rows, [*supports, ""])]
    vocab = f"{summary['vocab_words']:,} words ({summary['vocab_bytes']:,} bytes)" if summary["vocab_words"] else "none"
    print_text(
        f"{printable(str(archive))}  ({tot['file_bytes']:,} bytes)\n\n"
        + text_table(header, rows, left=(0, 2, 7))
        + "\n(payload and file: bits per weight)\n"
        f"vocab: {vocab}\nsource: {printable(summary['source'])}\nformat version {summary['format_version']}, "
        f"written by bnncompress {printable(summary['tool_version'])}"
    )


def _number(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _module_files(name: str) -> list[Path]:
    """The files of module ``name`` and of every package on its dotted path (``pkg/__init__.py``)."""
    parts = name.split(".")
    found = (getattr(sys.modules.get(".".join(parts[: i + 1])), "__file__", None) for i in range(len(parts)))
    return [Path(f) for f in found if f]


def import_model(spec: str) -> object:
    """``pkg.module:attr`` imported from the working directory or the Python path."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise OptionError(f"--model must be pkg.module:attr (e.g. mymodels:model), not {spec!r}")
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:  # first for the user's module; then last, so that its own later imports still find their
        sys.path.insert(0, here)  # siblings, and a stray ./h5py.py cannot stand in for the library
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionError(f"--model: cannot import {module_name!r} ({exc})") from None
    except (Exception, SystemExit) as exc:  # the user's module failed while importing: one line, not its traceback
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise OptionError(
            f"--model: importing {module_name!r} failed ({type(exc).__name__}: {detail}); "
            "fix the module or name another"
        ) from None
    finally:
        if added and here in sys.path:
            sys.path.remove(here)
            sys.path.append(here)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionError(f"--model: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise OptionError(f"--model: {spec} is a {type(obj).__name__}, not a Pyro model (a callable)")
    return obj


@app.command()
@fails_cleanly
def unpack(
    archive: Annotated[Path, typer.Argument(help="Archive (.bnc) to decode.", metavar="ARCHIVE", path_type=str)],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="File to write, - for standard output (default format there: word2vec).",
            metavar="<path>",
        ),
    ],
    format: Annotated[Optional[UnpackFormat], typer.Option(help=f"{FORMAT_HELP} (default: from the suffix).")] = None,
    tensor: Annotated[
        Optional[str],
        typer.Option(
            "--tensor",
            "-t",
            help="word2vec, kv: the tensor (default: the word vectors); pt, npz: only this tensor.",
            metavar="<name>",
        ),
    ] = None,
    binary: Annotated[
        Optional[bool],
        typer.Option("--binary/--text", help="word2vec: binary or text (default: binary for a .bin file, else text)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success, and no warnings.")] = False,
) -> None:
    """Decode an archive to word2vec vectors, gensim KeyedVectors (.kv), a torch state_dict (.pt) or arrays (.npz)."""

    refuse_stdin(archive)
    if is_stdio(output):
        fmt = format.value if format else "word2vec"
        with load(archive) as a:
            if FORMATS[fmt].text and not binary and sys.stdout is not None and sys.stdout.isatty():  # a terminal
                export_to_stream(a, sys.stdout.buffer, fmt, tensor, binary)
                return
            check_stdout_not_an_input([archive])
            with stdout_file(f"unpacked{FORMATS[fmt].suffixes[0]}") as tmp:
                a.export(tmp, fmt, tensor=tensor, binary=binary)
        return
    fmt = format.value if format else format_from_suffix(output)
    if os.path.realpath(output) == os.path.realpath(archive):  # (Path.resolve raises on a symbolic-link loop)
        raise OptionError(f"the output '{output}' is the archive itself; choose another output path")
    refuse_existing(output, force, archive)
    with load(archive) as a:
        written = a.export(output, fmt, tensor=tensor, binary=binary, force=force)
    if not quiet:
        say(f"wrote {printable(str(output))} ({written})")


def _stdout_name(source: str) -> str:
    """The name of the temporary archive behind ``-o -``: the posterior's (``.`` named by the directory it is)."""
    try:
        return default_output(os.path.realpath(source)).name
    except OptionError:  # ('/': no name; anything else wrong with the source is said by the pack)
        return "archive.bnc"
