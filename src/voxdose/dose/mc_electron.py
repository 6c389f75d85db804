"""Condensed-history electron transport in liquid water (class II, Numba).

Model (Berger's class II condensed history, M. J. Berger, "Monte Carlo calculation of the
penetration and diffusion of fast charged particles", Methods Comput. Phys. 1, 135 (1963))

* **Continuous energy loss** with the restricted stopping power
  ``S_r(T) = L_c(T; W_c) + S_rad(T)`` (:mod:`voxdose.dose.stopping_power`), steps of a
  fixed fractional energy loss ``eps`` (default 2 %): the step from T to T(1 - eps) has
  path length ``s = R_r(T) - R_r(T(1 - eps))``, R_r the restricted range (tabulated).
  The collision part ``L_c/S_r`` of the loss is deposited along the step; the radiative
  part ``S_rad/S_r`` is bremsstrahlung, tallied as *escaping* energy (not transported;
  ~1 % of Y-90's beta energy; it would be spread over tens of cm).
* **Energy-loss straggling** by explicit hard collisions: knock-on (delta) electrons with
  energy W >= W_c (default 10 keV) are sampled from the Moller cross section
  ``dsigma/deps ~ 1/eps^2 + 1/(1-eps)^2 + (tau/(tau+1))^2 - (2 tau+1)/(tau+1)^2/(eps(1-eps))``
  (eps = W/T <= 1/2) with the total cross section of
  :func:`~voxdose.dose.stopping_power.moller_total_cross_section` (delta scattering with the
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
  :func:`~voxdose.dose.stopping_power.transport_cross_section` (screened Rutherford with
  Moliere screening).  Sampling: ``mu' = A xi / (1 + A - xi)``.
* **Spatial step: random hinge** (Kawrakow & Bielajew 1998; PENELOPE): move a uniform
  random fraction tau of s along the old direction, deflect, move (1 - tau) s; each
  segment's share of the deposited energy is scored at its midpoint.
* Below the absorption energy ``e_cut`` (default 5 keV, CSDA range 0.8 um) the electron
  deposits its remaining energy where it stands.

Units inside: cm, MeV, density 1 g/cm^3 (water); scoring radii in mm.  The per-history
code is in :mod:`voxdose.dose.mc_transport` (compiled for the CPU here and for CUDA by
:mod:`voxdose.dose.mc_cuda`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import stopping_power as sp
from .mc_transport import (  # noqa: F401  (re-exported: the shared per-history code)
    electron_history,
    energy_from_range,
    sample_emission,
    sample_moller,
    transport_electron,
    wentzel_cos,
)

_energy_from_range = energy_from_range
_sample_moller = sample_moller
_wentzel_cos = wentzel_cos

#: Default absorption (tracking-cut) energy, MeV.
E_CUT_MEV = 0.005
#: Default delta-ray production threshold W_c, MeV.
W_CUT_MEV = 0.010
#: Default fractional energy loss per step.
EPS_STEP = 0.02


@dataclass(frozen=True)
class ElectronTables:
    """Tables on a uniform ln(T) grid (T in MeV, water, rho = 1)."""

    ln_e0: float
    dln: float
    range_cm: np.ndarray       # restricted range R_r(T), cm
    sigma_hard: np.ndarray     # Moller macroscopic cross section for W >= W_c, 1/cm
    lambda1_cm: np.ndarray     # transport mean free path, cm
    frac_rad: np.ndarray       # S_rad / S_r
    energies: np.ndarray       # T on the grid, MeV
    wentzel_ln_m0: float       # uniform grid in ln <mu'> for the Wentzel screening
    wentzel_dln_m: float
    wentzel_ln_a: np.ndarray   # ln A on that grid
    e_cut: float
    w_cut: float
    eps: float


def _wentzel_inverse(n: int = 4000):
    """Tabulate ln A as a function of ln <mu'> for the Wentzel distribution."""
    ln_a = np.linspace(math.log(1e-12), math.log(1e5), 20000)
    a = np.exp(ln_a)
    m = a * (1.0 + a) * np.log1p(1.0 / a) - a
    ok = np.concatenate([[True], np.diff(m) > 0]) & (m > 0)
    ln_m = np.log(m[ok])
    grid = np.linspace(math.log(1e-10), math.log(0.4995), n)
    return float(grid[0]), float(grid[1] - grid[0]), np.interp(grid, ln_m, ln_a[ok])


