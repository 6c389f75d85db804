"""Red-marrow absorbed dose by the EANM image-based method (L2-L4 vertebral VOIs).

Method (EANM Dosimetry Committee guideline for bone marrow and whole-body dosimetry:
Hindorf C, Glatting G, Chiesa C, Linden O, Flux G. Eur J Nucl Med Mol Imaging
2010;37:1238-1250; the L2-L4 imaging approach as used by Ferrer L et al., Cancer
2010;116:1093-1100)

1. Spherical VOIs inside the trabecular (red-marrow) part of the L2, L3 and L4 vertebral
   bodies, placed automatically from labels (the deepest point of each vertebra's marrow
   label, radius = the largest inscribed sphere, capped by ``max_radius_mm``) or at
   user-given centres. Voxels are weighted by the fraction of their volume inside the
   sphere (5^3 sub-samples per voxel).
2. Mean time-integrated activity concentration in the VOIs,
   c~ = sum_i w_i A~_i / (sum_i w_i V_vox)                         [Bq s / mL]
   (A~_i decays in voxel i; the VOI average of an activity map gives the activity
   concentration in the same way).
3. Scaling to the whole red marrow. The VOI concentration is taken as the red-marrow
   concentration; the L2-L4 red marrow holds the fraction f_L2-L4 of the total red-marrow
   mass m_RM, so
   A~_RM,L2-L4 = c~ f_L2-L4 m_RM / rho_RM   and   A~_RM = A~_RM,L2-L4 / f_L2-L4.
   With concentration VOIs f_L2-L4 cancels (A~_RM = c~ m_RM / rho_RM); it matters in the
   ``whole-region`` variant, where A~_RM,L2-L4 is the total TIA inside the L2-L4 marrow
   labels (the VOI covers the whole region): A~_RM = A~_L2-L4 / f_L2-L4.
4. Self-dose D_self = A~_RM S(RM <- RM), S from :func:`voxdose.analysis.mird.self_s_value`
   for a sphere of mass m_RM: electrons absorbed locally, photon absorbed fraction of a
   uniform sphere of that mass from our point kernel (an overestimate for a distributed
   organ, but photons carry only ~19 % of Lu-177's energy and 0 % of Y-90's).
5. Cross-dose from the rest of the body (bone, organs, remainder), where available:
   either from the voxel calculation (:func:`image_cross_dose_gy`: the dose in the VOIs from
   all activity outside the marrow labels, convolved with the water kernel) or from a
   user's S(RM <- remainder) value and remainder TIA. Otherwise it is reported as
   *not included* (the result then underestimates the marrow dose).

Reference values (cited; all overridable)
    * red (active) marrow mass, adult: male 1170 g, female 900 g - ICRP Publication 89
      (2002), Basic anatomical and physiological data, reference values;
    * fraction of the red marrow in L2-L4: 0.067 (6.7 %) - the value used with the L2-L4
      method in the EANM guideline's literature (Ferrer et al. 2010), derived from the
      reference skeletal marrow distribution. It was not re-checked against the primary
      table here; give your own with ``l2_l4_fraction=`` / ``--l2-l4-fraction``;
    * red-marrow density 1.03 g/cm^3 - ICRU Report 46 (1992), adult red marrow.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.backend import backend_of, cpu_backend, to_numpy
from ..kernels.point import PointKernel
from ..core.errors import InputError
from ..core.grid import Grid, Image, LabelMap
from .mird import self_s_value

#: label names accepted as the L2, L3 and L4 vertebral marrow (e.g. marrow_L2, L3, vertebra_L4)
L2_L4_PATTERN = re.compile(r"(^|[_\- ])L([234])$", re.IGNORECASE)


@dataclass(frozen=True)
class MarrowReference:
    """Reference values of the red-marrow model (see the module docstring for sources)."""

    sex: str
    red_marrow_mass_g: float
    l2_l4_fraction: float = 0.067
    red_marrow_density_g_cm3: float = 1.03
    sources: dict = field(default_factory=lambda: {
        "red_marrow_mass_g": "ICRP Publication 89 (2002), adult reference male/female",
        "l2_l4_fraction": "6.7 % (L2-L4 method, Ferrer et al. Cancer 2010;116:1093; "
                          "EANM guideline Hindorf et al. EJNMMI 2010;37:1238)",
        "red_marrow_density_g_cm3": "ICRU Report 46 (1992), adult red marrow",
    })

    def __post_init__(self):
        for key in ("red_marrow_mass_g", "red_marrow_density_g_cm3"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"marrow reference {key} must be > 0, got {v!r}")
        if not 0 < self.l2_l4_fraction <= 1:
            raise InputError(f"L2-L4 fraction of the red marrow must be in (0, 1], got "
                             f"{self.l2_l4_fraction}")


#: ICRP Publication 89 adult red-marrow masses (g).
ICRP89_RED_MARROW_MASS_G = {"male": 1170.0, "female": 900.0}


def marrow_reference(sex: str = "male", **overrides) -> MarrowReference:
    """The reference for ``sex`` ('male' | 'female'), with any field overridden
    (``red_marrow_mass_g``, ``l2_l4_fraction``, ``red_marrow_density_g_cm3``)."""
    s = str(sex).lower()
    if s not in ICRP89_RED_MARROW_MASS_G:
        raise InputError(f"sex must be 'male' or 'female' (ICRP 89 reference), got {sex!r}")
    ref = MarrowReference(s, ICRP89_RED_MARROW_MASS_G[s])
    clean = {k: v for k, v in overrides.items() if v is not None}
    if clean:
        srcs = dict(ref.sources)
        for k in clean:
            srcs[k] = "user given"
        ref = replace(ref, **clean, sources=srcs)
    return ref


@dataclass(frozen=True, eq=False)
class SphereVOI:
    """A spherical VOI: centre (LPS mm, x y z), radius mm, and voxel weights on a grid.

    ``index`` (n, 3) array indices (z, y, x) of the voxels touched; ``weight`` (n,) the
    fraction of each voxel's volume inside the sphere.
    """

    name: str
    centre_mm_xyz: tuple[float, float, float]
    radius_mm: float
    index: np.ndarray
    weight: np.ndarray

    @property
    def n_voxels_equivalent(self) -> float:
        return float(self.weight.sum())

    def volume_ml(self, grid: Grid) -> float:
        return self.n_voxels_equivalent * grid.voxel_volume_ml

    def mean(self, data: np.ndarray) -> float:
        """Weighted mean of ``data`` (on the VOI's grid) over the sphere, on its device."""
        return _pooled_mean([self], data)


def sphere_voi(grid: Grid, centre_mm_xyz, radius_mm: float, name: str = "voi",
               supersample: int = 5, backend=None) -> SphereVOI:
    """Partial-volume weights of a sphere on ``grid`` (``supersample``^3 points per voxel),
    the sample points tested on ``backend`` (default the CPU; the VOI is held on the host)."""
    r = float(radius_mm)
    if not math.isfinite(r) or r <= 0:
        raise InputError(f"VOI radius must be > 0 mm, got {radius_mm}")
    c = np.asarray(centre_mm_xyz, dtype=np.float64)
    if c.shape != (3,) or not np.all(np.isfinite(c)):
        raise InputError(f"VOI centre must be three numbers (x, y, z) in LPS mm, got "
                         f"{centre_mm_xyz!r}")
    ci = grid.world_to_index(c)
    half = np.ceil(r / grid.spacing_mm) + 1
    lo = np.maximum(np.floor(ci - half), 0).astype(int)
    hi = np.minimum(np.ceil(ci + half), np.array(grid.shape) - 1).astype(int)
    if np.any(lo > hi):
        raise InputError(f"VOI '{name}' centre {tuple(np.round(c, 1))} mm is outside the "
                         "image")
    ranges = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    idx = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    n = int(supersample)
    sub = (np.arange(n) + 0.5) / n - 0.5
    offs = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3)
    be = backend or cpu_backend()
    xp = be.xp
    pts = (be.asarray(idx, dtype=xp.float64)[:, None, :]
           + be.asarray(offs)[None, :, :]).reshape(-1, 3)
    a = be.asarray(grid.affine)
    world = (pts @ a[:3, :3].T + a[:3, 3]).reshape(idx.shape[0], offs.shape[0], 3)
    inside = xp.sum((world - be.asarray(c)) ** 2, axis=-1) <= r * r
    w = to_numpy(inside.mean(axis=1))
    keep = w > 0
    if not np.any(keep):
        raise InputError(f"VOI '{name}' of radius {r} mm contains no voxel centre sample; "
                         "use a larger radius")
    return SphereVOI(name, tuple(float(v) for v in c), r, idx[keep], w[keep])


