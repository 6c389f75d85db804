"""Mass density from CT, and the density modes of the dose engines.

HU -> density calibration (piecewise linear)
    The default curve interpolates linearly between the tissue points of Schneider,
    Bortfeld & Schlegel (2000), "Correlation between CT numbers and tissue parameters needed
    for Monte Carlo simulations of clinical dose distributions", Phys. Med. Biol. 45:459-478
    (the HU/density pairs as distributed with the Geant4 and GATE DICOM examples)::

        HU     -1000    -98    14     23     101     1600    3000
        g/cm3  0.00121  0.93   1.03   1.031  1.0762  1.9642  2.8

    One published point, (100 HU, 1.1199 g/cm^3), the upper end of the soft-tissue branch,
    is left out so the curve is monotonic (it steps down to the bone branch at 101 HU).
    Below -1000 HU the density is clipped to **air, 0.00121 g/cm^3** (not water); above
    3000 HU (metal, artefacts) it is clipped to 2.8 g/cm^3.  A user's own scanner
    calibration can be passed as (hu, density) points instead.

Density modes (recorded in every dose image's meta as ``density_mode``)
    ``none``   water everywhere (rho = 1 g/cm^3); the CT is not used.
    ``scale``  D(x) = D_water(x) * rho_water / rho(x): the energy deposited in voxel x is taken
               from the water calculation and divided by the voxel's real mass.  Exact for a
               uniform medium of any density when the transport is density-scaled and the
               activity per voxel is unchanged *and* ranges are short; it ignores that
               ranges change with density (lung: overestimates the dose near hot lesions).
    ``mvs``    density-binned ("multiple voxel S-value") kernels: the voxels are put in a few
               density bins; for each bin b a range-scaled kernel S_b (the kernel of a
               homogeneous medium of the bin's density rho_b) is convolved with the whole TIA
               map, and target voxel x takes the result of *its own* bin:
               D(x) = sum_y A~(y) S_{b(x)}(x - y).  In other words each target voxel sees the
               source distribution as if the whole medium had its density: the electron
               range and the absorbing mass both follow the target.  There is no smoothing
               across an interface (the dose steps where the bin changes; tested).
               Range scaling: with electron ranges R/rho and photon mu proportional to rho,
               S_rho(o; s) = rho^2 S_water(o; rho s) exactly (the foundation kernel obeys it).

Bins for ``mvs`` (:func:`mvs_bins`)
    Fixed edges, default ``(0, 0.6, 1.15, inf)`` g/cm^3 -> lung (and air), soft tissue
    (fat, muscle, organs, water), bone.  Each bin's density rho_b is the mean density of the
    voxels that fall in it, counting only voxels denser than 0.1 g/cm^3 (air outside the
    body must not drag the lung bin towards 0; the dose in air voxels is reported as if they
    were lung).  Empty bins are skipped.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.grid import Image

DENSITY_MODES = ("none", "scale", "mvs")
RHO_WATER_G_CM3 = 1.0
RHO_AIR_G_CM3 = 0.00121

#: Schneider et al. (2000) tissue points (HU, g/cm^3); see the module docstring.
SCHNEIDER_2000_HU = (-1000.0, -98.0, 14.0, 23.0, 101.0, 1600.0, 3000.0)
SCHNEIDER_2000_DENSITY = (0.00121, 0.93, 1.03, 1.031, 1.0762, 1.9642, 2.8)
CALIBRATION_SOURCE = (
    "piecewise linear through Schneider, Bortfeld & Schlegel (2000) Phys Med Biol 45:459 "
    "tissue points (HU,g/cm3): (-1000,0.00121) (-98,0.93) (14,1.03) (23,1.031) "
    "(101,1.0762) (1600,1.9642) (3000,2.8); clipped to air below -1000 HU and to 2.8 above "
    "3000 HU")

DEFAULT_MVS_EDGES = (0.0, 0.6, 1.15, math.inf)
#: Voxels lighter than this (air) do not enter a bin's mean density.
MVS_MIN_DENSITY = 0.1


def check_density_mode(mode: str) -> str:
    m = str(mode).lower()
    if m not in DENSITY_MODES:
        raise InputError(f"unknown density mode '{mode}'; choose one of "
                         f"{', '.join(DENSITY_MODES)}")
    return m


def hu_to_density(hu, points_hu=SCHNEIDER_2000_HU, points_density=SCHNEIDER_2000_DENSITY):
    """CT numbers (HU) -> mass density (g/cm^3), piecewise linear, clipped at both ends.

    Example: 0 HU -> 0.93 + 0.10 * 98/112 = 1.0175 g/cm^3; -1200 HU -> 0.00121 (air).
    """
    xp_ = np.asarray(points_hu, dtype=np.float64)
    fp = np.asarray(points_density, dtype=np.float64)
    if xp_.ndim != 1 or xp_.size < 2 or xp_.shape != fp.shape or np.any(np.diff(xp_) <= 0):
        raise InputError("HU calibration needs >= 2 points with strictly increasing HU")
    if np.any(fp <= 0):
        raise InputError("HU calibration densities must be positive (g/cm^3)")
    try:  # CuPy arrays: interpolate on the device
        import cupy

        if isinstance(hu, cupy.ndarray):
            return cupy.interp(hu, cupy.asarray(xp_), cupy.asarray(fp))
    except ImportError:
        pass
    return np.interp(np.asarray(hu, dtype=np.float64), xp_, fp)


def density_from_ct(ct: Image, grid=None, **calibration) -> Image:
    """A density image (g/cm^3) from a CT image in HU, on the CT's grid.

    ``grid``: when given, the CT must already be on it (shape and affine within 1 um);
    resample it first with :func:`voxdose.imaging.registration.resample` otherwise.
    """
    if grid is not None and not ct.grid.same_as(grid):
        src = ct.meta.get("source", "the CT")
        raise InputError(f"CT {src} is not on the TIA grid ({ct.grid.describe()} vs "
                         f"{grid.describe()}); resample it onto the TIA grid first")
    rho = hu_to_density(ct.data, **calibration)
    return Image(rho, ct.grid, "mass density", "g/cm^3",
                 {"calibration": CALIBRATION_SOURCE if not calibration else "user points",
                  "source": ct.meta.get("source", "")})


def check_density(density: Image, grid, what: str = "density") -> None:
    """Raise :class:`InputError` unless ``density`` is on ``grid`` and positive, finite."""
    if not density.grid.same_as(grid):
        raise InputError(f"{what} image is not on the TIA grid ({density.grid.describe()} vs "
                         f"{grid.describe()}); resample it onto the TIA grid first")
    d = np.asarray(density.data) if type(density.data).__module__.startswith("numpy") \
        else density.data
    if not bool((d > 0).all()) or not bool(np.isfinite(float(d.sum()))):
        raise InputError(f"{what} must be positive and finite everywhere (g/cm^3)")


@dataclass(frozen=True)
class DensityBin:
    """One density bin of the ``mvs`` mode: [lo, hi) g/cm^3, its density and voxel count."""

    lo: float
    hi: float
    density_g_cm3: float
    n_voxels: int

    def to_dict(self) -> dict:
        return {"lo_g_cm3": self.lo, "hi_g_cm3": None if math.isinf(self.hi) else self.hi,
                "density_g_cm3": self.density_g_cm3, "n_voxels": self.n_voxels}


def mvs_bins(density, edges=DEFAULT_MVS_EDGES, min_density: float = MVS_MIN_DENSITY
             ) -> list[DensityBin]:
    """The non-empty density bins of a density map (see the module docstring)."""
    from ..core.backend import to_numpy

    rho = to_numpy(density)
    e = [float(v) for v in edges]
    if len(e) < 2 or any(b <= a for a, b in itertools.pairwise(e)):
        raise InputError(f"mvs bin edges must increase strictly; got {edges}")
    out = []
    for lo, hi in itertools.pairwise(e):
        sel = (rho >= lo) & (rho < hi)
        n = int(sel.sum())
        if n == 0:
            continue
        dense = rho[sel & (rho >= min_density)]
        rep = float(dense.mean()) if dense.size else max(min_density, lo)
        out.append(DensityBin(lo, hi, rep, n))
    return out


def bin_index(density, bins: list[DensityBin], xp=np):
    """Index of each voxel's bin (int8 array; voxels outside every bin take the nearest)."""
    edges = xp.asarray([b.lo for b in bins[1:]], dtype=xp.float64)
    return xp.searchsorted(edges, density, side="right").astype(xp.int8)