def electron_tables(e_cut: float = E_CUT_MEV, w_cut: float = W_CUT_MEV,
                    eps: float = EPS_STEP, e_max: float = 4.0,
                    n_per_decade: int = 400) -> ElectronTables:
    """Build the transport tables for water (see the module docstring)."""
    e_lo = 1e-3
    n = int(math.ceil(math.log10(e_max / e_lo) * n_per_decade)) + 1
    ln_e = np.linspace(math.log(e_lo), math.log(e_max), n)
    t = np.exp(ln_e)
    l_c = sp.restricted_collision_stopping_power(t, w_cut)
    s_rad = sp.radiative_stopping_power(t)
    s_r = l_c + s_rad
    inv = 1.0 / s_r
    r0 = e_lo / (2.0 * s_r[0])
    rng = r0 + np.concatenate([[0.0], np.cumsum(0.5 * (inv[1:] + inv[:-1]) * np.diff(t))])
    sig = sp.moller_total_cross_section(t, w_cut)
    lam1 = 1.0 / sp.transport_cross_section(t)
    m0, dm, wa = _wentzel_inverse()
    return ElectronTables(float(ln_e[0]), float(ln_e[1] - ln_e[0]), rng, sig, lam1,
                          s_rad / s_r, t, m0, dm, wa, float(e_cut), float(w_cut), float(eps))


# ---------------------------------------------------------------------------------------
# Numba kernels (the per-history transport is in mc_transport, shared with CUDA)
# ---------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def run_electron_batches(states, n_per_batch, edges_mm, beta_yield, beta_e, beta_p, beta_cdf,
                         line_e, line_cum, n_total,
                         ln_e0, dln, range_cm, sigma_hard, lambda1_cm, frac_rad, energies,
                         ln_m0, dln_m, ln_a_tab, e_cut, w_cut, eps):
    """Run ``n_per_batch`` electrons from the origin in each batch (parallel over batches).

    Returns (tally[n_batches, n_edges] MeV summed over histories (last column: beyond the
    last edge), acc[n_batches, 3]: bremsstrahlung MeV, steps, emitted MeV).
    """
    nb = states.shape[0]
    tally = np.zeros((nb, edges_mm.size))
    acc = np.zeros((nb, 3))
    for b in prange(nb):
        st = states[b]
        stack = np.zeros((256, 7))
        row = tally[b]
        a = acc[b]
        for _ in range(n_per_batch):
            electron_history(st, edges_mm, row, a, stack, beta_yield, beta_e, beta_p,
                             beta_cdf, line_e, line_cum, n_total, ln_e0, dln, range_cm,
                             sigma_hard, lambda1_cm, frac_rad, energies, ln_m0, dln_m,
                             ln_a_tab, e_cut, w_cut, eps)
    return tally, acc


@njit(cache=True)
def sample_many(st, n, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum, n_total):
    """n energies from :func:`sample_emission` (for tests of the source)."""
    out = np.empty(n)
    for i in range(n):
        out[i] = sample_emission(st, beta_yield, beta_e, beta_p, beta_cdf, line_e, line_cum,
                                 n_total)
    return out


def table_args(t: ElectronTables) -> tuple:
    """The tables as the positional tail of the Numba kernels' arguments."""
    return (t.ln_e0, t.dln, t.range_cm, t.sigma_hard, t.lambda1_cm, t.frac_rad, t.energies,
            t.wentzel_ln_m0, t.wentzel_dln_m, t.wentzel_ln_a, t.e_cut, t.w_cut, t.eps)
