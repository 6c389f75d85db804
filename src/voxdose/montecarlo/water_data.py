"""Interaction data for liquid water (density 1.0 g/cm^3), small tables with citations.

Photons
    Mass attenuation coefficient mu/rho and mass energy-absorption coefficient mu_en/rho,
    cm^2/g, from J. H. Hubbell and S. M. Seltzer, *Tables of X-Ray Mass Attenuation
    Coefficients and Mass Energy-Absorption Coefficients 1 keV to 20 MeV for Elements
    Z = 1 to 92 and 48 Additional Substances of Dosimetric Interest*, NISTIR 5632 (1995),
    Table 4, "Water, Liquid".  Tabulated at 0.010 ... 3.0 MeV; interpolated log-log:
    ``ln(mu/rho)`` linear in ``ln E``.  Outside 0.01-3 MeV an :class:`InputError` is raised.

Electrons
    CSDA range from the empirical range-energy relation of L. Katz and A. S. Penfold,
    Rev. Mod. Phys. 24, 28 (1952)::

        R = 0.412 E^(1.265 - 0.0954 ln E)   g/cm^2,  0.01 <= E <= 2.5 MeV
        R = 0.530 E - 0.106                 g/cm^2,  E > 2.5 MeV
        R = R(0.01) (E / 0.01)^1.7          g/cm^2,  E < 0.01 MeV (foundation extrapolation)

    (E in MeV).  It lies within ~6 % of the NIST ESTAR CSDA ranges of liquid water
    (ESTAR: 0.01431 g/cm^2 at 0.1 MeV, 0.4367 at 1 MeV, 0.9785 at 2 MeV; Katz-Penfold gives
    0.0135, 0.412 and 0.946, i.e. 3-6 % short).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError

#: Photon energies of the tables, MeV (NISTIR 5632 grid, 10 keV - 3 MeV).
PHOTON_ENERGY_MEV = np.array([
    0.010, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.15, 0.20,
    0.30, 0.40, 0.50, 0.60, 0.80, 1.0, 1.25, 1.5, 2.0, 3.0,
])
#: mu/rho of liquid water, cm^2/g (Hubbell & Seltzer 1995, Table 4).
MU_OVER_RHO_CM2_G = np.array([
    5.329, 1.673, 0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505, 0.1370,
    0.1186, 0.1061, 0.09687, 0.08956, 0.07865, 0.07072, 0.06323, 0.05754, 0.04942, 0.03969,
])
#: mu_en/rho of liquid water, cm^2/g (Hubbell & Seltzer 1995, Table 4).
MU_EN_OVER_RHO_CM2_G = np.array([
    4.944, 1.374, 0.5503, 0.1557, 0.06947, 0.04223, 0.03190, 0.02597, 0.02546, 0.02764,
    0.02967, 0.03192, 0.03279, 0.03299, 0.03284, 0.03206, 0.03103, 0.02965, 0.02833,
    0.02608, 0.02281,
])

PHOTON_DATA_SOURCE = "Hubbell & Seltzer (1995) NISTIR 5632 Table 4, water (liquid)"
ELECTRON_RANGE_SOURCE = "Katz & Penfold (1952) Rev. Mod. Phys. 24:28, range-energy relation"

_LN_E = np.log(PHOTON_ENERGY_MEV)
_LN_MU = np.log(MU_OVER_RHO_CM2_G)
_LN_MU_EN = np.log(MU_EN_OVER_RHO_CM2_G)
_E_MIN, _E_MAX = float(PHOTON_ENERGY_MEV[0]), float(PHOTON_ENERGY_MEV[-1])
_REL_TOL = 1e-9  # accept the table ends despite round-off


def _loglog(e_mev, ln_table, what: str):
    e = np.asarray(e_mev, dtype=np.float64)
    if e.size and (not np.all(np.isfinite(e)) or np.any(e < _E_MIN * (1 - _REL_TOL))
                   or np.any(e > _E_MAX * (1 + _REL_TOL))):
        raise InputError(
            f"{what} of water is tabulated for photon energies {_E_MIN}-{_E_MAX} MeV only; "
            f"got {e.min() if e.size else e} - {e.max() if e.size else e} MeV")
    ec = np.clip(e, _E_MIN, _E_MAX)
    out = np.exp(np.interp(np.log(ec), _LN_E, ln_table))
    return float(out) if out.ndim == 0 else out


def mu_over_rho_cm2_g(e_mev):
    """Mass attenuation coefficient of water mu/rho(E), cm^2/g (E in MeV, 0.01-3 MeV).

    Log-log interpolation of Hubbell & Seltzer (1995) Table 4.  Scalar in, float out;
    array in, array out.  Raises :class:`InputError` outside the table.
    """
    return _loglog(e_mev, _LN_MU, "mu/rho")


def mu_en_over_rho_cm2_g(e_mev):
    """Mass energy-absorption coefficient of water mu_en/rho(E), cm^2/g (E in MeV).

    Log-log interpolation of Hubbell & Seltzer (1995) Table 4 (0.01-3 MeV).
    Raises :class:`InputError` outside the table.
    """
    return _loglog(e_mev, _LN_MU_EN, "mu_en/rho")


#: Katz-Penfold validity limits, MeV.
KP_E_LOW_MEV = 0.01
KP_E_HIGH_MEV = 2.5


def _kp(e):
    return 0.412 * e ** (1.265 - 0.0954 * np.log(e))


def csda_range_g_cm2(e_mev):
    """Electron CSDA range in water R(E), g/cm^2 (divide by density for cm), E in MeV.

    Katz-Penfold (1952): ``R = 0.412 E^(1.265 - 0.0954 ln E)`` for 0.01 <= E <= 2.5 MeV;
    ``R = 0.530 E - 0.106`` above 2.5 MeV; ``R(0.01) (E/0.01)^1.7`` below 0.01 MeV;
    R(0) = 0.  Within ~6 % of NIST ESTAR.  Raises :class:`InputError` for negative or
    non-finite energies.
    """
    e = np.asarray(e_mev, dtype=np.float64)
    if e.size and (not np.all(np.isfinite(e)) or np.any(e < 0)):
        raise InputError(f"electron energy must be finite and >= 0 MeV; got {e_mev}")
    safe = np.clip(e, KP_E_LOW_MEV, KP_E_HIGH_MEV)
    mid = _kp(safe)
    low = _kp(KP_E_LOW_MEV) * (e / KP_E_LOW_MEV) ** 1.7
    high = 0.530 * e - 0.106
    out = np.where(e < KP_E_LOW_MEV, low, np.where(e > KP_E_HIGH_MEV, high, mid))
    return float(out) if out.ndim == 0 else out
