"""Photon interaction coefficients of a medium from its composition (mixture rule).

* Photoelectric absorption: tau/rho = sum_i w_i (tau/rho)_i with the elemental
  photoabsorption cross sections of W. T. Elam, B. D. Ravel and J. R. Sieber, Radiat. Phys.
  Chem. 63, 121 (2002) (Scofield's photoionisation calculation), through the ``xraydb``
  package (:func:`xraydb.mu_elam`, kind ``photo``).  Above 800 keV xraydb holds the
  800 keV value (and warns): a few times too high there, but still < 0.01 % of the
  attenuation of these media, so the warning is silenced.
* Compton: the Klein-Nishina cross section per free electron times the electron density
  N_A sum w_i Z_i/A_i (:mod:`voxdose.montecarlo.photon`).  Elam's incoherent cross section
  (with binding) is used only in the tests, as a check.
* Coherent scattering is not part of the transport (see :mod:`voxdose.montecarlo.photon`).

Checked (tests/test_mc_media.py): for liquid water the photoelectric coefficient agrees
with the one implied by Hubbell & Seltzer's mu_en (NISTIR 5632) within 3 % at
10-150 keV, and tau + sigma_KN,tr reproduces their mu_en/rho of water within 2 % at
10-200 keV.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import media as _media


def photoelectric_cm2_g(e_mev, medium) -> np.ndarray:
    """Photoelectric mass attenuation coefficient tau/rho (cm^2/g) of ``medium`` at photon
    energies ``e_mev`` (MeV), mixture rule over the elements (Elam et al. 2002 via xraydb)."""
    return elam_cm2_g(e_mev, medium, "photo")


def elam_cm2_g(e_mev, medium, kind: str) -> np.ndarray:
    """Elam's mass coefficient of ``kind`` ('photo', 'incoh', 'coh', 'total') for the
    medium (mixture rule), cm^2/g (used by the tests to check the transport's model)."""
    import xraydb

    m = _media.get_medium(medium)
    e_ev = np.atleast_1d(np.asarray(e_mev, dtype=np.float64)) * 1e6
    out = np.zeros_like(e_ev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sym, w in m["composition"]:
            out += w * np.asarray(xraydb.mu_elam(sym, e_ev, kind=kind), dtype=np.float64)
    out /= sum(w for _, w in m["composition"])
    return out if np.ndim(e_mev) else float(out[0])
