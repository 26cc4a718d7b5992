"""Word-embedding quality: analogies and word similarity through gensim's own evaluators.

Datasets are the ones gensim ships in its test data: Mikolov's ``questions-words.txt``
(analogies, scored by ``KeyedVectors.evaluate_word_analogies``), ``wordsim353.tsv`` and
``simlex999.txt`` (Spearman correlation, by ``KeyedVectors.evaluate_word_pairs``).
Questions and pairs whose words are missing from the (restricted) vocabulary are skipped by
gensim; here they are counted and reported next to each score.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .archive import is_archive
from .errors import OptionError, PosteriorError
from .loader import Archive, load
from .sources import detect, read_posterior

#: Metric name -> gensim test-data file.
DATASETS = {"analogy": "questions-words.txt", "ws353": "wordsim353.tsv", "simlex": "simlex999.txt"}
#: The headline scores, in table order.
METRICS = tuple(DATASETS)


def dataset_path(name: str) -> Path:
    """Path of a dataset that ships with gensim, e.g. ``dataset_path("ws353")``."""
    from gensim.test.utils import datapath

    return Path(datapath(DATASETS[name]))


def keyed_vectors(source: Any, tensor: str | None = None):
    """gensim ``KeyedVectors`` from an archive (path or :class:`~bnncompress.Archive`), a posterior
    file (its means), plain word vectors (word2vec text or binary, GloVe text) or KeyedVectors."""
    return _keyed_vectors(source, tensor)[0]


def _keyed_vectors(source: Any, tensor: str | None) -> tuple[Any, str]:
    """The vectors and which tensor they are (or what kind of file)."""
    from gensim.models import KeyedVectors

    if isinstance(source, KeyedVectors):
        return source, "word vectors"
    if isinstance(source, Archive):
        name = tensor or source.default_embedding_name()
        return source.to_keyed_vectors(name), name
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
        return read_word_vectors(path), "word vectors"  # not a posterior: word vectors, or an error saying so
    return _posterior_means(path, tensor)


def _posterior_means(path: Path, tensor: str | None):
    from gensim.models import KeyedVectors

    posterior = read_posterior(path)
    if posterior.vocab is None:
        raise OptionError(f"'{path}' has no vocabulary; pass «vocab» when packing, or evaluate word vectors")
    names = [n for n in posterior.names if posterior.tensors[n].shape[:1] == (len(posterior.vocab),)]
    if tensor is None:
        if not names:
            raise OptionError(f"no tensor of '{path}' has one row per vocabulary word")
        tensor = "word_vectors" if "word_vectors" in names else names[0]
    elif tensor not in names:
        raise OptionError(
            f"tensor {tensor!r} is not a word-vector tensor of '{path}'; choose one of: {', '.join(names)}"
        )
    loc = posterior.tensors[tensor].loc
    kv = KeyedVectors(vector_size=loc.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(posterior.vocab, loc.reshape(len(posterior.vocab), -1))
    return kv, f"{tensor} (posterior means)"


def read_word_vectors(path: str | os.PathLike):
    """gensim ``KeyedVectors`` from word2vec text (``.bin``: binary) or GloVe text (no header line).

    Example:
        >>> kv = read_word_vectors("vectors.txt")  # doctest: +SKIP
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise OptionError(f"word-vector file '{path}' does not exist or is not a file; pass word2vec or GloVe text")
    binary = path.suffix == ".bin"
    with open(path, "rb") as fh:
        first = fh.readline(1 << 16).split()
    no_header = len(first) != 2 or not all(x.isdigit() for x in first)  # GloVe text has no "count dim" line
    if not no_header:
        _check_header(path, first, binary)
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header and not binary)
    except (ValueError, UnicodeDecodeError, EOFError, MemoryError) as exc:
        raise OptionError(
            f"'{path}' is not word2vec or GloVe vectors ({type(exc).__name__}: {str(exc)[:80]}); "
            "pass an archive or a posterior"
        ) from None


