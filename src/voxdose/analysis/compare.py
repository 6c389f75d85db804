"""Lu-177 vs Y-90 (or any nuclides): dose, cross-fire and the dose just outside structures.

**Which decays** (``tia_basis``, written into every result, compare.json and the DVH
figure; docs/defaults.md): :func:`compare_nuclides` doses every nuclide it is given with
the TIA map it is given.  ``voxdose compare`` (a TIA map, no kinetics) gives every nuclide
the *same* decays (:data:`SAME_DECAYS`: the comparison isolates the emission physics, range
and photon fraction); ``voxdose run`` gives each nuclide the TIA of the study's fitted
biological kinetics with its own physical decay (:data:`SWAPPED_DECAY`,
:func:`voxdose.kinetics.swap.swap_nuclide_tia`), one call per nuclide.

For each nuclide n (kernel K_n from the given point kernel, by default
:func:`voxdose.kernels.point.load_point_kernel`, -> :func:`voxdose.kernels.voxel.voxel_kernel`
on the TIA grid, water, radius by the rule of every entry point,
:func:`voxdose.kernels.extent.kernel_extent`):

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
  energy (photons included, infinite water); both from the point kernel the dose uses (a
  table: 90 % of the energy it deposits within its electron range; the analytic model: its
  electron groups).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..core.backend import backend_of
from ..core.errors import InputError
from ..core.grid import Image, LabelMap
from ..core.nuclide import canonical_name
from ..kernels.extent import kernel_extent
from .dvh import DVH, compute_dvhs

DEFAULT_SHELLS_MM = (1.0, 2.0, 5.0)
SHELL_PATTERN = re.compile(r"lesion|tumou?r|marrow|metasta", re.IGNORECASE)
#: ``tia_basis`` of a comparison: every nuclide given the same TIA map (``voxdose compare``).
SAME_DECAYS = ("same decays: the same TIA map (number of decays) for every nuclide; a "
               "nuclide's own physical half-life would change the TIA")
#: ``tia_basis`` of ``voxdose run``: the study's biological kinetics, each nuclide's decay.
SWAPPED_DECAY = ("own decays: each nuclide's TIA from the study's fitted biological kinetics "
                 "with its own physical decay (per voxel, same administered activity)")


@lru_cache(maxsize=8)
def _shipped_kernel(nuclide: str, spacing_mm: tuple, radius_mm: float | None, shape: tuple):
    """(point kernel, voxel kernel, extent) of the shipped table per nuclide and grid;
    cached (all read-only)."""
    from ..kernels.point import load_point_kernel

    return _kernel_for(load_point_kernel(nuclide), spacing_mm, radius_mm, shape)


def _kernel_for(pk, spacing_mm: tuple, radius_mm: float | None, shape: tuple):
    """(pk, its voxel kernel on the grid, the extent dict) by the one radius rule."""
    from ..kernels.cache import voxel_kernel_cached

    ext = kernel_extent(pk, spacing_mm, shape, radius_mm)
    vk = voxel_kernel_cached(pk, spacing_mm, radius_mm=ext.radius_mm, exact_spacing=True)
    return pk, vk, ext.to_dict()


def r90_mm(point_kernel, part: str = "electrons", fraction: float = 0.9) -> float:
    """Radius (mm) within which ``fraction`` of the ``part`` energy is absorbed
    ('electrons': of a table, the energy it deposits within its electron range
    (:func:`voxdose.kernels.point.table_electron_range_mm`; the photons' share there is
    < 0.3 % for Lu-177), of the analytic model its electron groups; 'all': everything,
    infinite medium).  Always the kernel given: a user's DPK table counts."""
    from .mird import _kernel_part

    pk = point_kernel
    if part == "electrons" and hasattr(pk, "shell_energy_mev"):
        from ..kernels.point import table_electron_range_mm

        r_e = table_electron_range_mm(pk.edges_mm, pk.shell_energy_mev)
        sub, total, local = pk, float(pk.cumulative_energy_mev(r_e)), 0.0
    elif part == "electrons":
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
    tia_basis: str = SAME_DECAYS

    def to_dict(self) -> dict:
        return {"nuclide": self.nuclide, "tia_basis": self.tia_basis,
                "r90_electrons_mm": self.r90_electrons_mm, "r90_all_energy_mm": self.r90_all_mm,
                "structures": [{"name": h.name, "volume_ml": h.volume_ml, "mean_gy": h.mean_gy,
                                "d2_gy": h.d(2), "d50_gy": h.d(50), "d98_gy": h.d(98),
                                "cross_fire_fraction": self.cross_fire_fraction.get(h.name)}
                               for h in self.dvhs],
                "shells": self.shells, "kernel": self.kernel_provenance}


