"""Media of the Monte Carlo: elemental composition, density, mean excitation energy.

A medium is what the electron and photon transport need to know about the matter:

* ``elements``: mass fractions w_i of the elements (Z_i, A_i from ``xraydb``), which give
  the electron density N_A sum w_i Z_i/A_i (Bethe stopping power, Moller and Compton
  cross sections), sum w_i Z_i (Z_i + 1)/A_i (elastic scattering, bremsstrahlung) and the
  photoelectric cross section by the mixture rule (:mod:`voxdose.montecarlo.photon_data`);
* ``I_eV``: the mean excitation energy of the Bethe formula;
* ``sternheimer``: the density-effect parameters (C, X0, X1, a, m, delta0) of Sternheimer,
  Berger & Seltzer, Atomic Data and Nuclear Data Tables 30:261 (1984) (Table 1; -C is
  tabulated there, C here) for the four built-in media; a user's medium without them gets
  the general formula of Sternheimer & Peierls (1971) (:func:`sternheimer_parameters`);
* ``density_g_cm3``: the bulk density of the transport (path lengths in cm = g/cm^2 / rho).

Inflated lung is ICRP lung tissue at the bulk density of ICRU Report 46 (0.26 g/cm^3): a
homogenised mixture of tissue and air.  Its density effect is that of the tissue
(``density_effect_g_cm3`` 1.05), because the polarisation that causes it is microscopic.

Compositions: the NIST material compositions of ESTAR / the X-ray attenuation database
(ICRP Publication 23 for the ICRP tissues; ICRU Report 37), see ``source`` of each entry.
"""

from __future__ import annotations

import math
from functools import cache

from ..core.errors import InputError

#: Liquid water: Sternheimer, Berger & Seltzer (1984) parameters; ICRU 37 I-value.
WATER = {
    "name": "water",
    "density_g_cm3": 1.0,
    "composition": (("H", 0.111894), ("O", 0.888106)),
    "I_eV": 75.0,
    "sternheimer": {"C": 3.5017, "X0": 0.2400, "X1": 2.8004, "a": 0.09116, "m": 3.4773,
                    "delta0": 0.0},
    "source": "liquid water H2O; I = 75.0 eV (ICRU 37); density-effect parameters of "
              "Sternheimer, Berger & Seltzer, ADNDT 30:261 (1984)",
}

SOFT_TISSUE = {
    "name": "soft-tissue",
    "density_g_cm3": 1.03,
    "composition": (("H", 0.104472), ("C", 0.232190), ("N", 0.024880), ("O", 0.630238),
                    ("Na", 0.001130), ("Mg", 0.000130), ("P", 0.001330), ("S", 0.001990),
                    ("Cl", 0.001340), ("K", 0.001990), ("Ca", 0.000230), ("Fe", 0.000050),
                    ("Zn", 0.000030)),
    "I_eV": 72.3,
    "sternheimer": {"C": 3.4354, "X0": 0.2211, "X1": 2.7799, "a": 0.08926, "m": 3.5110,
                    "delta0": 0.0},
    "source": "Tissue, Soft (ICRP): NIST ESTAR composition and I = 72.3 eV (ICRP "
              "Publication 23), at 1.03 g/cm^3 (ICRP reference soft tissue; NIST lists "
              "1.00); density-effect parameters of Sternheimer, Berger & Seltzer (1984) "
              "for 1.00 g/cm^3 (3 % denser shifts C by 0.03: < 0.1 % in stopping power)",
}

LUNG = {
    "name": "lung",
    "density_g_cm3": 0.26,
    "density_effect_g_cm3": 1.05,
    "composition": (("H", 0.101278), ("C", 0.102310), ("N", 0.028650), ("O", 0.757072),
                    ("Na", 0.001840), ("Mg", 0.000730), ("P", 0.000800), ("S", 0.002250),
                    ("Cl", 0.002660), ("K", 0.001940), ("Ca", 0.000090), ("Fe", 0.000370),
                    ("Zn", 0.000010)),
    "I_eV": 75.3,
    "sternheimer": {"C": 3.4708, "X0": 0.2261, "X1": 2.8001, "a": 0.08588, "m": 3.5353,
                    "delta0": 0.0},
    "source": "Lung (ICRP): NIST ESTAR composition and I = 75.3 eV (ICRP Publication 23; "
              "NIST density 1.05 g/cm^3), at the inflated-lung bulk density 0.26 g/cm^3 "
              "(ICRU Report 46); density-effect parameters of Sternheimer, Berger & "
              "Seltzer (1984) for the tissue at 1.05 g/cm^3",
}

