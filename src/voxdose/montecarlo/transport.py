"""The per-history Monte Carlo transport, written once and compiled twice.

Imported normally, this module is compiled for the CPU (``numba.njit(cache=True)``);
:mod:`voxdose.montecarlo.transport_cuda` executes a second copy of the same file with
``numba.cuda.jit(device=True)`` injected as ``__voxdose_jit__`` (the pattern of
:mod:`voxdose.kinetics.lm_core`).  Everything here obeys the rules of both targets:
``math`` functions only, no allocation (the caller passes the delta-ray stack), no NumPy
calls (binary searches are written out), no exceptions.  The CPU drivers
(:func:`voxdose.montecarlo.electron.run_electron_batches`,
:func:`voxdose.montecarlo.photon.run_photon_batches`) and the CUDA kernels
(:mod:`voxdose.montecarlo.transport_cuda`) call the same :func:`electron_history` /
:func:`photon_history`: one formula, two devices.  The physics is described in
:mod:`voxdose.montecarlo.electron` and :mod:`voxdose.montecarlo.photon`.

Random numbers: xorshift128+ (Vigna 2014) on a two-word uint64 state ``st`` per stream
(CPU: one stream per batch; GPU: one per thread), seeded by
:func:`voxdose.montecarlo.core.rng_states`.  The same generator on both devices, so a CPU
run and a GPU run with the same seed and the same number of streams draw the same
numbers (results then differ only by floating-point details of the math library), and
runs with different seeds can be compared statistically.

Scoring: each stream owns its tally row (no atomics needed on the GPU), so the result
does not depend on thread scheduling.

Tables: the electron and photon tables travel as one argument each, the named tuples
:class:`ElectronArrays` (``tab``) and :class:`PhotonArrays` (``pt``; the electron
functions take both, for the bremsstrahlung photons); Numba passes them to ``njit``
functions, into ``prange`` loops and to CUDA kernels alike (a tuple argument is flattened
at the kernel launch).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

try:  # the CUDA copy of this module is executed with the decorator injected
    _jit = __voxdose_jit__  # type: ignore[name-defined]
except NameError:
    _jit = numba.njit(cache=True)

#: Electron rest energy, MeV (CODATA 2018; equals voxdose.montecarlo.stopping_power.MC2).
MC2 = 0.51099895
_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0


class PhotonArrays(NamedTuple):
    """The photon tables as the per-history code takes them: one argument ``pt`` (built by
    :func:`voxdose.montecarlo.photon.table_args` from a
    :class:`~voxdose.montecarlo.photon.PhotonTables`; NumPy arrays on the CPU, device
    arrays in the CUDA kernels).  Uniform grid in ln E (E in MeV), 1/cm."""

    ln_e0: float
    dln: float
    mu_compton: np.ndarray
    mu_photo: np.ndarray
    p_cut: float


class ElectronArrays(NamedTuple):
    """The electron tables as the per-history code takes them: one argument ``tab`` (built by
    :func:`voxdose.montecarlo.electron.table_args` from an
    :class:`~voxdose.montecarlo.electron.ElectronTables`, whose fields of the same names
    are described there).  The electron functions take the photon tables of the
    bremsstrahlung photons as a second argument ``pt``: a named tuple nested in another
    cannot cross into a ``prange`` loop of the CPU drivers (Numba 0.68)."""

    ln_e0: float
    dln: float
    range_cm: np.ndarray
    sigma_hard: np.ndarray
    sigma_brems: np.ndarray
    lambda1_cm: np.ndarray
    energies: np.ndarray
    wentzel_ln_m0: float
    wentzel_dln_m: float
    wentzel_ln_a: np.ndarray
    e_cut: float
    w_cut: float
    eps: float
    k_cut: float


# ---------------------------------------------------------------------------------------
# random numbers, directions, lookup
# ---------------------------------------------------------------------------------------
@_jit
def rand(st):
    """Uniform double in [0, 1) from the xorshift128+ state ``st`` (uint64[2])."""
    s1 = st[0]
    s0 = st[1]
    st[0] = s0
    s1 ^= s1 << np.uint64(23)
    s1 = s1 ^ s0 ^ (s1 >> np.uint64(17)) ^ (s0 >> np.uint64(26))
    st[1] = s1
    return float((s1 + s0) >> np.uint64(11)) * _INV_2_53


@_jit
def rand_pos(st):
    """Uniform double in (0, 1] (safe for -log)."""
    return 1.0 - rand(st)


@_jit
def isotropic(st):
    """Isotropic unit vector."""
    w = 2.0 * rand(st) - 1.0
    phi = _TWO_PI * rand(st)
    s = math.sqrt(max(0.0, 1.0 - w * w))
    return s * math.cos(phi), s * math.sin(phi), w


@_jit
def rotate(u, v, w, cost, phi):
    """Direction (u, v, w) turned by polar cos_theta = ``cost`` and azimuth ``phi``
    (PENELOPE-2014 manual Eq. 1.131)."""
    sint = math.sqrt(max(0.0, 1.0 - cost * cost))
    cp = math.cos(phi)
    sp = math.sin(phi)
    if abs(w) > 0.99999999:
        un = sint * cp
        vn = sint * sp
        wn = cost if w > 0 else -cost
    else:
        tmp = math.sqrt(1.0 - w * w)
        un = u * cost + sint * (u * w * cp - v * sp) / tmp
        vn = v * cost + sint * (v * w * cp + u * sp) / tmp
        wn = w * cost - sint * cp * tmp
    nrm = 1.0 / math.sqrt(un * un + vn * vn + wn * wn)
    return un * nrm, vn * nrm, wn * nrm


@_jit
def bisect_right(a, x):
    """Number of entries of the increasing array ``a`` that are <= x
    (``np.searchsorted(a, x, side="right")``)."""
    lo = 0
    hi = a.size
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@_jit
def bisect_left(a, x):
    """Number of entries of the increasing array ``a`` that are < x
    (``np.searchsorted(a, x, side="left")``)."""
    lo = 0
    hi = a.size
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def score(x, y, z, e, edges_mm, row):
    """Add energy ``e`` (MeV) at the point (x, y, z) in cm to the shell tally ``row``.

    ``row`` has len(edges) entries: shells 0..n-2 and the last slot for r >= edges[-1].
    """
    r = math.sqrt(x * x + y * y + z * z) * 10.0
    n = edges_mm.size
    if r >= edges_mm[n - 1]:
        row[n - 1] += e
        return
    i = bisect_right(edges_mm, r) - 1
    if i < 0:
        i = 0
    row[i] += e


@_jit
def interp_uniform(x, x0, dx, table):
    """Linear interpolation of ``table`` sampled at x0 + k dx (clamped at the ends)."""
    f = (x - x0) / dx
    n = table.size
    if f <= 0.0:
        return table[0]
    if f >= n - 1:
        return table[n - 1]
    k = int(f)
    t = f - k
    return table[k] * (1.0 - t) + table[k + 1] * t


# ---------------------------------------------------------------------------------------
# electrons
# ---------------------------------------------------------------------------------------
@_jit
def energy_from_range(rr, range_cm, energies):
    """Inverse of the (increasing) range table by linear interpolation."""
    n = range_cm.size
    if rr <= range_cm[0]:
        return energies[0] * max(rr, 0.0) / range_cm[0]
    if rr >= range_cm[n - 1]:
        return energies[n - 1]
    k = bisect_left(range_cm, rr) - 1
    t = (rr - range_cm[k]) / (range_cm[k + 1] - range_cm[k])
    return energies[k] * (1.0 - t) + energies[k + 1] * t


@_jit
def sample_moller(t_kin, w_cut, st):
    """Knock-on energy W (MeV) from the Moller cross section, W_c <= W <= T/2."""
    tau = t_kin / MC2
    g2 = (tau / (tau + 1.0)) ** 2
    c = (2.0 * tau + 1.0) / (tau + 1.0) ** 2
    x0 = w_cut / t_kin
    while True:
        e = x0 / (1.0 - rand(st) * (1.0 - 2.0 * x0))
        q = e / (1.0 - e)
        f = 1.0 + q * q + g2 * e * e - c * q
        if rand(st) * 2.25 <= f:
            return e * t_kin


@_jit
def wentzel_cos(mean_mu1, ln_m0, dln_m, ln_a_tab, st):
    """cos(theta) from the Wentzel law with <(1 - cos theta)/2> = mean_mu1."""
    if mean_mu1 >= 0.4995:
        return 2.0 * rand(st) - 1.0
    if mean_mu1 <= 1e-10:
        return 1.0
    a = math.exp(interp_uniform(math.log(mean_mu1), ln_m0, dln_m, ln_a_tab))
    xi = rand(st)
    mu1 = a * xi / (1.0 + a - xi)
    return 1.0 - 2.0 * mu1


@_jit
def brems_shape(x):
    """k dsigma/dk of bremsstrahlung in units of its value scale, x = k/T: the
    non-relativistic Bethe-Heitler (Born) law f(x) = ln[(1 + sqrt(1 - x))^2 / x]
    (Heitler 1954, Sec. 25); its integral over 0 < x < 1 is 2."""
    return 2.0 * math.log(1.0 + math.sqrt(max(1.0 - x, 0.0))) - math.log(x)


@_jit
def sample_brems(t_kin, k_cut, st):
    """Photon energy k (MeV), k_cut <= k < T, from dsigma/dk ~ f(k/T)/k: x = x_c^(1 - xi)
    (the 1/k part), accepted with f(x)/f(x_c) (f decreases)."""
    xc = k_cut / t_kin
    if xc >= 1.0:          # no photon above the threshold (the caller skips the event)
        return 0.0
    fmax = brems_shape(xc)
    lnxc = math.log(xc)
    while True:
        x = math.exp((1.0 - rand(st)) * lnxc)
        if rand(st) * fmax <= brems_shape(x):
            return x * t_kin


@_jit
def push(stack, nst, x, y, z, u, v, w, e):
    """Store a particle (position cm, direction, energy MeV) in row ``nst`` of ``stack``;
    returns the new depth nst + 1."""
    stack[nst, 0] = x
    stack[nst, 1] = y
    stack[nst, 2] = z
    stack[nst, 3] = u
    stack[nst, 4] = v
    stack[nst, 5] = w
    stack[nst, 6] = e
    return nst + 1


@_jit
def pop(stack, nst):
    """The particle (x, y, z, u, v, w, e) stored in row ``nst`` of ``stack``."""
    return (stack[nst, 0], stack[nst, 1], stack[nst, 2], stack[nst, 3], stack[nst, 4],
            stack[nst, 5], stack[nst, 6])


#: Outcome of an electron step (:func:`transport_electron`, :func:`hard_event`).
STEP_SOFT = 0       # continuous loss only
STEP_HARD = 1       # ends with a Moller (delta-ray) collision
STEP_BREMS = 2      # ends with a bremsstrahlung photon


@_jit
def hard_event(e, xi, ln_e0, dln, sigma_hard, sigma_brems, w_cut, k_cut):
    """Which event ends a step cut short by the majorant at energy ``e``: ``xi`` uniform
    in [0, majorant); Moller if xi < Sigma_hard(e) (W_c <= e/2), else bremsstrahlung if
    xi < Sigma_hard + Sigma_brems(e) (e > k_c), else none (``STEP_*``)."""
    lnn = math.log(e)
    sig_m = 0.0
    if e > 2.0 * w_cut:
        sig_m = interp_uniform(lnn, ln_e0, dln, sigma_hard)
    sig_r = 0.0
    if e > k_cut:
        sig_r = interp_uniform(lnn, ln_e0, dln, sigma_brems)
    if xi < sig_m:
        return STEP_HARD
    if xi < sig_m + sig_r:
        return STEP_BREMS
    return STEP_SOFT


@_jit
def emit_brems(x, y, z, u, v, w, e, k_cut, st, edges_mm, row, acc, pt):
    """A bremsstrahlung photon (k >= k_cut) from an electron of energy e, emitted along
    (u, v, w) and transported at once with the photon tables ``pt``; ``acc[3]`` += k.
    Returns the electron's energy."""
    kph = sample_brems(e, k_cut, st)
    if kph > 0.0:
        e = e - kph
        acc[3] += kph
        transport_photon_from(x, y, z, u, v, w, kph, st, edges_mm, row, acc, pt)
    return e