def l2_l4_labels(names: dict[int, str]) -> dict[str, int]:
    """{'L2': value, 'L3': value, 'L4': value} from label names like ``marrow_L2``."""
    found: dict[str, int] = {}
    for value, name in sorted(names.items()):
        m = L2_L4_PATTERN.search(str(name).strip())
        if m:
            key = f"L{m.group(2)}"
            if key in found:
                raise InputError(f"two labels look like vertebra {key}: "
                                 f"'{names[found[key]]}' and '{name}'; rename one")
            found[key] = value
    return found


def _inside(labels: LabelMap, value: int) -> np.ndarray:
    """Voxels inside a structure for placing a VOI: f > 1/2 with an occupancy (the hard
    label where no voxel is more than half filled), else the hard label."""
    hard = np.asarray(labels.data) == value
    if labels.occupancy is None:
        return hard
    inside = np.asarray(labels.fraction(value)) > 0.5
    return inside if inside.any() else hard


def vois_from_labels(labels: LabelMap, max_radius_mm: float | None = 10.0,
                     radius_mm: float | None = None, backend=None) -> list[SphereVOI]:
    """One sphere per L2, L3, L4 marrow label at its deepest point.

    Radius: ``radius_mm`` if given (must fit), else the largest inscribed sphere (distance
    to the nearest voxel centre outside the label minus half a voxel) capped at
    ``max_radius_mm``. With an occupancy on the labels, "inside" is f > 1/2 (the voxels the
    vertebra fills to more than half: the boundary then lies within half a voxel of the
    first outside voxel centre, so the sphere stays inside); else the hard label. The
    distance maps run on ``backend`` (default the CPU).
    """
    be = backend or cpu_backend()
    xp = be.xp
    found = l2_l4_labels(labels.names)
    missing = [k for k in ("L2", "L3", "L4") if k not in found]
    if missing:
        raise InputError(f"no label for vertebra {', '.join(missing)} (names like marrow_L2 "
                         f"expected; known: {sorted(labels.names.values())}); give VOI "
                         "centres instead")
    out = []
    sp = labels.grid.spacing_mm
    for key in ("L2", "L3", "L4"):
        mask = be.asarray(_inside(labels, found[key]))
        if not bool(mask.any()):
            raise InputError(f"label '{labels.names[found[key]]}' ({key}) has no voxel on "
                             "this grid; give VOI centres instead")
        # the distance map inside the label's bounding box, grown by one outside voxel: the
        # same distances as on the whole grid (any outside voxel beyond the box is farther
        # than the box's outer layer) at the cost of the vertebra, not of the grid
        lo = to_numpy(xp.argwhere(mask).min(axis=0))
        hi = to_numpy(xp.argwhere(mask).max(axis=0)) + 1
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        edt = be.ndimage.distance_transform_edt(
            xp.pad(mask[box], 1), sampling=tuple(float(v) for v in sp))[1:-1, 1:-1, 1:-1]
        best = float(edt.max())
        cand = to_numpy(xp.argwhere(edt >= best - 1e-9)) + lo
        centroid = to_numpy(xp.argwhere(mask).mean(axis=0))
        pick = cand[np.argmin(np.sum(((cand - centroid) * sp) ** 2, axis=1))]
        fit = max(float(best) - 0.5 * float(sp.min()), 0.5 * float(sp.min()))
        if radius_mm is not None:
            r = float(radius_mm)
        else:
            r = fit if max_radius_mm is None else min(fit, float(max_radius_mm))
        centre = labels.grid.index_to_world(pick.astype(float))
        out.append(sphere_voi(labels.grid, centre, r, name=labels.names[found[key]],
                              backend=be))
    return out


