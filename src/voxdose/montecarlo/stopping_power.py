"""Electron stopping powers and CSDA range from first principles (water and other media).

Collision stopping power (Bethe formula for electrons, ICRU Report 37 (1984) Eq. 2.3-2.4)::

    S_col/rho = K (Z/A) / beta^2 [ ln( tau^2 (tau + 2) / (2 (I/mc^2)^2) ) + F(tau) - delta ]
    F(tau)    = 1 - beta^2 + [ tau^2/8 - (2 tau + 1) ln 2 ] / (tau + 1)^2
    K         = 2 pi r_e^2 m c^2 N_A = 0.153537 MeV cm^2/mol

with tau = T/mc^2, Z/A = 0.555087 mol/g (water, H2O) and I = 75.0 eV (ICRU 37, the value
NIST ESTAR uses for liquid water).

Restricted collision stopping power (energy transfers W < W_c to secondary electrons,
Moller; Seltzer & Berger / ICRU 37)::

    L_c/rho = K (Z/A)/beta^2 [ ln(2 (tau + 2)/(I/mc^2)^2) - 1 - beta^2 + ln((tau - d) d)
              + tau/(tau - d) + (d^2/2 + (2 tau + 1) ln(1 - d/tau)) / (tau + 1)^2 - delta ]

with d = min(W_c, T/2)/mc^2; for d = tau/2 it equals S_col.

Density-effect correction delta (Sternheimer, Berger & Seltzer, Atomic Data and Nuclear
Data Tables 30, 261 (1984); parameters for liquid water: C = 3.5017, X0 = 0.2400,
X1 = 2.8004, a = 0.09116, m = 3.4773, delta0 = 0)::

    X = log10(beta gamma)
    delta = 0                                   X < X0
    delta = 4.6052 X - C + a (X1 - X)^m         X0 <= X < X1
    delta = 4.6052 X - C                        X >= X1

Radiative stopping power (approximation): the Bethe-Heitler bremsstrahlung energy-loss
cross section without screening (Heitler, *The Quantum Theory of Radiation*, 3rd ed. 1954,
Sec. 25; Evans, *The Atomic Nucleus*, 1955, Ch. 20), with Z^2 -> Z(Z+1) for the atomic
electrons::

    S_rad/rho = 4 alpha r_e^2 N_A sum_i w_i Z_i (Z_i + 1)/A_i * E * max(ln(2E/mc^2) - 1/3, 4/3)

E = T + mc^2 the total energy; the constant 4/3 is the non-relativistic limit (16/3 overall).
It reproduces ESTAR's radiative stopping power of water within ~10-20 % between 0.1 and
3 MeV (e.g. 0.0129 MeV cm^2/g at 1 MeV, ESTAR 0.0129); radiative losses are 1 % of the
collision losses at 1 MeV, so the range is insensitive to it.

CSDA range: R(T) = R(T_0) + int_{T_0}^{T} dT' / S_tot(T'), S_tot = S_col + S_rad, with
T_0 = 1 keV and R(T_0) = T_0 / (2 S_tot(T_0)) (S ~ 1/T below a few keV), by trapezoidal
integration on a fine logarithmic grid.  Checked against NIST ESTAR (liquid water):
0.01431 g/cm^2 at 0.1 MeV, 0.4367 at 1 MeV, 0.9785 at 2 MeV (tests/test_mc_physics.py).

All functions take kinetic energies in MeV and return MeV cm^2/g or g/cm^2.
"""

from __future__ import annotations

import math

import numpy as np

from . import media

#: Electron rest energy, MeV.
MC2 = 0.51099895
#: Classical electron radius, cm.
R_E_CM = 2.8179403262e-13
#: Avogadro constant, 1/mol.
N_A = 6.02214076e23
#: Fine-structure constant.
ALPHA = 1.0 / 137.035999
#: 2 pi r_e^2 m c^2 N_A, MeV cm^2 / mol.
K_BETHE = 2.0 * math.pi * R_E_CM**2 * MC2 * N_A

#: Liquid water (the default medium; others in :mod:`voxdose.montecarlo.media`).
WATER = media.with_elements(media.WATER)


