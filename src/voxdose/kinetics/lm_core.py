"""The per-voxel fitting maths, written once and compiled twice.

Imported normally, this module is compiled for the CPU (``numba.njit``, cached, without the
reference-counting runtime); :mod:`voxdose.kinetics.cuda_fit` executes a second copy of the
same file with ``numba.cuda.jit(device=True)`` injected as ``__voxdose_jit__``. Everything
here obeys the rules of both targets: ``math`` functions only, no allocation (callers pass
scratch arrays of fixed maximum size), no exceptions. The CPU driver (:func:`fit_block_cpu`,
at the end) and the CUDA kernel (``cuda_fit.py``) call the same :func:`fit_curve`: one
formula, two devices.

The models (table with units in :mod:`voxdose.kinetics.models`) are written once, in
:func:`model_terms`, as sums of exponential terms a(t) = sum_k c_k e^(-lambda_k t) with the
derivatives of c_k and lambda_k; the curve and its Jacobian (:func:`model_eval`,
:func:`terms_value`), the integral from t0 to infinity and its gradient
(:func:`tia_from_and_grad`, t0 = 0 for the TIA) and the per-voxel maps of
:mod:`voxdose.kinetics.after` (:func:`terms_map_cpu`) are loops over those terms.

Per curve (times t_i in h, samples y_i normalised by the curve's maximum):

* weights: uniform w_i = 1, or Poisson-like w_i = 1 / max(y_i, 1e-3) (variance proportional
  to counts, hence to activity);
* Levenberg-Marquardt on the weighted residual sum of squares RSS = sum w_i (y_i - f_i)^2 with
  Marquardt's diagonal scaling; bounds (amplitudes >= 0, lambda_lo <= lambda <= lambda_hi,
  uptake constant above the washout ones) by projection of every trial step, and an
  active set: a parameter on a bound whose gradient points outwards is held fixed;
* convergence: relative RSS decrease < 1e-10, relative step < 1e-8, or no step can lower
  RSS (a minimum, possibly on a bound); at most ``MAX_ITER`` iterations;
* uncertainty (delta method): Cov = s^2 (J^T W J)^-1 with s^2 = RSS / (n - k), and
  sigma_TIA^2 = g^T Cov g, g = dTIA/dtheta (analytic); parameters that end on a bound are
  treated as fixed (their rows and columns are dropped), so sigma is conditional on them;
* validity: converged, finite positive TIA, the fitted curve nowhere above
  ``MAX_OVERSHOOT`` x the largest sample between t = 0 and the last sample (no runaway
  extrapolation through a single sample), and a finite sigma_TIA of at most
  ``MAX_RELATIVE_SIGMA`` x the TIA: samples that do not identify the model (edge-of-field
  voxels such as [a, 0, b, 0, 0] gave sigma = 37 x to 1e14 x the TIA with status
  'converged') are not a determination, and the next model or the trapezoid is used (with
  sigma = TIA when every model was rejected this way);
* model choice (``auto``): AICc = n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1) over the valid fits of
  the models with enough points; ties go to the simpler model;
  otherwise the trapezoid + physical tail (status 2);
* trapezoid uncertainty: frame noise model sigma_i = noise_rel * y_i, propagated linearly
  through the trapezoid weights (the tail's weight is 1/lambda_tail).
"""

from __future__ import annotations

import math

import numba
import numpy as np

try:  # the CUDA copy of this module is executed with the decorator injected
    _jit = __voxdose_jit__  # type: ignore[name-defined]
except NameError:
    # No allocation happens in these functions (the CUDA rules), so the CPU copy is compiled
    # without Numba's reference-counting runtime: otherwise every call between them pays
    # atomic increments and decrements on its array arguments (5-15 % of a fit, measured).
    # ``_nrt`` is a Numba target option (numba.core.cpu.CPUTargetOptions); the drivers at
    # the end of the file, which allocate their scratch arrays, keep the runtime.
    _jit = numba.njit(cache=True, _nrt=False)
