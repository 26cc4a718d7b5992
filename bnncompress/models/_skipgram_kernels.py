"""numba kernels of the fast Bayesian skip-gram trainer (:mod:`.trainer`).

One training step: the rows the minibatch touches get a slot (:func:`touch`); their sampled
values ``loc + scale * eps`` are scored on the minibatch's pairs and the data term's gradient
lands in per-slot buffers (:func:`pair_gradients`: two fixed halves of the pairs, summed in
order, so results do not depend on the thread count); then one fused pass over every row adds
the analytic gradient of KL(q || N(0, 1)) and takes an Adam step (:func:`adam_step`). The scale
is optimised as ``rho = log(scale)`` and ``scale = exp(rho)`` is kept beside it, so sampling
needs no transcendental function; the Adam pass updates it as scale * exp(change of rho) by a
polynomial (no exp per entry), exactly every few steps. The touched rows' eps come from
:func:`sample_rows` itself: a ziggurat over a hash of (key, row, column), the same on any number
of threads. Kept in its own module so that importing bnncompress does not
import numba.
"""

import numpy as np

from .._ans import _parallel, numba, prange, serial_twin  # (numba imported after its environment is checked)

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


def _ziggurat_tables():
    """Marsaglia & Tsang's (2000) 128-layer ziggurat for N(0, 1): thresholds ``kn`` (on 32-bit
    signed integers), widths ``wn`` and densities ``fn`` of the layers."""
    m1, dn, vn = 2.0**31, 3.442619855899, 9.91256303526217e-3
    tn, q = dn, vn / np.exp(-0.5 * dn * dn)
    kn, wn, fn = np.zeros(128, np.int64), np.zeros(128), np.zeros(128)
    kn[0], wn[0], wn[127] = int(dn / q * m1), q / m1, dn / m1
    fn[0], fn[127] = 1.0, np.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = np.sqrt(-2.0 * np.log(vn / dn + np.exp(-0.5 * dn * dn)))
        kn[i + 1], tn = int(dn / tn * m1), dn
        fn[i], wn[i] = np.exp(-0.5 * dn * dn), dn / m1
    return kn, wn, fn


_KN, _WN, _FN = _ziggurat_tables()
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ZIG_R = 3.442619855899


@numba.njit(inline="always")
def _mix(z):  # pragma: no cover - compiled
    """SplitMix64's finaliser: a 64-bit hash (a counter-based generator: hash of key + counter)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit
def _uniform(state):  # pragma: no cover - compiled
    """The next state and a uniform in (0, 1) from it."""
    state = state + _GOLDEN
    return state, (np.float64(_mix(state) >> np.uint64(11)) + 0.5) * 2.0**-53


@numba.njit
def _normal_tail(hz, iz, state):  # pragma: no cover - compiled
    """The ziggurat's rare slow path (about 1 draw in 80): wedges and the tail, exactly."""
    while True:
        x = hz * _WN[iz]
        if iz == 0:  # the tail beyond r (Marsaglia's method)
            while True:
                state, u1 = _uniform(state)
                state, u2 = _uniform(state)
                x = -np.log(u1) / _ZIG_R
                if -2.0 * np.log(u2) >= x * x:
                    return _ZIG_R + x if hz > 0 else -_ZIG_R - x
        state, u = _uniform(state)
        if _FN[iz] + u * (_FN[iz - 1] - _FN[iz]) < np.exp(-0.5 * x * x):
            return x
        state = state + _GOLDEN
        h = _mix(state)
        iz = np.int64(h & np.uint64(127))
        hz = np.int64(h >> np.uint64(32)) - 2147483648
        if abs(hz) < _KN[iz]:
            return hz * _WN[iz]


@numba.njit(inline="always")
def normal_of_hash(h):  # pragma: no cover - compiled
    """A N(0, 1) draw from a 64-bit hash (ziggurat: layer from the low 7 bits, value from the high
    32, so the two are independent); further bits, if needed, from hashes of ``h``'s successors."""
    iz = np.int64(h & np.uint64(127))
    hz = np.int64(h >> np.uint64(32)) - 2147483648
    if abs(hz) < _KN[iz]:
        return hz * _WN[iz]
    return _normal_tail(hz, iz, h)


@numba.njit(parallel=True, **_FAST)
def sample_rows(loc, scale, rows, key, eps, out):  # pragma: no cover - compiled
    """eps[s] ~ N(0, I), a function of (key, rows[s], column) only (counter-based: the same draws
    on any number of threads); out[s] = loc[rows[s]] + scale[rows[s]] * eps[s]."""
    d = out.shape[1]
    for s in prange(out.shape[0]):
        r = rows[s]
        base = key + np.uint64(r) * np.uint64(d) * _GOLDEN
        for j in range(d):
            e = np.float32(normal_of_hash(_mix(base + np.uint64(j + 1) * _GOLDEN)))
            eps[s, j] = e
            out[s, j] = loc[r, j] + scale[r, j] * e