def shell_masks(mask: np.ndarray, spacing_mm, edges_mm=DEFAULT_SHELLS_MM, backend=None):
    """[(label, boolean mask)] of the shells outside ``mask`` (see the module docstring),
    plus ('first voxel ring', face-neighbour ring); on ``backend`` (default: the mask's)."""
    be = backend or backend_of(mask)
    ndimage = be.ndimage
    m = be.asarray(mask, dtype=bool)
    sp = tuple(float(v) for v in spacing_mm)
    dist = ndimage.distance_transform_edt(~m, sampling=sp) - 0.5 * float(np.mean(sp))
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
                     kernel_radius_mm: float | None = None, point_kernels=None,
                     tia_basis: str = SAME_DECAYS, backend=None) -> list[NuclideComparison]:
    """Dose maps, DVHs, cross-fire fractions, shells and r90 for each nuclide, all from
    ``tia`` (whose basis ``tia_basis`` states; see the module docstring).

    ``kernel_radius_mm``: None, the one rule (:func:`voxdose.kernels.extent.kernel_extent`
    on the TIA grid); ``point_kernels``: {nuclide: point kernel} to use instead of the
    shipped table (e.g. the study's DPK for its nuclide); ``backend``: where every
    convolution and reduction runs (default: the TIA's device); the dose maps stay there.
    """
    names = list(nuclides)
    if not names:
        raise InputError("no nuclide given; e.g. --nuclides Lu-177,Y-90")
    if labels is not None and not labels.grid.same_as(tia.grid, tol_mm=1e-2):
        raise InputError(f"label grid ({labels.grid.describe()}) and TIA grid "
                         f"({tia.grid.describe()}) differ; resample the labels to the TIA")
    edges = tuple(float(e) for e in shells_mm)
    if any(not math.isfinite(e) or e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise InputError(f"shell distances must be increasing positive mm, got {shells_mm}")
    be = backend or backend_of(tia.data)
    a = be.asarray(tia.data, dtype=be.xp.float64)
    if bool(be.xp.any(a < 0)):
        raise InputError("TIA map has negative voxels; clip or fix it before comparing")
    masks = {}
    if labels is not None:
        lab = be.asarray(labels.data)
        masks = {n: lab == v for v, n in sorted(labels.names.items())}
    if shell_structures is None:
        shell_structures = [n for n in masks if SHELL_PATTERN.search(n)]
    for s in shell_structures:
        if s not in masks:
            raise InputError(f"shell structure '{s}' is not a label name; known: "
                             f"{sorted(masks)}")
    shells_geo = {s: shell_masks(masks[s], tia.grid.spacing_mm, edges, be)
                  for s in shell_structures}
    out = []
    given = {canonical_name(k): v for k, v in (point_kernels or {}).items()}
    spacing = tuple(float(v) for v in tia.grid.spacing_mm)
    shape = tuple(int(n) for n in tia.grid.shape)
    radius = None if kernel_radius_mm is None else float(kernel_radius_mm)
    for nuc in names:
        name = canonical_name(nuc)
        pk, kern, extent = (_kernel_for(given[name], spacing, radius, shape) if name in given
                            else _shipped_kernel(name, spacing, radius, shape))
        out.append(_one_nuclide(tia.with_data(a), pk, kern, extent, labels, masks, shells_geo,
                                tia_basis, be))
    return out


def _self_dose_mean(eng, tia: Image, mask, be) -> float:
    """Mean dose over ``mask`` from the activity inside ``mask`` only (Gy): the engine's
    convolution of the masked TIA, evaluated on the mask's own box by FFTs of that box
    (:func:`~voxdose.dose.convolution.convolve_in_box`, exact) when that is cheaper than
    a whole-grid convolution (every structure but the largest)."""
    from ..dose.convolution import box_convolution_is_cheaper, convolve_in_box, support_box

    xp = be.xp
    masked = tia.data * mask
    kernel = eng.kernel.data_gy_per_decay
    box = support_box(mask, xp)
    if eng.precision == "float64" and box_convolution_is_cheaper(
            mask.shape, box, kernel.shape, be, out_box=box):
        window, where = convolve_in_box(masked, box, kernel, be, out_box=box)
        return float(xp.maximum(window, 0.0)[mask[where]].mean())
    return float(eng.dose(tia.with_data(masked), be).data[mask].mean())


def _one_nuclide(tia: Image, pk, kern, extent, labels, masks, shells_geo, tia_basis,
                 be) -> NuclideComparison:
    """One nuclide's comparison (``tia`` on ``be``): dose, DVHs, cross-fire, shells, r90."""
    from ..dose.engine import KernelConvolution

    eng = KernelConvolution(kern, extent=extent)
    dose = eng.dose(tia, be)
    d = dose.data
    # DVHs weighted by the labels' fractional occupancy (as dvh.csv), masks elsewhere
    dvhs = compute_dvhs(dose, labels) if labels is not None else []
    cross = {}
    for n, m in masks.items():
        if not bool(m.any()) or float(d[m].mean()) <= 0:
            cross[n] = None
            continue
        cross[n] = float(max(0.0, 1.0 - _self_dose_mean(eng, tia, m, be) / float(d[m].mean())))
    shells = {s: [_shell_row(lbl, sm, d) for lbl, sm in geo] for s, geo in shells_geo.items()}
    return NuclideComparison(pk.nuclide, dose, dvhs, cross, shells, r90_mm(pk),
                             r90_mm(pk, "all"), eng.provenance(), tia_basis)


def _shell_row(label: str, sm, d) -> dict:
    """A shell's voxel count and mean / max dose (None without voxels)."""
    n = int(sm.sum())
    return {"shell": label, "n_voxels": n, "mean_gy": float(d[sm].mean()) if n else None,
            "max_gy": float(d[sm].max()) if n else None}
