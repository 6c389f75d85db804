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
    """Activity (Bq) per structure per frame from concentration frames (t, z, y, x)."""
    vml = labels.grid.voxel_volume_ml
    lab = labels.data.ravel()
    n_lab = int(lab.max()) + 1
    out = {}
    sums = np.stack([np.bincount(lab, weights=f.ravel(), minlength=n_lab) for f in frames_bq_ml])
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
    counts = np.bincount(labels.data.ravel(), minlength=max(labels.names) + 1)
    value_of = {v: k for k, v in labels.names.items()}
    results = [OrganFit(n, float(counts[value_of[n]]) * labels.grid.voxel_volume_ml,
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