_njit_parallel = numba.njit(parallel=True, cache=True)
_njit_cpu = numba.njit(cache=True)  # CPU-only drivers (never device functions)
_prange = numba.prange

MAX_T = 16      # most time points per curve
MAX_P = 5       # most parameters of a model
MAX_ITER = 200
MAX_OVERSHOOT = 5.0  # fitted curve <= 5 x the largest sample before the last one
MAX_RELATIVE_SIGMA = 1.0  # a fit is a determination only when sigma_TIA <= 1 x its TIA
N_OUT = 8       # per-curve scalar outputs, see OUT_* below
OUT_TIA, OUT_SIGMA, OUT_LAM, OUT_MODEL, OUT_STATUS, OUT_AICC, OUT_RSS, OUT_R2 = range(8)

MIN_POINTS = (0, 4, 5, 6, 7)  # indexed by model id 1..4 (models.MIN_POINTS derives from it)
NPAR = (0, 2, 3, 4, 5)          # parameters of model id 1..4 (models.N_PARAMS)

# Term table: every fitted model is a sum of at most MAX_K exponential terms,
#     a(t) = sum_k c_k e^(-lambda_k t),   c_k = s b_k,
# (table in :mod:`.models`). :func:`model_terms` fills a scratch array (MAX_K, N_TCOL), row k
# for term k: b_k in column TB, c_k in TC, lambda_k (1/h) in TL, dc_k/dp_j in TDC + j and
# dlambda_k/dp_j in TDL + j (j < MAX_P, zero beyond the model's parameters); TE is scratch
# for e^(-lambda_k t). The common factor s is returned: values are evaluated as
# s * sum_k b_k (...), so the uptake-washout curve is A (e1 - e2), one rounding less than
# A e1 - A e2; derivatives use c_k.
MAX_K = 3       # most exponential terms of a model
TB, TC, TL, TE, TDC = 0, 1, 2, 3, 4
TDL = TDC + MAX_P
N_TCOL = TDL + MAX_P


@_jit
def model_terms(model, p, T, want_d):
    """The one definition of the fitted models (ids 1-4): their exponential terms
    b_k(p), c_k(p) = s(p) b_k(p), lambda_k(p) and, with ``want_d``, the derivatives
    dc_k/dp_j and dlambda_k/dp_j, written into the term table ``T``. Returns (K, s).
    Every other path (value, Jacobian, integrals, activity at t) loops over these terms."""
    if model == 1:  # mono: A e^(-l t); p = (A, l)
        nt, s = 1, p[0]
        T[0, TB], T[0, TL] = 1.0, p[1]
    elif model == 2:  # biexp: A (e^(-l1 t) - e^(-l2 t)); p = (A, l1, l2)
        nt, s = 2, p[0]
        T[0, TB], T[0, TL] = 1.0, p[1]
        T[1, TB], T[1, TL] = -1.0, p[2]
    elif model == 3:  # biexp_sum: A1 e^(-l1 t) + A2 e^(-l2 t); p = (A1, l1, A2, l2)
        nt, s = 2, 1.0
        T[0, TB], T[0, TL] = p[0], p[1]
        T[1, TB], T[1, TL] = p[2], p[3]
    else:  # triexp: A1 e^(-l1 t) + A2 e^(-l2 t) - (A1 + A2) e^(-l3 t); p = (A1, l1, A2, l2, l3)
        nt, s = 3, 1.0
        T[0, TB], T[0, TL] = p[0], p[1]
        T[1, TB], T[1, TL] = p[2], p[3]
        T[2, TB], T[2, TL] = -(p[0] + p[2]), p[4]
    for q in range(nt):
        T[q, TC] = s * T[q, TB]
    if want_d:
        for q in range(MAX_K):  # fixed bounds: compiles to plain stores
            for j in range(MAX_P):
                T[q, TDC + j] = 0.0
                T[q, TDL + j] = 0.0
        T[0, TDC + 0] = 1.0  # every model: c_1 = A or A1 (p_0), lambda_1 = p_1
        T[0, TDL + 1] = 1.0
        if model == 2:  # c_2 = -A, lambda_2 = p_2
            T[1, TDC + 0] = -1.0
            T[1, TDL + 2] = 1.0
        elif model >= 3:  # c_2 = A2 (p_2), lambda_2 = p_3
            T[1, TDC + 2] = 1.0
            T[1, TDL + 3] = 1.0
            if model == 4:  # c_3 = -(A1 + A2), lambda_3 = p_4
                T[2, TDC + 0] = -1.0
                T[2, TDC + 2] = -1.0
                T[2, TDL + 4] = 1.0
    return nt, s