def image_cross_dose_gy(tia: Image, engine, exclude_mask: np.ndarray,
                        vois: list[SphereVOI]) -> float:
    """Mean dose (Gy) in the VOIs from the activity *outside* ``exclude_mask`` (the marrow
    labels): ``engine.dose(tia x (1 - f))`` averaged over the VOIs' weights, f the mask
    (bool) or the marrow's volume fraction of each voxel (float, 0..1). On the TIA's
    device."""
    be = backend_of(tia.data)
    xp = be.xp
    f = be.asarray(exclude_mask)
    keep = ~f if f.dtype == bool else xp.clip(1.0 - f.astype(xp.float64), 0.0, 1.0)
    data = be.asarray(tia.data, dtype=xp.float64) * keep
    return _pooled_mean(vois, engine.dose(tia.with_data(data)).data)


def _pooled_mean(vois: list[SphereVOI], data) -> float:
    """The VOIs' pooled weighted mean of ``data``, gathered on its device."""
    be = backend_of(data)
    arr = be.asarray(data, dtype=be.xp.float64)
    num = sum(float(be.xp.dot(be.asarray(v.weight), arr[tuple(be.asarray(v.index.T))]))
              for v in vois)
    den = sum(float(v.weight.sum()) for v in vois)
    return num / den if den > 0 else 0.0