@_jit
def knock_on(x, y, z, u, v, w, e, w_cut, e_cut, st, edges_mm, row, stack, nst):
    """A Moller collision of an electron of energy e: the delta ray (W from
    :func:`sample_moller`, two-body angles) goes on ``stack`` at depth ``nst`` (absorbed on
    the spot when W <= e_cut or the stack is full).  Returns the primary's (u, v, w, e)
    and the new depth."""
    wd = sample_moller(e, w_cut, st)
    tt = e + 2.0 * MC2
    cd = math.sqrt(min(1.0, wd * tt / (e * (wd + 2.0 * MC2))))
    cp = math.sqrt(min(1.0, (e - wd) * tt / (e * (e - wd + 2.0 * MC2))))
    phi = _TWO_PI * rand(st)
    ud, vd, wdd = rotate(u, v, w, cd, phi + math.pi)
    u, v, w = rotate(u, v, w, cp, phi)
    e = e - wd
    if wd > e_cut and nst < stack.shape[0]:
        nst = push(stack, nst, x, y, z, ud, vd, wdd, wd)
    else:
        score(x, y, z, wd, edges_mm, row)
    return u, v, w, e, nst


@_jit
def transport_electron(x, y, z, u, v, w, e0, st, edges_mm, row, acc, stack, tab, pt):
    """Transport one electron (and its delta rays and bremsstrahlung photons) from
    (x, y, z) cm, direction (u, v, w), with the electron tables ``tab``
    (:class:`ElectronArrays`) and the photon tables ``pt`` (:class:`PhotonArrays`).

    Deposits go to ``row`` (shell tally, MeV); ``acc[0]`` += energy of bremsstrahlung
    photons that leave the last shell, ``acc[1]`` += number of steps, ``acc[3]`` +=
    bremsstrahlung photon energy emitted (k >= k_cut).  ``stack``: (n, 7) work array (a
    delta ray that finds it full is absorbed where it is produced).

    The step (fixed fractional loss eps, cut short by a hard event drawn with the larger
    cross section of its two ends as majorant; random hinge) stays in this one function:
    on the CPU a call per step to a Numba function that takes the tables costs reference
    counting (tried: the electron transport ran ~1.4 times slower).
    """
    (ln_e0, dln, range_cm, sigma_hard, sigma_brems, lambda1_cm, energies, ln_m0, dln_m,
     ln_a_tab, e_cut, w_cut, eps, k_cut) = tab
    nst = push(stack, 0, x, y, z, u, v, w, e0)
    while nst > 0:
        nst -= 1
        x, y, z, u, v, w, e = pop(stack, nst)
        while True:
            if e <= e_cut:
                break
            lne = math.log(e)
            r_now = interp_uniform(lne, ln_e0, dln, range_cm)
            e_end = e * (1.0 - eps)
            if e_end < e_cut:
                e_end = e_cut
            lne_end = math.log(e_end)
            s = r_now - interp_uniform(lne_end, ln_e0, dln, range_cm)   # s_max
            if s <= 0.0:
                break
            sig_max = max(interp_uniform(lne, ln_e0, dln, sigma_hard)
                          + interp_uniform(lne, ln_e0, dln, sigma_brems),
                          interp_uniform(lne_end, ln_e0, dln, sigma_hard)
                          + interp_uniform(lne_end, ln_e0, dln, sigma_brems))
            outcome = STEP_SOFT
            e_new = e_end
            if sig_max > 0.0:
                s_h = -math.log(rand_pos(st)) / sig_max
                if s_h < s:
                    s = s_h
                    e_new = energy_from_range(r_now - s, range_cm, energies)
                    outcome = hard_event(e_new, rand(st) * sig_max, ln_e0, dln, sigma_hard,
                                         sigma_brems, w_cut, k_cut)
            lam1 = interp_uniform(math.log(0.5 * (e + e_new)), ln_e0, dln, lambda1_cm)
            acc[1] += 1.0
            # random hinge
            tau = rand(st)
            s1 = tau * s
            dep = e - e_new
            score(x + 0.5 * s1 * u, y + 0.5 * s1 * v, z + 0.5 * s1 * w, dep * tau,
                  edges_mm, row)
            x += s1 * u
            y += s1 * v
            z += s1 * w
            cost = wentzel_cos(0.5 * (1.0 - math.exp(-s / lam1)), ln_m0, dln_m, ln_a_tab, st)
            u, v, w = rotate(u, v, w, cost, _TWO_PI * rand(st))
            s2 = s - s1
            score(x + 0.5 * s2 * u, y + 0.5 * s2 * v, z + 0.5 * s2 * w, dep * (1.0 - tau),
                  edges_mm, row)
            x += s2 * u
            y += s2 * v
            z += s2 * w
            e = e_new
            if outcome == STEP_BREMS:
                e = emit_brems(x, y, z, u, v, w, e, k_cut, st, edges_mm, row, acc, pt)
            elif outcome == STEP_HARD:
                u, v, w, e, nst = knock_on(x, y, z, u, v, w, e, w_cut, e_cut, st, edges_mm,
                                           row, stack, nst)
        score(x, y, z, e, edges_mm, row)


