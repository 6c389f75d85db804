"""Condensed-history electron transport (class II, Numba) in water or any medium of
:mod:`voxdose.montecarlo.media`.

Model (Berger's class II condensed history, M. J. Berger, "Monte Carlo calculation of the
penetration and diffusion of fast charged particles", Methods Comput. Phys. 1, 135 (1963))

* **Continuous energy loss** with the restricted stopping power
  ``S_r(T) = L_c(T; W_c) + S_rad(T) g_soft(T)`` (:mod:`voxdose.montecarlo.stopping_power`),
  steps of a fixed fractional energy loss ``eps`` (default 2 %): the step from T to
  T(1 - eps) has path length ``s = R_r(T) - R_r(T(1 - eps))``, R_r the restricted range
  (tabulated).  The continuous loss is deposited along the step (it includes the soft
  bremsstrahlung photons below k_c = 10 keV, absorbed within a few mm).
* **Bremsstrahlung photons** with k >= k_c are discrete events: the photon spectrum is
  the non-relativistic Bethe-Heitler (Born) law k dsigma/dk ~ f(k/T),
  f(x) = ln[(1 + sqrt(1 - x))^2 / x] (Heitler 1954, Sec. 25; integral 2 over 0..1),
  normalised to the radiative stopping power S_rad, so
  ``Sigma_brems = S_rad/T * int_{x_c}^1 f(x)/x dx / 2`` and
  ``g_soft = int_0^{x_c} f(x) dx / 2`` (x_c = k_c/T).  The electron loses k; the photon
  starts along the electron's direction (the angular spread of the emission is neglected:
  it matters little at the tens of cm these photons travel) and is transported by the
  photon code of :mod:`voxdose.montecarlo.photon`.  So the bremsstrahlung energy (0.5 % of
  Y-90's) is spread where it goes instead of leaving the table.
* **Energy-loss straggling** by explicit hard collisions: knock-on (delta) electrons with
  energy W >= W_c (default 10 keV) are sampled from the Moller cross section
  ``dsigma/deps ~ 1/eps^2 + 1/(1-eps)^2 + (tau/(tau+1))^2 - (2 tau+1)/(tau+1)^2/(eps(1-eps))``
  (eps = W/T <= 1/2) with the total cross section of
  :func:`~voxdose.montecarlo.stopping_power.moller_total_cross_section` (delta scattering with the
  larger of the values at the step's two ends as majorant), and transported like the
  primary; directions from two-body kinematics:
  ``cos theta_delta = sqrt(W (T + 2mc^2) / (T (W + 2mc^2)))``,
  ``cos theta_1 = sqrt((T - W)(T + 2mc^2) / (T (T - W + 2mc^2)))``, opposite azimuths.
  This gives the Landau-like tail of the energy-loss distribution that a Gaussian model
  misses.
* **Multiple elastic scattering** per step: the Goudsmit-Saunderson result
  ``<cos theta> = exp(-s / lambda_1)`` (exact for any single-scattering law) fixes the
  mean deflection; the angle is sampled from a screened-Rutherford (Wentzel) distribution
  ``p(mu') = A(1+A)/(mu' + A)^2`` on mu' = (1 - cos theta)/2 in [0, 1] whose screening A
  is chosen so that ``<mu'> = A(1+A) ln(1 + 1/A) - A = (1 - exp(-s/lambda_1))/2``
  (the "modified Wentzel" idea of Bielajew & Salvat / PENELOPE).  lambda_1 from
  :func:`~voxdose.montecarlo.stopping_power.transport_cross_section` (screened Rutherford with
  Moliere screening).  Sampling: ``mu' = A xi / (1 + A - xi)``.
* **Spatial step: random hinge** (Kawrakow & Bielajew 1998; PENELOPE): move a uniform
  random fraction tau of s along the old direction, deflect, move (1 - tau) s; each
  segment's share of the deposited energy is scored at its midpoint.
* Below the absorption energy ``e_cut`` (default 5 keV, CSDA range 0.8 um) the electron
  deposits its remaining energy where it stands.

Units inside: cm (tables at the medium's bulk density), MeV; scoring radii in mm.  The per-history
code is in :mod:`voxdose.montecarlo.transport` (compiled for the CPU here and for CUDA by
:mod:`voxdose.montecarlo.transport_cuda`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import media, photon
from . import stopping_power as sp
from .transport import (  # noqa: F401  (re-exported: the shared per-history code)
    ElectronArrays,
    electron_history,
    energy_from_range,
    sample_brems,
    sample_emission,
    sample_moller,
    transport_electron,
    wentzel_cos,
)

#: Default absorption (tracking-cut) energy, MeV.
E_CUT_MEV = 0.005
#: Default delta-ray production threshold W_c, MeV.
W_CUT_MEV = 0.010
#: Default fractional energy loss per step.
EPS_STEP = 0.02


#: Bremsstrahlung photon production threshold k_c, MeV (the photons themselves are followed
#: down to :data:`voxdose.montecarlo.photon.P_CUT_MEV`, 1 keV).
K_CUT_MEV = 0.010


@dataclass(frozen=True)
class ElectronTables:
    """Tables on a uniform ln(T) grid (T in MeV; lengths in cm at the medium's density)."""

    ln_e0: float
    dln: float
    range_cm: np.ndarray       # restricted range R_r(T), cm
    sigma_hard: np.ndarray     # Moller macroscopic cross section for W >= W_c, 1/cm
    sigma_brems: np.ndarray    # bremsstrahlung photons k >= k_c, 1/cm
    lambda1_cm: np.ndarray     # transport mean free path, cm
    energies: np.ndarray       # T on the grid, MeV
    wentzel_ln_m0: float       # uniform grid in ln <mu'> for the Wentzel screening
    wentzel_dln_m: float
    wentzel_ln_a: np.ndarray   # ln A on that grid
    e_cut: float
    w_cut: float
    eps: float
    k_cut: float
    photons: photon.PhotonTables   # for the bremsstrahlung photons
    medium: str = "water"
    density_g_cm3: float = 1.0


def brems_fractions(t_mev, k_cut: float = K_CUT_MEV):
    """(g_soft, h_hard) of the bremsstrahlung law f(x) (module docstring) at energies T:
    g_soft = int_0^{x_c} f dx / 2 (share of S_rad below k_c), h_hard =
    int_{x_c}^1 f(x)/x dx / 2 (Sigma_brems = S_rad/T h_hard); x_c = k_c/T."""
    u = np.linspace(math.log(1e-14), 0.0, 20001)          # u = ln x
    x = np.exp(u)
    f = 2.0 * np.log1p(np.sqrt(np.clip(1.0 - x, 0.0, None))) - u
    du = u[1] - u[0]
    cum_fx = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] * x[1:] + f[:-1] * x[:-1]) * du)])
    cum_f = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * du)])
    cum_fx += x[0] * (f[0] + 1.0)       # int_0^{x0} f dx, f ~ ln(4/x)
    xc = np.clip(k_cut / np.asarray(t_mev, dtype=np.float64), 1e-14, 1.0)
    lu = np.log(xc)
    g_soft = np.interp(lu, u, cum_fx) / cum_fx[-1]
    h_hard = (cum_f[-1] - np.interp(lu, u, cum_f)) / cum_fx[-1]
    return g_soft, h_hard