@dataclass(frozen=True)
class MarrowResult:
    """The red-marrow result; doses Gy, TIA Bq s (decays), concentrations Bq s/mL."""

    method: str
    reference: MarrowReference
    vois: tuple[dict, ...]
    tia_concentration_bq_s_ml: float
    tia_l2_l4_bq_s: float
    tia_red_marrow_bq_s: float
    s_self_mgy_per_mbq_s: float
    photon_af: float
    self_dose_gy: float
    cross_dose_gy: float | None
    cross_dose_source: str
    voxel_mean_in_vois_gy: float | None = None

    @property
    def total_dose_gy(self) -> float:
        return self.self_dose_gy + (self.cross_dose_gy or 0.0)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "guideline": "EANM bone-marrow dosimetry (Hindorf et al., EJNMMI 2010;37:1238), "
                         "image-based L2-L4",
            "reference": {"sex": self.reference.sex,
                          "red_marrow_mass_g": self.reference.red_marrow_mass_g,
                          "l2_l4_fraction": self.reference.l2_l4_fraction,
                          "red_marrow_density_g_cm3": self.reference.red_marrow_density_g_cm3,
                          "sources": self.reference.sources},
            "vois": list(self.vois),
            "tia_concentration_bq_s_per_ml": self.tia_concentration_bq_s_ml,
            "tia_red_marrow_l2_l4_bq_s": self.tia_l2_l4_bq_s,
            "tia_red_marrow_bq_s": self.tia_red_marrow_bq_s,
            "s_self_mgy_per_mbq_s": self.s_self_mgy_per_mbq_s,
            "photon_absorbed_fraction": self.photon_af,
            "self_dose_gy": self.self_dose_gy,
            "cross_dose_gy": self.cross_dose_gy,
            "cross_dose_source": self.cross_dose_source,
            "total_dose_gy": self.total_dose_gy,
            "voxel_mean_in_vois_gy": self.voxel_mean_in_vois_gy,
        }


