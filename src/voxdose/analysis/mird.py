"""Organ-level MIRD check: organ TIA x mass-scaled self S-value, beside the voxel dose.

MIRD organ formalism (self-irradiation only)::

    D_self(k) = A~_k S(k <- k),      S(k <- k) = sum_i E_i y_i phi_i(k <- k) / m_k

with A~_k the organ's time-integrated activity (decays, Bq s), m_k its mass and phi_i the
absorbed fraction of emission i. Cross-irradiation from other organs is *not* included in
this check (it is in the voxel dose), so the voxel mean is expected to be somewhat higher.

Absorbed fractions for a uniform sphere of the organ's mass (our own kernels)
    For a source uniform in a sphere of radius R (m = rho 4/3 pi R^3), the fraction of the
    energy emitted that is absorbed inside the sphere is, with the point kernel's cumulative
    absorbed energy E_abs(r) (MeV per decay within radius r, infinite medium; see
    :mod:`voxdose.kernels.point`) and the sphere's geometric reduction factor
    P(r) = 1 - 3r/(4R) + r^3/(16R^3) (probability that a point at distance r, in a random
    direction from a uniformly distributed point in the sphere, is inside it; 0 at r = 2R)::

        E phi = int_0^2R j(r) P(r) dr = int_0^2R E_abs(r) (3/(4R)) (1 - r^2/(4R^2)) dr

    (integration by parts: P(2R) = 0, E_abs(0) = 0 without the local term; the local
    (< 10 keV) energy is added as fully absorbed). The integral is done with 400-point
    Gauss-Legendre quadrature, split at the electron range. The infinite-medium kernel
    includes scatter build-up from outside the sphere, so phi is slightly high for photons
    (no backscatter medium outside a real organ is missing in the kernel, the opposite of
    an isolated sphere in vacuum); it is a model, stated as such.

    * electrons: fully absorbed by default (phi = 1; organ sizes >> electron ranges), or
      from the kernel (``electrons="kernel"``) for small structures;
    * photons: phi from the kernel as above.

Mass scaling: S is computed for the actual mass of each organ, m_k = sum_v f_k(v) rho(v)
V_vox (f_k the organ's volume fraction of each dose voxel, from the label grid; rho from the
density map or water), so no reference-phantom mass rescaling is needed; a user
S-value table (OLINDA/EXM, IDAC-Dose, mGy/(MBq s)) can be compared beside it.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..kernels.point import PointKernel
from ..core.errors import InputError
from ..core.units import MEV_PER_G_TO_GY, MGY_PER_MBQ_S_IN_GY_PER_DECAY

_GL_NODES = 400


def sphere_radius_mm(mass_g: float, density_g_cm3: float = 1.0) -> float:
    """Radius (mm) of a sphere of ``mass_g`` grams at ``density_g_cm3``."""
    if not mass_g > 0 or not density_g_cm3 > 0:
        raise InputError(f"sphere needs mass > 0 g and density > 0, got {mass_g}, "
                         f"{density_g_cm3}")
    vol_mm3 = mass_g / density_g_cm3 * 1000.0
    return (3.0 * vol_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)


def sphere_geometric_factor(r_mm, radius_mm: float):
    """P(r) = 1 - 3x/4 + x^3/16, x = r/R, for 0 <= r <= 2R; 0 beyond."""
    x = np.clip(np.asarray(r_mm, dtype=np.float64) / radius_mm, 0.0, 2.0)
    return 1.0 - 0.75 * x + x**3 / 16.0


def split_kernel(pk) -> PointKernel:
    """A kernel that separates electrons from photons: ``pk`` itself when it does (the
    analytic model), else the analytic model of the same nuclide and density. The Monte
    Carlo tables hold the total only, so sphere absorbed fractions per emission type come
    from the analytic model (electron and photon energies per decay are ICRP-107's)."""
    if hasattr(pk, "electron_energies_mev"):
        return pk
    from ..kernels.point import point_kernel_for

    return point_kernel_for(pk.nuclide, density_g_cm3=getattr(pk, "density_g_cm3", 1.0))


def _kernel_part(pk: PointKernel, part: str) -> PointKernel:
    """The point kernel restricted to its electrons or its photons (no local term)."""
    from dataclasses import replace

    pk = split_kernel(pk)
    empty = np.zeros(0)
    if part == "electrons":
        return replace(pk, photon_energies_mev=empty, photon_yields=empty,
                       photon_mu_per_mm=empty, photon_mu_en_per_mm=empty, local_energy_mev=0.0)
    if part == "photons":
        return replace(pk, electron_energies_mev=empty, electron_yields=empty,
                       electron_ranges_mm=empty, local_energy_mev=0.0)
    raise ValueError(part)


@lru_cache(maxsize=4)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1], computed once (read-only): the
    eigenvalue problem behind them took seconds per organ on a 2-core runner."""
    x, w = np.polynomial.legendre.leggauss(n)
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


def _absorbed_in_sphere_mev(pk: PointKernel, radius_mm: float) -> float:
    """int_0^2R E_abs(r) (3/(4R)) (1 - r^2/(4R^2)) dr, MeV per decay (no local term)."""
    x, w = _gauss_legendre(_GL_NODES)
    top = 2.0 * radius_mm
    cuts = [0.0]
    if pk.electron_ranges_mm.size and pk.max_electron_range_mm < top:
        cuts.append(pk.max_electron_range_mm)
    cuts.append(top)
    total = 0.0
    for a, b in itertools.pairwise(cuts):
        r = 0.5 * (b - a) * x + 0.5 * (b + a)
        g = 0.75 / radius_mm * (1.0 - r**2 / (4.0 * radius_mm**2))
        total += 0.5 * (b - a) * float(np.dot(w, pk.cumulative_energy_mev(r, False) * g))
    return total


def sphere_absorbed_fraction(pk: PointKernel, mass_g: float, part: str = "photons",
                             density_g_cm3: float | None = None) -> float:
    """Absorbed fraction phi (0..1) of the ``part`` ('photons' | 'electrons') energy of a
    source uniform in a sphere of ``mass_g`` (density: the kernel's medium by default)."""
    rho = pk.density_g_cm3 if density_g_cm3 is None else float(density_g_cm3)
    sub = _kernel_part(pk, part)
    emitted = (sub.photon_kernel_energy_mev if part == "photons"
               else sub.electron_kernel_energy_mev)
    if emitted <= 0:
        return 1.0
    phi = _absorbed_in_sphere_mev(sub, sphere_radius_mm(mass_g, rho)) / emitted
    return float(min(1.0, max(0.0, phi)))


@dataclass(frozen=True)
class SelfSValue:
    """Self S-value of a uniform sphere of ``mass_g``; energies MeV per decay."""

    mass_g: float
    electron_energy_mev: float
    electron_af: float
    photon_energy_mev: float
    photon_af: float
    local_energy_mev: float

    @property
    def absorbed_energy_mev(self) -> float:
        return (self.electron_energy_mev * self.electron_af
                + self.photon_energy_mev * self.photon_af + self.local_energy_mev)

    @property
    def gy_per_decay(self) -> float:
        return self.absorbed_energy_mev / self.mass_g * MEV_PER_G_TO_GY

    @property
    def mgy_per_mbq_s(self) -> float:
        return self.gy_per_decay / MGY_PER_MBQ_S_IN_GY_PER_DECAY


def self_s_value(pk: PointKernel, mass_g: float, electrons: str = "absorbed",
                 density_g_cm3: float | None = None) -> SelfSValue:
    """S(k <- k) for a uniform sphere of ``mass_g`` (see the module docstring).

    ``electrons``: 'absorbed' (phi_e = 1) or 'kernel' (phi_e from the electron kernel).
    """
    if electrons not in ("absorbed", "kernel"):
        raise InputError(f"electrons must be 'absorbed' or 'kernel', got {electrons!r}")
    if not mass_g > 0:
        raise InputError(f"organ mass must be > 0 g, got {mass_g}")
    pk = split_kernel(pk)
    e_af = (1.0 if electrons == "absorbed"
            else sphere_absorbed_fraction(pk, mass_g, "electrons", density_g_cm3))
    return SelfSValue(mass_g, pk.electron_kernel_energy_mev, e_af, pk.photon_kernel_energy_mev,
                      sphere_absorbed_fraction(pk, mass_g, "photons", density_g_cm3),
                      pk.local_energy_mev)


def read_s_table(path) -> dict[str, float]:
    """CSV with columns ``organ,S`` (S in mGy/(MBq s), e.g. from OLINDA/EXM or IDAC-Dose)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"S-value table not found: {p}")
    rows = list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8"))))
    if not rows or not {"organ", "S"} <= set(rows[0]):
        raise InputError(f"{p}: expected a CSV with header 'organ,S' (S in mGy/(MBq s))")
    out = {}
    for i, row in enumerate(rows, start=2):
        try:
            s = float(row["S"])
        except (TypeError, ValueError):
            raise InputError(f"{p} line {i}: S = {row['S']!r} is not a number") from None
        if not math.isfinite(s) or s <= 0:
            raise InputError(f"{p} line {i}: S must be > 0 mGy/(MBq s), got {row['S']}")
        out[str(row["organ"]).strip()] = s
    return out


@dataclass(frozen=True)
class OrganCheck:
    """One organ's row of the MIRD check."""

    organ: str
    mass_g: float
    tia_bq_s: float
    s_self_mgy_per_mbq_s: float
    photon_af: float
    mird_gy: float
    voxel_mean_gy: float | None
    user_s_mgy_per_mbq_s: float | None = None

    @property
    def diff_percent(self) -> float | None:
        """(voxel - MIRD) / MIRD x 100."""
        if self.voxel_mean_gy is None or self.mird_gy <= 0:
            return None
        return 100.0 * (self.voxel_mean_gy - self.mird_gy) / self.mird_gy

    @property
    def user_gy(self) -> float | None:
        if self.user_s_mgy_per_mbq_s is None:
            return None
        return self.tia_bq_s * self.user_s_mgy_per_mbq_s * MGY_PER_MBQ_S_IN_GY_PER_DECAY

    @property
    def user_diff_percent(self) -> float | None:
        u = self.user_gy
        if u is None or self.voxel_mean_gy is None or u <= 0:
            return None
        return 100.0 * (self.voxel_mean_gy - u) / u

    def to_dict(self) -> dict:
        return {"organ": self.organ, "mass_g": self.mass_g, "tia_bq_s": self.tia_bq_s,
                "s_self_mgy_per_mbq_s": self.s_self_mgy_per_mbq_s,
                "photon_absorbed_fraction": self.photon_af, "mird_self_gy": self.mird_gy,
                "voxel_mean_gy": self.voxel_mean_gy, "diff_percent": self.diff_percent,
                "user_s_mgy_per_mbq_s": self.user_s_mgy_per_mbq_s, "user_gy": self.user_gy,
                "user_diff_percent": self.user_diff_percent}


MIRD_CSV_COLUMNS = ("organ", "mass_g", "tia_bq_s", "s_self_mgy_per_mbq_s",
                    "photon_absorbed_fraction", "mird_self_gy", "voxel_mean_gy",
                    "diff_percent", "user_s_mgy_per_mbq_s", "user_gy", "user_diff_percent")


def organ_check(pk: PointKernel, organs: dict[str, tuple[float, float]],
                voxel_mean_gy: dict[str, float] | None = None,
                user_s: dict[str, float] | None = None,
                electrons: str = "absorbed") -> list[OrganCheck]:
    """MIRD self-dose per organ beside the voxel mean.

    organs : name -> (TIA in Bq s, mass in g); voxel_mean_gy : name -> mean of the voxel
    dose map; user_s : name -> S (mGy/(MBq s)) from a user's table.
    """
    out = []
    for name, (tia, mass) in organs.items():
        if not tia >= 0 or not math.isfinite(tia):
            raise InputError(f"TIA of '{name}' must be >= 0 Bq s, got {tia}")
        if mass <= 0:
            out.append(OrganCheck(name, 0.0, tia, 0.0, 0.0, 0.0,
                                  (voxel_mean_gy or {}).get(name),
                                  (user_s or {}).get(name)))
            continue
        s = self_s_value(pk, mass, electrons)
        out.append(OrganCheck(name, mass, tia, s.mgy_per_mbq_s, s.photon_af,
                              tia * s.gy_per_decay, (voxel_mean_gy or {}).get(name),
                              (user_s or {}).get(name)))
    return out


def organ_check_csv(rows: list[OrganCheck]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MIRD_CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = r.to_dict()
        w.writerow({k: ("" if d[k] is None else (f"{d[k]:.6g}" if isinstance(d[k], float)
                                                 else d[k])) for k in MIRD_CSV_COLUMNS})
    return buf.getvalue()
