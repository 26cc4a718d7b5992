"""A Bayesian skip-gram word-embedding model in Pyro: the model, its data, and its posterior file.

The model (:func:`skipgram_model`, Barkan 2017): word vectors U and context vectors C (V x D
each) with prior N(0, 1); each observed (center, context) pair and its ``negatives`` noise
words contribute Bernoulli likelihoods with logits ``U[center] . C[word]`` (label 1 for the
context, 0 for the noise words). The posterior is mean-field Gaussian — Pyro's AutoNormal —
and what :func:`save_posterior` writes is AutoNormal's param store (``AutoNormal.locs.word_vectors``,
``AutoNormal.scales.word_vectors`` under ``softplus_positive``, ...) plus the vocabulary, which
``pack`` reads. :mod:`.trainer` fits it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentTypeError, OptionError
from ..files import atomic_output
from ..vocabulary import storable_word
from .inputs import check_options, check_pairs_memory, init_shape
from .ptfile import save_param_store


@dataclass
class SkipGramConfig:
    """Hyper-parameters of :func:`train_skipgram` (the ``bnncompress train`` options)."""

    dim: int = 50
    vocab_size: int = 5000
    min_count: int = 2
    window: int = 5
    negatives: int = 5
    subsample: float = 1e-3
    epochs: int = 5
    batch_size: int = 2048
    lr: float = 0.02
    lr_decay: bool = True
    init_scale: float = 0.05
    seed: int = 0
    device: str = "auto"
    #: Start the word vectors' means at these pretrained vectors (a dict word -> vector, or gensim
    #: KeyedVectors) and keep them unless ``refine_means``; the vocabulary is limited to their words.
    init_vectors: Any = None
    refine_means: bool = False

    def validate(self) -> None:
        """Refuse values training cannot use, before anything is allocated (one line naming the field)."""
        names = ("dim", "vocab_size", "min_count", "window", "negatives", "epochs", "batch_size", "seed")
        names += ("lr", "init_scale", "subsample", "lr_decay", "refine_means")
        check_options(**{name: getattr(self, name) for name in names})
        if not isinstance(self.device, str):
            raise ArgumentTypeError(f"«device» must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.refine_means and self.init_vectors is None:  # (it was ignored: the means are trained anyway)
            raise OptionError("«refine_means» trains the means «init_vectors» start at; give those too, or drop it")
        if self.init_vectors is not None:
            _, size = init_shape(self.init_vectors)
            if size != self.dim:
                raise OptionError(f"«init_vectors» have {size} dimensions, «dim» is {self.dim}; make them agree")


@dataclass
class TrainResult:
    """The trained posterior (``params[site] = (loc, unconstrained scale)`` as float32 arrays, V x D;
    scale = softplus(unconstrained)), its vocabulary (most frequent first), the loss per pair of
    each epoch and how fast it went."""

    params: dict[str, tuple[np.ndarray, np.ndarray]]
    vocab: list[str]
    counts: list[int]
    losses: list[float] = field(default_factory=list)
    num_pairs: int = 0
    pairs_per_second: float = 0.0


@dataclass(frozen=True)
class TrainProgress:
    """The report training hands its ``progress`` callback (a :data:`TrainCallback`) after every
    step (``epoch_done`` at the last step of an epoch). Pack and sweep instead call
    ``progress(stage, done, total)``, a :class:`bnncompress.progress.Progress`."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    loss: float  # per pair, of the epoch so far
    pairs_per_second: float
    eta_seconds: float
    epoch_done: bool


#: What ``train_skipgram(progress=...)`` takes: a function of each step's :class:`TrainProgress`.
TrainCallback = Callable[[TrainProgress], None]


#: A token: a run of word characters other than digits (letters and underscores; digits, punctuation and
#: combining marks split words, so scripts written with combining marks, such as Devanagari, and NFD text come
#: apart), as gensim's ``tokenize`` finds them; matched here so that reading a corpus does not import gensim (0.7 s).
_TOKEN = re.compile(r"[^\W\d]+")


