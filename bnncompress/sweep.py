"""Rate–distortion sweeps: pack a posterior with every method at every rate, evaluate each archive.

Each point is a real archive written by :func:`bnncompress.pack` (so its payload and file
sizes are what a user gets) and scored by :func:`bnncompress.evaluate`. The posterior's
means, uncompressed, are the reference row (``method = "uncompressed"``).
"""

from __future__ import annotations

import contextlib
import csv
import math
import numbers
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ArgumentTypeError, OptionError, RateControlError
from .evaluation import METRICS, check_word_vector_options, evaluate, posterior_keyed_vectors, posterior_word_vectors
from .files import atomic_output, check_output_path, ends_with_slash
from .packing import fits_a_float, notes_unwarned, pack
from .progress import Progress, no_progress
from .quantizers import METHODS, check_requirements
from .scratch import scratch_directory
from .sources import read_posterior

#: CSV columns, in order (the metric columns follow ``target_bits`` .. ``file_bits``).
COLUMNS = ("method", "target_bits", "payload_bits", "file_bits", *METRICS, "pack_seconds", "note")


def sweep(
    source: str | os.PathLike,
    methods: Sequence[str],
    bits: Sequence[float],
    tensor: str | None = None,
    restrict_vocab: int | None = None,
    csv_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    force: bool = True,
) -> list[dict[str, Any]]:
    """Pack ``source`` with each method at each payload rate in ``bits``, evaluate, return the rows.

    Methods with a fixed rate (``float16``) are packed once. Targets a method cannot reach are
    kept as rows with a ``note`` and no scores; a target its search missed keeps the archive it made,
    with its payload, its scores and a note. Writes ``csv_path`` and, if ``plot_path`` is
    given, one figure per metric (``rd.png`` -> ``rd-analogy.png``, ``rd-ws353.png``, ...); every
    output path is checked before the work starts (``force=False``: refuse existing files).
    ``progress(stage, done, total)`` (:class:`~bnncompress.progress.Progress`) is called before
    each point, with the point as the stage (``"uniform @ 2 bits"``).

    Example:
        >>> import tempfile, os
        >>> rows = sweep("data/example.pt", ["uniform"], [2.0], restrict_vocab=2000)
        >>> [r["method"] for r in rows], round(rows[1]["payload_bits"], 1)
        (['uncompressed', 'uniform'], 2.0)
    """
    methods, bits = _check_request(source, methods, bits, tensor, restrict_vocab, csv_path, plot_path, progress)
    _check_outputs(csv_path, plot_path, force, source)  # before any work: a failed sweep writes nothing
    posterior = read_posterior(source)
    if posterior.vocab is None:
        raise OptionError(f"'{source}' has no vocabulary; a sweep evaluates word vectors")
    if tensor is None:
        tensor = posterior_word_vectors(posterior, source)  # the tensor evaluate() picks
    posterior = posterior.select([tensor], require_vocab=True)

    jobs: list[tuple[str, float | None]] = []
    for m in methods:
        jobs += [(m, None)] if METHODS[m].fixed_rate else [(m, float(b)) for b in bits]
    total = len(jobs) + 1
    report = progress or no_progress
    rows: list[dict[str, Any]] = []

    report("uncompressed", 0, total)
    # the posterior as read for the packs (read again by path, a file saved meanwhile scored another one)
    means = evaluate(posterior_keyed_vectors(posterior, tensor, source)[0], restrict_vocab=restrict_vocab)
    rows.append(
        {
            "method": "uncompressed",
            "target_bits": None,
            "payload_bits": 32.0,
            "file_bits": 32.0,
            **{k: means[k] for k in METRICS},
            "pack_seconds": 0.0,
            "note": "; ".join(posterior.warnings),  # how the posterior was read: its row, not every pack's
        }
    )
    with scratch_directory("archive of the sweep") as tmp:
        archive = tmp / "sweep.bnc"
        for i, (method, target) in enumerate(jobs, start=1):
            label = method if target is None else f"{method} @ {target:g} bits"
            report(label, i, total)
            row: dict[str, Any] = {"method": method, "target_bits": target, "note": ""}
            start = time.perf_counter()
            try:
                with notes_unwarned():  # what a pack loses goes into the row's note
                    result = pack(posterior, archive, bits=target, method=method)
            except RateControlError as exc:
                rows.append({**row, "note": str(exc)})
                continue
            row["pack_seconds"] = time.perf_counter() - start
            row["payload_bits"] = result.payload_bits_per_weight
            row["file_bits"] = result.file_bits_per_weight
            notes = [re.sub(r"^tensor '[^']*': ", "", w) for w in result.warnings if w not in posterior.warnings]
            row["note"] = "; ".join(notes)  # (one tensor: its name is not repeated)
            scores = evaluate(archive, tensor=tensor, restrict_vocab=restrict_vocab)
            rows.append({**row, **{k: scores[k] for k in METRICS}})
    report("done", total, total)
    with contextlib.ExitStack() as outputs:  # every file written to its temporary first, then renamed
        if csv_path is not None:
            write_csv(rows, outputs.enter_context(atomic_output(csv_path, force=force)))
        if plot_path is not None:
            plot(rows, plot_path, lambda path: outputs.enter_context(atomic_output(path, force=force)))
        _check_outputs(csv_path, plot_path, force, source)  # a file made meanwhile: refused before any rename
    return rows


