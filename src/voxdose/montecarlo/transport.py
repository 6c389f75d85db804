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
"""

from __future__ import annotations

import math

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
def transport_electron(x, y, z, u, v, w, e0, st, edges_mm, row, acc, stack,
                       ln_e0, dln, range_cm, sigma_hard, sigma_brems, lambda1_cm, energies,
                       ln_m0, dln_m, ln_a_tab, e_cut, w_cut, eps, k_cut,
                       p_ln_e0, p_dln, mu_c_tab, mu_p_tab, p_cut):
    """Transport one electron (and its delta rays and bremsstrahlung photons) from
    (x, y, z) cm, direction (u, v, w).

    Deposits go to ``row`` (shell tally, MeV); ``acc[0]`` += energy of bremsstrahlung
    photons that leave the last shell, ``acc[1]`` += number of steps, ``acc[3]`` +=
    bremsstrahlung photon energy emitted (k >= k_cut; transported with the photon tables
    ``p_*``).  ``stack``: (n, 7) work array (a delta ray that finds it full is absorbed
    where it is produced).
    """
    stack[0, 0] = x
    stack[0, 1] = y
    stack[0, 2] = z
    stack[0, 3] = u
    stack[0, 4] = v
    stack[0, 5] = w
    stack[0, 6] = e0
    nst = 1
    nmax = stack.shape[0]
    while nst > 0:
        nst -= 1
        x = stack[nst, 0]
        y = stack[nst, 1]
        z = stack[nst, 2]
        u = stack[nst, 3]
        v = stack[nst, 4]
        w = stack[nst, 5]
        e = stack[nst, 6]
        while True:
            if e <= e_cut:
                score(x, y, z, e, edges_mm, row)
                break
            lne = math.log(e)
            r_now = interp_uniform(lne, ln_e0, dln, range_cm)
            e_end = e * (1.0 - eps)
            if e_end < e_cut:
                e_end = e_cut
            r_end = interp_uniform(math.log(e_end), ln_e0, dln, range_cm)
            s_max = r_now - r_end
            if s_max <= 0.0:
                score(x, y, z, e, edges_mm, row)
                break
            lne_end = math.log(e_end)
            sig_a = (interp_uniform(lne, ln_e0, dln, sigma_hard)
                     + interp_uniform(lne, ln_e0, dln, sigma_brems))
            sig_b = (interp_uniform(lne_end, ln_e0, dln, sigma_hard)
                     + interp_uniform(lne_end, ln_e0, dln, sigma_brems))
            sig_max = max(sig_a, sig_b)
            hard = False
            brems = False
            s = s_max
            e_new = e_end
            if sig_max > 0.0:
                s_h = -math.log(rand_pos(st)) / sig_max
                if s_h < s_max:
                    s = s_h
                    e_new = energy_from_range(r_now - s, range_cm, energies)
                    lnn = math.log(e_new)
                    sig_m = 0.0
                    if e_new > 2.0 * w_cut:
                        sig_m = interp_uniform(lnn, ln_e0, dln, sigma_hard)
                    sig_r = 0.0
                    if e_new > k_cut:
                        sig_r = interp_uniform(lnn, ln_e0, dln, sigma_brems)
                    xi = rand(st) * sig_max
                    if xi < sig_m:
                        hard = True
                    elif xi < sig_m + sig_r:
                        brems = True
            de = e - e_new
            lam1 = interp_uniform(math.log(0.5 * (e + e_new)), ln_e0, dln, lambda1_cm)
            dep = de
            acc[1] += 1.0
            # random hinge
            tau = rand(st)
            s1 = tau * s
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
            if brems:
                kph = sample_brems(e, k_cut, st)
                if kph > 0.0:
                    e = e - kph
                    acc[3] += kph
                    transport_photon_from(x, y, z, u, v, w, kph, st, edges_mm, row, acc,
                                          p_ln_e0, p_dln, mu_c_tab, mu_p_tab, p_cut)
            elif hard:
                wd = sample_moller(e, w_cut, st)
                tt = e + 2.0 * MC2
                cd = math.sqrt(min(1.0, wd * tt / (e * (wd + 2.0 * MC2))))
                cp = math.sqrt(min(1.0, (e - wd) * tt / (e * (e - wd + 2.0 * MC2))))
                phi = _TWO_PI * rand(st)
                ud, vd, wdd = rotate(u, v, w, cd, phi + math.pi)
                u, v, w = rotate(u, v, w, cp, phi)
                e = e - wd
                if wd > e_cut and nst < nmax:
                    stack[nst, 0] = x
                    stack[nst, 1] = y
                    stack[nst, 2] = z
                    stack[nst, 3] = ud
                    stack[nst, 4] = vd
                    stack[nst, 5] = wdd
                    stack[nst, 6] = wd
                    nst += 1
                else:
                    score(x, y, z, wd, edges_mm, row)


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
                     line_e, line_cum, n_total, ln_e0, dln, range_cm, sigma_hard, sigma_brems,
                     lambda1_cm, energies, ln_m0, dln_m, ln_a_tab, e_cut, w_cut, eps, k_cut,
                     p_ln_e0, p_dln, mu_c_tab, mu_p_tab, p_cut):
    """One electron history from the origin: energy from the source, isotropic direction,
    transport.  ``acc``: [escaped MeV (bremsstrahlung photons beyond the last shell),
    steps, emitted MeV, bremsstrahlung photon MeV]."""
    e0 = sample_emission(st, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum, n_total)
    acc[2] += e0
    u, v, w = isotropic(st)
    transport_electron(0.0, 0.0, 0.0, u, v, w, e0, st, edges_mm, row, acc, stack,
                       ln_e0, dln, range_cm, sigma_hard, sigma_brems, lambda1_cm, energies,
                       ln_m0, dln_m, ln_a_tab, e_cut, w_cut, eps, k_cut,
                       p_ln_e0, p_dln, mu_c_tab, mu_p_tab, p_cut)


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
def transport_photon(e, st, edges_mm, row, acc, ln_e0, dln, mu_c_tab, mu_p_tab, p_cut):
    """One photon of energy e from the origin, isotropic.  acc[0] += escaping energy,
    acc[1] += interactions."""
    u, v, w = isotropic(st)
    transport_photon_from(0.0, 0.0, 0.0, u, v, w, e, st, edges_mm, row, acc,
                          ln_e0, dln, mu_c_tab, mu_p_tab, p_cut)


@_jit
def transport_photon_from(x, y, z, u, v, w, e, st, edges_mm, row, acc, ln_e0, dln, mu_c_tab,
                          mu_p_tab, p_cut):
    """One photon of energy e (MeV) from (x, y, z) cm in direction (u, v, w): free flights,
    photoelectric absorption, Klein-Nishina Compton (the electron's energy deposited on
    the spot).  acc[0] += escaping energy (beyond the last shell), acc[1] += interactions
    (for a bremsstrahlung photon they add to its electron's step count)."""
    r_max_cm = edges_mm[edges_mm.size - 1] / 10.0
    while True:
        if e < p_cut:
            score(x, y, z, e, edges_mm, row)
            return
        lne = math.log(e)
        mc = interp_uniform(lne, ln_e0, dln, mu_c_tab)
        mp = interp_uniform(lne, ln_e0, dln, mu_p_tab)
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
def photon_history(st, edges_mm, row, acc, line_e, line_cum, n_total,
                   ln_e0, dln, mu_c_tab, mu_p_tab, p_cut):
    """One photon history: a line drawn by its yield, transported from the origin.
    ``acc``: [escaped MeV, interactions, emitted MeV]."""
    r = rand(st) * n_total
    k = bisect_right(line_cum, r)
    if k >= line_e.size:
        k = line_e.size - 1
    e0 = line_e[k]
    acc[2] += e0
    transport_photon(e0, st, edges_mm, row, acc, ln_e0, dln, mu_c_tab, mu_p_tab, p_cut)