def tokenize(line: str) -> list[str]:
    """The lowercased alphabetic tokens of ``line``: what ``list(gensim.utils.tokenize(line,
    lowercase=True))`` returns.

    Example:
        >>> tokenize("In 1969, Apollo_11's crew -- Armstrong et al. -- landed.")
        ['in', 'apollo_', 's', 'crew', 'armstrong', 'et', 'al', 'landed']
    """
    return _TOKEN.findall(line.lower())


#: What a file that is not UTF-8 text starts with, and what to say of it (UTF-32's mark first: it starts as UTF-16's).
_NOT_TEXT = (
    (b"\xff\xfe\x00\x00", "is UTF-32 text; convert it, e.g. iconv -f utf-32 -t utf-8"),
    (b"\x00\x00\xfe\xff", "is UTF-32 text; convert it, e.g. iconv -f utf-32 -t utf-8"),
    (b"\xff\xfe", "is UTF-16 text; convert it, e.g. iconv -f utf-16 -t utf-8"),
    (b"\xfe\xff", "is UTF-16 text; convert it, e.g. iconv -f utf-16 -t utf-8"),
    (b"\x1f\x8b", "is gzip-compressed; decompress it first"),
    (b"BZh", "is bzip2-compressed; decompress it first"),  # (then a digit and 1AY&SY: checked below)
    (b"\xfd7zXZ", "is xz-compressed; decompress it first"),
    (b"(\xb5/\xfd", "is zstd-compressed; decompress it first"),
    (b"\x04\x22\x4d\x18", "is lz4-compressed; decompress it first"),
    (b"PK\x03\x04", "is a zip file (as .pt and .npz files are), not text; pass a UTF-8 text file"),
    (b"PK\x05\x06", "is an empty zip file, not text; pass a UTF-8 text file"),
    (b"\x89HDF", "is an HDF5 file (as .bnc archives and .h5 files are), not text; pass a UTF-8 text file"),
    (b"\x93NUMPY", "is a .npy array, not text; pass a UTF-8 text file"),
)


def check_corpus_path(path: str | os.PathLike) -> Path:
    """The corpus file exists and is a regular file (before anything slow is read)."""
    path = Path(path)
    if not path.exists():
        raise OptionError(f"corpus file '{path}' does not exist; pass a UTF-8 text file")
    if not path.is_file():
        raise OptionError(f"corpus '{path}' is not a regular file; pass a UTF-8 text file")
    return path


def read_corpus(path: str | os.PathLike) -> list[list[str]]:
    """Read a text file into token lists, one per line: lowercased alphabetic tokens (as gensim's)."""
    path = check_corpus_path(path)
    with open(path, "rb") as fh:
        lines = []
        for number, raw in enumerate(fh, 1):
            # UTF-16 without a byte-order mark is valid UTF-8 (letters between NULs); a stray NUL, or padding of
            # NULs, splits words as any non-letter does. (No replacement characters either: they split words too.)
            nul = 4 * raw.count(b"\x00") >= len(raw) and bool(raw.strip(b"\x00\r\n"))
            text = None if nul else _utf8(raw)
            if text is None:  # (not UTF-8 with a NUL in it: UTF-16 of CJK text has few)
                fh.seek(0)
                raise _not_text(path, fh.read(16), number, b"\x00" in raw)
            lines.append(tokenize(text))
        if not any(lines):
            if path.stat().st_size == 0:
                raise OptionError(f"corpus '{path}' is empty; pass a UTF-8 text file")
            raise OptionError(
                f"corpus '{path}' holds no words: a word is a run of letters (digits and punctuation are dropped); "
                "pass text, or train token ids through the Python API"
            )
        return lines