def z_over_a(material=WATER) -> float:
    """Electrons per unit mass, mol/g (sum w_i Z_i / A_i)."""
    return float(sum(w * z / a for w, z, a in media.with_elements(material)["elements"]))


def z_z1_over_a(material=WATER) -> float:
    """sum w_i Z_i (Z_i + 1) / A_i, mol/g (bremsstrahlung and elastic scattering weight)."""
    return float(sum(w * z * (z + 1) / a
                     for w, z, a in media.with_elements(material)["elements"]))


def _kin(t_mev):
    t = np.asarray(t_mev, dtype=np.float64)
    tau = t / MC2
    gamma = tau + 1.0
    beta2 = tau * (tau + 2.0) / gamma**2
    return t, tau, gamma, beta2


def density_effect(t_mev, material=WATER):
    """Sternheimer density-effect correction delta(T) (dimensionless)."""
    _, tau, _, _ = _kin(t_mev)
    p = media.sternheimer_parameters(media.with_elements(material))
    x = np.log10(np.sqrt(tau * (tau + 2.0)))       # log10(beta gamma)
    d_mid = 4.6052 * x - p["C"] + p["a"] * np.clip(p["X1"] - x, 0.0, None) ** p["m"]
    d_hi = 4.6052 * x - p["C"]
    low = p["delta0"] * 10.0 ** (2.0 * (x - p["X0"]))
    return np.where(x < p["X0"], low, np.where(x < p["X1"], d_mid, d_hi))


def collision_stopping_power(t_mev, material=WATER):
    """Unrestricted collision stopping power S_col/rho (Bethe, ICRU 37), MeV cm^2/g."""
    _, tau, gamma, beta2 = _kin(t_mev)
    i_rel = material["I_eV"] * 1e-6 / MC2
    f = 1.0 - beta2 + (tau**2 / 8.0 - (2.0 * tau + 1.0) * math.log(2.0)) / gamma**2
    bracket = np.log(tau**2 * (tau + 2.0) / (2.0 * i_rel**2)) + f - density_effect(
        t_mev, material)
    return K_BETHE * z_over_a(material) / beta2 * bracket


def restricted_collision_stopping_power(t_mev, w_cut_mev, material=WATER):
    """Restricted collision stopping power L/rho for energy transfers below ``w_cut_mev``
    (Moller, Seltzer-Berger form; see the module docstring), MeV cm^2/g."""
    _, tau, gamma, beta2 = _kin(t_mev)
    i_rel = material["I_eV"] * 1e-6 / MC2
    d = np.minimum(np.asarray(w_cut_mev, dtype=np.float64), 0.5 * np.asarray(t_mev)) / MC2
    bracket = (np.log(2.0 * (tau + 2.0) / i_rel**2) - 1.0 - beta2 + np.log((tau - d) * d)
               + tau / (tau - d)
               + (0.5 * d * d + (2.0 * tau + 1.0) * np.log(1.0 - d / tau)) / gamma**2
               - density_effect(t_mev, material))
    return K_BETHE * z_over_a(material) / beta2 * bracket


def radiative_stopping_power(t_mev, material=WATER):
    """Radiative stopping power S_rad/rho (Bethe-Heitler, unscreened; approximation),
    MeV cm^2/g."""
    t = np.asarray(t_mev, dtype=np.float64)
    e_tot = t + MC2
    log_term = np.maximum(np.log(2.0 * e_tot / MC2) - 1.0 / 3.0, 4.0 / 3.0)
    return 4.0 * ALPHA * R_E_CM**2 * N_A * z_z1_over_a(material) * e_tot * log_term


def total_stopping_power(t_mev, material=WATER):
    """S_col/rho + S_rad/rho, MeV cm^2/g."""
    return collision_stopping_power(t_mev, material) + radiative_stopping_power(t_mev, material)


#: Lowest energy of the range integration, MeV.
T_LOW_MEV = 1e-3