def _check_header(path: Path, first: list[bytes], binary: bool) -> None:
    """A word2vec header promises ``count x dim`` values: the file must be big enough to hold them
    (4 bytes each in binary, 2 characters in text) before gensim allocates the matrix."""
    count, dim = int(first[0]), int(first[1])
    if count < 1 or dim < 1 or count * dim * (4 if binary else 2) > path.stat().st_size:
        raise OptionError(f"'{path}' declares {count:,} vectors of {dim:,} values, more than the file holds")


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
    them, "analogy_sections": {section: accuracy}, "vocab_size": int}``. A score is ``None`` when
    too few questions or pairs have all their words in the vocabulary to compute it.

    Example:
        >>> import bnncompress
        >>> scores = bnncompress.evaluate("data/example.pt", metrics=("ws353",))
        >>> round(scores["ws353"], 2), scores["ws353_missing"] > 0
        (0.47, True)
    """
    unknown = [m for m in metrics if m not in DATASETS]
    if unknown:
        raise OptionError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(DATASETS)}")
    if restrict_vocab is not None and restrict_vocab < 1:
        raise OptionError(f"«restrict_vocab» must be at least 1, got {restrict_vocab}")
    kv, described = _keyed_vectors(source, tensor)
    limit = min(restrict_vocab or len(kv), len(kv))
    zero = int(np.count_nonzero(~np.any(kv.vectors[:limit], axis=1)))
    result: dict[str, Any] = {"tensor": described, "vocab_size": limit, "zero_vectors": zero}
    quiet = logging.getLogger("gensim.models.keyedvectors")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # gensim logs every skipped question at INFO
    try:
        with warnings.catch_warnings():
            # all-zero vectors (coarse quantization) have no direction: gensim divides by their
            # zero norm and warns; they are counted in "zero_vectors" instead
            warnings.simplefilter("ignore", RuntimeWarning)
            known = {w.lower() for w in kv.index_to_key[:limit]}
            for metric in metrics:
                result.update(_score(kv, metric, limit, known))
    finally:
        quiet.setLevel(level)
    return result


def _score(kv: Any, metric: str, limit: int, known: set[str]) -> dict[str, Any]:
    """One metric through gensim's evaluator, with the questions or pairs it had to skip."""
    path = dataset_path(metric)
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    if metric == "analogy":
        items = [w for w in lines if w and not w[0].startswith(":")]
    else:
        items = [w[:2] for w in lines if w and not w[0].startswith("#")]
    answerable = sum(all(x.lower() in known for x in item) for item in items)
    out: dict[str, Any] = {f"{metric}_missing": len(items) - answerable, f"{metric}_total": len(items)}
    if answerable < (1 if metric == "analogy" else 3):  # gensim needs something to score
        out[metric] = None
        if metric == "analogy":
            out["analogy_sections"] = {}
    elif metric == "analogy":
        score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=limit)
        out["analogy"] = float(score)
        out["analogy_sections"] = {
            s["section"]: len(s["correct"]) / max(1, len(s["correct"]) + len(s["incorrect"])) for s in sections[:-1]
        }
    else:
        _, spearman, _ = kv.evaluate_word_pairs(str(path), restrict_vocab=limit)
        value = float(spearman[0])
        out[metric] = value if np.isfinite(value) else None
    return out


def format_table(result: dict[str, Any], sections: bool = True) -> str:
    """A plain-text table of :func:`evaluate`'s result (at most 60 columns wide)."""
    names = [f"analogy: {n}" for n in result.get("analogy_sections", {})] if sections else []
    width = max([len(m) for m in METRICS] + [len(n) + 2 for n in names] + [6])
    lines = [f"{'metric':<{width}} {'score':>7} {'missing':>13}"]
    for metric in METRICS:
        if metric in result:
            missing = f"{result[metric + '_missing']}/{result[metric + '_total']}"
            score = "n/a" if result[metric] is None else f"{result[metric]:.4f}"
            lines.append(f"{metric:<{width}} {score:>7} {missing:>13}")
    for name, acc in zip(names, result.get("analogy_sections", {}).values()):
        lines.append(f"  {name:<{width - 2}} {acc:>7.4f}")
    lines.append(f"tensor: {result.get('tensor', 'word vectors')}; vocabulary used: {result['vocab_size']:,} words")
    if result.get("zero_vectors"):
        lines.append(f"{result['zero_vectors']:,} of these vectors are all zeros (no direction): they match nothing")
    return "\n".join(lines)
