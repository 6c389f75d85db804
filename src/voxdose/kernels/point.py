"""Radial energy deposition around an isotropic point source in water (foundation model).

What
    For one decay of a nuclide at the origin of an infinite water medium of density
    ``rho`` (g/cm^3), the kernel gives

    * ``E_abs(r)``  cumulative energy absorbed within radius r, MeV per decay (r in mm);
    * ``j(r) = dE_abs/dr``, MeV per mm per decay;
    * the point dose kernel ``D(r) = j(r) / (4 pi r^2 rho)``, Gy per decay.  With r in mm
      and rho in g/cm^3 -> g/mm^3 = rho/1000:
      ``D[Gy] = 1000 j / (4 pi r^2 rho) [MeV/g] * MEV_PER_G_TO_GY``.

    Energy below :data:`LOCAL_CUTOFF_MEV` (10 keV; electrons and photons) is deposited
    locally: a delta at r = 0 whose energy ``local_energy_mev`` is kept as a separate term
    (included in ``cumulative_energy_mev`` for r >= 0 unless ``include_local=False``; never in
    ``j``).  The same 10 keV is the local-deposition cut of the ``ldm`` dose engine; the Monte
    Carlo tables transport photons down to 1 keV instead (docs/defaults.md).

Electrons (beta spectrum + internal-conversion + Auger lines)
    The ICRP-107 beta spectrum dN/dE is binned into ``n_beta_bins`` (~200) equal-width bins
    between 0 and its end point; each bin becomes a monoenergetic group with the
    bin-integrated number of betas (times ``beta_yield``) at the bin's mean energy.  The
    group yields are then scaled by a factor within ~1 % of 1 so that the beta energy equals
    the ICRP-107 tabulated mean beta energy per decay (recorded in ``provenance()``).
    A monoenergetic electron of energy E and CSDA range ``R = csda_range_g_cm2(E)/rho``
    deposits E with the *scaled* radial distribution ``F(xi)``, ``xi = r/R``::

        F(xi) = N (xi + 0.1)(1.1 - xi)  for 0 <= xi <= 1.1, 0 beyond,   int F dxi = 1,
        N = 1 / 0.2823333...,
        j_e(r)     = E F(r/R) / R                                     MeV/mm
        E_abs,e(r) = E C(r/R),  C(xi) = N (-xi^3/3 + xi^2/2 + 0.11 xi)  (C = 1 for xi >= 1.1)

    **This is a foundation approximation of the scaled point kernel**: a broad hump with a
    non-zero value at the origin and range straggling out to 1.1 R.  Its shape is accurate
    to perhaps +-20 % against Monte Carlo scaled dose point kernels (e.g. Berger's); energy
    is conserved exactly.  The dose engines use the project's Monte Carlo tables
    (:class:`TabulatedPointKernel`, :func:`load_point_kernel`: shipped, or built on first
    use and cached); the analytic model is used only when asked for by name (with a
    warning), and it supplies the electron/photon split of the sphere S-values
    (:mod:`voxdose.analysis.mird`), which the tables do not hold.

Photons (gamma + X lines >= 10 keV): energy-absorption build-up approximation
    With ``mu = (mu/rho) rho``, ``mu_en = (mu_en/rho) rho`` (1/mm; Hubbell & Seltzer 1995)
    and the linear build-up factor ``B(r) = 1 + k mu r`` with ``k = mu/mu_en - 1``::

        j_p(r)     = E mu_en (1 + k mu r) exp(-mu r)                           MeV/mm
        E_abs,p(r) = E [1 - (mu_en/mu) exp(-mu r) (1 + k (1 + mu r))]         MeV

    The choice of k makes ``int_0^inf j_p dr = E`` exactly (all photon energy is absorbed
    in the infinite medium), with the correct primary energy-absorption rate at small r.
    The scattered tail is long: at 200 mm ~13-20 % of Lu-177's photon energy is still
    unabsorbed.

References: ICRP Publication 107 (2008) decay data; Katz & Penfold (1952); Hubbell &
Seltzer (1995) NISTIR 5632.  See :mod:`voxdose.montecarlo.water_data`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..core.errors import InputError
from ..core.nuclide import Nuclide, load_nuclide
from ..core.units import MEV_PER_G_TO_GY
from ..montecarlo import water_data

#: Energies below this are deposited locally (delta at r = 0), MeV: the one local-deposition
#: cut of the analytic models (this kernel, the ``ldm`` engine; docs/defaults.md).  The
#: Monte Carlo's own 1 keV (:data:`voxdose.montecarlo.photon.P_CUT_MEV`) is a transport cut:
#: it follows the 1-10 keV photons, which stop within ~2 mm.
LOCAL_CUTOFF_MEV = 0.010
#: A table's electron range: the radius beyond which its energy per mm j(r) stays below this
#: fraction of its peak (the photon or bremsstrahlung tail lies lower: ~1.4e-4 for Lu-177).
TABLE_RANGE_LEVEL = 1e-3
#: Upper end of the scaled electron distribution, in units of the CSDA range.
XI_MAX = 1.1
#: Normalisation of F(xi) = N (xi + 0.1)(1.1 - xi) on [0, 1.1].
_F_INT = -XI_MAX**3 / 3.0 + XI_MAX**2 / 2.0 + 0.11 * XI_MAX   # = 0.2823333...
F_NORM = 1.0 / _F_INT
#: Elements per temporary array when evaluating (r x components) matrices.
_CHUNK_ELEMENTS = 4_000_000


def scaled_electron_pdf(xi):
    """F(xi) = N (xi + 0.1)(1.1 - xi) on [0, 1.1], 0 elsewhere (dimensionless, int = 1)."""
    xi = np.asarray(xi, dtype=np.float64)
    inside = (xi >= 0) & (xi <= XI_MAX)
    return np.where(inside, F_NORM * (xi + 0.1) * (XI_MAX - xi), 0.0)


def scaled_electron_cdf(xi):
    """C(xi) = int_0^xi F = N (-xi^3/3 + xi^2/2 + 0.11 xi); 0 for xi <= 0, 1 for xi >= 1.1."""
    x = np.clip(np.asarray(xi, dtype=np.float64), 0.0, XI_MAX)
    return np.where(x >= XI_MAX, 1.0, F_NORM * (-(x**3) / 3.0 + x**2 / 2.0 + 0.11 * x))


def _bin_beta_spectrum(e_tab, pdf_tab, n_bins):
    """Bin a piecewise-linear dN/dE (per MeV, normalised) into ``n_bins`` equal bins.

    Returns (number per bin, energy integral per bin = int E dN/dE dE over the bin), exact
    for the piecewise-linear spectrum.
    """
    e_end = float(e_tab[-1])
    edges = np.linspace(float(e_tab[0]), e_end, n_bins + 1)
    nodes = np.union1d(e_tab, edges)
    p = np.interp(nodes, e_tab, pdf_tab)
    e0, e1, p0, p1 = nodes[:-1], nodes[1:], p[:-1], p[1:]
    h = e1 - e0
    n_seg = 0.5 * h * (p0 + p1)
    en_seg = h / 6.0 * (2 * e0 * p0 + e0 * p1 + e1 * p0 + 2 * e1 * p1)   # exact, linear p
    idx = np.clip(np.searchsorted(edges, 0.5 * (e0 + e1)) - 1, 0, n_bins - 1)
    return (np.bincount(idx, weights=n_seg, minlength=n_bins),
            np.bincount(idx, weights=en_seg, minlength=n_bins))


@dataclass(frozen=True, eq=False)
class PointKernel:
    """Point-source energy-deposition kernel of one nuclide in water (see module docstring).

    Attributes
    ----------
    nuclide : canonical nuclide name
    density_g_cm3 : medium density rho, g/cm^3
    electron_energies_mev, electron_yields, electron_ranges_mm : electron groups (>= 10 keV):
        energy (MeV), number per decay, CSDA range R = csda_range_g_cm2(E)/rho (mm)
    photon_energies_mev, photon_yields, photon_mu_per_mm, photon_mu_en_per_mm : photon lines
        (>= 10 keV): energy, number per decay, mu and mu_en (1/mm)
    local_energy_mev : energy of emissions < 10 keV deposited at r = 0, MeV per decay
    total_energy_mev : all electron + photon energy per decay from the Nuclide, MeV
    beta_scale_factor : factor applied to the binned beta yields to match the ICRP-107
        mean beta energy (1 within ~1 %)
    """

    nuclide: str
    density_g_cm3: float
    electron_energies_mev: np.ndarray
    electron_yields: np.ndarray
    electron_ranges_mm: np.ndarray
    photon_energies_mev: np.ndarray
    photon_yields: np.ndarray
    photon_mu_per_mm: np.ndarray
    photon_mu_en_per_mm: np.ndarray
    local_energy_mev: float
    total_energy_mev: float
    beta_scale_factor: float
    n_beta_bins: int
    warning: str | None = None   # set by load_point_kernel(model="analytic")

    # -- derived quantities ----------------------------------------------------------------
    @property
    def max_electron_range_mm(self) -> float:
        """Largest distance reached by any electron group: 1.1 x max CSDA range, mm."""
        if self.electron_ranges_mm.size == 0:
            return 0.0
        return float(XI_MAX * self.electron_ranges_mm.max())

    def _chunks(self, r, n_comp):
        step = max(1, _CHUNK_ELEMENTS // max(1, n_comp))
        for i in range(0, r.size, step):
            yield slice(i, i + step)

    # -- kernel evaluation (vectorised) ----------------------------------------------------
    def cumulative_energy_mev(self, r_mm, include_local: bool = True):
        """E_abs(r): energy absorbed within radius r (mm), MeV per decay.

        Sum of electron groups ``E C(r/R)``, photon lines
        ``E[1 - (mu_en/mu) exp(-mu r)(1 + k(1 + mu r))]`` and (if ``include_local``) the
        local energy for r >= 0.  Array in, array out (same shape).
        """
        r = np.asarray(r_mm, dtype=np.float64)
        flat = r.ravel()
        out = np.zeros(flat.shape)
        ee, ey, er = self._e_groups
        pe, py, mu, mu_en = self._p_lines
        for sl in self._chunks(flat, ee.size + pe.size):
            rr = flat[sl, None]
            acc = np.zeros(rr.shape[0])
            if ee.size:
                acc += scaled_electron_cdf(rr / er) @ (ey * ee)
            if pe.size:
                # 1 - (mu_en/mu) e^-x (1 + k(1 + x)) written without cancellation (x = mu r):
                # = (1 - e^-x) - (1 - mu_en/mu) x e^-x, exactly 0 at r = 0
                mr = rr * mu
                frac = -np.expm1(-mr) - (1.0 - mu_en / mu) * mr * np.exp(-mr)
                acc += frac @ (py * pe)
            out[sl] = acc
        if include_local:
            out += np.where(flat >= 0, self.local_energy_mev, 0.0)
        out = np.where(flat < 0, 0.0, out)
        return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)

    def energy_per_mm_mev(self, r_mm):
        """j(r) = dE_abs/dr, MeV per mm per decay (r in mm; local delta excluded)."""
        r = np.asarray(r_mm, dtype=np.float64)
        flat = r.ravel()
        out = np.zeros(flat.shape)
        ee, ey, er = self._e_groups
        pe, py, mu, mu_en = self._p_lines
        for sl in self._chunks(flat, ee.size + pe.size):
            rr = flat[sl, None]
            acc = np.zeros(rr.shape[0])
            if ee.size:
                acc += scaled_electron_pdf(rr / er) @ (ey * ee / er)
            if pe.size:
                k = mu / mu_en - 1.0
                mr = rr * mu
                acc += (mu_en * (1.0 + k * mr) * np.exp(-mr)) @ (py * pe)
            out[sl] = np.where(flat[sl] < 0, 0.0, acc)
        return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)

    def dose_gy_per_decay(self, r_mm):
        """Point dose kernel D(r) = j(r) / (4 pi r^2 rho), Gy per decay (r in mm).

        ``1000 j / (4 pi r^2 rho)`` is MeV/g (rho in g/cm^3 = rho/1000 g/mm^3); times
        ``MEV_PER_G_TO_GY``.  D(0) = inf (1/r^2 singularity; the local delta is excluded).
        """
        r = np.asarray(r_mm, dtype=np.float64)
        j = np.asarray(self.energy_per_mm_mev(r))
        with np.errstate(divide="ignore", invalid="ignore"):
            d = 1000.0 * j / (4.0 * np.pi * r**2 * self.density_g_cm3) * MEV_PER_G_TO_GY
        d = np.where(r > 0, d, np.inf)
        return float(d) if r.ndim == 0 else d

    # -- bookkeeping -----------------------------------------------------------------------
    @property
    def _e_groups(self):
        return self.electron_energies_mev, self.electron_yields, self.electron_ranges_mm

    @property
    def _p_lines(self):
        return (self.photon_energies_mev, self.photon_yields, self.photon_mu_per_mm,
                self.photon_mu_en_per_mm)

    @property
    def electron_kernel_energy_mev(self) -> float:
        """Energy per decay carried by the non-local electron groups, MeV."""
        return float(np.sum(self.electron_energies_mev * self.electron_yields))

    @property
    def photon_kernel_energy_mev(self) -> float:
        """Energy per decay carried by the non-local photon lines, MeV."""
        return float(np.sum(self.photon_energies_mev * self.photon_yields))

    def provenance(self) -> dict:
        """What the kernel is and where its numbers come from (JSON-serialisable dict)."""
        return {
            "model": "voxdose analytic point kernel (foundation model, approximate; the "
                     "Monte Carlo tables are used unless it is asked for by name)",
            "nuclide": self.nuclide,
            "density_g_cm3": self.density_g_cm3,
            "decay_data": "ICRP Publication 107 (icrp107-database)",
            "electron_transport": "scaled kernel F(xi)=N(xi+0.1)(1.1-xi), xi=r/R_csda; "
                                  "shape +-20 % (foundation approximation)",
            "electron_range": water_data.ELECTRON_RANGE_SOURCE,
            "photon_transport": "energy-absorption build-up B=1+k mu r, k=mu/mu_en-1",
            "photon_data": water_data.PHOTON_DATA_SOURCE,
            "local_cutoff_mev": LOCAL_CUTOFF_MEV,
            "n_beta_bins": self.n_beta_bins,
            "beta_scale_factor": self.beta_scale_factor,
            "n_electron_groups": int(self.electron_energies_mev.size),
            "n_photon_lines": int(self.photon_energies_mev.size),
            "electron_energy_mev": self.electron_kernel_energy_mev,
            "photon_energy_mev": self.photon_kernel_energy_mev,
            "local_energy_mev": self.local_energy_mev,
            "total_energy_mev": self.total_energy_mev,
            "max_electron_range_mm": self.max_electron_range_mm,
            **({"warnings": [self.warning]} if self.warning else {}),
        }

    def describe(self) -> dict:
        """Alias of :meth:`provenance`."""
        return self.provenance()


def point_kernel_for(nuclide: Nuclide | str, density_g_cm3: float = 1.0,
                     n_beta_bins: int = 200) -> PointKernel:
    """Build the :class:`PointKernel` of ``nuclide`` (a Nuclide or a name) in water.

    ``density_g_cm3`` scales ranges (R = R_csda/rho) and attenuation (mu = (mu/rho) rho).
    Raises :class:`InputError` for a non-positive density or photon lines above 3 MeV.
    """
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    rho = float(density_g_cm3)
    if not np.isfinite(rho) or rho <= 0:
        raise InputError(f"density must be a positive number of g/cm^3; got {density_g_cm3}")
    if int(n_beta_bins) < 1:
        raise InputError(f"n_beta_bins must be >= 1; got {n_beta_bins}")
    n_beta_bins = int(n_beta_bins)

    e_list, y_list = [], []
    local = 0.0
    scale = 1.0
    if nuc.beta_yield > 0 and nuc.beta_energy_mev.size > 1:
        n_bin, en_bin = _bin_beta_spectrum(nuc.beta_energy_mev, nuc.beta_pdf_per_mev,
                                           n_beta_bins)
        keep = n_bin > 0
        n_bin, en_bin = n_bin[keep], en_bin[keep]
        spectral = nuc.beta_yield * float(en_bin.sum())
        scale = nuc.beta_energy_per_decay_mev / spectral if spectral > 0 else 1.0
        e_list.append(en_bin / n_bin)
        y_list.append(nuc.beta_yield * scale * n_bin)
    e_list.append(np.asarray(nuc.electron_lines_mev, dtype=np.float64))
    y_list.append(np.asarray(nuc.electron_yields, dtype=np.float64))
    ee = np.concatenate(e_list)
    ey = np.concatenate(y_list)
    low = (ee < LOCAL_CUTOFF_MEV) | (ey <= 0)
    local += float(np.sum(ee[low] * np.clip(ey[low], 0, None)))
    ee, ey = ee[~low], ey[~low]
    er = water_data.csda_range_g_cm2(ee) / rho * 10.0            # g/cm^2 -> cm -> mm

    pe = np.asarray(nuc.photon_lines_mev, dtype=np.float64)
    py = np.asarray(nuc.photon_yields, dtype=np.float64)
    lowp = (pe < LOCAL_CUTOFF_MEV) | (py <= 0)
    local += float(np.sum(pe[lowp] * np.clip(py[lowp], 0, None)))
    pe, py = pe[~lowp], py[~lowp]
    if pe.size and pe.max() > water_data.PHOTON_ENERGY_MEV[-1]:
        raise InputError(
            f"{nuc.name} emits photons up to {pe.max():.3f} MeV; the foundation kernel's "
            f"water tables stop at {water_data.PHOTON_ENERGY_MEV[-1]} MeV")
    mu = np.atleast_1d(water_data.mu_over_rho_cm2_g(pe)) * rho / 10.0     # 1/cm -> 1/mm
    mu_en = np.atleast_1d(water_data.mu_en_over_rho_cm2_g(pe)) * rho / 10.0

    return PointKernel(
        nuclide=nuc.name,
        density_g_cm3=rho,
        electron_energies_mev=ee,
        electron_yields=ey,
        electron_ranges_mm=np.atleast_1d(er).astype(np.float64),
        photon_energies_mev=pe,
        photon_yields=py,
        photon_mu_per_mm=mu,
        photon_mu_en_per_mm=mu_en,
        local_energy_mev=local,
        total_energy_mev=nuc.electron_energy_per_decay_mev + nuc.photon_energy_per_decay_mev,
        beta_scale_factor=float(scale),
        n_beta_bins=n_beta_bins,
    )


# ---------------------------------------------------------------------------------------
# Tabulated radial dose point kernels (Monte Carlo tables shipped in kernels/, or a user's)
# ---------------------------------------------------------------------------------------
#: Media of ``load_point_kernel``: density in g/cm^3 (compositions in
#: :mod:`voxdose.montecarlo.media`: ICRP soft tissue 1.03, ICRP lung at the inflated-lung 0.26 of
#: ICRU Report 46, ICRP cortical bone 1.85).  Each has its own Monte Carlo table in
#: ``kernels/``; without one, the water table range-scaled to the density is used (said
#: in provenance).
MEDIA_DENSITY_G_CM3 = {
    "water": 1.0,
    "soft-tissue": 1.03,
    "lung": 0.26,
    "bone": 1.85,
}
_MEDIUM_ALIASES = {"soft_tissue": "soft-tissue", "softtissue": "soft-tissue",
                   "tissue": "soft-tissue", "cortical-bone": "bone", "cortical_bone": "bone"}


def canonical_medium(medium: str) -> str:
    """'water' | 'soft-tissue' | 'lung' | 'bone' (a few spellings accepted)."""
    m = str(medium).strip().lower()
    m = _MEDIUM_ALIASES.get(m, m)
    if m not in MEDIA_DENSITY_G_CM3:
        raise InputError(f"unknown medium '{medium}'; choose one of "
                         f"{', '.join(MEDIA_DENSITY_G_CM3)}")
    return m


def _shell_edges_from_points(r: np.ndarray) -> np.ndarray:
    """Shell edges around table radii: 0, midpoints, last + half the last gap."""
    mids = 0.5 * (r[1:] + r[:-1])
    last = r[-1] + 0.5 * (r[-1] - r[-2])
    return np.concatenate([[0.0], mids, [last]])


def table_electron_range_mm(edges_mm: np.ndarray, shell_energy_mev: np.ndarray) -> float:
    """The electron range of a radial table, from the table alone: the outer edge of the last
    shell whose energy per mm j = E_i / (e_(i+1) - e_i) exceeds :data:`TABLE_RANGE_LEVEL` of
    its peak, at most the radius holding 99.9 % of the table's energy.

    Beyond it only the smooth photon (bremsstrahlung) tail remains, which the voxel kernel's
    far-field rule integrates.  Shipped tables: Lu-177 1.34 mm, Y-90 10.25 mm in water (their
    CSDA bounds 1.75 and 11.3 mm).  (The 99.9 % energy radius alone, the former default, is
    the photon tail's: 648 mm for Lu-177, which made a run with a user table 46 times slower.)
    """
    j = shell_energy_mev / np.diff(edges_mm)
    above = np.nonzero(j > TABLE_RANGE_LEVEL * float(j.max()))[0]
    r_level = float(edges_mm[above[-1] + 1]) if above.size else float(edges_mm[-1])
    cum = np.cumsum(shell_energy_mev)
    r_energy = float(edges_mm[1:][np.searchsorted(cum, 0.999 * cum[-1])])
    return min(r_level, r_energy)


@dataclass(frozen=True, eq=False)
class TabulatedPointKernel:
    """A radial dose point kernel D(r) from a table, with the :class:`PointKernel` interface.

    The table ``(r_i, D_i)`` (mm, Gy per decay) is read as shell averages: shell i spans
    from the midpoint between r_(i-1) and r_i to the midpoint between r_i and r_(i+1)
    (first edge 0, last edge r_n + half the last gap), and D is constant inside it.  So::

        E_i     = D_i rho (4/3) pi (e_(i+1)^3 - e_i^3) / MEV_PER_G_TO_GY      MeV per decay
        E_abs(r) = sum_(shells below) E_i + E_i (r^3 - e_i^3) / (e_(i+1)^3 - e_i^3)
        j(r)     = dE_abs/dr = 4 pi r^2 rho D_i (in MeV/mm)

    exact for the project's Monte Carlo tables (uniform shells, and geometric shells whose
    mid radii are arithmetic centres, where the midpoint rule misplaces an edge by < 1e-4).
    Beyond the last edge the kernel is 0.  There is no separate local term
    (``local_energy_mev = 0``): the first shell holds it.

    ``total_energy_mev`` is the energy emitted per decay when known (so that a voxel
    kernel's ``neglected_energy_fraction`` counts what the table does not hold:
    bremsstrahlung and photons beyond its end), else the table's own integral.
    """

    nuclide: str
    density_g_cm3: float
    r_table_mm: np.ndarray
    dose_table_gy_per_decay: np.ndarray
    edges_mm: np.ndarray
    shell_energy_mev: np.ndarray
    total_energy_mev: float
    electron_range_mm: float
    source: str
    medium: str = "water"
    range_scaled_from_g_cm3: float | None = None
    record: dict | None = None
    local_energy_mev: float = 0.0

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_table(cls, r_mm, dose_gy_per_decay, *, nuclide: str = "unknown",
                   density_g_cm3: float = 1.0, total_energy_mev: float | None = None,
                   electron_range_mm: float | None = None, source: str = "table",
                   medium: str = "water", record: dict | None = None,
                   range_scaled_from_g_cm3: float | None = None) -> TabulatedPointKernel:
        r = np.asarray(r_mm, dtype=np.float64).ravel()
        d = np.asarray(dose_gy_per_decay, dtype=np.float64).ravel()
        if r.size < 2 or r.size != d.size:
            raise InputError(f"a dose point kernel table needs >= 2 rows of (r_mm, dose); "
                             f"got {r.size} radii and {d.size} doses ({source})")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
            raise InputError(f"dose point kernel table {source} has non-finite values")
        if r[0] <= 0 or np.any(np.diff(r) <= 0):
            raise InputError(f"dose point kernel table {source}: r_mm must be positive and "
                             "strictly increasing")
        if np.any(d < 0):
            raise InputError(f"dose point kernel table {source} has negative doses")
        rho = float(density_g_cm3)
        if not math.isfinite(rho) or rho <= 0:
            raise InputError(f"density must be a positive number of g/cm^3; got {rho}")
        edges = _shell_edges_from_points(r)
        vol_mm3 = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        shell_e = d * vol_mm3 * rho / 1000.0 / MEV_PER_G_TO_GY
        table_e = float(shell_e.sum())
        total = table_e if total_energy_mev is None else float(total_energy_mev)
        if total_energy_mev is not None:
            check_table_energy(table_e, total, nuclide, source)
        if electron_range_mm is None:
            electron_range_mm = table_electron_range_mm(edges, shell_e)
        return cls(nuclide=nuclide, density_g_cm3=rho, r_table_mm=r,
                   dose_table_gy_per_decay=d, edges_mm=edges, shell_energy_mev=shell_e,
                   total_energy_mev=total, electron_range_mm=float(electron_range_mm),
                   source=str(source), medium=medium, record=record,
                   range_scaled_from_g_cm3=range_scaled_from_g_cm3)

    def range_scaled(self, density_g_cm3: float, medium: str | None = None
                     ) -> TabulatedPointKernel:
        """The kernel in a medium of another density by range scaling (O'Connor's
        theorem for a homogeneous medium): r -> r rho0/rho, D -> D (rho/rho0)^2
        (energy per shell unchanged)."""
        s = float(density_g_cm3) / self.density_g_cm3
        return TabulatedPointKernel.from_table(
            self.r_table_mm / s, self.dose_table_gy_per_decay * s * s, nuclide=self.nuclide,
            density_g_cm3=float(density_g_cm3), total_energy_mev=self.total_energy_mev,
            electron_range_mm=self.electron_range_mm / s, source=self.source,
            medium=medium or self.medium, record=self.record,
            range_scaled_from_g_cm3=self.density_g_cm3)

    # -- the PointKernel interface -----------------------------------------------------
    @property
    def max_electron_range_mm(self) -> float:
        """Distance beyond which the kernel is smooth (electrons stopped), mm."""
        return self.electron_range_mm

    def energy_warning(self) -> str | None:
        """The warning :func:`table_energy_warning` gives for this table, or None."""
        return table_energy_warning(self.table_energy_mev, self.total_energy_mev,
                                    self.nuclide, self.source)

    @property
    def table_energy_mev(self) -> float:
        """Energy per decay held by the table (sum of shells), MeV."""
        return float(self.shell_energy_mev.sum())

    def _locate(self, r):
        e = self.edges_mm
        i = np.clip(np.searchsorted(e, r, side="right") - 1, 0, e.size - 2)
        return i

    def cumulative_energy_mev(self, r_mm, include_local: bool = True):
        """E_abs(r), MeV per decay (see the class docstring)."""
        r = np.asarray(r_mm, dtype=np.float64)
        flat = r.ravel()
        e = self.edges_mm
        cum = np.concatenate([[0.0], np.cumsum(self.shell_energy_mev)])
        i = self._locate(flat)
        rc = np.clip(flat, 0.0, e[-1])
        frac = (rc**3 - e[i] ** 3) / (e[i + 1] ** 3 - e[i] ** 3)
        out = cum[i] + self.shell_energy_mev[i] * np.clip(frac, 0.0, 1.0)
        out = np.where(flat >= e[-1], cum[-1], np.where(flat <= 0, 0.0, out))
        return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)

    def energy_per_mm_mev(self, r_mm):
        """j(r) = 4 pi r^2 rho D(r), MeV per mm per decay."""
        r = np.asarray(r_mm, dtype=np.float64)
        flat = r.ravel()
        i = self._locate(flat)
        k = self.shell_energy_mev / (self.edges_mm[1:] ** 3 - self.edges_mm[:-1] ** 3)
        out = np.where((flat > 0) & (flat < self.edges_mm[-1]), 3.0 * k[i] * flat**2, 0.0)
        return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)

    def dose_gy_per_decay(self, r_mm):
        """D(r), Gy per decay: the table value of the shell containing r (0 beyond)."""
        r = np.asarray(r_mm, dtype=np.float64)
        flat = r.ravel()
        i = self._locate(flat)
        out = np.where((flat >= 0) & (flat < self.edges_mm[-1]),
                       self.dose_table_gy_per_decay[i], 0.0)
        return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)

    def provenance(self) -> dict:
        out = {
            "model": "tabulated radial dose point kernel",
            "nuclide": self.nuclide,
            "medium": self.medium,
            "density_g_cm3": self.density_g_cm3,
            "source": self.source,
            "n_rows": int(self.r_table_mm.size),
            "r_max_mm": float(self.edges_mm[-1]),
            "table_energy_mev": self.table_energy_mev,
            "total_energy_mev": self.total_energy_mev,
            "max_electron_range_mm": self.max_electron_range_mm,
            "local_energy_mev": 0.0,
        }
        if self.range_scaled_from_g_cm3 is not None:
            out["range_scaled"] = (f"table range-scaled from "
                                   f"{self.range_scaled_from_g_cm3} to {self.density_g_cm3} "
                                   "g/cm3 (r -> r rho0/rho, D -> D (rho/rho0)^2); the "
                                   "composition is the table's")
        if self.record:
            out["table_record"] = {k: self.record[k] for k in (
                "code_version", "n_electron_histories", "n_photon_histories", "seed",
                "energy_balance_residual", "bremsstrahlung_photon_mev_per_decay",
                "escaped_beyond_table_mev_per_decay", "first_shells_rel_uncertainty",
                "generated_by", "created_utc", "wall_seconds", "histories_per_second",
                "cache_file")
                if k in self.record}
            build = (self.record.get("settings") or {}).get("build")
            if build:
                out["table_record"]["build"] = {k: v for k, v in build.items() if k != "pilot"}
            if self.record.get("warnings"):
                out["warnings"] = list(self.record["warnings"])
        if self.energy_warning():
            out["warnings"] = [*out.get("warnings", []), self.energy_warning()]
        return out

    def describe(self) -> dict:
        return self.provenance()


#: A table may hold up to this multiple of the energy emitted per decay (statistics and
#: shell geometry of another code's table); above it the table is refused.
TABLE_ENERGY_MAX = 1.05
#: Below this fraction of the emitted energy a table is refused (a dose column in mGy
#: read as Gy holds 1000x, radii in cm read as mm 1e-3x the energy); below
#: TABLE_ENERGY_WARN it is used with a warning (a table without the photons: In-111's
#: electrons alone carry ~8 % of its emitted energy, Lu-177's ~80 %).
TABLE_ENERGY_MIN = 0.01
TABLE_ENERGY_WARN = 0.5


def check_table_energy(table_mev: float, emitted_mev: float, nuclide: str, source: str
                       ) -> None:
    """:class:`InputError` when a radial table holds more than ``TABLE_ENERGY_MAX`` or less
    than ``TABLE_ENERGY_MIN`` times the energy ``nuclide`` emits per decay: energy is
    conserved, so such a table has wrong units or is for another nuclide."""
    if not emitted_mev > 0:
        return
    ratio = table_mev / emitted_mev
    if TABLE_ENERGY_MIN <= ratio <= TABLE_ENERGY_MAX:
        return
    raise InputError(
        f"dose point kernel table {source}: it holds {table_mev:.4g} MeV per decay, "
        f"{ratio:.3g} x the {emitted_mev:.4g} MeV {nuclide} emits per decay (a table holds "
        f"at most what is emitted): check its units (dose_Gy_per_decay in Gy, not mGy; "
        f"r_mm in mm, not cm), that it is a table for {nuclide}, and that its radii are "
        "not too coarse (each row stands for the shell around it)")


def table_energy_warning(table_mev: float, emitted_mev: float, nuclide: str, source: str
                         ) -> str | None:
    """A warning when a table holds less than ``TABLE_ENERGY_WARN`` of the energy emitted
    per decay (valid, e.g. electrons only, but its dose leaves the rest out), else None."""
    if not emitted_mev > 0 or table_mev >= TABLE_ENERGY_WARN * emitted_mev:
        return None
    return (f"dose point kernel table {source} holds {100 * table_mev / emitted_mev:.3g} % "
            f"of the {emitted_mev:.4g} MeV {nuclide} emits per decay: its dose leaves the "
            "rest out (a table without photons does this)")


def read_dpk_csv(path, *, nuclide: str | None = None, density_g_cm3: float = 1.0,
                 total_energy_mev: float | None = None,
                 electron_range_mm: float | None = None, medium: str = "water"
                 ) -> TabulatedPointKernel:
    """Load a user's (or a shipped) DPK table: CSV with a header naming the columns
    ``r_mm`` and ``dose_Gy_per_decay`` (other columns are ignored).

    ``nuclide`` (optional) sets ``total_energy_mev`` to its emitted energy per decay
    (ICRP-107) unless given.  Raises :class:`InputError` for a bad file.
    """
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"cannot read dose point kernel table {p}: {exc}") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"dose point kernel table {p} is empty")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "r_mm" not in header or "dose_gy_per_decay" not in header:
        raise InputError(f"dose point kernel table {p} needs a header line with columns "
                         f"r_mm,dose_Gy_per_decay; got '{lines[0]}'")
    ir, idd = header.index("r_mm"), header.index("dose_gy_per_decay")
    try:
        rows = [[float(v) for v in ln.split(",")] for ln in lines[1:]]
        data = np.array([[row[ir], row[idd]] for row in rows], dtype=np.float64)
    except (ValueError, IndexError):
        raise InputError(f"dose point kernel table {p} has a row that is not numbers in the "
                         "r_mm and dose_Gy_per_decay columns") from None
    if data.ndim != 2 or data.shape[0] < 2:
        raise InputError(f"dose point kernel table {p} needs at least 2 rows")
    name = "unknown"
    if nuclide is not None:
        nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
        name = nuc.name
        if total_energy_mev is None:
            total_energy_mev = nuc.electron_energy_per_decay_mev + nuc.photon_energy_per_decay_mev
    return TabulatedPointKernel.from_table(
        data[:, 0], data[:, 1], nuclide=name, density_g_cm3=density_g_cm3,
        total_energy_mev=total_energy_mev, electron_range_mm=electron_range_mm,
        source=str(p), medium=medium)


def kernels_dir():
    """The folder of shipped DPK tables: ``voxdose/_kernels`` in a wheel, else the
    repository's ``kernels/`` (editable install / source tree); None if neither exists."""
    from importlib import resources
    from pathlib import Path

    try:
        wheel = resources.files("voxdose") / "_kernels"
        if wheel.is_dir():
            return Path(str(wheel))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual loaders
        pass
    repo = Path(__file__).resolve().parents[3] / "kernels"
    return repo if repo.is_dir() else None