@numba.njit(parallel=True, **_FAST)
def standard_normals(key, rows, d):  # pragma: no cover - compiled
    """The eps :func:`sample_rows` draws for ``rows`` (for tests)."""
    out = np.empty((rows.shape[0], d), np.float64)
    for s in prange(rows.shape[0]):
        base = key + np.uint64(rows[s]) * np.uint64(d) * _GOLDEN
        for j in range(d):
            out[s, j] = normal_of_hash(_mix(base + np.uint64(j + 1) * _GOLDEN))
    return out


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


# Adam moves rho by at most a * (1 - beta1) / sqrt((1 - beta2)(1 - beta1^2 / beta2)) per step (7.3 a for
# the default betas); below this step size a, exp(delta) by its degree-6 Taylor polynomial is exact to
# float32 rounding (|delta| <= 0.25: error < 2e-8), and 3x cheaper than an exp per entry
_TAYLOR_MAX_STEP = 0.034


@numba.njit(parallel=True, **_FAST)
def adam_step(  # pragma: no cover - compiled
    loc, rho, scale, moments, slot, eps, grad, zero, step, lr, beta1, beta2, tiny, fit_loc, exact
):
    """One Adam step on every row of (loc, rho = log scale): gradient = the data term's (touched
    rows: grad[slot] w.r.t. the sampled value loc + scale * eps) plus KL(N(loc, scale²) || N(0, 1))'s
    (``loc`` and ``scale² - 1``; untouched rows read grad[zero] and eps[zero], all zeros). ``scale``
    is refreshed as scale * exp(change of rho) by a polynomial (the same, float32 rounding apart),
    then as exp(rho) if ``exact`` or the step is large.
    ``moments`` = (m_loc, v_loc, m_rho, v_rho). ``fit_loc`` False keeps the means. Returns the KL
    after the step's start values."""
    rows, d = loc.shape
    m_loc, v_loc, m_rho, v_rho = moments[0], moments[1], moments[2], moments[3]
    a = np.float32(lr * np.sqrt(1.0 - beta2**step) / (1.0 - beta1**step))
    exact = exact or a > _TAYLOR_MAX_STEP or beta1 != 0.9 or beta2 != 0.999
    # fixed means: a step of 0 (mu - 0 * x == mu) rather than a branch in the loop, which LLVM
    # compiles 3-4x slower than the full update
    a_loc = a if fit_loc else np.float32(0.0)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    one, half, i3 = np.float32(1.0), np.float32(0.5), np.float32(1.0 / 3.0)
    i4, i5, i6 = np.float32(0.25), np.float32(0.2), np.float32(1.0 / 6.0)
    kl = np.zeros(rows)
    for r in prange(rows):
        s_r = slot[r] if slot[r] >= 0 else zero  # untouched: a zero row of grad (no branch in the loop)
        acc = 0.0
        for j in range(d):
            mu = loc[r, j]
            s = scale[r, j]
            acc += 0.5 * (mu * mu + s * s - 1.0) - rho[r, j]
            g = grad[s_r, j]
            g_mu = mu + g
            g_rho = s * s - one + g * eps[s_r, j] * s
            m_loc[r, j] = b1 * m_loc[r, j] + c1 * g_mu
            v_loc[r, j] = b2 * v_loc[r, j] + c2 * g_mu * g_mu
            loc[r, j] = mu - a_loc * m_loc[r, j] / (np.sqrt(v_loc[r, j]) + tiny)
            m_rho[r, j] = b1 * m_rho[r, j] + c1 * g_rho
            v_rho[r, j] = b2 * v_rho[r, j] + c2 * g_rho * g_rho
            t = a * m_rho[r, j] / (np.sqrt(v_rho[r, j]) + tiny)
            rho[r, j] -= t
            t = -t
            p = one + t * i5 * (one + t * i6)
            p = one + t * half * (one + t * i3 * (one + t * i4 * p))
            scale[r, j] = s * (one + t * p)
        if exact:
            for j in range(d):
                scale[r, j] = np.exp(rho[r, j])
        kl[r] = acc
    return kl.sum()


_PARALLEL = (sample_rows, pair_gradients, adam_step)
_SERIAL = {kernel: serial_twin(kernel, f"{kernel.__name__}_serial", fastmath=True) for kernel in _PARALLEL}


def run(kernel, *args):
    """``kernel(*args)``, or its serial twin where bnncompress runs no parallel kernel (a forked child, a
    thread while another is in one, one numba thread): :func:`bnncompress._ans._parallel`."""
    return _parallel(kernel, _SERIAL[kernel])(*args)
