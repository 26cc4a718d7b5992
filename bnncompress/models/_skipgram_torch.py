"""The fast Bayesian skip-gram step in torch, for ``device="cuda"`` (:mod:`.trainer` has the CPU one).

The same estimator and update as the numba kernels (see :mod:`.trainer`): the rows a minibatch
touches are sampled once per step and scored (autograd on those rows only), the KL to N(0, 1)
is analytic for every row, and one dense Adam step moves ``loc`` and ``rho = log(scale)``.
Results follow the seed on a given device, but are not bit-identical to the CPU trainer's.
Kept in its own module so that importing bnncompress does not import torch.
"""

import math

import numpy as np
import torch

SITES = ("word_vectors", "context_vectors")


class TorchTrainer:
    """The tables on a torch device and the steps over them (interface of :class:`.trainer.Trainer`)."""

    def __init__(self, vocab_size: int, config, rng: np.random.Generator, counts: np.ndarray, device: str):
        self.config, self.device = config, torch.device(device)
        self.gen = torch.Generator(self.device).manual_seed(int(rng.integers(1 << 62)))
        v, d = vocab_size, config.dim
        init = {s: (0.1 * rng.standard_normal((v, d))).astype(np.float32) for s in SITES}
        self.loc = {s: torch.from_numpy(init[s]).to(self.device) for s in SITES}
        self.rho = {s: torch.full((v, d), math.log(config.init_scale), device=self.device) for s in SITES}
        self.moments = {s: torch.zeros((4, v, d), device=self.device) for s in SITES}
        self.fit_loc = {s: True for s in SITES}
        self.noise_weights = torch.tensor(counts**0.75, dtype=torch.float32, device=self.device)
        self.step_count = 0

    def start_at(self, vectors: np.ndarray) -> None:
        self.loc["word_vectors"].copy_(torch.from_numpy(vectors))
        self.fit_loc["word_vectors"] = bool(self.config.refine_means)

    def step(self, center: np.ndarray, context: np.ndarray, num_pairs: int, lr: float) -> float:
        """One Adam step on a minibatch; returns its estimate of the negative ELBO per pair."""
        b, k = len(center), self.config.negatives
        center_t = torch.from_numpy(np.asarray(center, np.int64)).to(self.device)
        context_t = torch.from_numpy(np.asarray(context, np.int64)).to(self.device)
        if k:
            noise = torch.multinomial(self.noise_weights, b * k, replacement=True, generator=self.gen).view(b, k)
        else:
            noise = torch.zeros((b, 0), dtype=torch.long, device=self.device)
        targets = torch.cat([context_t[:, None], noise], dim=1)
        grads, data = self._data_term(center_t, targets, num_pairs / b)
        self.step_count += 1
        kl = sum(self._adam(site, *grads[site], lr) for site in SITES)
        return (data + kl) / num_pairs

    def _data_term(self, center, targets, scale: float):
        rows, slots, eps, sampled = {}, {}, {}, {}
        for site, index in (("word_vectors", center), ("context_vectors", targets)):
            rows[site], slots[site] = torch.unique(index, return_inverse=True)
            eps[site] = torch.randn(len(rows[site]), self.config.dim, device=self.device, generator=self.gen)
            value = self.loc[site][rows[site]] + self.rho[site][rows[site]].exp() * eps[site]
            sampled[site] = value.requires_grad_()
        words = sampled["word_vectors"][slots["word_vectors"]]
        logits = (words[:, None, :] * sampled["context_vectors"][slots["context_vectors"]]).sum(-1)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        data = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum") * scale
        g = torch.autograd.grad(data, [sampled[s] for s in SITES])
        return {s: (rows[s], eps[s], g[i]) for i, s in enumerate(SITES)}, float(data.detach())

    @torch.no_grad()
    def _adam(self, site: str, rows, eps, grad, lr: float) -> float:
        """Adam on every row: data gradient (touched rows) + KL(N(loc, scale²) || N(0, 1))'s."""
        loc, rho = self.loc[site], self.rho[site]
        scale = rho.exp()
        kl = float((0.5 * (loc.square() + scale.square() - 1.0) - rho).sum())
        g_loc = loc.clone().index_add_(0, rows, grad)
        g_rho = (scale.square() - 1.0).index_add_(0, rows, grad * eps * scale[rows])
        b1, b2 = 0.9, 0.999
        step = lr * math.sqrt(1.0 - b2**self.step_count) / (1.0 - b1**self.step_count)
        m = self.moments[site]
        for value, g, first, second in ((loc, g_loc, m[0], m[1]), (rho, g_rho, m[2], m[3])):
            if value is loc and not self.fit_loc[site]:
                continue
            first.mul_(b1).add_(g, alpha=1.0 - b1)
            second.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            value.addcdiv_(first, second.sqrt().add_(1e-8), value=-step)
        return kl

    def posterior(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``site -> (loc, log scale)`` as float32 arrays on the CPU."""
        return {s: (self.loc[s].cpu().numpy(), self.rho[s].cpu().numpy()) for s in SITES}