def _wentzel_inverse(n: int = 4000):
    """Tabulate ln A as a function of ln <mu'> for the Wentzel distribution."""
    ln_a = np.linspace(math.log(1e-12), math.log(1e5), 20000)
    a = np.exp(ln_a)
    m = a * (1.0 + a) * np.log1p(1.0 / a) - a
    ok = np.concatenate([[True], np.diff(m) > 0]) & (m > 0)
    ln_m = np.log(m[ok])
    grid = np.linspace(math.log(1e-10), math.log(0.4995), n)
    return float(grid[0]), float(grid[1] - grid[0]), np.interp(grid, ln_m, ln_a[ok])


def electron_tables(medium="water", e_cut: float = E_CUT_MEV, w_cut: float = W_CUT_MEV,
                    eps: float = EPS_STEP, e_max: float = 4.0, n_per_decade: int = 400,
                    k_cut: float = K_CUT_MEV, p_max: float | None = None) -> ElectronTables:
    """Build the transport tables for ``medium`` (name or dict of
    :mod:`voxdose.montecarlo.media`; see the module docstring) for electrons up to ``e_max``
    MeV, with photon tables (bremsstrahlung) up to ``p_max`` (default max(3, e_max))."""
    m = media.get_medium(medium)
    rho = float(m["density_g_cm3"])
    e_lo = 1e-3
    n = int(math.ceil(math.log10(e_max / e_lo) * n_per_decade)) + 1
    ln_e = np.linspace(math.log(e_lo), math.log(e_max), n)
    t = np.exp(ln_e)
    l_c = sp.restricted_collision_stopping_power(t, w_cut, m)
    s_rad = sp.radiative_stopping_power(t, m)
    g_soft, h_hard = brems_fractions(t, k_cut)
    s_r = l_c + s_rad * g_soft
    inv = 1.0 / s_r
    r0 = e_lo / (2.0 * s_r[0])
    rng = r0 + np.concatenate([[0.0], np.cumsum(0.5 * (inv[1:] + inv[:-1]) * np.diff(t))])
    sig = sp.moller_total_cross_section(t, w_cut, m)
    sig_b = np.where(t > k_cut, s_rad / t * h_hard, 0.0)
    lam1 = 1.0 / sp.transport_cross_section(t, m)
    m0, dm, wa = _wentzel_inverse()
    return ElectronTables(float(ln_e[0]), float(ln_e[1] - ln_e[0]), rng / rho, sig * rho,
                          sig_b * rho, lam1 / rho, t, m0, dm, wa, float(e_cut),
                          float(w_cut), float(eps), float(k_cut),
                          photon.photon_tables(m, e_max=p_max or max(3.0, e_max)),
                          m["name"], rho)


