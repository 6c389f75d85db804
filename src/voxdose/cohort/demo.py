"""``voxdose demo-cohort``: synthetic patients, each with a pre-therapy study at 200 MBq and a
post-therapy study at the activity planned for them, and the cohort file.

Per patient (numbers drawn from the seed, illustrative, not patient data):

* anatomy scale 0.9-1.1 (every organ of the torso phantom sized by it);
* kinetics: each structure's uptake fraction x 0.75-1.25 and washout half-life x 0.8-1.25
  (the two kidneys, and L2-L4 marrow, drawn together);
* the planned activity: the largest activity under the cohort's limits (kidneys <= 23 Gy,
  red marrow <= 1 Gy after 336 h) from the pre study's *true* kinetics (phantom truth:
  organ self-dose S-values of voxdose's point kernel, EANM red-marrow mass, the analytic
  fraction after 336 h; :func:`planned_activity`), rounded to 0.1 GBq. The pre study's own
  plan (from its images) differs from it, as a clinic's given activity differs from its plan;
  ``pre_post.csv`` lists both;
* the post-therapy study at that activity, with the therapy's own kinetics: uptake
  fractions of kidneys x 0.45-0.9, marrow x 0.6-1.0, liver and spleen x 0.7-1.05, lesions
  x 0.6-1.0 (post/pre ratios below one, as in the seed patients), its own noise and motion.

Files: ``OUT/cohort.toml``, ``OUT/pNN/pre/`` and ``OUT/pNN/post/`` (study folders as written
by ``voxdose demo``), ``OUT/patients.csv`` (the drawn parameters and planned activities).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..phantom.kinetics import CXCR4_KINETICS, StructureKinetics

PRE_ACTIVITY_MBQ = 200.0
LIMITS_GY = {"kidneys": 23.0, "marrow": 1.0}
AFTER_H = {"marrow": 336.0}
#: post/pre factor on the uptake fraction, by structure group (uniform ranges)
THERAPY_FACTORS = {"kidney": (0.45, 0.9), "marrow": (0.6, 1.0), "liver": (0.7, 1.05),
                   "spleen": (0.7, 1.05), "lesion": (0.6, 1.0)}


def _group(name: str) -> str:
    """kidney_left -> kidney, marrow_L3 -> marrow, lesion_node -> lesion, liver -> liver."""
    return name.split("_")[0]


def patient_kinetics(rng: np.random.Generator) -> dict[str, StructureKinetics]:
    """The CXCR4 demo kinetics with each group's fraction and washout scaled."""
    f = {g: (rng.uniform(0.75, 1.25), rng.uniform(0.8, 1.25))
         for g in dict.fromkeys(_group(n) for n in CXCR4_KINETICS)}
    return {n: replace(k, fraction=k.fraction * f[_group(n)][0],
                       washout_half_life_h=k.washout_half_life_h * f[_group(n)][1])
            for n, k in CXCR4_KINETICS.items()}


def therapy_kinetics(pre: dict[str, StructureKinetics], rng: np.random.Generator
                     ) -> tuple[dict[str, StructureKinetics], dict[str, float]]:
    """The post-therapy kinetics (uptake fractions x THERAPY_FACTORS) and the factors."""
    factors = {g: float(rng.uniform(*r)) for g, r in THERAPY_FACTORS.items()}
    post = {n: replace(k, fraction=k.fraction * factors.get(_group(n), 1.0))
            for n, k in pre.items()}
    return post, factors


def planned_activity(truth: dict, kinetics: dict[str, StructureKinetics], sex: str = "male",
                     limits_gy=None, after_h=None):
    """The plan (:class:`voxdose.analysis.plan.PlanResult`) from a phantom study's truth:
    organ Gy/GBq = true TIA per GBq x self S-value of the organ's mass (water), kidneys
    mass-weighted; marrow by the EANM method (L2-L4 TIA concentration x reference red-marrow
    mass, self-dose only); an after-t0 limit uses the true bi-exponential's fraction."""
    from ..analysis.marrow import marrow_reference
    from ..analysis.mird import self_s_value
    from ..analysis.plan import DoseLimit, ExponentialKinetics, plan_activity
    from ..core.nuclide import load_nuclide
    from ..kernels.point import load_point_kernel

    nuc = load_nuclide(truth["nuclide"])
    pk = load_point_kernel(nuc)
    gbq = truth["administered_activity_bq"] / 1e9
    vol, tia = truth["volumes_ml"], truth["tia_bq_s"]
    kid = [n for n in vol if n.startswith("kidney")]
    dose = {n: tia[n] * self_s_value(pk, vol[n]).gy_per_decay for n in kid}
    gy = {"kidneys": sum(dose[n] * vol[n] for n in kid) / sum(vol[n] for n in kid) / gbq}
    marrow = [n for n in vol if n.startswith("marrow_")]
    ref = marrow_reference(sex)
    conc = sum(tia[n] for n in marrow) / sum(vol[n] for n in marrow)  # Bq s / mL
    tia_rm = conc * ref.red_marrow_mass_g / ref.red_marrow_density_g_cm3
    gy["marrow"] = tia_rm * self_s_value(pk, ref.red_marrow_mass_g).gy_per_decay / gbq
    lam_p = nuc.decay_constant_per_s
    lims = []
    for organ, limit in (limits_gy or LIMITS_GY).items():
        t0 = (after_h or AFTER_H).get(organ)
        kin = None
        if t0 is not None:
            k = kinetics[marrow[0] if organ == "marrow" else kid[0]]
            l1, l2 = k.rates_per_s(lam_p)
            kin = ExponentialKinetics((1.0, -1.0), (l1, l2))
        lims.append(DoseLimit(organ, limit, after_h=t0, kinetics=kin))
    return plan_activity(gy, lims)