@_jit
def is_amplitude(model, j):
    """Parameter j is an amplitude (bounded below by 0); the others are decay constants."""
    return j == 0 or (j == 2 and model >= 3)


@_jit
def model_eval(model, p, t, n, f, J, want_j, T):
    """f_i = a(t_i) and, with ``want_j``, J_ij = da(t_i)/dp_j, from the model's terms:
    d/dp_j [c e^(-l t)] = (dc/dp_j - t c dl/dp_j) e^(-l t)."""
    nt, s = model_terms(model, p, T, want_j)
    k = NPAR[model] if want_j else 0
    for i in range(n):
        ti = t[i]
        v = 0.0
        for q in range(nt):
            e = math.exp(-T[q, TL] * ti)
            T[q, TE] = e
            v += T[q, TB] * e
        f[i] = s * v
        for j in range(k):
            acc = 0.0
            for q in range(nt):
                acc += (T[q, TDC + j] - ti * T[q, TC] * T[q, TDL + j]) * T[q, TE]
            J[i, j] = acc


@_jit
def terms_value(nt, s, T, ti):
    """a(t) = s sum_k b_k e^(-lambda_k t) of a filled term table, at one time (h)."""
    v = 0.0
    for q in range(nt):
        v += T[q, TB] * math.exp(-T[q, TL] * ti)
    return s * v


@_jit
def tia_from_and_grad(model, p, t0, T, g, want_g):
    """Integral of a(t) from t0 (h) to infinity, s sum_k b_k e^(-lambda_k t0) / lambda_k,
    and, with ``want_g``, its gradient g_j = dTIA/dp_j,
    d/dp_j [c e^(-l t0) / l] = dc/dp_j e^(-l t0) / l - c e^(-l t0) (1 + l t0) / l^2 dl/dp_j.
    Terms with lambda_k <= 0 (no valid fit has one) are left out."""
    k = NPAR[model]
    nt, s = model_terms(model, p, T, want_g)
    if want_g:
        for j in range(k):
            g[j] = 0.0
    v = 0.0
    for q in range(nt):
        lam = T[q, TL]
        if not lam > 0.0:
            continue
        e = math.exp(-lam * t0)
        v += T[q, TB] * e / lam
        if want_g:
            h = T[q, TC] * e * (1.0 + lam * t0) / (lam * lam)
            for j in range(k):
                g[j] += T[q, TDC + j] * e / lam - h * T[q, TDL + j]
    return s * v


@_jit
def fmax(a, b):
    """max(a, b) of two floats, exactly as Python's builtin (Numba's CUDA target rejects the
    builtin on two floats)."""
    return b if b > a else a


@_jit
def fmin(a, b):
    """min(a, b) of two floats, exactly as Python's builtin (see :func:`fmax`)."""
    return b if b < a else a


@_jit
def clip(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)

