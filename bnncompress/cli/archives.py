"""``bnncompress pack``, ``info`` and ``unpack``: making, describing and decoding archives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..errors import OptionError
from ..executors import check_scheduler_address, check_workers
from ..export import format_from_suffix
from ..loader import load
from ..packing import default_output
from ..packing import pack as _pack
from ..quantizers import DEFAULT_METHOD, METHODS
from .app import (
    DEFAULT_METHOD_CHOICE,
    Device,
    Method,
    UnpackFormat,
    app,
    err,
    fails_cleanly,
    out,
    parse_options,
    progress_bar,
    refuse_existing,
    say,
)


@app.command()
@fails_cleanly
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
    method: Annotated[Method, typer.Option(help="Quantization method.")] = DEFAULT_METHOD_CHOICE,
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

    output = output or default_output(source)
    refuse_existing(output, force)
    if workers is not None:
        check_workers(workers)
    if scheduler is not None:
        check_scheduler_address(scheduler)
    with progress_bar(quiet) as bar:
        task = bar.add_task("packing", total=None)

        def report(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        result = _pack(
            source,
            output,
            vocab=vocab,
            bits=bits,
            lam=lam,
            method=method.value,
            options=parse_options(option),
            tensors=tensor,
            device=device.value,
            progress=report,
            stream=stream,
            workers=workers,
            scheduler=scheduler,
        )
    for warning in result.warnings:
        say(f"warning: {warning}", err)
    if result.target_missed:
        say(
            f"warning: payload {result.payload_bits_per_weight:.3f} bits/weight is more than 2% from "
            f"--bits {bits:g}: the rates this method reaches on this posterior are too coarse to hit it more closely",
            err,
        )
    if not quiet:
        target = f" (target {bits:g})" if bits is not None else ""
        say(
            f"wrote {result.path}: {result.num_weights:,} weights, {result.file_bytes:,} bytes, "
            f"payload {result.payload_bits_per_weight:.3f} bits/weight{target}, "
            f"file {result.file_bits_per_weight:.3f} bits/weight, lambda {result.lam:.4g}"
        )


@app.command()
@fails_cleanly
def info(
    archive: Annotated[Path, typer.Argument(help="Archive (.bnc) to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each tensor's shape and size: payload and file bits per weight, ratio vs float32."""

    summary = load(archive).info()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(
        title=escape(f"{archive}  ({summary['total']['file_bytes']:,} bytes)"),
        caption="payload and file: bits per weight",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("tensor", "shape", "method", "lambda", "payload", "file", "vs f32"):
        table.add_column(col, justify="left" if col in ("tensor", "method") else "right", overflow="fold")
    for t in summary["tensors"]:
        lam = "" if t["lam"] is None else f"{t['lam']:.4g}"
        table.add_row(
            t["name"],
            "x".join(map(str, t["shape"])),
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
    out.print(table)
    vocab = f"{summary['vocab_words']:,} words ({summary['vocab_bytes']:,} bytes)" if summary["vocab_words"] else "none"
    say(
        f"vocab: {vocab}\nsource: {summary['source']}\nformat version {summary['format_version']}, "
        f"written by bnncompress {summary['tool_version']}"
    )


@app.command()
@fails_cleanly
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

    fmt = format.value if format else format_from_suffix(output)
    if output.resolve() == archive.resolve():
        raise OptionError(f"the output '{output}' is the archive itself; choose another output path")
    refuse_existing(output, force)
    written = load(archive).export(output, fmt, tensor=tensor, binary=binary)
    say(f"wrote {output} ({written})")
