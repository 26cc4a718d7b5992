"""numba kernels of the fast Bayesian skip-gram trainer (:mod:`.trainer`).

One training step: the rows the minibatch touches get a slot (:func:`touch`); their sampled
values ``loc + scale * eps`` are scored on the minibatch's pairs and the data term's gradient
lands in per-slot buffers (:func:`pair_gradients`: two fixed halves of the pairs, summed in
order, so results do not depend on the thread count); then one fused pass over every row adds
the analytic gradient of KL(q || N(0, 1)) and takes an Adam step (:func:`adam_step`). The scale
is optimised as ``rho = log(scale)`` and ``scale = exp(rho)`` is kept beside it, so sampling
needs no transcendental function. Kept in its own module so that importing bnncompress does not
import numba.
"""

import numba
import numpy as np
from numba import prange

_FAST = {"cache": True, "nogil": True, "fastmath": True}


@numba.njit(cache=True, nogil=True)
def touch(indices, slot, rows, count):  # pragma: no cover - compiled
    """Give every row in ``indices`` a slot (``slot[row]``, -1 = none yet); ``rows[:count]`` lists the
    touched rows in slot order; returns the new count and each index's slot."""
    out = np.empty(indices.shape, np.int32)
    flat = indices.reshape(-1)
    flat_out = out.reshape(-1)
    for i in range(flat.shape[0]):
        r = flat[i]
        s = slot[r]
        if s < 0:
            s = count
            slot[r] = s
            rows[s] = r
            count += 1
        flat_out[i] = s
    return count, out


@numba.njit(cache=True, nogil=True)
def untouch(slot, rows, count):  # pragma: no cover - compiled
    for i in range(count):
        slot[rows[i]] = -1


@numba.njit(parallel=True, **_FAST)
def sample_rows(loc, scale, rows, eps, out):  # pragma: no cover - compiled
    """out[s] = loc[rows[s]] + scale[rows[s]] * eps[s]."""
    for s in prange(out.shape[0]):
        r = rows[s]
        for j in range(out.shape[1]):
            out[s, j] = loc[r, j] + scale[r, j] * eps[s, j]


@numba.njit(**_FAST)
def _pairs(w_slot, c_slot, words, contexts, lo, hi, scale, gw, gc):  # pragma: no cover - compiled
    """The minus-log-likelihood of pairs lo:hi (column 0 of c_slot: the context, label 1; the others:
    noise words, label 0), times ``scale``; its gradient goes to gw / gc (by slot)."""
    d = words.shape[1]
    loss = 0.0
    for p in range(lo, hi):
        a = w_slot[p]
        for k in range(c_slot.shape[1]):
            c = c_slot[p, k]
            z = np.float32(0.0)
            for j in range(d):
                z += words[a, j] * contexts[c, j]
            label = 1.0 if k == 0 else 0.0
            # -log sigmoid(z) for label 1, -log(1 - sigmoid(z)) for 0, stably (in float64: a
            # float32 exp(-|z|) turns subnormal from |z| > 87, and subnormal arithmetic is ~100x slower)
            zd = np.float64(z)
            e = np.exp(-abs(zd))
            loss += max(zd, 0.0) - zd * label + np.log1p(e)
            sig = 1.0 / (1.0 + e) if zd >= 0 else e / (1.0 + e)
            gd = scale * (sig - label)
            if abs(gd) < 1e-30:  # a saturated pair: no gradient (and no subnormal float32 products)
                continue
            g = np.float32(gd)
            for j in range(d):
                gw[a, j] += g * contexts[c, j]
                gc[c, j] += g * words[a, j]
    return loss * scale


@numba.njit(parallel=True, **_FAST)
def pair_gradients(w_slot, c_slot, words, contexts, scale, gw, gc, n_w, n_c):  # pragma: no cover - compiled
    """Data-term gradients of all pairs in two fixed halves (each its own buffer: gw[h], gc[h], of
    which the first n_w / n_c slots are used), then summed in order into gw[0], gc[0]: the same
    bits with one thread or two. Returns the data term (minus log-likelihood, times ``scale``)."""
    n = w_slot.shape[0]
    half = (n + 1) // 2
    losses = np.zeros(2)
    for h in prange(2):
        gw[h, :n_w, :] = 0.0
        gc[h, :n_c, :] = 0.0
        losses[h] = _pairs(w_slot, c_slot, words, contexts, h * half, min(n, (h + 1) * half), scale, gw[h], gc[h])
    for s in prange(n_w):
        for j in range(gw.shape[2]):
            gw[0, s, j] += gw[1, s, j]
    for s in prange(n_c):
        for j in range(gc.shape[2]):
            gc[0, s, j] += gc[1, s, j]
    return losses[0] + losses[1]


@numba.njit(parallel=True, **_FAST)
def adam_step(loc, rho, scale, moments, slot, eps, grad, step, lr, beta1, beta2, tiny, fit_loc):  # pragma: no cover
    """One Adam step on every row of (loc, rho = log scale): gradient = the data term's (touched
    rows: grad[slot] w.r.t. the sampled value loc + scale * eps) plus KL(N(loc, scale²) || N(0, 1))'s
    (``loc`` and ``scale² - 1``); ``scale`` is refreshed. ``moments`` = (m_loc, v_loc, m_rho, v_rho).
    ``fit_loc`` False keeps the means. Returns the KL after the step's start values."""
    rows, d = loc.shape
    m_loc, v_loc, m_rho, v_rho = moments[0], moments[1], moments[2], moments[3]
    a = np.float32(lr * np.sqrt(1.0 - beta2**step) / (1.0 - beta1**step))
    # fixed means: a step of 0 (mu - 0 * x == mu) rather than a branch in the loop, which LLVM
    # compiles 3-4x slower than the full update
    a_loc = a if fit_loc else np.float32(0.0)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    kl = np.zeros(rows)
    for r in prange(rows):
        s_r = slot[r]
        acc = 0.0
        for j in range(d):
            mu = loc[r, j]
            s = scale[r, j]
            acc += 0.5 * (mu * mu + s * s - 1.0) - rho[r, j]
            g_mu = mu
            g_rho = s * s - np.float32(1.0)
            if s_r >= 0:
                g = grad[s_r, j]
                g_mu += g
                g_rho += g * eps[s_r, j] * s
            m_loc[r, j] = b1 * m_loc[r, j] + c1 * g_mu
            v_loc[r, j] = b2 * v_loc[r, j] + c2 * g_mu * g_mu
            loc[r, j] = mu - a_loc * m_loc[r, j] / (np.sqrt(v_loc[r, j]) + tiny)
            m_rho[r, j] = b1 * m_rho[r, j] + c1 * g_rho
            v_rho[r, j] = b2 * v_rho[r, j] + c2 * g_rho * g_rho
            x = rho[r, j] - a * m_rho[r, j] / (np.sqrt(v_rho[r, j]) + tiny)
            rho[r, j] = x
            scale[r, j] = np.exp(x)
        kl[r] = acc
    return kl.sum()