@_jit
def project(model, p, lam_lo, lam_hi):
    """Put p inside the bounds; returns 1 if any bound is active."""
    at = False
    sep = 1.0 + 1e-6
    if model == 1:
        if p[0] < 0.0:
            p[0] = 0.0
        q = clip(p[1], lam_lo, lam_hi)
        at = at or q != p[1] or q == lam_lo
        p[1] = q
    elif model == 2:
        if p[0] < 0.0:
            p[0] = 0.0
        q = clip(p[1], lam_lo, lam_hi / sep)
        at = at or q != p[1] or q == lam_lo
        p[1] = q
        q = clip(p[2], p[1] * sep, lam_hi)
        at = at or q != p[2]
        p[2] = q
    elif model == 3:
        p[0] = fmax(p[0], 0.0)
        p[2] = fmax(p[2], 0.0)
        q = clip(p[1], lam_lo, lam_hi)
        at = at or q != p[1] or q == lam_lo
        p[1] = q
        q = clip(p[3], lam_lo, lam_hi)
        at = at or q != p[3] or q == lam_lo
        p[3] = q
    else:
        p[0] = fmax(p[0], 0.0)
        p[2] = fmax(p[2], 0.0)
        q = clip(p[1], lam_lo, lam_hi / sep)
        at = at or q != p[1] or q == lam_lo
        p[1] = q
        q = clip(p[3], lam_lo, lam_hi / sep)
        at = at or q != p[3] or q == lam_lo
        p[3] = q
        q = clip(p[4], fmax(p[1], p[3]) * sep, lam_hi)
        at = at or q != p[4]
        p[4] = q
    return 1 if at else 0

@_jit
def wrss(y, w, f, n):
    s = 0.0
    for i in range(n):
        r = y[i] - f[i]
        s += w[i] * r * r
    return s

@_jit
def chol_solve(L, k, b, x):
    for i in range(k):  # L z = b
        s = b[i]
        for m in range(i):
            s -= L[i, m] * x[m]
        x[i] = s / L[i, i]
    for i in range(k - 1, -1, -1):  # L^T x = z
        s = x[i]
        for m in range(i + 1, k):
            s -= L[m, i] * x[m]
        x[i] = s / L[i, i]

@_jit
def init_params(model, t, y, n, kpeak, lam_lo, lam_hi, p):
    # log-linear slope of the samples from the peak on (positive ones)
    sw = 0.0
    st = 0.0
    sy = 0.0
    stt = 0.0
    sty = 0.0
    m = 0
    for i in range(kpeak, n):
        if y[i] > 0.0:
            w = y[i]
            ly = math.log(y[i])
            sw += w
            st += w * t[i]
            sy += w * ly
            stt += w * t[i] * t[i]
            sty += w * t[i] * ly
            m += 1
    lam_t = lam_lo
    amp_t = y[n - 1] * math.exp(lam_lo * t[n - 1])
    if m >= 2:
        det = sw * stt - st * st
        if det > 0.0:
            slope = (sw * sty - st * sy) / det
            lam_t = clip(-slope, lam_lo, lam_hi * 0.1)
            amp_t = math.exp((sy + lam_t * st) / sw)
    tpk = t[kpeak]
    lam_up = clip(fmax(3.0 * lam_t, math.log(2.0) / fmax(0.5 * tpk, 0.05)), lam_t * 2.0,
                  lam_hi * 0.5)
    if model == 1:
        p[0] = amp_t
        p[1] = lam_t
    elif model == 2:
        p[1] = lam_t
        p[2] = lam_up
        den = math.exp(-lam_t * tpk) - math.exp(-lam_up * tpk)
        p[0] = y[kpeak] / den if den > 1e-12 else amp_t
    elif model == 3:
        p[0] = amp_t
        p[1] = lam_t
        p[3] = clip(fmax(10.0 * lam_t, math.log(2.0) / fmax(t[0], 0.1)), lam_t * 2.0,
                    lam_hi * 0.5)
        resid = y[0] - amp_t * math.exp(-lam_t * t[0])
        p[2] = clip(fmax(resid, 0.05) * math.exp(p[3] * t[0]), 0.0, 1e3)
    else:
        p[0] = 0.8 * amp_t
        p[1] = lam_t
        p[2] = 0.2 * amp_t
        p[3] = clip(5.0 * lam_t + 0.02, lam_t * 1.5, lam_hi * 0.2)
        p[4] = clip(fmax(lam_up, 3.0 * p[3]), p[3] * 2.0, lam_hi * 0.5)