def csda_range_g_cm2(t_mev, material=WATER, n_per_decade: int = 400):
    """CSDA range R(T), g/cm^2, by integrating 1/S_tot from 1 keV (see module docstring)."""
    t = np.asarray(t_mev, dtype=np.float64)
    t_max = max(float(np.max(t)) if t.size else T_LOW_MEV, T_LOW_MEV) * 1.0001
    n = max(16, int(math.ceil(math.log10(t_max / T_LOW_MEV) * n_per_decade)) + 1)
    grid = np.geomspace(T_LOW_MEV, t_max, n)
    inv = 1.0 / total_stopping_power(grid, material)
    r0 = T_LOW_MEV * inv[0] / 2.0
    cum = r0 + np.concatenate([[0.0], np.cumsum(0.5 * (inv[1:] + inv[:-1]) * np.diff(grid))])
    # below 1 keV: R ~ T^2 (S ~ 1/T)
    low = r0 * (np.clip(t, 0.0, None) / T_LOW_MEV) ** 2
    out = np.where(t < T_LOW_MEV, low, np.interp(t, grid, cum))
    return float(out) if out.ndim == 0 else out


def moller_total_cross_section(t_mev, w_cut_mev, material=WATER):
    """Macroscopic Moller cross section for energy transfers W_c <= W <= T/2, cm^2/g.

    Sigma/rho = K (Z/A) / (beta^2 T) [ 1/x0 - 1/(1 - x0) + g^2 (1/2 - x0)
                - c ln((1 - x0)/x0) ],  x0 = W_c/T, g = tau/(tau+1), c = (2 tau + 1)/(tau+1)^2
    (integral of the Moller cross section per electron, ICRU 37 Eq. 2.5); 0 if T <= 2 W_c.
    """
    _, tau, gamma, beta2 = _kin(t_mev)
    t = np.asarray(t_mev, dtype=np.float64)
    x0 = np.clip(np.asarray(w_cut_mev) / np.where(t > 0, t, 1.0), 1e-12, 0.5)
    g2 = (tau / gamma) ** 2
    c = (2.0 * tau + 1.0) / gamma**2
    br = 1.0 / x0 - 1.0 / (1.0 - x0) + g2 * (0.5 - x0) - c * np.log((1.0 - x0) / x0)
    sig = K_BETHE * z_over_a(material) / (beta2 * np.where(t > 0, t, 1.0)) * br
    return np.where(t > 2.0 * np.asarray(w_cut_mev), np.clip(sig, 0.0, None), 0.0)


def transport_cross_section(t_mev, material=WATER):
    """First transport cross section 1/lambda_1 of elastic scattering, cm^2/g.

    Screened Rutherford (Wentzel) cross section per atom with Moliere's screening angle,
    Z^2 -> Z(Z+1) for scattering by the atomic electrons::

        dsigma/dOmega = Z(Z+1) r_e^2 (mc^2/(p beta c))^2 / (1 - cos theta + 2A)^2
        sigma_1 = 2 pi Z(Z+1) r_e^2 (mc^2/(p beta c))^2 [ln(1 + 1/A) - 1/(1 + A)]
        A = (1/4) (hbar c / (p c a_TF))^2 (1.13 + 3.76 (alpha Z/beta)^2),
        a_TF = 0.88534 a_0 Z^(-1/3)

    (Moliere, Z. Naturforsch. 2a, 133 (1947); Bethe, Phys. Rev. 89, 1256 (1953)).
    1/lambda_1 = N_A sum_i (w_i/A_i) sigma_1,i.
    """
    _, tau, _, beta2 = _kin(t_mev)
    pc = MC2 * np.sqrt(tau * (tau + 2.0))
    beta = np.sqrt(beta2)
    hbar_c_cm = 1.973269804e-11   # MeV cm
    a0_cm = 0.529177210903e-8
    out = np.zeros_like(pc)
    for w, z, a in media.with_elements(material)["elements"]:
        a_tf = 0.88534 * a0_cm * z ** (-1.0 / 3.0)
        scr = 0.25 * (hbar_c_cm / (pc * a_tf)) ** 2 * (1.13 + 3.76 * (ALPHA * z / beta) ** 2)
        k = z * (z + 1) * R_E_CM**2 * (MC2 * MC2 / (pc * beta * MC2)) ** 2
        sig1 = 2.0 * math.pi * k * (np.log1p(1.0 / scr) - 1.0 / (1.0 + scr))
        out = out + N_A * w / a * sig1
    return out
