"""Word-embedding quality: analogies and word similarity through gensim's own evaluators.

Datasets are the ones gensim ships in its test data: Mikolov's ``questions-words.txt``
(analogies, scored by ``KeyedVectors.evaluate_word_analogies``), ``wordsim353.tsv`` and
``simlex999.txt`` (Spearman correlation, by ``KeyedVectors.evaluate_word_pairs``).
Questions and pairs whose words are missing from the (restricted) vocabulary are skipped by
gensim; here they are counted and reported next to each score.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .archive import is_archive
from .errors import ArgumentTypeError, OptionError, PosteriorError
from .loader import Archive, load
from .posterior import Posterior
from .sources import detect, read_posterior
from .supports import constrain
from .wordvectors import labelled_tensors, word_vector_tensor

#: Metric name -> gensim test-data file.
DATASETS = {"analogy": "questions-words.txt", "ws353": "wordsim353.tsv", "simlex": "simlex999.txt"}
#: The headline scores, in table order.
METRICS = tuple(DATASETS)


def dataset_path(name: str) -> Path:
    """Path of a dataset that ships with gensim, e.g. ``dataset_path("ws353")``."""
    from gensim.test.utils import datapath

    return Path(datapath(DATASETS[name]))


def _no_tensors(tensor: str | None) -> None:
    if tensor is not None:
        raise OptionError(f"«tensor» {tensor!r} names a tensor of an archive or posterior; word vectors have none")


def _keyed_vectors(source: Any, tensor: str | None) -> tuple[Any, str]:
    """gensim ``KeyedVectors`` from an archive (path or :class:`~bnncompress.Archive`), a posterior
    file (its means), plain word vectors (word2vec text or binary, GloVe text) or KeyedVectors, and
    which tensor they are (or what kind of file)."""
    from gensim.models import KeyedVectors

    if isinstance(source, KeyedVectors):
        _no_tensors(tensor)
        return source, "word vectors"
    if isinstance(source, Archive):
        name = tensor or source.default_embedding_name()
        return source.to_keyed_vectors(name), name
    if not isinstance(source, (str, os.PathLike)):
        raise ArgumentTypeError(f"«source» must be a path, an Archive or KeyedVectors, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise OptionError(f"'{source}' does not exist; pass an archive, a posterior file or word vectors")
    if path.is_file() and is_archive(path):
        archive = load(path)
        name = tensor or archive.default_embedding_name()
        return archive.to_keyed_vectors(name), name
    try:
        detect(path)
    except PosteriorError:
        if not path.is_file():
            raise
        vectors = read_word_vectors(path)  # not a posterior: word vectors, or an error saying so
        _no_tensors(tensor)
        return vectors, "word vectors"
    try:
        return _posterior_means(path, tensor)
    except PosteriorError as exc:  # e.g. unpack's own .kv/.npz/.pt point estimates: not a posterior
        raise PosteriorError(  # (the message as written: the CLI shows its «parameters» as flags)
            f"{Exception.__str__(exc)} (evaluation reads archives, posterior files and word2vec or GloVe vectors: "
            "`bnncompress unpack -o vectors.txt` writes word2vec)"
        ) from None


def _posterior_means(path: Path, tensor: str | None):
    from gensim.models import KeyedVectors

    posterior = read_posterior(path)
    if posterior.vocab is None:
        raise OptionError(f"'{path}' has no vocabulary; pass «vocab» when packing, or evaluate word vectors")
    names = labelled_tensors({n: t.shape for n, t in posterior.tensors.items()}, len(posterior.vocab))  # words x dims
    if tensor is None or not names:
        tensor = posterior_word_vectors(posterior, path)  # (none: it says so)
    elif tensor not in names:
        raise OptionError(
            f"tensor {tensor!r} is not a word-vector tensor of '{path}'; choose one of: {', '.join(names)}"
        )
    loc = posterior.tensors[tensor].loc
    point = "means"
    if tensor in posterior.supports:  # unconstrained as stored: the posterior median, as an archive loads it
        loc = constrain(posterior.supports[tensor], loc, f"tensor '{tensor}' of '{path}'").astype(np.float32)
        point = "medians"
    kv = KeyedVectors(vector_size=loc.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(posterior.vocab, loc)
    return kv, f"{tensor} (posterior {point})"


def posterior_word_vectors(posterior: Posterior, source: Any) -> str:
    """The name of the word-vector tensor of ``posterior`` (read from ``source``), by the rule of
    :func:`bnncompress.wordvectors.word_vector_tensor` the loader uses for archives.

    Example:
        >>> posterior_word_vectors(read_posterior("data/example.pt"), "data/example.pt")
        'word_vectors'
    """
    shapes = {name: t.shape for name, t in posterior.tensors.items()}
    name = word_vector_tensor(shapes, None if posterior.vocab is None else len(posterior.vocab))
    if name is None:
        raise OptionError(f"no tensor of '{source}' has one row per vocabulary word")
    return name


def read_word_vectors(path: str | os.PathLike):
    """gensim ``KeyedVectors`` from word2vec text or binary, or GloVe text (no header line), told
    apart by their content, not their names.

    Blank lines are skipped. A file whose lines do not all hold a word and the same number of
    finite values, that repeats a word, or whose header's count is not what follows, is refused
    with an :class:`OptionError` naming the line.

    Example:
        >>> kv = read_word_vectors("vectors.txt")  # doctest: +SKIP
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise OptionError(f"word-vector file '{path}' does not exist or is not a file; pass word2vec or GloVe text")
    with open(path, "rb") as fh:
        start, number = 0, 1  # of the first line that is not blank
        while not (first := fh.readline(1 << 20)).strip():
            if not first:
                raise OptionError(f"'{path}' is empty; pass word2vec or GloVe vectors")
            start, number = start + len(first), number + 1
        fields = first.split()
        if len(fields) == 2 and all(x.isdigit() for x in fields):  # word2vec: a "count dim" line first
            count, dim = int(fields[0]), int(fields[1])
            while (probe := fh.readline(_PROBE)) and not probe.strip():
                pass
            binary = bool(probe) and not _text_line(probe, dim)  # binary values never split into dim numbers
            _check_header(path, count, dim, binary)
            fh.seek(start + len(first))
            if binary:
                words, vectors = _read_binary(fh, path, count, dim)
            else:
                words, vectors = _read_text(fh, path, count, dim, number + 1)
        else:  # GloVe: no header, as many vectors as lines
            fh.seek(start)
            words, vectors = _read_text(fh, path, None, len(fields) - 1, number)
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(words, vectors)
    return kv


