"""Lu-177 vs Y-90 (or any nuclides): dose, cross-fire and the dose just outside structures.

**Same decays assumed.** Every nuclide is given the *same* TIA map (decays per voxel): the
comparison isolates the emission physics (range and photon fraction). A real swap of the
nuclide also changes the physical half-life and therefore the TIA for the same biological
kinetics; recomputing the TIA per nuclide from the fitted biological kinetics belongs to
the kinetics stage, and its TIA maps can be passed here one by one.

For each nuclide n (kernel K_n from :func:`voxdose.kernels.point.load_point_kernel` ->
:func:`voxdose.kernels.voxel.voxel_kernel` on the TIA grid, water):

* dose D_n = A~ (*) K_n (:class:`voxdose.dose.engine.KernelConvolution`) and per-structure
  DVHs;
* cross-fire fraction of structure s: the share of its mean dose that comes from activity
  outside it, 1 - mean_s(A~ 1_s (*) K_n) / mean_s(D_n) (by linearity, equal to convolving the
  TIA masked outside s);
* dose in shells outside structures (lesions and marrow by default): voxels whose centre
  lies at a distance d from the structure's surface, d in (0, d1], (d1, d2], (d2, d3] mm
  (default 1, 2, 5 mm). The surface distance is approximated as the Euclidean distance
  from the voxel centre to the nearest structure voxel centre minus half the voxel size
  along the axes (mean spacing). At clinical SPECT voxel sizes (4-10 mm) the 1- and 2-mm
  shells contain no voxel: they are reported with ``n_voxels = 0`` and no dose; the first
  voxel ring (face neighbours) is reported too;
* radial dose point kernel and r90: the radius of the sphere that absorbs 90 % of the
  electron (beta + conversion + Auger) energy (the X90 of the electron kernel), and of all
  energy (photons included, infinite water).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..core.backend import to_numpy
from ..core.errors import InputError
from ..core.grid import Image, LabelMap
from ..kernels.extent import kernel_radius_for
from .dvh import DVH, dvh_from_mask

DEFAULT_SHELLS_MM = (1.0, 2.0, 5.0)
SHELL_PATTERN = re.compile(r"lesion|tumou?r|marrow|metasta", re.IGNORECASE)


@lru_cache(maxsize=8)
def _kernel(nuclide: str, spacing_mm: tuple, radius_mm: float):
    """(point kernel, voxel kernel) per nuclide and grid; cached (both are read-only)."""
    from ..kernels.point import load_point_kernel
    from ..kernels.cache import voxel_kernel_cached

    pk = load_point_kernel(nuclide)
    return pk, voxel_kernel_cached(pk, spacing_mm, radius_mm=radius_mm)


def _radius_for(nuclide: str, grid, radius_mm: float | None) -> float:
    if radius_mm is not None:
        return float(radius_mm)
    from ..kernels.point import load_point_kernel

    return kernel_radius_for(load_point_kernel(nuclide), grid)


def r90_mm(point_kernel, part: str = "electrons", fraction: float = 0.9) -> float:
    """Radius (mm) within which ``fraction`` of the ``part`` energy is absorbed
    ('electrons': electron groups + local energy; 'all': everything, infinite water)."""
    from .mird import _kernel_part

    pk = point_kernel
    if part == "electrons":
        from .mird import split_kernel

        pk = split_kernel(pk)  # Monte Carlo tables hold the total: analytic electron part
        sub = _kernel_part(pk, "electrons")
        total = sub.electron_kernel_energy_mev
        local = 0.0
    elif part == "all":
        sub, total, local = pk, pk.total_energy_mev, 0.0
    else:
        raise ValueError(part)
    if total <= 0:
        return 0.0
    target = fraction * total - local
    lo, hi = 0.0, 1.0
    while sub.cumulative_energy_mev(hi) < target:
        hi *= 2.0
        if hi > 1e7:
            return math.inf
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if sub.cumulative_energy_mev(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass
class NuclideComparison:
    nuclide: str
    dose: Image
    dvhs: list[DVH]
    cross_fire_fraction: dict[str, float]
    shells: dict[str, list[dict]]
    r90_electrons_mm: float
    r90_all_mm: float
    kernel_provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"nuclide": self.nuclide,
                "r90_electrons_mm": self.r90_electrons_mm, "r90_all_energy_mm": self.r90_all_mm,
                "structures": [{"name": h.name, "volume_ml": h.volume_ml, "mean_gy": h.mean_gy,
                                "d2_gy": h.d(2), "d50_gy": h.d(50), "d98_gy": h.d(98),
                                "cross_fire_fraction": self.cross_fire_fraction.get(h.name)}
                               for h in self.dvhs],
                "shells": self.shells, "kernel": self.kernel_provenance}


def shell_masks(mask: np.ndarray, spacing_mm, edges_mm=DEFAULT_SHELLS_MM):
    """[(label, boolean mask)] of the shells outside ``mask`` (see the module docstring),
    plus ('first voxel ring', face-neighbour ring)."""
    from scipy import ndimage

    m = np.asarray(mask, bool)
    sp = np.asarray(spacing_mm, dtype=float)
    dist = ndimage.distance_transform_edt(~m, sampling=sp) - 0.5 * float(sp.mean())
    out = []
    lo = 0.0
    for hi in edges_mm:
        out.append((f"{lo:g}-{hi:g} mm", (~m) & (dist > lo) & (dist <= hi)))
        lo = hi
    ring = ndimage.binary_dilation(m) & ~m
    out.append(("first voxel ring", ring))
    return out


def compare_nuclides(tia: Image, nuclides, labels: LabelMap | None = None,
                     shells_mm=DEFAULT_SHELLS_MM, shell_structures=None,
                     kernel_radius_mm: float | None = 200.0) -> list[NuclideComparison]:
    """Dose maps, DVHs, cross-fire fractions, shells and r90 for each nuclide (same TIA)."""
    from ..dose.engine import KernelConvolution

    names = list(nuclides)
    if not names:
        raise InputError("no nuclide given; e.g. --nuclides Lu-177,Y-90")
    if labels is not None and not labels.grid.same_as(tia.grid, tol_mm=1e-2):
        raise InputError(f"label grid ({labels.grid.describe()}) and TIA grid "
                         f"({tia.grid.describe()}) differ; resample the labels to the TIA")
    edges = tuple(float(e) for e in shells_mm)
    if any(not math.isfinite(e) or e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise InputError(f"shell distances must be increasing positive mm, got {shells_mm}")
    a = np.asarray(to_numpy(tia.data), dtype=np.float64)
    if np.any(a < 0):
        raise InputError("TIA map has negative voxels; clip or fix it before comparing")
    vv = tia.grid.voxel_volume_ml
    masks = {}
    if labels is not None:
        lab = np.asarray(labels.data)
        masks = {n: lab == v for v, n in sorted(labels.names.items())}
    if shell_structures is None:
        shell_structures = [n for n in masks if SHELL_PATTERN.search(n)]
    for s in shell_structures:
        if s not in masks:
            raise InputError(f"shell structure '{s}' is not a label name; known: "
                             f"{sorted(masks)}")
    shells_geo = {s: shell_masks(masks[s], tia.grid.spacing_mm, edges)
                  for s in shell_structures}
    out = []
    for nuc in names:
        spacing = tuple(round(float(v), 6) for v in tia.grid.spacing_mm)
        pk, kern = _kernel(nuc, spacing, _radius_for(nuc, tia.grid, kernel_radius_mm))
        eng = KernelConvolution(kern)
        dose = eng.dose(tia)
        d = np.asarray(to_numpy(dose.data), dtype=np.float64)
        dose = dose.with_data(d)
        dvhs = [dvh_from_mask(n, d, m, vv) for n, m in masks.items()]
        cross = {}
        for n, m in masks.items():
            if not m.any() or d[m].mean() <= 0:
                cross[n] = None
                continue
            inside = np.asarray(to_numpy(eng.dose(tia.with_data(a * m)).data))
            cross[n] = float(max(0.0, 1.0 - inside[m].mean() / d[m].mean()))
        shells = {s: [{"shell": lbl, "n_voxels": int(sm.sum()),
                       "mean_gy": float(d[sm].mean()) if sm.any() else None,
                       "max_gy": float(d[sm].max()) if sm.any() else None}
                      for lbl, sm in geo] for s, geo in shells_geo.items()}
        out.append(NuclideComparison(pk.nuclide, dose, dvhs, cross, shells, r90_mm(pk),
                                     r90_mm(pk, "all"), eng.kernel.provenance()))
    return out
