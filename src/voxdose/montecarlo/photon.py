"""Photon transport (Numba): Compton (Klein-Nishina) + photoelectric, in water or any
medium of :mod:`voxdose.montecarlo.media`.

Interaction coefficients (1/cm at the medium's bulk density rho)

* Compton: the Klein-Nishina cross section per free electron times the electron density
  rho N_A sum w_i Z_i/A_i (binding effects neglected)::

      sigma_KN = 2 pi r_e^2 { (1+k)/k^2 [2(1+k)/(1+2k) - ln(1+2k)/k] + ln(1+2k)/(2k)
                 - (1+3k)/(1+2k)^2 },  k = E/mc^2

* Photoelectric: tau/rho of the composition by the mixture rule over Elam et al.'s
  elemental photoabsorption cross sections (:mod:`voxdose.montecarlo.photon_data`).  For water,
  tau + sigma_KN,tr reproduces Hubbell & Seltzer's mu_en/rho (NISTIR 5632;
  :mod:`voxdose.montecarlo.water_data`) within 2 % at 10-200 keV (tested): fluorescence and the
  secondary electrons' bremsstrahlung are negligible at these energies.  The
  photoelectric energy is absorbed locally.
* Coherent (Rayleigh) scattering is neglected: it is 2-3 % of mu at 100-200 keV and
  forward-peaked without energy loss (it mainly re-directs photons by a few degrees).
* The energy of a Compton electron (T = E - E', at most 93 keV for Lu-177's 208 keV line;
  CSDA range 0.13 mm) is absorbed at the interaction point.

Sampling: free path ``-ln(xi)/mu`` with mu = sigma_KN N_e + tau; Compton scattering by
Kahn's rejection method (H. Kahn, AECU-3259, 1954; as in MCNP): it samples
eta = E/E' and cos theta = 1 - (eta - 1)/k exactly from the Klein-Nishina law.  Photons
below ``p_cut`` (1 keV, the table's lower end; mean free path < 3 um in water) are absorbed
locally (the Hf L X-rays of Lu-177, 8-9 keV, are transported); photons beyond the
last scoring radius escape (tallied).  The per-history code is in
:mod:`voxdose.montecarlo.transport` (shared with the CUDA kernels of
:mod:`voxdose.montecarlo.transport_cuda`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import media
from . import photon_data
from . import stopping_power as sp
from .transport import (  # noqa: F401  (re-exported: the shared per-history code)
    PhotonArrays,
    photon_history,
    sample_kahn,
    transport_photon,
)

#: Photon absorption (cut) energy, MeV: the lower end of the water tables.
P_CUT_MEV = 0.001


def klein_nishina_per_electron_cm2(e_mev):
    """Klein-Nishina total cross section per free electron, cm^2."""
    k = np.asarray(e_mev, dtype=np.float64) / sp.MC2
    l2 = np.log1p(2.0 * k)
    return 2.0 * math.pi * sp.R_E_CM**2 * (
        (1.0 + k) / k**2 * (2.0 * (1.0 + k) / (1.0 + 2.0 * k) - l2 / k)
        + l2 / (2.0 * k) - (1.0 + 3.0 * k) / (1.0 + 2.0 * k) ** 2)


def klein_nishina_energy_transfer_cm2(e_mev, n: int = 4001):
    """Klein-Nishina energy-transfer cross section sigma_tr = int (T/E) dsigma, cm^2/electron.

    dsigma/dcos = pi r_e^2 (E'/E)^2 (E'/E + E/E' - sin^2 theta), integrated by Simpson on
    ``n`` points in cos theta.
    """
    e = np.atleast_1d(np.asarray(e_mev, dtype=np.float64))
    mu = np.linspace(-1.0, 1.0, n)
    k = e[:, None] / sp.MC2
    ratio = 1.0 / (1.0 + k * (1.0 - mu[None, :]))
    ds = math.pi * sp.R_E_CM**2 * ratio**2 * (ratio + 1.0 / ratio - (1.0 - mu[None, :] ** 2))
    f = ds * (1.0 - ratio)
    h = mu[1] - mu[0]
    w = np.ones(n)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    out = (f @ w) * h / 3.0
    return out if np.ndim(e_mev) else float(out[0])


@dataclass(frozen=True)
class PhotonTables:
    ln_e0: float
    dln: float
    mu_compton: np.ndarray   # 1/cm
    mu_photo: np.ndarray     # 1/cm
    p_cut: float


def photon_tables(medium="water", n: int = 1200, p_cut: float = P_CUT_MEV,
                  e_max: float = 3.0) -> PhotonTables:
    """Interaction coefficients (1/cm, at the medium's bulk density) on a uniform ln E grid
    from ``p_cut`` (1 keV) to ``e_max`` MeV: Klein-Nishina Compton on the medium's electrons
    and the photoelectric coefficient of its composition (:mod:`voxdose.montecarlo.photon_data`)."""
    m = media.get_medium(medium)
    rho = float(m["density_g_cm3"])
    ln_e = np.linspace(math.log(p_cut), math.log(e_max), n)
    e = np.exp(ln_e)
    n_e = sp.N_A * sp.z_over_a(m)
    mu_c = klein_nishina_per_electron_cm2(e) * n_e * rho
    tau = photon_data.photoelectric_cm2_g(e, m) * rho
    return PhotonTables(float(ln_e[0]), float(ln_e[1] - ln_e[0]), mu_c, tau, float(p_cut))


def mu_en_model_cm2_g(e_mev, medium="water"):
    """The transport's mass energy-absorption coefficient tau/rho + sigma_KN,tr/rho, cm^2/g
    (photoelectric energy and Compton electrons absorbed locally; fluorescence and the
    secondary electrons' bremsstrahlung not subtracted)."""
    m = media.get_medium(medium)
    n_e = sp.N_A * sp.z_over_a(m)
    return (photon_data.photoelectric_cm2_g(e_mev, m)
            + klein_nishina_energy_transfer_cm2(e_mev) * n_e)


@njit(cache=True, parallel=True)
def run_photon_batches(states, n_per_batch, edges_mm, line_e, line_cum, n_total, pt):
    """Photons from the origin, energies sampled from lines with cumulative yields, with
    the tables ``pt`` (:class:`~voxdose.montecarlo.transport.PhotonArrays`:
    ``*table_args(tables)``).

    Returns (tally[n_batches, n_edges] MeV, acc[n_batches, 3]: escaped MeV, interactions,
    emitted MeV)."""
    nb = states.shape[0]
    tally = np.zeros((nb, edges_mm.size))
    acc = np.zeros((nb, 3))
    for b in prange(nb):
        st = states[b]
        row = tally[b]
        a = acc[b]
        for _ in range(n_per_batch):
            photon_history(st, edges_mm, row, a, line_e, line_cum, n_total, pt)
    return tally, acc


def kernel_tables(t: PhotonTables) -> PhotonArrays:
    """The photon tables as the per-history code takes them
    (:class:`~voxdose.montecarlo.transport.PhotonArrays`)."""
    return PhotonArrays(float(t.ln_e0), float(t.dln),
                        np.ascontiguousarray(t.mu_compton, dtype=np.float64),
                        np.ascontiguousarray(t.mu_photo, dtype=np.float64), float(t.p_cut))


def table_args(t: PhotonTables) -> tuple:
    """The tables as the positional tail of the kernels' arguments
    (:func:`run_photon_batches`,
    :func:`~voxdose.montecarlo.transport_cuda.run_photon_batches_cuda`): the one-element
    tuple ``(pt,)``."""
    return (kernel_tables(t),)