def _cohort_toml(patients: list[dict]) -> str:
    lines = ["# voxdose cohort file, generated by `voxdose demo-cohort` (synthetic patients)",
             "# paths relative to this file; run: voxdose cohort cohort.toml --out results",
             "[cohort]", 'name = "voxdose synthetic CXCR4 cohort"',
             "limits_gy = { kidneys = 23.0, marrow = 1.0 }   # for every patient",
             "after_h = { marrow = 336.0 }                  # marrow: after the transplant", ""]
    for p in patients:
        for phase in ("pre", "post"):
            lines += ["[[studies]]", f'id = "{p["patient"]}-{phase}"',
                      f'path = "{p["patient"]}/{phase}/study.toml"',
                      f'patient = "{p["patient"]}"', f'phase = "{phase}"', ""]
    return "\n".join(lines)


_PATIENT_COLUMNS = ("patient", "anatomy_scale", "pre_activity_mbq", "planned_activity_mbq",
                    "planned_limiting_organ", "given_activity_mbq",
                    "post_pre_uptake_factor_kidneys", "post_pre_uptake_factor_marrow")


def _one_patient(stage: Path, i: int, seed: int, ct_spacing_mm: float) -> dict:
    from ..phantom.study import PhantomConfig, build_study

    rng = np.random.default_rng([seed, i])
    scale = float(rng.uniform(0.9, 1.1))
    kin_pre = patient_kinetics(rng)
    kin_post, factors = therapy_kinetics(kin_pre, rng)
    name = f"p{i + 1:02d}"
    pre_cfg = PhantomConfig(ct_spacing_mm=ct_spacing_mm,
                            administered_activity_mbq=PRE_ACTIVITY_MBQ, seed=seed + 100 * i,
                            kinetics=kin_pre, anatomy_scale=scale)
    build_study(stage / name / "pre", pre_cfg)
    truth = json.loads((stage / name / "pre" / "truth" / "truth.json").read_text())
    plan = planned_activity(truth, kin_pre)
    given = max(0.1, round(plan.max_activity_gbq, 1)) * 1000.0
    build_study(stage / name / "post", replace(pre_cfg, administered_activity_mbq=given,
                                               seed=seed + 100 * i + 50, kinetics=kin_post))
    return {"patient": name, "anatomy_scale": round(scale, 4),
            "pre_activity_mbq": PRE_ACTIVITY_MBQ,
            "planned_activity_mbq": round(plan.max_activity_gbq * 1000.0, 1),
            "planned_limiting_organ": plan.limiting_organ, "given_activity_mbq": given,
            "post_pre_uptake_factor_kidneys": round(factors["kidney"], 4),
            "post_pre_uptake_factor_marrow": round(factors["marrow"], 4)}


def build_cohort(out_dir, n_patients: int = 4, seed: int = 20161, ct_spacing_mm: float = 4.8,
                 progress=None) -> Path:
    """Write the synthetic cohort into ``out_dir`` (atomically); return the cohort file.
    ``ct_spacing_mm``: the phantom's CT voxel (4.8: ``voxdose demo --small``'s grid, 2.4: the
    full demo's); the SPECT voxel is twice it."""
    from ..io.atomic import staged_directory
    from .summary import csv_text

    out_dir = Path(out_dir)
    rows = []
    with staged_directory(out_dir) as stage:
        for i in range(n_patients):
            rows.append(_one_patient(stage, i, seed, ct_spacing_mm))
            if progress:
                progress(i + 1, n_patients)
        (stage / "patients.csv").write_text(csv_text(_PATIENT_COLUMNS, rows),
                                            encoding="utf-8")
        (stage / "cohort.toml").write_text(_cohort_toml(rows), encoding="utf-8")
    return out_dir / "cohort.toml"