def shipped_table_path(nuclide: str, medium: str = "water"):
    """Path of the shipped DPK table of ``nuclide`` in ``medium``
    (``<Nuclide>_<medium>.csv``) or None."""
    from ..core.nuclide import canonical_name

    d = kernels_dir()
    if d is None:
        return None
    p = d / f"{canonical_name(nuclide)}_{canonical_medium(medium)}.csv"
    return p if p.is_file() else None


#: Point-kernel models of :func:`load_point_kernel`: the project's Monte Carlo (a shipped
#: table, else one built on first use and cached) or, only when asked for by name, the
#: approximate analytic model (:func:`point_kernel_for`).
KERNEL_MODELS = ("monte-carlo", "analytic")
_KERNEL_MODEL_ALIASES = {"mc": "monte-carlo", "montecarlo": "monte-carlo",
                         "monte_carlo": "monte-carlo", "foundation": "analytic"}
#: Emissions the kernels do not model (alphas, positrons, fission) may carry at most this
#: fraction of a nuclide's energy per decay; more is refused.
UNMODELLED_ENERGY_TOLERANCE = 1e-3
#: Environment variable: histories of the tables built on first use, ``N`` or
#: ``ELECTRONS,PHOTONS``, instead of the planned default (tests; more precise tables).
HISTORIES_ENV = "VOXDOSE_DPK_HISTORIES"