#: Bytes of the first vector line read to tell word2vec text from binary.
_PROBE = 1 << 20
_NUMBER_TEXT = frozenset(b"0123456789+-.eEinfaINFA \t\r\n")


def _text_line(line: bytes, dim: int) -> bool:
    """Whether ``line`` is a word2vec text line: a word and ``dim`` numbers (a line longer than the
    probe, cut: a word and then only characters of numbers; float32 bytes are not all of those)."""
    if len(line) == _PROBE and not line.endswith(b"\n"):
        values = line.split(maxsplit=1)[1:]
        return bool(values) and _NUMBER_TEXT.issuperset(values[0])
    parts = line.split()
    if len(parts) != dim + 1:
        return False
    try:
        np.array(parts[1:], dtype=np.float32)
    except ValueError:
        return False
    return True


def _check_header(path: Path, count: int, dim: int, binary: bool) -> None:
    """A word2vec header promises ``count x dim`` values: the file must be big enough to hold them
    (4 bytes each in binary, 2 characters in text) before the matrix is allocated."""
    if count < 1 or dim < 1:
        raise OptionError(f"'{path}' declares {count:,} vectors of {dim:,} values; a word-vector file needs some")
    if count * dim * (4 if binary else 2) > path.stat().st_size:
        raise OptionError(f"'{path}' declares {count:,} vectors of {dim:,} values, more than the file holds")


def _read_text(fh, path: Path, count: int | None, dim: int, first_line: int) -> tuple[list[str], np.ndarray]:
    """Word2vec text (``count`` vectors after the header) or GloVe (``count`` None: every line)."""
    if dim < 1:
        raise OptionError(f"line {first_line} of '{path}' holds a word but no values; pass word2vec or GloVe vectors")
    words: dict[str, int] = {}  # word -> its line, in file order
    rows: list[np.ndarray] = []
    for number, raw in enumerate(fh, start=first_line):
        parts = raw.split()
        if not parts:
            continue  # a blank line holds nothing
        if len(rows) == count:
            raise OptionError(f"'{path}' holds more vectors than the {count:,} of its header (line {number})")
        if len(parts) != dim + 1:
            raise OptionError(
                f"line {number} of '{path}' has {len(parts) - 1} values, not {dim}; "
                "each line must be a word and its values"
            )
        try:
            word = parts[0].decode("utf-8")
            rows.append(np.array(parts[1:], dtype=np.float32))
        except (UnicodeDecodeError, ValueError):
            raise OptionError(
                f"'{path}' is not word2vec or GloVe vectors: line {number} is not a UTF-8 word followed by numbers"
            ) from None
        _add_word(words, word, number, path, "lines")
    if count is not None and len(rows) < count:
        raise OptionError(f"'{path}' holds {len(rows):,} vectors, not the {count:,} of its header")
    return _finite(words, np.stack(rows), path, "line")