@_jit
def bound_bits(model, p, k, lam_lo, lam_hi):
    """Parameters sitting on a bound (amplitude 0; decay constant at lambda_lo or lambda_hi;
    an uptake constant pinned to its ordering limit): bit j set for parameter j."""
    bits = 0
    tol = 1e-9
    for j in range(k):
        if is_amplitude(model, j):
            if p[j] <= 0.0:
                bits |= 1 << j
        elif p[j] <= lam_lo * (1.0 + tol) or p[j] >= lam_hi * (1.0 - tol):
            bits |= 1 << j
    if model == 2 and p[2] <= p[1] * (1.0 + 1e-6) * (1.0 + tol):
        bits |= 1 << 2
    if model == 4 and p[4] <= fmax(p[1], p[3]) * (1.0 + 1e-6) * (1.0 + tol):
        bits |= 1 << 4
    return bits


@_jit
def cholesky_damped(A, k, mu, L, frozen):
    """Cholesky factor of A + mu diag(A); rows/columns of frozen parameters (bit set in
    ``frozen``) are replaced by the identity so their step is exactly zero."""
    for i in range(k):
        for j in range(i + 1):
            if ((frozen >> i) & 1) or ((frozen >> j) & 1):
                s = 1.0 if i == j else 0.0
            else:
                s = A[i, j]
                if i == j:
                    s += mu * A[i, i] + 1e-30
            for m in range(j):
                s -= L[i, m] * L[j, m]
            if i == j:
                if s <= 0.0:
                    return False
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    return True


@_jit
def frozen_bits(model, p, g, k, lam_lo, lam_hi):
    """Active-set rule: a parameter on a simple bound whose gradient points outwards is held
    fixed for this iteration (amplitudes at 0, decay constants at lambda_lo or lambda_hi).
    g = J^T W r, so increasing theta_j lowers RSS when g_j > 0."""
    bits = 0
    for j in range(k):
        if is_amplitude(model, j):
            if p[j] <= 0.0 and g[j] < 0.0:
                bits |= 1 << j
        elif not (model == 2 and j == 2) and not (model == 4 and j == 4):
            if (p[j] <= lam_lo * (1.0 + 1e-12) and g[j] < 0.0) or \
                    (p[j] >= lam_hi * (1.0 - 1e-12) and g[j] > 0.0):
                bits |= 1 << j
    return bits


@_jit
def lm(model, t, y, w, n, p, lam_lo, lam_hi, f, f2, J, A, L, g, d, pn, T):
    """Levenberg-Marquardt with projected steps. Returns (rss, converged, at_bound)."""
    k = NPAR[model]
    at_bound = project(model, p, lam_lo, lam_hi)
    model_eval(model, p, t, n, f, J, True, T)
    c = wrss(y, w, f, n)
    mu = 1e-3
    converged = 0
    for _ in range(MAX_ITER):
        for a in range(k):
            s = 0.0
            for i in range(n):
                s += w[i] * J[i, a] * (y[i] - f[i])
            g[a] = s
            for b in range(a + 1):
                s = 0.0
                for i in range(n):
                    s += w[i] * J[i, a] * J[i, b]
                A[a, b] = s
                A[b, a] = s
        accepted = False
        frz = frozen_bits(model, p, g, k, lam_lo, lam_hi)
        while mu < 1e12:
            ok = cholesky_damped(A, k, mu, L, frz)
            if ok:
                for a in range(k):
                    d[a] = 0.0 if (frz >> a) & 1 else g[a]
                chol_solve(L, k, d, d)
                for a in range(k):
                    pn[a] = p[a] + d[a]
                ab = project(model, pn, lam_lo, lam_hi)
                model_eval(model, pn, t, n, f2, J, False, T)
                cn = wrss(y, w, f2, n)
                if cn < c:
                    step = 0.0
                    for a in range(k):
                        rel = abs(pn[a] - p[a]) / (abs(p[a]) + 1e-12)
                        if rel > step:
                            step = rel
                        p[a] = pn[a]
                    at_bound = ab
                    dec = c - cn
                    c = cn
                    model_eval(model, p, t, n, f, J, True, T)
                    mu = fmax(mu * 0.1, 1e-12)
                    accepted = True
                    if dec <= 1e-10 * c or step < 1e-8 or c < 1e-28:
                        converged = 1
                    break
            mu *= 10.0
        if not accepted:
            converged = 1  # no step lowers RSS: a (possibly bounded) minimum
            break
        if converged:
            break
    return c, converged, at_bound