class ApproximateKernelWarning(UserWarning):
    """The approximate analytic point kernel was asked for instead of the Monte Carlo."""


def canonical_kernel_model(model: str) -> str:
    """'monte-carlo' | 'analytic' (a few spellings accepted); InputError otherwise."""
    m = str(model).strip().lower()
    m = _KERNEL_MODEL_ALIASES.get(m, m)
    if m not in KERNEL_MODELS:
        raise InputError(f"unknown point-kernel model '{model}'; choose "
                         f"{' or '.join(KERNEL_MODELS)}")
    return m


def check_kernel_emissions(nuc: Nuclide) -> None:
    """:class:`NuclideError` when a kernel of ``nuc`` would miss energy: it emits alphas,
    positrons or fission products carrying more than :data:`UNMODELLED_ENERGY_TOLERANCE`
    of its energy per decay (the kernels transport electrons and photons), or nothing."""
    from ..core.errors import NuclideError
    from ..core.nuclide import unmodelled_emissions

    modelled = nuc.electron_energy_per_decay_mev + nuc.photon_energy_per_decay_mev
    lost = unmodelled_emissions(nuc)
    lost_mev = sum(e for _, e in lost.values())
    if lost_mev > UNMODELLED_ENERGY_TOLERANCE * (modelled + lost_mev):
        kinds = ", ".join(f"{k} {e:.3g} MeV" for k, (_, e) in lost.items())
        raise NuclideError(
            f"{nuc.name} emits radiation that voxdose's dose kernels do not transport "
            f"({kinds} per decay; {lost_mev / (modelled + lost_mev):.0%} of its energy): "
            "its dose would miss that energy. Give your own dose point kernel that holds "
            "it ([dose] dpk in study.toml, --dpk on the command line)")
    if modelled <= 0:
        raise NuclideError(f"ICRP-107 lists no electron or photon emissions for {nuc.name}; "
                           "there is nothing for a dose kernel to transport")