def _utf8(raw: bytes) -> str | None:
    """``raw`` decoded as UTF-8, or None."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _not_text(path: Path, head: bytes, line: int, nul: bool) -> OptionError:
    """What to say of a corpus that is not UTF-8 text, from how it starts (``head``: its first bytes)."""
    bzip2 = head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")  # (a block, or the end: empty)
    said = next((w for magic, w in _NOT_TEXT if head.startswith(magic) and (magic != b"BZh" or bzip2)), None)
    if said:
        return OptionError(f"corpus '{path}' {said}")
    if nul:
        return OptionError(
            f"corpus '{path}' holds NUL bytes (line {line:,}): UTF-16 or UTF-32 text without a byte-order mark, or "
            "not text; convert it to UTF-8, e.g. iconv -f utf-16le -t utf-8"
        )
    return OptionError(f"corpus '{path}' is not UTF-8 text (line {line:,}); convert it, e.g. iconv -f latin1 -t utf-8")


def build_vocab(
    sentences: Iterable[Sequence[str]], vocab_size: int, min_count: int, allowed: Any = None
) -> tuple[list[str], list[int]]:
    """The ``vocab_size`` most frequent words with at least ``min_count`` occurrences (and in
    ``allowed``, if given), most frequent first (ties alphabetical), so gensim's
    ``restrict_vocab`` keeps the top words."""
    if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Iterable):
        raise ArgumentTypeError(f"«sentences» must be a list of sentences, each a list of words, got {sentences!r:.60}")
    counts = Counter(w for s in sentences if not _is_text(s) for w in s)
    if any(_is_text(s) for s in sentences) or not all(isinstance(w, str) for w in counts):
        raise ArgumentTypeError("«sentences» must be lists of words (str), e.g. [line.split() for line in lines]")
    ranked = sorted(
        ((c, w) for w, c in counts.items() if c >= min_count and (allowed is None or w in allowed)),
        key=lambda cw: (-cw[0], cw[1]),
    )[:vocab_size]
    unstorable = next((w for _, w in ranked if not storable_word(w)), None)
    if unstorable is not None:
        raise OptionError(
            f"«sentences» hold the word {unstorable!r:.60}, which an archive's vocabulary cannot keep (empty, "
            "surrounding whitespace or a control character); split lines into words without them, e.g. line.split()"
        )
    if not counts:
        raise OptionError("«sentences» hold no words; pass lists of words, e.g. [line.split() for line in lines]")
    if not ranked:
        frequent = sum(c >= min_count for c in counts.values())
        if allowed is not None and frequent:
            raise OptionError(
                f"none of the corpus's {frequent:,} words that occur «min_count» times is a word of «init_vectors» "
                "(words match exactly, case included); pass vectors for this corpus's words"
            )
        raise OptionError("the corpus has no word that occurs «min_count» times; use a larger corpus")
    return [w for _, w in ranked], [c for c, _ in ranked]


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, bytes))


def make_pairs(
    sentences: Iterable[Sequence[str]],
    vocab: list[str],
    counts: list[int],
    window: int,
    subsample: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """All (center, context) index pairs within ``window`` after Mikolov's subsampling of frequent words."""
    index = {w: i for i, w in enumerate(vocab)}
    freq = np.asarray(counts, dtype=np.float64) / sum(counts)
    keep = np.ones(len(vocab)) if subsample <= 0 else np.minimum(1.0, np.sqrt(subsample / freq) + subsample / freq)
    kept = []
    for sentence in sentences:
        ids = np.fromiter((index[w] for w in sentence if w in index), dtype=np.int64)
        kept.append(ids[rng.random(len(ids)) < keep[ids]])
    lengths = np.array([len(ids) for ids in kept], dtype=np.int64)
    reach = np.minimum(np.maximum(lengths - 1, 0), min(window, 1 << 40))  # offsets that fit in each sentence
    check_pairs_memory(int(np.sum(reach * (2 * lengths - reach - 1))), window)  # 2 * sum of (length - offset)
    centers, contexts = [], []
    for ids in kept:
        for offset in range(1, window + 1):
            if len(ids) <= offset:
                break
            centers += [ids[:-offset], ids[offset:]]
            contexts += [ids[offset:], ids[:-offset]]
    if not centers:
        known = sum(sum(w in index for w in sentence) for sentence in sentences)
        paired = any(sum(w in index for w in sentence) > 1 for sentence in sentences)  # without subsampling
        if paired and int(lengths.sum()) < known:  # subsampling took the words that would have paired
            raise OptionError(
                f"the corpus yields no word pairs: subsampling frequent words («subsample» {subsample:g}) kept "
                f"{int(lengths.sum()):,} of its {known:,} words; lower «subsample» (0 keeps every word) or use a "
                "longer corpus"
            )
        if not paired:
            raise OptionError(
                "the corpus yields no word pairs: no line holds two words of the vocabulary; use a longer corpus"
            )
        raise OptionError("the corpus yields no word pairs; use a longer corpus or a larger «window»")
    return np.concatenate(centers).astype(np.int32), np.concatenate(contexts).astype(np.int32)