def _read_binary(fh, path: Path, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """Word2vec binary: per vector, a word, a space and ``dim`` little-endian float32 (each may
    be followed by a newline, which the next word then starts with)."""
    words: dict[str, int] = {}
    vectors = np.empty((count, dim), dtype=np.float32)
    size = 4 * dim
    buf, pos = b"", 0
    for i in range(count):
        while (space := buf.find(b" ", pos)) == -1 or len(buf) - space - 1 < size:
            more = fh.read(max(1 << 20, size + 1))
            if not more:
                raise OptionError(f"'{path}' ends inside vector {i + 1:,} of the {count:,} of its header; it is cut")
            buf, pos = buf[pos:] + more, 0
        try:
            word = buf[pos:space].lstrip(b"\n").decode("utf-8")
        except UnicodeDecodeError:
            raise OptionError(f"the word of vector {i + 1:,} of '{path}' is not UTF-8 text") from None
        if not word:
            raise OptionError(f"vector {i + 1:,} of '{path}' has no word; the file is damaged")
        _add_word(words, word, i + 1, path, "vectors")
        vectors[i] = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + size
    while not (rest := buf[pos:]).strip():  # after the last vector: line breaks at most
        if not (buf := fh.read(1 << 20)):
            return _finite(words, vectors, path, "vector")
        pos = 0
    raise OptionError(
        f"'{path}' holds more than the {count:,} binary vectors of its header ({rest[:20]!r} follows); "
        "the header is wrong or the file is not word2vec binary"
    )


def _add_word(words: dict[str, int], word: str, where: int, path: Path, units: str) -> None:
    if word in words:
        raise OptionError(f"word {word!r} appears twice in '{path}' ({units} {words[word]:,} and {where:,}); keep one")
    words[word] = where


def _finite(words: dict[str, int], vectors: np.ndarray, path: Path, unit: str) -> tuple[list[str], np.ndarray]:
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        where = list(words.values())[int(bad[0])]
        raise OptionError(f"{unit} {where:,} of '{path}' has a value that is not a finite number; fix or remove it")
    return list(words), vectors


def evaluate(
    source: Any,
    tensor: str | None = None,
    restrict_vocab: int | None = None,
    metrics: tuple[str, ...] = METRICS,
) -> dict[str, Any]:
    """Analogy accuracy and WordSim353 / SimLex-999 Spearman of word vectors.

    ``source``: KeyedVectors, an :class:`~bnncompress.Archive`, or a path to an archive, a
    posterior file or word2vec/GloVe vectors. ``restrict_vocab`` limits the vocabulary to the
    first N words (gensim's convention; default: all). Returns ``{"analogy": float, "ws353": float,
    "simlex": float, "<metric>_missing": skipped questions or pairs, "<metric>_total": all of
    them, "analogy_sections": {section: accuracy}, "vocab_size": int}``. A score (and a section's
    accuracy) is ``None`` when too few questions or pairs have all their words in the vocabulary to compute it.

    Example:
        >>> import bnncompress
        >>> scores = bnncompress.evaluate("data/example.pt", metrics=("ws353",))
        >>> round(scores["ws353"], 2), scores["ws353_missing"] > 0
        (0.47, True)
    """
    metrics = check_metrics(metrics)
    restrict_vocab = check_word_vector_options(tensor, restrict_vocab)
    kv, described = _keyed_vectors(source, tensor)
    limit = min(restrict_vocab or len(kv), len(kv))
    zero = int(np.count_nonzero(~np.any(kv.vectors[:limit], axis=1)))
    result: dict[str, Any] = {"tensor": described, "vocab_size": limit, "zero_vectors": zero}
    # gensim logs every skipped question at INFO: this thread's records below ERROR are dropped (a level
    # set on the logger and put back was left at ERROR when two threads evaluated at once). All-zero
    # vectors (coarse quantization) have no direction: gensim divides by their zero norm, and numpy's
    # error state (this thread's) keeps that quiet; they are counted in "zero_vectors" instead.
    quiet, thread = logging.getLogger("gensim.models.keyedvectors"), threading.get_ident()

    def this_threads_details(record: logging.LogRecord) -> bool:
        return record.thread != thread or record.levelno >= logging.ERROR

    quiet.addFilter(this_threads_details)
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            known = {w.upper() for w in kv.index_to_key[:limit]}  # as gensim's evaluators match words
            for metric in metrics:
                result.update(_score(kv, metric, limit, known))
    finally:
        quiet.removeFilter(this_threads_details)
    return result


def check_metrics(metrics: Any) -> tuple[str, ...]:
    """``metrics`` as a tuple of known metric names (one name alone is a tuple of one)."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, str) for m in metrics):
        raise ArgumentTypeError(f"«metrics» must be a tuple of metric names such as {METRICS}, not {metrics!r:.60}")
    unknown = [m for m in metrics if m not in DATASETS]
    if unknown:
        raise OptionError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(DATASETS)}")
    return tuple(metrics)


def check_word_vector_options(tensor: Any, restrict_vocab: Any) -> int | None:
    """``tensor`` a name or None; ``restrict_vocab`` a whole number of words >= 1 (returned as an
    int) or None."""
    if tensor is not None and not isinstance(tensor, str):
        raise ArgumentTypeError(f"«tensor» must be a tensor name (a str) or None, got {type(tensor).__name__}")
    if restrict_vocab is None:
        return None
    try:
        if isinstance(restrict_vocab, bool):
            raise TypeError
        count = operator.index(restrict_vocab)
    except TypeError:
        raise ArgumentTypeError(
            f"«restrict_vocab» must be a whole number of words or None, not {restrict_vocab!r:.40}"
        ) from None
    if count < 1:
        raise OptionError(f"«restrict_vocab» must be at least 1, got {count}")
    return count


def _score(kv: Any, metric: str, limit: int, known: set[str]) -> dict[str, Any]:
    """One metric through gensim's evaluator, with the questions or pairs it had to skip."""
    path = dataset_path(metric)
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    if metric == "analogy":
        items = [w for w in lines if w and not w[0].startswith(":")]
    else:
        items = [w[:2] for w in lines if w and not w[0].startswith("#")]
    answerable = sum(all(x.upper() in known for x in item) for item in items)
    out: dict[str, Any] = {f"{metric}_missing": len(items) - answerable, f"{metric}_total": len(items)}
    if answerable < (1 if metric == "analogy" else 3):  # gensim needs something to score
        out[metric] = None
        if metric == "analogy":
            out["analogy_sections"] = {}
    elif metric == "analogy":
        score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=limit)
        out["analogy"] = float(score)
        out["analogy_sections"] = {  # None: no question of the section could be asked (not 0 correct)
            s["section"]: len(s["correct"]) / n if (n := len(s["correct"]) + len(s["incorrect"])) else None
            for s in sections[:-1]
        }
    else:
        _, spearman, _ = kv.evaluate_word_pairs(str(path), restrict_vocab=limit)
        value = float(spearman[0])
        out[metric] = value if np.isfinite(value) else None
    return out