def _check_request(
    source: Any, methods: Any, bits: Any, tensor: Any, restrict_vocab: Any, csv_path: Any, plot_path: Any, progress: Any
) -> tuple[list[str], list[float]]:
    """Every parameter's type and value, before any work; one method name or one rate alone is a list of one."""
    if not isinstance(source, (str, os.PathLike)):
        raise ArgumentTypeError(f"«source» must be the path of a posterior file, got {type(source).__name__}")
    methods = [methods] if isinstance(methods, str) else methods
    bits = [bits] if isinstance(bits, numbers.Real) else bits
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise ArgumentTypeError(f"«methods» must be a list of method names such as ['uniform'], not {methods!r:.60}")
    if not isinstance(bits, (list, tuple)) or not all(
        isinstance(b, numbers.Real) and not isinstance(b, bool) for b in bits
    ):
        raise ArgumentTypeError(f"«bits» must be a list of rates in bits per weight such as [1, 2], not {bits!r:.60}")
    for m in methods:  # (a plug-in's method is loaded from its entry point here; what it imports to run, checked)
        check_requirements(m)
    if not methods or not bits:
        raise OptionError("give at least one method and one rate")
    if not all(fits_a_float(b) and b > 0 and math.isfinite(float(b)) for b in bits):
        raise OptionError("every rate in «bits» must be a positive number")
    check_word_vector_options(tensor, restrict_vocab)
    for name, value in (("csv_path", csv_path), ("plot_path", plot_path)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ArgumentTypeError(f"«{name}» must be a file path or None, got {type(value).__name__}")
    if progress is not None and not callable(progress):
        raise ArgumentTypeError(
            f"«progress» must be a function progress(stage, done, total) or None, got {type(progress).__name__}"
        )
    return list(dict.fromkeys(methods)), list(dict.fromkeys(float(b) for b in bits))  # each point once


def _check_outputs(csv_path: Any, plot_path: Any, force: bool, source: Any) -> None:
    """The CSV and figure paths can be written (and matplotlib is there) before the work starts:
    none of them is the posterior, and no two are the same file."""
    targets = [csv_path] if csv_path is not None else []
    if plot_path is not None:
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            raise OptionError("«plot» needs matplotlib: pip install matplotlib (or bnncompress[eval])") from None
        if not os.fspath(plot_path):  # ('' crashed in plot_paths: "PosixPath('.') has an empty name")
            raise OptionError("«plot_path» is empty; give a file name, e.g. rd.png")
        if os.path.isdir(plot_path):  # (its figures were written beside it, as <dir>-analogy.png)
            raise OptionError(
                f"«plot_path» '{plot_path}' is a directory; give a file name, e.g. {Path(plot_path) / 'rd.png'}"
            )
        if ends_with_slash(plot_path):  # (Path() drops the slash: its figures were written as <name>-analogy.png)
            raise OptionError(f"«plot_path» '{os.fspath(plot_path)}' names a directory (a final / or /.); give a file")
        targets += list(plot_paths(plot_path).values())
        kind = targets[-1].suffix.lstrip(".")
        if kind.lower() not in FigureCanvasBase.get_supported_filetypes():
            supported = ", ".join(f".{k}" for k in sorted(FigureCanvasBase.get_supported_filetypes()))
            raise OptionError(f"figures cannot be written as .{kind} files; give «plot_path» one of {supported}")
    for i, target in enumerate(targets):
        if any(os.path.abspath(target) == os.path.abspath(t) for t in targets[:i]):
            raise OptionError(f"the CSV '{csv_path}' would be overwritten by a figure; choose another «csv_path»")
        check_output_path(target, force, [source, *targets[:i]])  # and not through a link either


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """One line per point, columns :data:`COLUMNS` (written as it is: :func:`sweep` gives a temporary path)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def write_markdown(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """The sweep as a Markdown table (method x rate x metric)."""
    head = ["method", "target bits", "payload bits/w", "file bits/w", *METRICS, "pack s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["method"] != "uncompressed" and "payload_bits" not in r:
            continue
        cells = [
            r["method"],
            "" if r["target_bits"] is None else f"{r['target_bits']:g}",
            f"{r['payload_bits']:.3f}",
            f"{r['file_bits']:.3f}",
            *(score_text(r[m]) for m in METRICS),
            f"{r['pack_seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    with atomic_output(path, force=True) as tmp:  # (whole or not at all, beside the CSV and plots written so)
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")


def score_text(value: float | None) -> str:
    """A score for a table: four decimals, or ``n/a`` where it could not be computed."""
    return "n/a" if value is None else f"{value:.4f}"


def plot_paths(plot_path: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`plot` writes each metric's figure."""
    p = Path(plot_path)
    return {m: p.with_name(f"{p.stem}-{m}{p.suffix or '.png'}") for m in METRICS}


def plot(
    rows: Sequence[dict[str, Any]], plot_path: str | os.PathLike, write_to: Callable[[Path], Path] = lambda p: p
) -> dict[str, Path]:
    """One rate–distortion figure per metric: score against payload bits per weight, one line
    per method, the uncompressed score and each fixed-rate method's (``float16``) as horizontal
    lines; the axis reaches every rate measured. ``write_to(path)`` gives the file
    each figure is written to (:func:`sweep`: a temporary file renamed once all are written)."""
    try:
        from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's) stays as it is
    except ImportError:
        raise OptionError("«plot» needs matplotlib: pip install matplotlib (or bnncompress[eval])") from None

    paths = plot_paths(plot_path)
    reference = next((r for r in rows if r["method"] == "uncompressed"), None)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "uncompressed"))
    titles = {
        "analogy": "analogy accuracy (questions-words)",
        "ws353": "WordSim353 Spearman",
        "simlex": "SimLex-999 Spearman",
    }
    fixed = {m for m in methods if getattr(METHODS.get(m), "fixed_rate", False)}  # (float16): reference lines
    reached = [r.get("payload_bits") for r in rows if r["method"] in methods and r["method"] not in fixed]
    reached = [b for b in reached if b is not None]  # (a missed target has none)
    right = 1.1 * max(reached) if reached and max(reached) > 0 else None  # every measured point on the axis
    for metric, path in paths.items():
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        for method in methods:
            pts = sorted(
                (r["payload_bits"], r[metric]) for r in rows if r["method"] == method and r.get(metric) is not None
            )
            if method in fixed:
                for bits, score in pts:
                    ax.axhline(score, color="gray", linestyle=":", linewidth=1, label=f"{method} ({bits:.1f} bits/w)")
            elif pts:
                ax.plot(*zip(*pts), marker="o", markersize=3.5, label=method)
        if reference is not None and reference[metric] is not None:
            ax.axhline(reference[metric], color="black", linestyle="--", linewidth=1, label="uncompressed")
        ax.set_xlim(0, right)
        ax.set_xlabel("payload bits per weight (real archive)")
        ax.set_ylabel(metric)
        ax.set_title(titles[metric])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(write_to(path), dpi=120, format=path.suffix.lstrip(".") or "png")
    return paths
