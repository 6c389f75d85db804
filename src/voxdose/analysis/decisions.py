"""Stage 6 of the pipeline: from dose maps to decisions.

Composes the analysis modules on one study's results: the organ-level MIRD check, EANM
L2-L4 red-marrow dose, activity planning from the study's dose limits (with the fitted
organ kinetics for limits on the dose delivered after a time), and the Lu-177 vs Y-90
comparison with the biological kinetics kept and the physical decay swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dvh import DVH
from .marrow import (MarrowResult, image_cross_dose_gy, l2_l4_labels, marrow_dose,
                              marrow_reference, vois_from_labels)
from .mird import OrganCheck, organ_check
from .plan import DoseLimit, ExponentialKinetics, PlanResult, plan_activity
from ..core.backend import backend_of
from ..core.errors import StudyError
from ..core.grid import Image, LabelMap
from ..kinetics.models import MODEL_IDS
from ..kinetics.organ import OrganFit


@dataclass
class Decisions:
    mird: list[OrganCheck] = field(default_factory=list)
    marrow: MarrowResult | None = None
    plan: PlanResult | None = None
    gy_per_gbq: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _WithDensity:
    """An engine bound to the study's density map (for helpers that call ``dose(tia)``)."""

    engine: object
    density: Image | None

    def dose(self, tia: Image, backend=None):
        return self.engine.dose(tia, backend, self.density)


def organ_kinetics(of: OrganFit) -> ExponentialKinetics:
    """The chosen fit of an organ's curve as a sum of exponentials (t in s, A in Bq).

    mono A e^-lt; biexp A(e^-l1t - e^-l2t); biexp_sum; triexp; the trapezoid (no closed
    form) is represented by its tail decay constant (mono-exponential)."""
    f = of.fits[of.best]
    p = list(f["params"].values())
    per_s = 1.0 / 3600.0
    m = MODEL_IDS[of.best]
    if m == 1:
        return ExponentialKinetics((p[0],), (p[1] * per_s,))
    if m == 2:
        return ExponentialKinetics((p[0], -p[0]), (p[1] * per_s, p[2] * per_s))
    if m == 3:
        return ExponentialKinetics((p[0], p[2]), (p[1] * per_s, p[3] * per_s))
    if m == 4:
        return ExponentialKinetics((p[0], p[2], -(p[0] + p[2])),
                                   (p[1] * per_s, p[3] * per_s, p[4] * per_s))
    return ExponentialKinetics.mono(f["t_eff_h"])


def _combine(kins: list[ExponentialKinetics]) -> ExponentialKinetics:
    return ExponentialKinetics(tuple(c for k in kins for c in k.coefficients),
                               tuple(r for k in kins for r in k.rates_per_s))


def organ_tia_and_mass(tia: Image, labels: LabelMap, by_name: dict[str, DVH]
                       ) -> dict[str, tuple[float, float]]:
    """Organ -> (TIA Bq s, mass g) for the MIRD check, every named structure with a volume.

    TIA_k = sum_v f_k(v) A~(v) over the voxel TIA map (the same decays as the voxel dose),
    f_k the structure's volume fraction of voxel v (``LabelMap.fraction``); the mass
    sum_v f_k(v) rho(v) V_vox is the DVH's (same fractions). Summed on the TIA's device."""
    be = backend_of(tia.data)
    a = be.asarray(tia.data, dtype=be.xp.float64).ravel()
    organs = {}
    for value, name in labels.names.items():
        h = by_name.get(name)
        if h is None or h.n_voxels == 0:
            continue
        f = be.asarray(labels.fraction(value).ravel(), dtype=be.xp.float64)
        organs[name] = (float(be.xp.dot(f, a)), h.mass_g)
    return organs


def decide(tia: Image, dose: Image, labels: LabelMap, dvhs: list[DVH], engine, point_kernel,
           organ_fits: list[OrganFit], administered_activity_mbq: float,
           physical_half_life_h: float, sex: str = "male", limits_gy: dict | None = None,
           after_h: dict | None = None, density: Image | None = None,
           user_s: dict | None = None, backend=None) -> Decisions:
    """MIRD check, marrow, planning. ``dvhs`` are the kernel-dose DVHs on ``labels``.

    A limit on the dose after t0 uses the fraction of the organ's fitted time-integrated
    activity that decays after t0 (self-dose dominated organs); without a fit, physical
    decay. ``backend``: where the sums, distance maps and the marrow's cross-dose run
    (default: the TIA's device); the TIA is moved there once."""
    if backend is not None:
        tia = tia.with_data(backend.asarray(tia.data))
    out = Decisions()
    by_name = {h.name: h for h in dvhs}
    out.mird = organ_check(point_kernel, organ_tia_and_mass(tia, labels, by_name),
                           {n: h.mean_gy for n, h in by_name.items()}, user_s=user_s)

    # EANM red marrow from L2-L4
    found = l2_l4_labels(labels.names)
    if len(found) == 3:
        vois = vois_from_labels(labels, backend=backend_of(tia.data))
        marrow = sum(np.asarray(labels.fraction(v), dtype=np.float64) for v in found.values())
        cross = image_cross_dose_gy(tia, _WithDensity(engine, density), marrow, vois)
        out.marrow = marrow_dose(tia, vois, point_kernel, marrow_reference(sex),
                                 cross_dose_gy=cross,
                                 cross_dose_source="voxel dose in the VOIs from activity "
                                                   "outside the L2-L4 marrow labels",
                                 dose=dose)
    else:
        out.notes.append("marrow: no labels named for L2, L3 and L4 marrow; EANM method skipped")

    # Gy/GBq per structure, plus the composites the planning limits may name
    gbq = administered_activity_mbq / 1000.0
    fits = {of.name: of for of in organ_fits}
    kin: dict[str, ExponentialKinetics] = {}
    for name, h in by_name.items():
        if h.n_voxels:
            out.gy_per_gbq[name] = h.mean_gy / gbq
            if name in fits and fits[name].fits:
                kin[name] = organ_kinetics(fits[name])
    kidneys = [h for n, h in by_name.items() if n.startswith("kidney") and h.n_voxels]
    if kidneys:
        mass = sum(h.mass_g for h in kidneys)
        out.gy_per_gbq["kidneys"] = sum(h.mean_gy * h.mass_g for h in kidneys) / mass / gbq
        ks = [kin[h.name] for h in kidneys if h.name in kin]
        if ks:
            kin["kidneys"] = _combine(ks)
    if out.marrow is not None:
        out.gy_per_gbq["marrow"] = out.marrow.total_dose_gy / gbq
        ms = [kin[labels.names[v]] for v in found.values() if labels.names[v] in kin]
        if ms:
            kin["marrow"] = _combine(ms)

    if limits_gy:
        lims = []
        for organ, limit in limits_gy.items():
            if organ not in out.gy_per_gbq:
                raise StudyError(f"[plan] limit for '{organ}', which this study cannot dose; "
                                 f"known: {', '.join(sorted(out.gy_per_gbq))}")
            t0 = (after_h or {}).get(organ)
            lims.append(DoseLimit(organ, float(limit), after_h=t0,
                                  kinetics=kin.get(organ) if t0 is not None else None,
                                  half_life_h=None if t0 is None or organ in kin
                                  else physical_half_life_h))
        out.plan = plan_activity(out.gy_per_gbq, lims)
    return out