def histories_from_env(value: str | None = None):
    """(electrons, photons) from ``$VOXDOSE_DPK_HISTORIES`` (or ``value``): ``N`` or
    ``NE,NP``; None when unset (the planned default)."""
    import os

    text = os.environ.get(HISTORIES_ENV, "") if value is None else value
    if not str(text).strip():
        return None
    try:
        vals = [int(v) for v in str(text).split(",")]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 0 or max(vals) == 0:
        raise InputError(f"{HISTORIES_ENV} must be N or ELECTRONS,PHOTONS (whole numbers "
                         f">= 0, not both 0); got '{text}'. Unset it for the default plan")
    return vals[0], vals[1]


def load_point_kernel(nuclide: Nuclide | str, medium: str = "water", *,
                      model: str = "monte-carlo", histories=None, build: bool = True,
                      cache_dir=None):
    """The point kernel of ``nuclide`` in ``medium`` (cached per nuclide and medium).

    ``model="monte-carlo"`` (default): the project's Monte Carlo table of the medium
    (``kernels/<Nuclide>_<medium>.csv`` with its JSON record) when shipped, else the
    shipped water table range-scaled to the medium's density; for a nuclide without a
    shipped table, a table built by the project's Monte Carlo on first use (said on
    stderr with the expected time; ``histories`` (electrons, photons), else
    ``$VOXDOSE_DPK_HISTORIES``, else planned for <= 0.5 % statistical uncertainty in the
    first three shells) and cached (:func:`voxdose.kernels.cache.dpk_cache_dir` under
    ``cache_dir``); ``build=False`` refuses instead of building.
    ``model="analytic"``: the approximate analytic model :func:`point_kernel_for` at the
    medium's density, with an :class:`ApproximateKernelWarning` and a warning in its
    provenance: never chosen without being asked for.
    A nuclide whose alphas, positrons or fission the kernels would miss is refused
    (:func:`check_kernel_emissions`).  All kernels have the same interface.
    """
    from .cache import cache_base_dir

    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    med = canonical_medium(medium)
    check_kernel_emissions(nuc)
    if canonical_kernel_model(model) == "analytic":
        return _analytic_kernel(nuc, med)
    hist = histories_from_env() if histories is None else histories_from_env(
        ",".join(str(int(v)) for v in histories))
    return _load_point_kernel_cached(nuc.name, med, hist, str(cache_base_dir(cache_dir)),
                                     bool(build))