def marrow_dose(tia: Image, vois: list[SphereVOI], point_kernel: PointKernel,
                reference: MarrowReference | None = None, *, method: str = "voi-concentration",
                region_tia_bq_s: float | None = None, cross_dose_gy: float | None = None,
                cross_dose_source: str | None = None,
                remainder_tia_bq_s: float | None = None,
                s_rm_from_remainder_mgy_per_mbq_s: float | None = None,
                dose: Image | None = None) -> MarrowResult:
    """Red-marrow dose by the EANM image-based L2-L4 method (module docstring).

    tia : decays per voxel (Bq s). vois : spheres on the TIA grid.
    method : 'voi-concentration' (default) or 'whole-region' (then ``region_tia_bq_s`` =
        total TIA in the L2-L4 marrow, e.g. summed over the labels).
    Cross-dose: ``cross_dose_gy`` (e.g. :func:`image_cross_dose_gy`), or the product
    ``remainder_tia_bq_s x s_rm_from_remainder_mgy_per_mbq_s``; else not included.
    dose : optional voxel dose map (Gy) whose VOI mean is reported beside the result.
    """
    ref = reference or marrow_reference("male")
    if not vois:
        raise InputError("no marrow VOI given; place spheres in L2-L4 or give centres")
    data = tia.data  # on its device: only the VOIs' voxels are gathered
    vv = tia.grid.voxel_volume_ml
    conc = _pooled_mean(vois, data) / vv
    m_rm, f, rho = ref.red_marrow_mass_g, ref.l2_l4_fraction, ref.red_marrow_density_g_cm3
    if method == "voi-concentration":
        tia_l2l4 = conc * f * m_rm / rho
    elif method == "whole-region":
        if region_tia_bq_s is None or not region_tia_bq_s >= 0:
            raise InputError("method 'whole-region' needs region_tia_bq_s (total TIA in the "
                             "L2-L4 marrow, Bq s)")
        tia_l2l4 = float(region_tia_bq_s)
    else:
        raise InputError(f"unknown marrow method {method!r}; use voi-concentration or "
                         "whole-region")
    tia_rm = tia_l2l4 / f
    s = self_s_value(point_kernel, m_rm, "absorbed", density_g_cm3=rho)
    d_self = tia_rm * s.gy_per_decay

    src = cross_dose_source or ""
    if cross_dose_gy is None and remainder_tia_bq_s is not None:
        if s_rm_from_remainder_mgy_per_mbq_s is None:
            raise InputError("remainder TIA given without S(RM <- remainder); give both")
        cross_dose_gy = remainder_tia_bq_s * s_rm_from_remainder_mgy_per_mbq_s * 1e-9
        src = src or "remainder TIA x user S(RM <- remainder)"
    if cross_dose_gy is None:
        src = "not included (self-dose only: underestimates the marrow dose)"
    elif not src:
        src = "given"
    voi_info = tuple({"name": v.name, "centre_mm_lps_xyz": list(v.centre_mm_xyz),
                      "radius_mm": v.radius_mm, "volume_ml": v.volume_ml(tia.grid),
                      "tia_concentration_bq_s_per_ml": v.mean(data) / vv} for v in vois)
    voxel_mean = None
    if dose is not None:
        if not dose.grid.same_as(tia.grid, tol_mm=1e-2):
            raise InputError("dose and TIA grids differ; the marrow VOIs need one grid")
        voxel_mean = _pooled_mean(vois, dose.data)
    return MarrowResult(method, ref, voi_info, conc, tia_l2l4, tia_rm, s.mgy_per_mbq_s,
                        s.photon_af, d_self, cross_dose_gy, src, voxel_mean)