CORTICAL_BONE = {
    "name": "bone",
    "density_g_cm3": 1.85,
    "composition": (("H", 0.047234), ("C", 0.144330), ("N", 0.041990), ("O", 0.446096),
                    ("Mg", 0.002200), ("P", 0.104970), ("S", 0.003150), ("Ca", 0.209930),
                    ("Zn", 0.000100)),
    "I_eV": 106.4,
    "sternheimer": {"C": 3.6488, "X0": 0.1161, "X1": 3.0919, "a": 0.06198, "m": 3.5919,
                    "delta0": 0.0},
    "source": "Bone, Cortical (ICRP): NIST ESTAR composition, I = 106.4 eV and "
              "1.85 g/cm^3 (ICRP Publication 23); density-effect parameters of Sternheimer, "
              "Berger & Seltzer (1984)",
}

#: The media of the Monte Carlo, by the names ``load_point_kernel`` and the CLI use.
MEDIA = {m["name"]: m for m in (WATER, SOFT_TISSUE, LUNG, CORTICAL_BONE)}


def get_medium(medium) -> dict:
    """The medium dict for a name (``water``, ``soft-tissue``, ``lung``, ``bone``) or a dict
    (returned as is, with ``elements`` filled in)."""
    if isinstance(medium, dict):
        m = medium
    else:
        from ..kernels.point import canonical_medium

        m = MEDIA[canonical_medium(medium)]
    return with_elements(m)


def with_elements(m: dict) -> dict:
    """``m`` with ``elements`` = ((w, Z, A g/mol), ...) filled in from ``composition``
    (Z and standard atomic weights from xraydb); mass fractions must sum to 1 (1e-3)."""
    if "elements" in m:
        return m
    return _with_elements_cached(m["name"], tuple(m["composition"]), m)


def _with_elements_cached(name, composition, m):
    key = (name, composition)
    if key not in _ELEMENT_CACHE:
        import xraydb

        total = sum(w for _, w in composition)
        if abs(total - 1.0) > 1e-3:
            raise InputError(f"medium '{name}': mass fractions sum to {total:.5f}, not 1")
        els = tuple((w / total, int(xraydb.atomic_number(sym)), float(xraydb.atomic_mass(sym)))
                    for sym, w in composition)
        out = dict(m)
        out["elements"] = els
        _ELEMENT_CACHE[key] = out
    return _ELEMENT_CACHE[key]


_ELEMENT_CACHE: dict = {}


def plasma_energy_ev(m: dict) -> float:
    """hbar omega_p = 28.816 sqrt(rho Z/A) eV (rho in g/cm^3, Z/A in mol/g) at the density
    of the density effect (``density_effect_g_cm3``, else ``density_g_cm3``)."""
    m = with_elements(m)
    rho = float(m.get("density_effect_g_cm3", m["density_g_cm3"]))
    za = sum(w * z / a for w, z, a in m["elements"])
    return 28.816 * math.sqrt(rho * za)


@cache
def _sp_general(i_ev: float, hw_p: float) -> tuple:
    c = 2.0 * math.log(i_ev / hw_p) + 1.0
    if i_ev < 100.0:
        x1 = 2.0
        x0 = 0.2 if c < 3.681 else 0.326 * c - 1.0
    else:
        x1 = 3.0
        x0 = 0.2 if c < 5.215 else 0.326 * c - 1.5
    m_exp = 3.0
    a = (c - 4.606 * x0) / (x1 - x0) ** m_exp
    return c, x0, x1, a, m_exp


def sternheimer_parameters(m: dict) -> dict:
    """Density-effect parameters {C, X0, X1, a, m, delta0} of medium ``m``.

    The published set when the medium carries one; otherwise the general formula of
    R. M. Sternheimer and R. F. Peierls, Phys. Rev. B 3, 3681 (1971), for solids and
    liquids (delta0 = 0, insulators)::

        C  = 2 ln(I / hbar omega_p) + 1
        I < 100 eV:  X1 = 2, X0 = 0.2 if C < 3.681 else 0.326 C - 1.0
        I >= 100 eV: X1 = 3, X0 = 0.2 if C < 5.215 else 0.326 C - 1.5
        m = 3,  a = (C - 4.606 X0) / (X1 - X0)^3
    """
    if m.get("sternheimer"):
        return m["sternheimer"]
    c, x0, x1, a, m_exp = _sp_general(float(m["I_eV"]), plasma_energy_ev(m))
    return {"C": c, "X0": x0, "X1": x1, "a": a, "m": m_exp, "delta0": 0.0}


def describe(m: dict) -> dict:
    """JSON-serialisable description of a medium (for kernel provenance)."""
    m = with_elements(m)
    return {
        "name": m["name"],
        "density_g_cm3": m["density_g_cm3"],
        "composition_mass_fractions": {s: w for s, w in m["composition"]},
        "I_eV": m["I_eV"],
        "sternheimer": sternheimer_parameters(m),
        "source": m["source"],
    }