def _analytic_kernel(nuc: Nuclide, med: str) -> PointKernel:
    import dataclasses
    import warnings

    msg = (f"approximate analytic point kernel asked for ({nuc.name} in {med}): electron "
           "shape about +-20 % against Monte Carlo, photons by a build-up approximation, "
           f"water composition at {MEDIA_DENSITY_G_CM3[med]} g/cm3; not the project's "
           "Monte Carlo")
    warnings.warn(msg, ApproximateKernelWarning, stacklevel=3)
    pk = point_kernel_for(nuc, density_g_cm3=MEDIA_DENSITY_G_CM3[med])
    return dataclasses.replace(pk, warning=msg)


#: Tissue of a density for the ``mvs`` dose mode: (upper density bound g/cm^3, medium).
TISSUE_BY_DENSITY = ((0.6, "lung"), (1.15, "soft-tissue"), (math.inf, "bone"))


def tissue_for_density(density_g_cm3: float) -> str:
    """'lung' below 0.6 g/cm^3, 'soft-tissue' below 1.15, else 'bone'."""
    for hi, med in TISSUE_BY_DENSITY:
        if density_g_cm3 < hi:
            return med
    return "bone"


def point_kernel_for_tissue_density(nuclide: Nuclide | str, density_g_cm3: float):
    """The kernel of the tissue a density stands for (:func:`tissue_for_density`): that
    tissue's Monte Carlo table (its composition), range-scaled from the table's density
    to ``density_g_cm3`` (g/cm^3)."""
    med = tissue_for_density(float(density_g_cm3))
    pk = load_point_kernel(nuclide, med)   # always a Monte Carlo table (shipped or built)
    if abs(pk.density_g_cm3 - float(density_g_cm3)) < 1e-12:
        return pk
    return pk.range_scaled(float(density_g_cm3), medium=med)