# ---------------------------------------------------------------------------------------
# Numba kernels (the per-history transport is in voxdose.montecarlo.transport, shared
# with CUDA)
# ---------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def run_electron_batches(states, n_per_batch, edges_mm, beta_yield, beta_e, beta_p, beta_cdf,
                         line_e, line_cum, n_total, tab, pt):
    """Run ``n_per_batch`` electrons from the origin in each batch (parallel over batches),
    with the electron and photon tables ``tab``, ``pt``
    (:class:`~voxdose.montecarlo.transport.ElectronArrays`,
    :class:`~voxdose.montecarlo.transport.PhotonArrays`: ``*table_args(tables)``).

    Returns (tally[n_batches, n_edges] MeV summed over histories (last column: beyond the
    last edge), acc[n_batches, 4]: escaped MeV (bremsstrahlung photons beyond the last
    edge), steps, emitted MeV, bremsstrahlung photon MeV).
    """
    nb = states.shape[0]
    tally = np.zeros((nb, edges_mm.size))
    acc = np.zeros((nb, 4))
    for b in prange(nb):
        st = states[b]
        stack = np.zeros((256, 7))
        row = tally[b]
        a = acc[b]
        for _ in range(n_per_batch):
            electron_history(st, edges_mm, row, a, stack, beta_yield, beta_e, beta_p,
                             beta_cdf, line_e, line_cum, n_total, tab, pt)
    return tally, acc


@njit(cache=True)
def sample_many(st, n, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum, n_total):
    """n energies from :func:`sample_emission` (for tests of the source)."""
    out = np.empty(n)
    for i in range(n):
        out[i] = sample_emission(st, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum,
                                 n_total)
    return out


def kernel_tables(t: ElectronTables) -> ElectronArrays:
    """The electron tables as the per-history code takes them
    (:class:`~voxdose.montecarlo.transport.ElectronArrays`)."""
    return ElectronArrays(
        float(t.ln_e0), float(t.dln), _f64(t.range_cm), _f64(t.sigma_hard),
        _f64(t.sigma_brems), _f64(t.lambda1_cm), _f64(t.energies), float(t.wentzel_ln_m0),
        float(t.wentzel_dln_m), _f64(t.wentzel_ln_a), float(t.e_cut), float(t.w_cut),
        float(t.eps), float(t.k_cut))


def table_args(t: ElectronTables) -> tuple:
    """The tables as the positional tail of the kernels' arguments
    (:func:`run_electron_batches`,
    :func:`~voxdose.montecarlo.transport_cuda.run_electron_batches_cuda`): the electron
    tables and the photon tables of the bremsstrahlung photons, ``(tab, pt)``."""
    return kernel_tables(t), photon.kernel_tables(t.photons)


def _f64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)