@_jit
def trapz(t, y, n, lam_phys, tail_fitted, noise_rel, out):
    tot = 0.5 * t[0] * y[0]
    var = 0.0
    for i in range(n):
        left = t[i] - (t[i - 1] if i > 0 else 0.0)
        right = (t[i + 1] - t[i]) if i < n - 1 else 0.0
        tot += 0.0 if i == 0 else 0.5 * (t[i] - t[i - 1]) * (y[i] + y[i - 1])
        c = 0.5 * (left + right)
        if i == n - 1:
            lam_tail = lam_phys
            if tail_fitted and n >= 2 and y[n - 1] > 0.0 and y[n - 2] > 0.0:
                lt = math.log(y[n - 2] / y[n - 1]) / (t[n - 1] - t[n - 2])
                lam_tail = lt if lt > lam_phys else lam_phys
            c += 1.0 / lam_tail
            tot += y[n - 1] / lam_tail
            out[OUT_LAM] = lam_tail
        var += (c * noise_rel * y[i]) ** 2
    out[OUT_TIA] = tot
    out[OUT_SIGMA] = math.sqrt(var)
    out[OUT_MODEL] = 0.0
    out[OUT_AICC] = math.inf
    out[OUT_RSS] = 0.0
    out[OUT_R2] = 0.0