@lru_cache(maxsize=32)
def _load_point_kernel_cached(name: str, med: str, histories=None, cache_base=None,
                              build: bool = True):
    nuc = load_nuclide(name)
    own = shipped_table_path(nuc.name, med)
    path = own or shipped_table_path(nuc.name)
    if path is None:
        return _built_kernel(nuc, med, histories, cache_base, build)
    return _shipped_kernel(nuc, med, path, own is not None)


def _built_kernel(nuc: Nuclide, med: str, histories, cache_base, build: bool):
    """The Monte Carlo table of a nuclide without a shipped one: from the cache, else
    built now (:func:`voxdose.kernels.cache.build_cached_dpk`)."""
    from ..core.errors import NuclideError
    from .cache import build_cached_dpk, dpk_cache_dir, read_cached_dpk

    hit = read_cached_dpk(nuc.name, med, histories, cache_base)
    if hit is None and not build:
        raise NuclideError(
            f"no Monte Carlo dose point kernel for {nuc.name} in {med}: none is shipped and "
            f"none is cached in {dpk_cache_dir(cache_base)}; build it with "
            f"`voxdose dpk {nuc.name} --medium {med} --build`")
    if hit is None:
        hit = build_cached_dpk(nuc.name, med, histories, cache_base)
    r, d, record, csv_path = hit
    where = f"cached as {csv_path}" if csv_path else "not cached"
    e_range = record.get("max_electron_range_mm")
    return TabulatedPointKernel.from_table(
        r, d, nuclide=nuc.name, density_g_cm3=float(record["density_g_cm3"]),
        total_energy_mev=nuc.electron_energy_per_decay_mev + nuc.photon_energy_per_decay_mev,
        electron_range_mm=float(e_range) if e_range else None, medium=med, record=record,
        source=f"voxdose Monte Carlo table built on first use (no shipped table; {where})")


def _shipped_kernel(nuc: Nuclide, med: str, path, own: bool):
    """The shipped table ``path`` (the medium's own when ``own``, else water's,
    range-scaled to the medium's density)."""
    import json

    rho = MEDIA_DENSITY_G_CM3[med]
    rec_path = path.with_suffix(".json")
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else None
    e_range = None
    if record and record.get("max_electron_range_mm"):
        e_range = float(record["max_electron_range_mm"])
    table_rho = float(record.get("density_g_cm3", 1.0)) if record else 1.0
    if not own:
        table_rho = 1.0
    pk = read_dpk_csv(path, nuclide=nuc, electron_range_mm=e_range, density_g_cm3=table_rho)
    pk = TabulatedPointKernel.from_table(
        pk.r_table_mm, pk.dose_table_gy_per_decay, nuclide=nuc.name, density_g_cm3=table_rho,
        total_energy_mev=pk.total_energy_mev, electron_range_mm=pk.electron_range_mm,
        source=f"voxdose Monte Carlo table {path.name}", medium=med if own else "water",
        record=record)
    if not own and med != "water":
        pk = pk.range_scaled(rho, medium=med)
    return pk