def skipgram_model(vocab_size: int, dim: int, num_pairs: int, negatives: int, device: Any = "cpu"):
    """The Pyro model; called as ``model(center, context, noise, subsample)`` (what the trainer fits)."""
    import pyro
    import pyro.distributions as dist
    import torch

    def model(center, context, noise, subsample):
        prior = dist.Normal(torch.zeros(vocab_size, dim, device=device), 1.0).to_event(2)
        words = pyro.sample("word_vectors", prior)
        ctx = pyro.sample("context_vectors", prior)
        with pyro.plate("pairs", num_pairs, subsample=subsample):
            targets = torch.cat([context[:, None], noise], dim=1)  # (batch, 1 + negatives)
            logits = (words[center][:, None, :] * ctx[targets]).sum(-1)
            labels = torch.zeros_like(logits)
            labels[:, 0] = 1.0
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=labels)

    return model


def param_store_state(result: TrainResult) -> dict[str, Any]:
    """AutoNormal's param-store state for ``result`` (``pyro.get_param_store().set_state(...)``; then
    ``AutoNormal(skipgram_model(...))`` uses these values): unconstrained tensors + constraints."""
    import torch
    from pyro.distributions import constraints

    params, kinds = {}, {}
    for site, (loc, raw) in result.params.items():
        params[f"AutoNormal.locs.{site}"] = torch.from_numpy(np.ascontiguousarray(loc))
        params[f"AutoNormal.scales.{site}"] = torch.from_numpy(np.ascontiguousarray(raw))
        kinds[f"AutoNormal.locs.{site}"] = constraints.real
        kinds[f"AutoNormal.scales.{site}"] = constraints.softplus_positive
    return {"params": params, "constraints": kinds}


def save_posterior(path: str | os.PathLike, result: TrainResult, force: bool = True) -> None:
    """Write AutoNormal's param store for the result (as ``pyro.get_param_store().save`` does) plus
    its sites' ``supports`` and the ``vocab`` list into one .pt file (``pyro.get_param_store().load``
    refuses the two extra keys: see :mod:`.ptfile`), which ``bnncompress pack`` reads: torch's zip format,
    written without importing torch (:mod:`.ptfile`).

    Example:
        >>> save_posterior("skipgram.pt", train_skipgram(sentences, SkipGramConfig()))  # doctest: +SKIP
    """
    params, kinds = {}, {}
    for site, (loc, raw) in result.params.items():
        params[f"AutoNormal.locs.{site}"], kinds[f"AutoNormal.locs.{site}"] = loc, "real"
        params[f"AutoNormal.scales.{site}"], kinds[f"AutoNormal.scales.{site}"] = raw, "softplus_positive"
    with atomic_output(path, force=force) as tmp:
        save_param_store(tmp, params, kinds, vocab=list(result.vocab), real_sites=list(result.params))
