"""A Bayesian skip-gram word-embedding model in Pyro, and its trainer.

Barkan (2017) style: word vectors U and context vectors C (V x D each) with prior N(0, 1);
each observed (center, context) pair and its ``negatives`` noise words contribute
Bernoulli likelihoods with logits U[center] . C[word] (label 1 for the context, 0 for the
noise words). The likelihood plate runs over all pairs of the corpus and is subsampled
into minibatches (``pyro.plate(..., subsample=...)``), so the ELBO is unbiased.
Trained with an AutoNormal guide: the posterior is N(loc, scale²) per weight.

Example:
    >>> cfg = SkipGramConfig(dim=4, vocab_size=20, epochs=1, batch_size=64)
    >>> words = "the cat sat on the mat the dog sat on the log".split() * 30
    >>> result = train_skipgram([words], cfg)
    >>> result.vocab[:2], tuple(result.guide.locs.word_vectors.shape)
    (['the', 'on'], (7, 4))
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..files import atomic_output


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
    init_scale: float = 0.05
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        for name in ("dim", "vocab_size", "min_count", "window", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise OptionError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.negatives < 0 or not self.lr > 0 or not self.init_scale > 0 or self.subsample < 0:
            raise OptionError("--negatives and --subsample must be >= 0, --lr and --init-scale > 0")


@dataclass
class TrainResult:
    """The trained guide, its vocabulary (most frequent first) and the loss per epoch."""

    guide: object
    vocab: list[str]
    counts: list[int]
    losses: list[float] = field(default_factory=list)
    num_pairs: int = 0


def read_corpus(path: str | os.PathLike) -> list[list[str]]:
    """Read a text file into token lists, one per line: lowercased alphabetic tokens (gensim)."""
    from gensim.utils import tokenize

    path = Path(path)
    if not path.exists():
        raise OptionError(f"corpus file '{path}' does not exist; pass a UTF-8 text file")
    if not path.is_file():
        raise OptionError(f"corpus '{path}' is not a regular file; pass a UTF-8 text file")
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [list(tokenize(line, lowercase=True)) for line in fh]


def build_vocab(sentences: Iterable[Sequence[str]], vocab_size: int, min_count: int) -> tuple[list[str], list[int]]:
    """The ``vocab_size`` most frequent words with at least ``min_count`` occurrences,
    most frequent first (ties alphabetical), so gensim's ``restrict_vocab`` keeps the top words."""
    counts = Counter(w for s in sentences for w in s)
    ranked = sorted(((c, w) for w, c in counts.items() if c >= min_count), key=lambda cw: (-cw[0], cw[1]))
    ranked = ranked[:vocab_size]
    if not ranked:
        raise OptionError("the corpus has no word that occurs --min-count times; use a larger corpus")
    return [w for _, w in ranked], [c for c, _ in ranked]


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
    centers, contexts = [], []
    for sentence in sentences:
        ids = np.fromiter((index[w] for w in sentence if w in index), dtype=np.int64)
        ids = ids[rng.random(len(ids)) < keep[ids]]
        for offset in range(1, window + 1):
            if len(ids) <= offset:
                break
            centers += [ids[:-offset], ids[offset:]]
            contexts += [ids[offset:], ids[:-offset]]
    if not centers:
        raise OptionError("the corpus yields no word pairs; use a longer corpus or a larger --window")
    return np.concatenate(centers), np.concatenate(contexts)


def skipgram_model(vocab_size: int, dim: int, num_pairs: int, negatives: int, device):
    """The Pyro model; called as ``model(center, context, noise, subsample)``."""
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


def train_skipgram(
    sentences: Sequence[Sequence[str]],
    config: SkipGramConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fit the Bayesian skip-gram with AutoNormal; ``progress(step, total_steps, loss)``."""
    import pyro
    import pyro.optim
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal, init_to_value

    config.validate()
    device = torch.device(resolve_device(config.device))
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    pyro.set_rng_seed(config.seed)
    vocab, counts = build_vocab(sentences, config.vocab_size, config.min_count)
    centers_np, contexts_np = make_pairs(sentences, vocab, counts, config.window, config.subsample, rng)
    centers = torch.from_numpy(centers_np).to(device)
    contexts = torch.from_numpy(contexts_np).to(device)
    n_pairs, v, d = len(centers), len(vocab), config.dim
    noise_dist = torch.tensor(np.asarray(counts, dtype=np.float64) ** 0.75, dtype=torch.float32, device=device)

    pyro.clear_param_store()
    model = skipgram_model(v, d, n_pairs, config.negatives, device)
    init = {name: 0.1 * torch.randn(v, d, device=device) for name in ("word_vectors", "context_vectors")}
    guide = AutoNormal(model, init_loc_fn=init_to_value(values=init), init_scale=config.init_scale)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": config.lr}), Trace_ELBO())

    batch = min(config.batch_size, n_pairs)
    steps_per_epoch = math.ceil(n_pairs / batch)
    total = steps_per_epoch * config.epochs
    losses: list[float] = []
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n_pairs, device=device)
        epoch_loss = 0.0
        for start in range(0, n_pairs, batch):
            idx = order[start : start + batch]
            noise = (
                torch.multinomial(noise_dist, len(idx) * config.negatives, replacement=True).view(len(idx), -1)
                if config.negatives
                else torch.zeros(len(idx), 0, dtype=torch.long, device=device)
            )
            loss = svi.step(centers[idx], contexts[idx], noise, idx)
            epoch_loss += loss
            step += 1
            if progress:
                progress(step, total, loss / n_pairs)
        losses.append(epoch_loss / steps_per_epoch / n_pairs)
    return TrainResult(guide, vocab, counts, losses, n_pairs)


def save_posterior(path: str | os.PathLike, result: TrainResult) -> None:
    """Write the Pyro param store (unconstrained values + constraints, as
    ``pyro.get_param_store().save`` does) plus the ``vocab`` list into one .pt file."""
    import pyro
    import torch

    state = pyro.get_param_store().get_state()
    payload = {
        "params": {k: v.detach().cpu() for k, v in state["params"].items()},
        "constraints": state["constraints"],
        "vocab": list(result.vocab),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