@_jit
def sample_emission(st, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum, n_total):
    """Energy of one emitted particle from a mixture: continuous beta spectrum (piecewise
    linear dN/dE, normalised, with ``beta_yield`` per decay) + discrete lines (cumulative
    yields ``line_cum``).  ``n_total`` = beta_yield + sum of line yields."""
    r = rand(st) * n_total
    if r < beta_yield and beta_e.size > 1:
        a = rand(st) * beta_cdf[beta_cdf.size - 1]
        k = bisect_right(beta_cdf, a) - 1
        if k < 0:
            k = 0
        if k > beta_e.size - 2:
            k = beta_e.size - 2
        da = a - beta_cdf[k]
        h = beta_e[k + 1] - beta_e[k]
        p0 = beta_p[k]
        slope = (beta_p[k + 1] - p0) / h
        disc = p0 * p0 + 2.0 * slope * da
        if disc < 0.0:
            disc = 0.0
        den = p0 + math.sqrt(disc)
        xx = 2.0 * da / den if den > 0.0 else 0.0
        if xx > h:
            xx = h
        return beta_e[k] + xx
    r -= beta_yield
    k = bisect_right(line_cum, r)
    if k >= line_e.size:
        k = line_e.size - 1
    return line_e[k]


@_jit
def electron_history(st, edges_mm, row, acc, stack, beta_yield, beta_e, beta_p, beta_cdf,
                     line_e, line_cum, n_total, tab, pt):
    """One electron history from the origin: energy from the source, isotropic direction,
    transport with the tables ``tab``, ``pt`` (:class:`ElectronArrays`,
    :class:`PhotonArrays`).  ``acc``: [escaped MeV
    (bremsstrahlung photons beyond the last shell), steps, emitted MeV, bremsstrahlung
    photon MeV]."""
    e0 = sample_emission(st, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum, n_total)
    acc[2] += e0
    u, v, w = isotropic(st)
    transport_electron(0.0, 0.0, 0.0, u, v, w, e0, st, edges_mm, row, acc, stack, tab, pt)


