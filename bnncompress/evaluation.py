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
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .archive import is_archive
from .contents import printable
from .errors import ArgumentTypeError, NotAPosteriorError, OptionError, PosteriorError, QualityWarning
from .forksafe import renew_after_fork
from .loader import Archive, load
from .posterior import Posterior
from .sources import detect, read_posterior
from .supports import constrain
from .vectorfiles import gensim_pickle, read_word_vectors
from .wordvectors import labelled_tensors, word_vector_tensor

#: Metric name -> gensim test-data file.
DATASETS = {"analogy": "questions-words.txt", "ws353": "wordsim353.tsv", "simlex": "simlex999.txt"}
#: The headline scores, in table order.
METRICS = tuple(DATASETS)
#: Held while gensim's evaluators run: they swap the KeyedVectors' ``key_to_index`` for the restricted one
#: (two threads evaluating one object read each other's: KeyError for words it has).
_GENSIM_SWAPS = threading.Lock()


def _after_fork() -> None:  # a child forked while another thread evaluated would wait on the lock forever
    global _GENSIM_SWAPS
    _GENSIM_SWAPS = threading.Lock()


renew_after_fork(sys.modules[__name__])  # (forksafe calls this module's _after_fork in every forked child)


def dataset_path(name: str) -> Path:
    """Path of a dataset that ships with gensim, e.g. ``dataset_path("ws353")``."""
    from gensim.test.utils import datapath

    return Path(datapath(DATASETS[name]))


def _no_tensors(tensor: str | None) -> None:
    if tensor is not None:
        raise OptionError(f"«tensor» {tensor!r} names a tensor of an archive or posterior; word vectors have none")


def _keyed_vectors(source: Any, tensor: str | None) -> tuple[Any, str]:
    """gensim ``KeyedVectors`` from an archive (path or :class:`~bnncompress.Archive`), a posterior
    file (its means, medians for constrained sites), plain word vectors (word2vec text or binary, GloVe
    text) or KeyedVectors, and which tensor they are (or what kind of file)."""
    from gensim.models import KeyedVectors

    if isinstance(source, KeyedVectors):
        _no_tensors(tensor)
        return source, "word vectors"
    if isinstance(source, Archive):
        name = source.default_embedding_name() if tensor is None else tensor
        return source.to_keyed_vectors(name), name
    if not isinstance(source, (str, os.PathLike)):
        raise ArgumentTypeError(f"«source» must be a path, an Archive or KeyedVectors, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise OptionError(f"'{source}' does not exist; pass an archive, a posterior file or word vectors")
    if not path.is_file() and not path.is_dir():  # (a pipe, <(...), /dev/stdin: not only a posterior is wanted)
        raise OptionError(
            f"'{source}' is not a regular file (a pipe or a device); evaluation reads archives, posterior files and "
            "word2vec or GloVe vectors by name: save the input to a file and pass its path"
        )
    if path.is_file() and is_archive(path):
        archive = load(path)
        name = archive.default_embedding_name() if tensor is None else tensor
        return archive.to_keyed_vectors(name), name
    if path.is_file() and gensim_pickle(path):  # (unpack's .kv: told as what it is, not as a posterior's pickle)
        raise OptionError(
            f"'{source}' is a gensim KeyedVectors file (a pickle, which bnncompress never loads); evaluate the archive "
            "it came from, or word2vec vectors (`bnncompress unpack -o vectors.txt` writes them)"
        )
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
    except NotAPosteriorError as exc:  # e.g. unpack's own .kv/.npz/.pt point estimates
        raise PosteriorError(  # (the message as written: the CLI shows its «parameters» as flags)
            f"{Exception.__str__(exc)} (evaluation reads archives, posterior files and word2vec or GloVe vectors: "
            "`bnncompress unpack -o vectors.txt` writes word2vec)"
        ) from None


def _posterior_means(path: Path, tensor: str | None):
    return posterior_keyed_vectors(read_posterior(path), tensor, path)


def posterior_keyed_vectors(posterior: Posterior, tensor: str | None, path: Any) -> tuple[Any, str]:
    """gensim ``KeyedVectors`` of a posterior's word vectors (``tensor``, or the one the loader
    picks): their means, or medians where the posterior records a support; and what they are.
    ``path`` names the posterior in errors.

    Example:
        >>> kv, what = posterior_keyed_vectors(read_posterior("data/example.pt"), None, "data/example.pt")
        >>> kv.vectors.shape, what
        ((4000, 50), 'word_vectors (posterior means)')
    """
    from gensim.models import KeyedVectors

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
    if loc.ndim != 2:  # (a support that makes matrices of rows: corr_cholesky)
        raise OptionError(f"tensor {tensor!r} of '{path}' loads with shape {loc.shape}: no word vectors")
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
            rows = reversed(list(enumerate(kv.index_to_key[:limit])))  # as gensim's evaluators match words:
            known = {w.upper(): row for row, w in rows}  # upper-cased, to the first row of any case
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


def _all_alike(rows: np.ndarray, chunk: int = 1 << 14) -> bool:
    """Whether every cosine similarity between ``rows`` is the same number: all rows zero (a coarse archive's),
    or all pointing the same way (to within float rounding). Read ``chunk`` rows at a time, stopping at the
    first that differ (on the whole matrix at once it took 2.3 times the vectors' memory).

    Example:
        >>> _all_alike(np.array([[1.0, 2.0], [2.0, 4.0]])), _all_alike(np.array([[1.0, 0.0], [0.0, 1.0]]))
        (True, False)
    """
    first, zeros, directions = None, False, False
    for start in range(0, len(rows), chunk):
        block = np.asarray(rows[start : start + chunk])
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        zeros, directions = zeros or not norms.all(), directions or bool(norms.any())
        if zeros and directions:  # some rows zero, some not
            return False
        if directions:
            units = block / norms
            first = units[0] if first is None else first
            if not np.allclose(units, first, rtol=0, atol=1e-6):
                return False
    return bool(len(rows))


def _score(kv: Any, metric: str, limit: int, known: dict[str, int]) -> dict[str, Any]:
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
        with _GENSIM_SWAPS:
            score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=limit)
        out["analogy"] = float(score)
        out["analogy_sections"] = {  # None: no question of the section could be asked (not 0 correct)
            s["section"]: len(s["correct"]) / n if (n := len(s["correct"]) + len(s["incorrect"])) else None
            for s in sections[:-1]
        }
    else:
        rows = {known[x.upper()] for item in items if all(x.upper() in known for x in item) for x in item}
        if _all_alike(kv.vectors[sorted(rows)]):  # the answerable pairs' similarities all equal: scipy would
            value = float("nan")  # warn 'input is constant' twice (their words alike, whatever the other rows)
        else:  # (no catch_warnings to hide scipy's: it swaps every thread's warnings, and can leave them swallowed)
            with _GENSIM_SWAPS:
                _, spearman, _ = kv.evaluate_word_pairs(str(path), restrict_vocab=limit)
            value = float(spearman[0])
        out[metric] = value if np.isfinite(value) else None
        if out[metric] is None:
            warnings.warn(f"{metric}: all answerable pairs are equally similar: no correlation", QualityWarning, 2)
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
    tensor = printable(result.get("tensor", "word vectors"))  # (a tensor's name may hold terminal escapes)
    lines.append(f"tensor: {tensor}; vocabulary used: {result['vocab_size']:,} words")
    if result.get("zero_vectors"):
        lines.append(
            f"{result['zero_vectors']:,} of these vectors are all zeros (no direction): gensim answers the "
            "analogy questions that use one by chance"
        )
    return "\n".join(lines)
