"""A fast trainer for the Bayesian skip-gram (:mod:`.skipgram`): word2vec-like speed on the CPU.

It maximises the same ELBO as ``SVI(model, AutoNormal(model), Adam, Trace_ELBO)`` with B pairs
per step,

    ELBO ~ (N / B) sum_{pairs in batch} E_q[log p(pair | U, C)] - KL(q || N(0, 1)),

but never samples or scores whole tables. The data term needs only the rows the minibatch
touches (at most B (1 + K)): those get one eps per row per step, are sampled as
``loc + scale * eps`` and scored, in O(B (1 + K) D). The scale is optimised as
``rho = log(scale)`` (AutoNormal's softplus behaves the same for the small scales of a trained
posterior) and saved as AutoNormal's unconstrained ``softplus^-1(scale)``. The KL term is analytic for every
row, computed in the fused numba pass that also takes the Adam step, so every step is an
unbiased estimate of the full ELBO (tests compare it with Trace_ELBO on the Pyro model), and rows a
minibatch does not touch are still pulled towards the prior every step, as Pyro's dense Adam
does. A sparse ("lazy") Adam would be O(B) there too, but would leave rare words at their
initial, overconfident scales: it moves a row by about ``lr`` per touch whatever the size of the
gradient. Word2vec's usual tricks are used: frequent-word subsampling (in
:func:`~.skipgram.make_pairs`), unigram^0.75 noise words, an optional linear learning-rate
decay. Pairs are processed in two fixed halves on the CPU's threads (numba), and eps is drawn
inside the parallel sampling kernel from a counter-based generator (a hash of a per-step key
from the seeded generator, the row and the column): the result depends on the seed, not on the
thread count. The step's fixed cost is the dense pass over the tables
(O(V D)): batches of 16,384 pairs or more amortise it.

Example:
    >>> from bnncompress.models import SkipGramConfig
    >>> cfg = SkipGramConfig(dim=4, vocab_size=20, epochs=1, batch_size=64)
    >>> words = "the cat sat on the mat the dog sat on the log".split() * 30
    >>> result = train_skipgram([words], cfg)
    >>> result.vocab[:2], result.params["word_vectors"][0].shape
    (['the', 'on'], (7, 4))
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..numbaenv import check_numba_environment
from .inputs import DIVERGED, check_memory, check_trained, start_vectors
from .skipgram import SkipGramConfig, TrainCallback, TrainProgress, TrainResult, build_vocab, make_pairs

SITES = ("word_vectors", "context_vectors")
_BETAS, _TINY = (0.9, 0.999), 1e-8
_EXACT_SCALE_EVERY = 64  # steps between exact refreshes of scale = exp(rho) (a polynomial update between)


def train_skipgram(
    sentences: Sequence[Sequence[str]],
    config: SkipGramConfig,
    progress: TrainCallback | None = None,
) -> TrainResult:
    """Fit the Bayesian skip-gram's mean-field posterior (see the module doc); ``progress`` gets
    a :class:`~.skipgram.TrainProgress` after every step."""
    config.validate()
    device = resolve_device(config.device)
    if device == "cpu":
        check_numba_environment(pack=False)
    if isinstance(sentences, Iterable) and not isinstance(sentences, Sequence):  # a generator: read it once
        sentences = list(sentences)
    rng = np.random.default_rng(config.seed)
    init = config.init_vectors
    allowed = None if init is None else set(init.index_to_key if hasattr(init, "index_to_key") else init)
    vocab, counts = build_vocab(sentences, config.vocab_size, config.min_count, allowed)
    centers, contexts = make_pairs(sentences, vocab, counts, config.window, config.subsample, rng)
    start = None if init is None else start_vectors(init, vocab, config.dim)
    check_memory(len(vocab), len(centers), config)
    if device == "cpu":
        trainer = Trainer(len(vocab), config, rng, np.asarray(counts, dtype=np.float64))
    else:
        from ._skipgram_torch import TorchTrainer  # torch: imported only to train on a GPU

        trainer = TorchTrainer(len(vocab), config, rng, np.asarray(counts, dtype=np.float64), device)
    if start is not None:
        trainer.start_at(start)
    losses, speed = fit(trainer, centers, contexts, config, rng, progress)
    posterior = trainer.posterior()
    check_trained(posterior)
    params = {s: (loc, _softplus_inverse(rho)) for s, (loc, rho) in posterior.items()}
    return TrainResult(params, vocab, counts, losses, len(centers), speed)


def fit(
    trainer: Any,
    centers: np.ndarray,
    contexts: np.ndarray,
    cfg: SkipGramConfig,
    rng: np.random.Generator,
    progress: TrainCallback | None,
) -> tuple[list[float], float]:
    """All epochs of ``trainer.step``; returns the loss per pair (negative ELBO / N) of each epoch and pairs/s.
    A step whose loss is not finite (the tables hold NaN or infinity) stops training: it diverged."""
    n = len(centers)
    batch = min(cfg.batch_size, n)
    total, losses = math.ceil(n / batch) * cfg.epochs, []
    started, done, speed = time.perf_counter(), 0, 0.0
    for epoch in range(cfg.epochs):
        order = rng.permutation(n)
        epoch_loss, epoch_pairs = 0.0, 0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            lr = cfg.lr * (1.0 - 0.9 * trainer.step_count / total) if cfg.lr_decay else cfg.lr
            loss = trainer.step(centers[idx], contexts[idx], n, lr)
            if not math.isfinite(loss):
                raise OptionError(DIVERGED)
            epoch_loss += loss * len(idx)
            epoch_pairs += len(idx)
            done += len(idx)
            speed = done / max(time.perf_counter() - started, 1e-9)
            if progress is not None:
                left = (n * cfg.epochs - done) / max(speed, 1e-9)
                last = start + batch >= n
                step = TrainProgress(
                    trainer.step_count, total, epoch + 1, cfg.epochs, epoch_loss / epoch_pairs, speed, left, last
                )
                progress(step)
        losses.append(epoch_loss / n)
    return losses, speed


class Trainer:
    """The tables (means, unconstrained scales, Adam moments) and the steps over them."""

    def __init__(self, vocab_size: int, config: SkipGramConfig, rng: np.random.Generator, counts: np.ndarray):
        self.config, self.rng = config, rng
        v, d = vocab_size, config.dim
        self.loc = {s: (0.1 * rng.standard_normal((v, d))).astype(np.float32) for s in SITES}
        self.rho = {s: np.full((v, d), np.log(config.init_scale), np.float32) for s in SITES}  # log scale
        self.scale = {s: np.exp(self.rho[s]) for s in SITES}
        self.moments = {s: np.zeros((4, v, d), np.float32) for s in SITES}  # Adam: m, v of loc and of rho
        self.fit_loc = {s: True for s in SITES}
        self.noise_prob, self.noise_alias = alias_table(counts**0.75)
        self.slot = {s: np.full(v, -1, np.int32) for s in SITES}
        self.rows = {s: np.zeros(v, np.int32) for s in SITES}
        self.step_count = 0
        self._gw = self._gc = np.zeros((2, 0, d), np.float32)
        self._eps = {s: np.empty((v + 1, d), np.float32) for s in SITES}  # the touched rows' eps, by slot
        self._sampled = {s: np.empty((v, d), np.float32) for s in SITES}

    def start_at(self, vectors: np.ndarray) -> None:
        """Pretrained word vectors as the means (kept fixed unless ``refine_means``)."""
        self.loc["word_vectors"][:] = vectors
        self.fit_loc["word_vectors"] = bool(self.config.refine_means)

    def step(self, center: np.ndarray, context: np.ndarray, num_pairs: int, lr: float) -> float:
        """One Adam step on a minibatch; returns its estimate of the negative ELBO per pair."""
        from . import _skipgram_kernels as k  # numba: imported when training starts

        targets = np.concatenate([context[:, None].astype(np.int32), self.noise(len(center))], axis=1)
        data, eps, (gw, gc) = self._data_term(center, targets, num_pairs)
        self.step_count += 1
        kl = 0.0
        for site, grad in (("word_vectors", gw[0]), ("context_vectors", gc[0])):
            zero = len(eps[site])  # untouched rows: grad[zero] (zeroed by pair_gradients) and eps[zero]
            self._eps[site][zero] = 0.0
            kl += k.run(
                k.adam_step,
                self.loc[site],
                self.rho[site],
                self.scale[site],
                self.moments[site],
                self.slot[site],
                self._eps[site],
                grad,
                zero,
                self.step_count,
                lr,
                _BETAS[0],
                _BETAS[1],
                _TINY,
                self.fit_loc[site],
                self.step_count % _EXACT_SCALE_EVERY == 0,
            )
        self._untouch(eps)
        return (data + kl) / num_pairs

    def negative_elbo(self, center: np.ndarray, context: np.ndarray, noise: np.ndarray, num_pairs: int) -> float:
        """One-sample estimate of the negative ELBO per pair on a minibatch with the given noise
        words (no step taken): what ``Trace_ELBO`` estimates for the Pyro model, KL analytic."""
        targets = np.concatenate([context[:, None], noise], axis=1).astype(np.int32)
        data, eps, _ = self._data_term(center, targets, num_pairs)
        self._untouch(eps)
        kl = sum(
            0.5 * float(np.sum(np.square(self.loc[s], dtype=np.float64) + np.square(self.scale[s], dtype=np.float64)))
            - 0.5 * self.loc[s].size
            - float(np.sum(self.rho[s], dtype=np.float64))
            for s in SITES
        )
        return (data + kl) / num_pairs

    def noise(self, count: int) -> np.ndarray:
        """``count`` x ``negatives`` noise words from unigram^0.75 (Walker's alias method, one uniform each)."""
        u = self.rng.random((count, self.config.negatives)) * len(self.noise_prob)
        i = u.astype(np.int32)
        return np.where(u - i < self.noise_prob[i], i, self.noise_alias[i])

    def _data_term(self, center: np.ndarray, targets: np.ndarray, num_pairs: int):
        """Slots for the touched rows, their sampled values and the data term's gradients (by slot)."""
        from . import _skipgram_kernels as k

        n_w, w_slot = k.touch(center.astype(np.int32), self.slot["word_vectors"], self.rows["word_vectors"], 0)
        n_c, c_slot = k.touch(targets, self.slot["context_vectors"], self.rows["context_vectors"], 0)
        eps, sampled = {}, {}
        for site, count in (("word_vectors", n_w), ("context_vectors", n_c)):
            eps[site], sampled[site] = self._eps[site][:count], self._sampled[site][:count]
            key = self.rng.integers(0, 2**64, dtype=np.uint64)  # eps: a hash of (key, row, column)
            k.run(
                k.sample_rows, self.loc[site], self.scale[site], self.rows[site][:count], key, eps[site], sampled[site]
            )
        gw, gc = self._buffers(n_w + 1, n_c + 1)  # one zero row beyond the touched rows: see step
        words, contexts = sampled["word_vectors"], sampled["context_vectors"]
        scale = num_pairs / len(center)
        data = k.run(k.pair_gradients, w_slot, c_slot, words, contexts, scale, gw, gc, n_w + 1, n_c + 1)
        return data, eps, (gw, gc)

    def _untouch(self, eps: dict[str, np.ndarray]) -> None:
        from . import _skipgram_kernels as k

        for site in SITES:
            k.untouch(self.slot[site], self.rows[site], len(eps[site]))

    def _buffers(self, n_w: int, n_c: int) -> tuple[np.ndarray, np.ndarray]:
        """Gradient buffers (two halves of the pairs, by slot), grown as needed and reused."""
        d = self.config.dim
        if self._gw.shape[1] < n_w or self._gc.shape[1] < n_c:
            self._gw = np.zeros((2, max(n_w, 2 * self._gw.shape[1], 1024), d), np.float32)
            self._gc = np.zeros((2, max(n_c, 2 * self._gc.shape[1], 1024), d), np.float32)
        return self._gw, self._gc

    def posterior(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``site -> (loc, log scale)``."""
        return {s: (self.loc[s].copy(), self.rho[s].copy()) for s in SITES}


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) for drawing index i with probability ~ weights[i]:
    draw i uniformly, keep it with probability ``prob[i]``, else take ``alias[i]``."""
    n = len(weights)
    q = np.asarray(weights, np.float64) * n / np.sum(weights)
    prob, alias = np.ones(n), np.arange(n, dtype=np.int32)
    small, large = [i for i in range(n) if q[i] < 1.0], [i for i in range(n) if q[i] >= 1.0]
    while small and large:
        s, big = small.pop(), large[-1]
        prob[s], alias[s] = q[s], big
        q[big] -= 1.0 - q[s]
        if q[big] < 1.0:
            small.append(large.pop())
    return prob, alias


def _softplus_inverse(rho: np.ndarray) -> np.ndarray:
    """x with softplus(x) = exp(rho), AutoNormal's unconstrained scale: log(expm1(s)) = s + log(-expm1(-s))."""
    s = np.exp(rho.astype(np.float64))
    return (s + np.log(-np.expm1(-s))).astype(np.float32)