# ---------------------------------------------------------------------------------------
# photons
# ---------------------------------------------------------------------------------------
@_jit
def sample_kahn(k, st):
    """Kahn's method: returns (eta = E/E', cos theta) for k = E/mc^2 (Klein-Nishina)."""
    eta = 1.0
    while True:
        r1 = rand(st)
        r2 = rand(st)
        r3 = rand(st)
        if r1 <= (1.0 + 2.0 * k) / (9.0 + 2.0 * k):
            eta = 1.0 + 2.0 * k * r2
            if r3 <= 4.0 * (1.0 / eta - 1.0 / (eta * eta)):
                break
        else:
            eta = (1.0 + 2.0 * k) / (1.0 + 2.0 * k * r2)
            mu = 1.0 + 1.0 / k - eta / k
            if r3 <= 0.5 * (mu * mu + 1.0 / eta):
                break
    return eta, 1.0 + 1.0 / k - eta / k


@_jit
def transport_photon(e, st, edges_mm, row, acc, pt):
    """One photon of energy e from the origin, isotropic, with the tables ``pt``
    (:class:`PhotonArrays`).  acc[0] += escaping energy, acc[1] += interactions."""
    u, v, w = isotropic(st)
    transport_photon_from(0.0, 0.0, 0.0, u, v, w, e, st, edges_mm, row, acc, pt)


