"""Organ-level (region) time-activity fits: the same fitter as the voxels, on summed activity.

For each structure s and frame i, A_s(t_i) = sum over the structure's voxels of c(t_i) x
V_voxel (Bq). Every model with enough points is fitted to A_s(t) (plus the trapezoid),
with its parameters, R^2, AICc, TIA and effective half-life reported; the chosen model is
the lowest AICc among converged fits (the same rule as per voxel). The TIA's uncertainty is
the delta-method value of the chosen fit. The figures (``tac/tac_<organ>.png``) are drawn by
:func:`voxdose.report.tac_plots.plot_tacs`.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from ..core.backend import backend_of, to_numpy
from ..core.grid import LabelMap
from .fit import fit_curves
from .models import MIN_POINTS, MODEL_IDS, PARAM_NAMES

CANDIDATES = ("mono", "biexp", "biexp_sum", "triexp")


@dataclass
class OrganFit:
    """Fits of one structure's time-activity curve (activity in Bq, times in s)."""

    name: str
    volume_ml: float
    times_s: np.ndarray
    activity_bq: np.ndarray
    fits: dict = field(default_factory=dict)  # model name -> dict of results
    best: str = "trapz"

    @property
    def tia_bq_s(self) -> float:
        return self.fits[self.best]["tia_bq_s"]

    @property
    def sigma_bq_s(self) -> float:
        return self.fits[self.best]["sigma_bq_s"]


def organ_tacs(frames_bq_ml: np.ndarray, labels: LabelMap) -> dict[str, np.ndarray]:
    """Activity (Bq) per structure per frame from concentration frames (t, z, y, x):
    A_k(t) = sum_v f_k(v) c_t(v) V_vox, f_k the structure's volume fraction of voxel v
    (``labels.occupancy``; whole voxels, f in {0, 1}, without one). The sums run on the
    frames' device; the curves (a few numbers per structure) come back to the host."""
    be = backend_of(frames_bq_ml)
    xp = be.xp
    vml = labels.grid.voxel_volume_ml
    flat = xp.asarray(frames_bq_ml, dtype=xp.float64).reshape(len(frames_bq_ml), -1)
    if labels.occupancy is not None:
        return {name: to_numpy(xp.dot(flat, be.asarray(labels.fraction(value).ravel(),
                                                       dtype=xp.float64))) * vml
                for value, name in sorted(labels.names.items())}
    lab = be.asarray(labels.data.ravel())
    n_lab = int(lab.max()) + 1
    out = {}
    sums = to_numpy(xp.stack([xp.bincount(lab, weights=f, minlength=n_lab) for f in flat]))
    for value, name in sorted(labels.names.items()):
        out[name] = sums[:, value] * vml if value < n_lab else np.zeros(len(frames_bq_ml))
    return out


def fit_organs(times_s, frames_bq_ml, labels: LabelMap, lambda_phys_per_s: float,
               weighting: str = "poisson", lift_bound: bool = False) -> list[OrganFit]:
    """Fit every named structure's summed time-activity curve with every candidate model."""
    tacs = organ_tacs(frames_bq_ml, labels)
    names = list(tacs)
    curves = np.stack([tacs[n] for n in names])
    n_t = curves.shape[1]
    results = [OrganFit(n, labels.volume_ml(n),
                        np.asarray(times_s, float), tacs[n]) for n in names]
    for model in ("trapz", *CANDIDATES):
        if model != "trapz" and n_t < MIN_POINTS[MODEL_IDS[model]]:
            continue
        r = fit_curves(times_s, curves, lambda_phys_per_s, model=model, weighting=weighting,
                       lift_bound=lift_bound)
        for i, of in enumerate(results):
            if of.activity_bq.max() <= 0:
                continue
            valid = int(r.model[i]) == MODEL_IDS[model] and int(r.status[i]) <= 1
            lam = float(r.lambda_eff_per_s[i])
            of.fits[model] = {
                "valid": bool(valid or model == "trapz"),
                "status": int(r.status[i]),
                "tia_bq_s": float(r.tia[i]),
                "sigma_bq_s": float(r.sigma[i]),
                "aicc": float(r.aicc[i]) if model != "trapz" else math.inf,
                "r2": float(r.r2[i]),
                "t_eff_h": math.log(2) / lam / 3600.0 if lam > 0 else math.inf,
                "params": dict(zip(PARAM_NAMES.get(MODEL_IDS[model], ()),
                                   (float(v) for v in r.params[i]), strict=False)),
            }
    for of in results:
        valid = [(v["aicc"], m) for m, v in of.fits.items() if m != "trapz" and v["valid"]]
        of.best = min(valid)[1] if valid else "trapz"
    return results


def single_time_point_organs(times_s, frames_bq_ml, labels: LabelMap, half_life_h: float,
                             frame_noise_rel: float = 0.05) -> list[OrganFit]:
    """Every named structure's activity A(t1) (one frame) integrated as its voxels are
    (:func:`voxdose.kinetics.fit.single_time_point_fit`): TIA = A(t1) e^(l t1) / l,
    l = ln 2 / T (T = ``half_life_h``), sigma = ``frame_noise_rel`` x TIA. The fit is named
    ``stp`` and carries the mono-exponential's parameters (A = A(t1) e^(l t1), lambda)."""
    tacs = organ_tacs(frames_bq_ml, labels)
    t1_s = float(np.asarray(times_s, float).ravel()[0])
    lam_s = math.log(2.0) / (half_life_h * 3600.0)
    out = []
    for name, a in tacs.items():
        of = OrganFit(name, labels.volume_ml(name), np.asarray(times_s, float), a, best="stp")
        if a[0] > 0:
            amp = float(a[0]) * math.exp(lam_s * t1_s)
            tia = amp / lam_s
            of.fits["stp"] = {"valid": True, "status": 5, "tia_bq_s": tia,
                              "sigma_bq_s": tia * frame_noise_rel, "aicc": math.inf,
                              "r2": 0.0, "t_eff_h": half_life_h,
                              "params": {"A": amp, "lambda_per_h": lam_s * 3600.0}}
        out.append(of)
    return out


def organ_table_csv(fits: list[OrganFit]) -> str:
    """One row per structure: chosen model, TIA (Bq*s and MBq*h), sigma, T_eff, R^2, AICc."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "volume_ml", "model", "tia_bq_s", "tia_mbq_h", "sigma_bq_s",
                "t_eff_h", "r2", "aicc", "params"])
    for of in fits:
        if not of.fits:
            w.writerow([of.name, f"{of.volume_ml:.6g}", "none", 0, 0, 0, "", "", "", ""])
            continue
        b = of.fits[of.best]
        w.writerow([of.name, f"{of.volume_ml:.6g}", of.best, f"{b['tia_bq_s']:.6g}",
                    f"{b['tia_bq_s'] / 3.6e9:.6g}", f"{b['sigma_bq_s']:.6g}",
                    f"{b['t_eff_h']:.6g}", f"{b['r2']:.6g}", f"{b['aicc']:.6g}",
                    ";".join(f"{k}={v:.6g}" for k, v in b["params"].items())])
    return buf.getvalue()