@_jit
def fit_one_model(model, t, y, w, n, kpeak, lam_lo, lam_hi, p, f, f2, J, A, L, g, d, pn,
                  T, out):
    """Fit one model; write TIA, sigma, lambda, AICc, RSS, R^2 into out.
    Returns 1 if the result is valid (converged, finite positive TIA, sigma <= TIA), 2 if
    it converged with a finite sigma above ``MAX_RELATIVE_SIGMA`` x its TIA (not a
    determination), 0 otherwise. (A failed Cholesky factor leaves sigma = TIA, valid: the
    parameters, not necessarily the TIA, are then undetermined.)"""
    k = NPAR[model]
    init_params(model, t, y, n, kpeak, lam_lo, lam_hi, p)
    rss, conv, at_bound = lm(model, t, y, w, n, p, lam_lo, lam_hi, f, f2, J, A, L, g, d, pn,
                             T)
    for a in range(k):
        if not math.isfinite(p[a]):
            return 0
    tia = tia_from_and_grad(model, p, 0.0, T, g, True)
    if not (conv and math.isfinite(tia) and tia > 0.0):
        return 0
    # physically plausible: the fitted curve may not rise above MAX_OVERSHOOT x the largest
    # sample anywhere before the last sample (an extrapolation to t = 0 through one sample
    # with a runaway decay constant is not a measurement)
    nt, sc = model_terms(model, p, T, False)
    vmax = terms_value(nt, sc, T, 0.0)
    for i in range(n):
        tprev = 0.0 if i == 0 else t[i - 1]
        for q in range(1, 4):
            v = terms_value(nt, sc, T, tprev + 0.25 * q * (t[i] - tprev))
            if v > vmax:
                vmax = v
    if vmax > MAX_OVERSHOOT:  # y is normalised to a maximum of 1
        return 0
    # covariance via the Cholesky factor of J^T W J at the solution
    for a in range(k):
        for b in range(a + 1):
            s = 0.0
            for i in range(n):
                s += w[i] * J[i, a] * J[i, b]
            A[a, b] = s
            A[b, a] = s
    s2 = rss / (n - k)
    var = 0.0
    # parameters on a bound are not estimated (held fixed): their rows/columns are dropped
    fixed = bound_bits(model, p, k, lam_lo, lam_hi)
    if cholesky_damped(A, k, 0.0, L, fixed):
        for i in range(k):  # z = L^-1 g ; var = s2 |z|^2
            s = 0.0 if (fixed >> i) & 1 else g[i]
            for m in range(i):
                s -= L[i, m] * d[m]
            d[i] = s / L[i, i]
            var += d[i] * d[i]
        var *= s2
    else:
        var = math.inf
    if math.isfinite(var) and var > (MAX_RELATIVE_SIGMA * tia) ** 2:
        return 2  # converged, but the samples do not determine the TIA
    # weighted R^2 about the weighted mean
    sw = 0.0
    swy = 0.0
    for i in range(n):
        sw += w[i]
        swy += w[i] * y[i]
    ybar = swy / sw
    tss = 0.0
    for i in range(n):
        tss += w[i] * (y[i] - ybar) ** 2
    floor = 1e-24 * tss + 1e-300
    rss_e = rss if rss > floor else floor
    if model >= 3 and p[1] > p[3]:
        # canonical order: component 1 is the slower one (the sum is symmetric in 1 <-> 2)
        a0, l0 = p[0], p[1]
        p[0], p[1] = p[2], p[3]
        p[2], p[3] = a0, l0
    out[OUT_TIA] = tia
    out[OUT_SIGMA] = math.sqrt(var) if math.isfinite(var) else tia
    nt = model_terms(model, p, T, False)[0]
    lam_term = T[0, TL]  # terminal decay constant: the slowest term's
    for q in range(1, nt):
        lam_term = fmin(lam_term, T[q, TL])
    out[OUT_LAM] = lam_term
    out[OUT_MODEL] = model
    out[OUT_STATUS] = 1.0 if at_bound else 0.0
    out[OUT_AICC] = n * math.log(rss_e / n) + 2 * k + 2.0 * k * (k + 1) / (n - k - 1)
    out[OUT_RSS] = rss
    out[OUT_R2] = 1.0 - rss / tss if tss > 0.0 else 1.0
    return 1