@_jit
def transport_photon_from(x, y, z, u, v, w, e, st, edges_mm, row, acc, pt):
    """One photon of energy e (MeV) from (x, y, z) cm in direction (u, v, w), with the
    tables ``pt`` (:class:`PhotonArrays`): free flights,
    photoelectric absorption, Klein-Nishina Compton (the electron's energy deposited on
    the spot).  acc[0] += escaping energy (beyond the last shell), acc[1] += interactions
    (for a bremsstrahlung photon they add to its electron's step count)."""
    r_max_cm = edges_mm[edges_mm.size - 1] / 10.0
    while True:
        if e < pt.p_cut:
            score(x, y, z, e, edges_mm, row)
            return
        lne = math.log(e)
        mc = interp_uniform(lne, pt.ln_e0, pt.dln, pt.mu_compton)
        mp = interp_uniform(lne, pt.ln_e0, pt.dln, pt.mu_photo)
        mu = mc + mp
        s = -math.log(rand_pos(st)) / mu
        x += s * u
        y += s * v
        z += s * w
        if x * x + y * y + z * z >= r_max_cm * r_max_cm:
            acc[0] += e
            return
        acc[1] += 1.0
        if rand(st) * mu < mp:
            score(x, y, z, e, edges_mm, row)
            return
        k = e / MC2
        eta, cost = sample_kahn(k, st)
        e_new = e / eta
        score(x, y, z, e - e_new, edges_mm, row)
        u, v, w = rotate(u, v, w, cost, _TWO_PI * rand(st))
        e = e_new


@_jit
def photon_history(st, edges_mm, row, acc, line_e, line_cum, n_total, pt):
    """One photon history: a line drawn by its yield, transported from the origin with the
    tables ``pt`` (:class:`PhotonArrays`).  ``acc``: [escaped MeV, interactions, emitted
    MeV]."""
    r = rand(st) * n_total
    k = bisect_right(line_cum, r)
    if k >= line_e.size:
        k = line_e.size - 1
    e0 = line_e[k]
    acc[2] += e0
    transport_photon(e0, st, edges_mm, row, acc, pt)
