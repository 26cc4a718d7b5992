"""Word-embedding quality: analogies and word similarity through gensim's own evaluators.

Datasets are the ones gensim ships in its test data: Mikolov's ``questions-words.txt``
(analogies, scored by ``KeyedVectors.evaluate_word_analogies``), ``wordsim353.tsv`` and
``simlex999.txt`` (Spearman correlation, by ``KeyedVectors.evaluate_word_pairs``).
Questions and pairs whose words are missing from the (restricted) vocabulary are skipped by
gensim; here they are counted and reported next to each score.
"""

from __future__ import annotations

import logging
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
    from gensim.models import KeyedVectors

    if isinstance(source, KeyedVectors):
        return source
    if isinstance(source, Archive):
        return source.to_keyed_vectors(tensor)
    path = Path(source)
    if not path.exists():
        raise OptionError(f"'{source}' does not exist; pass an archive, a posterior file or word vectors")
    if path.is_file() and is_archive(path):
        return load(path).to_keyed_vectors(tensor)
    try:
        detect(path)
    except PosteriorError:
        if not path.is_file():
            raise
        return _plain_vectors(path)  # not a posterior: word vectors, or an error saying what it should be
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
    return kv


def _plain_vectors(path: Path):
    from gensim.models import KeyedVectors

    binary = path.suffix == ".bin"
    try:
        if binary:
            return KeyedVectors.load_word2vec_format(str(path), binary=True)
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline().split()
        no_header = len(first) != 2  # GloVe text files have no "count dim" line
        return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=no_header)
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise OptionError(
            f"'{path}' is not word2vec or GloVe vectors ({exc}); pass an archive or a posterior"
        ) from None


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
    kv = keyed_vectors(source, tensor)
    if restrict_vocab is not None and restrict_vocab < 1:
        raise OptionError(f"«restrict_vocab» must be at least 1, got {restrict_vocab}")
    limit = min(restrict_vocab or len(kv), len(kv))
    result: dict[str, Any] = {"vocab_size": limit}
    quiet = logging.getLogger("gensim.models.keyedvectors")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # gensim logs every skipped question at INFO
    try:
        known = {w.lower() for w in kv.index_to_key[:limit]}
        for metric in metrics:
            path = dataset_path(metric)
            lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
            if metric == "analogy":
                items = [w for w in lines if w and not w[0].startswith(":")]
            else:
                items = [w[:2] for w in lines if w and not w[0].startswith("#")]
            answerable = sum(all(x.lower() in known for x in item) for item in items)
            result[f"{metric}_missing"] = len(items) - answerable
            result[f"{metric}_total"] = len(items)
            if answerable < (1 if metric == "analogy" else 3):  # gensim needs something to score
                result[metric] = None
                if metric == "analogy":
                    result["analogy_sections"] = {}
            elif metric == "analogy":
                score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=limit)
                result["analogy"] = float(score)
                result["analogy_sections"] = {
                    s["section"]: len(s["correct"]) / max(1, len(s["correct"]) + len(s["incorrect"]))
                    for s in sections[:-1]
                }
            else:
                _, spearman, _ = kv.evaluate_word_pairs(str(path), restrict_vocab=limit)
                value = float(spearman[0])
                result[metric] = value if np.isfinite(value) else None
    finally:
        quiet.setLevel(level)
    return result


def format_table(result: dict[str, Any], sections: bool = True) -> str:
    """A plain-text table of :func:`evaluate`'s result."""
    lines = [f"{'metric':<36} {'score':>7} {'missing':>14}"]
    for metric in METRICS:
        if metric in result:
            missing = f"{result[metric + '_missing']}/{result[metric + '_total']}"
            score = "n/a" if result[metric] is None else f"{result[metric]:.4f}"
            lines.append(f"{metric:<36} {score:>7} {missing:>14}")
    if sections and "analogy_sections" in result:
        for name, acc in result["analogy_sections"].items():
            lines.append(f"  analogy: {name:<26} {acc:>7.4f}")
    lines.append(f"vocabulary used: {result['vocab_size']} words")
    return "\n".join(lines)