@_jit
def fit_curve(t, Y, v, n, model, lam_phys, lift_bound, poisson, background, noise_rel,
              tail_fitted, y, w, p, pbest, f, f2, J, A, L, g, d, pn, T, out, best):
    """Fit curve ``Y[v, :n]`` (activity, any unit) at times ``t`` (h). ``model``: -1
    trapezoid, 0 auto, 1..4 that model. Results in ``out`` (TIA and sigma in the unit of
    Y x h, lambda in 1/h) and the best-fit parameters in ``pbest``."""
    ymax = 0.0
    kpeak = 0
    for i in range(n):
        yi = Y[v, i]
        if not yi > 0.0:  # negatives and NaN are treated as no activity
            yi = 0.0
        y[i] = yi
        if yi > ymax:
            ymax = yi
            kpeak = i
    for a in range(MAX_P):
        pbest[a] = 0.0
    if ymax <= 0.0:
        for a in range(N_OUT):
            out[a] = 0.0
        out[OUT_LAM] = lam_phys
        out[OUT_STATUS] = 3.0
        out[OUT_AICC] = math.inf
        return
    for i in range(n):
        y[i] = y[i] / ymax
        w[i] = 1.0 / fmax(y[i], 1e-3) if poisson else 1.0
    lam_lo = 1e-9 if lift_bound else lam_phys
    lam_hi = 50.0
    # model: -1 trapezoid, 0 auto, 1..4 one model
    if ymax < background or model < 0:
        trapz(t, y, n, lam_phys, tail_fitted and model < 0, noise_rel, out)
        out[OUT_STATUS] = 3.0 if ymax < background else 0.0
    else:
        nbest = 0
        undetermined = False
        first = model if model > 0 else 1
        last = model if model > 0 else 4
        for m in range(first, last + 1):
            if n < MIN_POINTS[m]:
                continue
            ok = fit_one_model(m, t, y, w, n, kpeak, lam_lo, lam_hi, p, f, f2, J, A, L, g,
                               d, pn, T, best)
            if ok == 2:
                undetermined = True
            if ok == 1:
                if nbest == 0 or best[OUT_AICC] < out[OUT_AICC]:
                    for a in range(N_OUT):
                        out[a] = best[a]
                    for a in range(MAX_P):
                        pbest[a] = p[a] if a < NPAR[m] else 0.0
                nbest += 1
        if nbest == 0:
            enough = False
            for m in range(first, last + 1):
                if n >= MIN_POINTS[m]:
                    enough = True
            trapz(t, y, n, lam_phys, False, noise_rel, out)
            out[OUT_STATUS] = 2.0 if enough else 4.0
            if undetermined:  # the data scatter more than the frame-noise model says: the
                # trapezoid's sigma would understate it; the fits said sigma > TIA
                out[OUT_SIGMA] = fmax(out[OUT_SIGMA], MAX_RELATIVE_SIGMA * out[OUT_TIA])
    # back to the unit of Y
    out[OUT_TIA] *= ymax
    out[OUT_SIGMA] *= ymax
    out[OUT_RSS] *= ymax * ymax
    m = int(out[OUT_MODEL])
    if m >= 1:
        for a in range(NPAR[m]):
            if is_amplitude(m, a):
                pbest[a] *= ymax


# The CPU driver lives in this file so that Numba's on-disk cache is invalidated together
# with the maths it inlines (Numba tracks only the defining file of a cached function).
@_njit_parallel
def fit_block_cpu(t_h, Y, model, lam_phys, lift, poisson, background, noise_rel, tail_fitted,
                   out, params, nthreads):
    nv, n = Y.shape
    nblocks = min(nv, 16 * nthreads)
    per = (nv + nblocks - 1) // nblocks
    for b in _prange(nblocks):
        y = np.empty(MAX_T)
        w = np.empty(MAX_T)
        f = np.empty(MAX_T)
        f2 = np.empty(MAX_T)
        J = np.empty((MAX_T, MAX_P))
        A = np.empty((MAX_P, MAX_P))
        L = np.empty((MAX_P, MAX_P))
        g = np.empty(MAX_P)
        d = np.empty(MAX_P)
        pn = np.empty(MAX_P)
        p = np.empty(MAX_P)
        T = np.empty((MAX_K, N_TCOL))
        best = np.empty(N_OUT)
        for v in range(b * per, min(nv, (b + 1) * per)):
            fit_curve(t_h, Y, v, n, model, lam_phys, lift, poisson, background, noise_rel,
                      tail_fitted, y, w, p, params[v], f, f2, J, A, L, g, d, pn, T, out[v],
                      best)


@_njit_cpu
def terms_map_cpu(model, params, t_h, integral, out):
    """Per curve v of fitted model ``model[v]`` (ids 1-4; others are left untouched) and
    parameters ``params[v]``: a(t_h) (``integral`` False) or the integral from t_h to
    infinity (True), in the unit of the amplitudes (times h), written into ``out[v]``."""
    T = np.empty((MAX_K, N_TCOL))
    g = np.empty(MAX_P)
    for v in range(model.shape[0]):
        m = model[v]
        if m < 1 or m > 4:
            continue
        if integral:
            out[v] = tia_from_and_grad(m, params[v], t_h, T, g, False)
        else:
            nt, sc = model_terms(m, params[v], T, False)
            out[v] = terms_value(nt, sc, T, t_h)
