"""Radionuclide decay data, taken from the field's databases, never typed by hand.

* half-life and emissions: ``icrp107-database`` (ICRP Publication 107, 2008): half-life,
  beta spectrum, internal-conversion (IE) and Auger electrons, gamma and X-ray lines;
* ``radioactivedecay`` (whose default data set is the same ICRP-107 table) is imported only
  for a name that ICRP-107 does not list, to say why it cannot be used (unknown or stable).
  Its half-lives equal ICRP-107's converted to seconds, bit for bit, for all 1252 nuclides
  (tested); importing it costs about 2 s (SymPy, pandas, matplotlib), so it stays off the
  path of every command.

Energies in MeV, yields per decay.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import NuclideError

#: Nuclides the dose engine has been checked for. Others load but are flagged.
SUPPORTED = ("Lu-177", "Y-90")

#: Where :attr:`Nuclide.half_life_s` comes from.
HALF_LIFE_SOURCE = "ICRP Publication 107 (icrp107-database)"

#: Seconds per ICRP-107 time unit; the year is 365.2422 d, the year radioactivedecay uses
#: for the same table (both give the same float for every nuclide: tests/test_startup_io.py).
_TIME_UNIT_S = {"us": 1.0e-6, "ms": 1.0e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                "y": 365.2422 * 86400.0}

_NAME_PATTERNS = (
    re.compile(r"^(?P<el>[A-Za-z]{1,2})-?(?P<a>\d{1,3})(?P<m>m?)$"),   # Lu-177, Lu177
    re.compile(r"^(?P<a>\d{1,3})(?P<m>m?)-?(?P<el>[A-Za-z]{1,2})$"),   # 177Lu, 177-Lu
)


def canonical_name(name: str) -> str:
    """Normalise a user's nuclide name: 'Lu-177', '177Lu', 'lu177', '90Y' -> 'Lu-177', 'Y-90'."""
    s = str(name).strip().replace(" ", "")
    for pat in _NAME_PATTERNS:
        m = pat.match(s)
        if m:
            el = m.group("el").capitalize()
            return f"{el}-{int(m.group('a'))}{m.group('m')}"
    raise NuclideError(
        f"cannot read nuclide name '{name}'; write it like Lu-177, 177Lu, Y-90 or 90Y")


@dataclass(frozen=True, eq=False)
class Nuclide:
    """Decay data of one radionuclide.

    Attributes
    ----------
    name : canonical name, e.g. 'Lu-177'
    half_life_s : physical half-life, s
    beta_energy_mev, beta_pdf_per_mev : beta-minus spectrum dN/dE (normalised to 1 beta)
    beta_yield : betas per decay
    electron_lines_mev, electron_yields : discrete electrons (IE + Auger)
    photon_lines_mev, photon_yields : gamma and X-ray lines
    """

    name: str
    half_life_s: float
    beta_energy_mev: np.ndarray
    beta_pdf_per_mev: np.ndarray
    beta_yield: float
    beta_mean_energy_mev: float
    electron_lines_mev: np.ndarray
    electron_yields: np.ndarray
    photon_lines_mev: np.ndarray
    photon_yields: np.ndarray

    @property
    def decay_constant_per_s(self) -> float:
        """Physical decay constant lambda = ln 2 / T_1/2, 1/s."""
        return math.log(2.0) / self.half_life_s

    @property
    def half_life_h(self) -> float:
        return self.half_life_s / 3600.0

    @property
    def beta_energy_per_decay_mev(self) -> float:
        """Mean beta energy emitted per decay (yield x mean energy), MeV."""
        return self.beta_yield * self.beta_mean_energy_mev

    @property
    def discrete_electron_energy_per_decay_mev(self) -> float:
        return float(np.sum(self.electron_lines_mev * self.electron_yields))

    @property
    def electron_energy_per_decay_mev(self) -> float:
        """All electrons (beta + IE + Auger), MeV per decay."""
        return self.beta_energy_per_decay_mev + self.discrete_electron_energy_per_decay_mev

    @property
    def photon_energy_per_decay_mev(self) -> float:
        """All photons (gamma + X), MeV per decay."""
        return float(np.sum(self.photon_lines_mev * self.photon_yields))

    @property
    def supported(self) -> bool:
        return self.name in SUPPORTED


def _icrp(name: str, kind: str):
    from icrp107_database import get_icrp107_spectrum

    try:
        return get_icrp107_spectrum(name, kind)
    except KeyError:
        return {"energies": np.zeros(0), "weights": np.zeros(0)}


def icrp107_half_life_s(canon: str) -> float | None:
    """ICRP-107 half-life of the canonical name ``canon`` in seconds; None when ICRP-107 does
    not list the nuclide."""
    try:
        rec = _icrp(canon, "beta-")
    except Exception:  # the package raises a bare Exception for a name it does not hold
        return None
    return float(rec["half_life"]) * _TIME_UNIT_S[rec["time_unit"]]