def format_table(result: dict[str, Any], sections: bool = True, details: bool = True) -> str:
    """A plain-text table of :func:`evaluate`'s result (at most 60 columns wide); ``details``: the tensor,
    vocabulary and zero vectors below it."""
    names = [f"analogy: {n}" for n in result.get("analogy_sections", {})] if sections else []
    width = max([len(m) for m in METRICS] + [len(n) + 2 for n in names] + [6])
    lines = [f"{'metric':<{width}} {'score':>7} {'missing':>13}"]
    for metric in METRICS:
        if metric in result:
            missing = f"{result[metric + '_missing']}/{result[metric + '_total']}"
            score = "n/a" if result[metric] is None else f"{result[metric]:.4f}"
            lines.append(f"{metric:<{width}} {score:>7} {missing:>13}")
    for name, acc in zip(names, result.get("analogy_sections", {}).values()):
        lines.append(f"  {name:<{width - 2}} {'n/a' if acc is None else f'{acc:.4f}':>7}")
    if not details:
        return "\n".join(lines)
    lines.append(f"tensor: {result.get('tensor', 'word vectors')}; vocabulary used: {result['vocab_size']:,} words")
    if result.get("zero_vectors"):
        lines.append(f"{result['zero_vectors']:,} of these vectors are all zeros (no direction): they match nothing")
    return "\n".join(lines)