def _not_in_icrp107(name: str, canon: str) -> NuclideError:
    """The error for a name ICRP-107 does not list: unknown, stable, or radioactive without
    ICRP-107 emissions (radioactivedecay tells which; imported only here)."""
    import radioactivedecay as rd

    try:
        half_life_s = float(rd.Nuclide(canon).half_life("s"))
    except Exception as exc:  # radioactivedecay raises several types for bad names
        return NuclideError(f"unknown nuclide '{name}' ({exc}); try Lu-177 or Y-90")
    if not math.isfinite(half_life_s):
        return NuclideError(f"nuclide '{canon}' is stable; it cannot be used for dosimetry")
    try:
        _icrp(canon, "beta-")
    except Exception as exc:
        return NuclideError(f"no ICRP-107 emission data for '{canon}' ({exc})")
    return NuclideError(f"no ICRP-107 half-life for '{canon}'")  # pragma: no cover


@lru_cache(maxsize=32)
def load_nuclide(name: str) -> Nuclide:
    """Load decay data for ``name`` (any accepted spelling). Raises :class:`NuclideError`."""
    canon = canonical_name(name)
    half_life_s = icrp107_half_life_s(canon)
    if half_life_s is None:
        raise _not_in_icrp107(name, canon) from None
    try:
        beta_lines = _icrp(canon, "beta-")
        spectrum = _icrp(canon, "b-spectra")
    except Exception as exc:
        raise NuclideError(f"no ICRP-107 emission data for '{canon}' ({exc})") from None
    e = np.asarray(spectrum["energies"], dtype=np.float64)
    w = np.asarray(spectrum["weights"], dtype=np.float64)
    beta_yield = float(np.sum(beta_lines["weights"]))
    if e.size > 1 and beta_yield > 0:
        norm = np.trapezoid(w, e)
        pdf = w / norm
        mean_e = float(np.trapezoid(pdf * e, e))
        # ICRP-107 lists the mean energy of each beta branch; prefer their yield-weighted mean,
        # which is the tabulated quantity (the spectrum integral agrees to <0.1 %).
        tab_mean = float(np.sum(beta_lines["energies"] * beta_lines["weights"]) / beta_yield)
        mean_e = tab_mean if abs(tab_mean - mean_e) / tab_mean < 0.01 else mean_e
    else:
        e, pdf, mean_e, beta_yield = np.zeros(0), np.zeros(0), 0.0, 0.0
    ie = _icrp(canon, "IE")
    auger = _icrp(canon, "auger")
    gam = _icrp(canon, "gamma")
    xr = _icrp(canon, "X")
    return Nuclide(
        name=canon,
        half_life_s=half_life_s,
        beta_energy_mev=e,
        beta_pdf_per_mev=pdf,
        beta_yield=beta_yield,
        beta_mean_energy_mev=mean_e,
        electron_lines_mev=np.concatenate([ie["energies"], auger["energies"]]).astype(float),
        electron_yields=np.concatenate([ie["weights"], auger["weights"]]).astype(float),
        photon_lines_mev=np.concatenate([gam["energies"], xr["energies"]]).astype(float),
        photon_yields=np.concatenate([gam["weights"], xr["weights"]]).astype(float),
    )


#: ICRP-107 emission kinds that voxdose's kernels do not model (their energy would be
#: missing from a dose): alphas and their recoils, positrons and annihilation photons,
#: spontaneous-fission neutrons and fragments.
UNMODELLED_KINDS = ("alpha", "alpha recoil", "beta+", "annihilation", "neutron", "fission",
                    "betaD")


@lru_cache(maxsize=64)
def _unmodelled_cached(canon: str) -> tuple:
    out = []
    for kind in UNMODELLED_KINDS:
        rec = _icrp(canon, kind)
        w = np.asarray(rec["weights"], dtype=np.float64)
        if w.size and float(w.sum()) > 0:
            e = np.asarray(rec["energies"], dtype=np.float64)
            out.append((kind, float(w.sum()), float(np.sum(e * w))))
    return tuple(out)


def unmodelled_emissions(nuclide: Nuclide | str) -> dict:
    """The ICRP-107 emissions of ``nuclide`` that :class:`Nuclide` leaves out (alphas,
    positrons, annihilation photons, fission): ``{kind: (yield per decay, MeV per
    decay)}``; empty for a pure beta-minus / electron-capture / isomeric emitter."""
    canon = nuclide.name if isinstance(nuclide, Nuclide) else canonical_name(nuclide)
    return {k: (y, e) for k, y, e in _unmodelled_cached(canon)}
