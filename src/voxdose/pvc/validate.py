"""The sphere-phantom validation of docs/validation.md, reproducible:
``python -m voxdose.pvc.validate`` (CI size: 2 mm labels, 4 mm SPECT) or ``--full``
(1 mm labels, 4.8 mm SPECT). Prints Markdown tables.

Everything is compared with the phantom's inserted activities (:mod:`voxdose.pvc.spheres`,
simulated with the analytic blur, not with voxdose's PSF code) or with the closed-form
recovery (:mod:`voxdose.pvc.analytic`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .analytic import effective_sigma_mm, sphere_recovery
from .correct import correct, prepare
from .gtm import build_gtm
from .psf import FWHM_TO_SIGMA, GaussianPsf
from .regions import build_regions
from .spheres import DEFAULT_VOLUMES_ML, poisson_noise, sphere_phantom

OFFSET_MM = (1.3, 0.7, 2.1)


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} %"


def methods_table(ph) -> list[str]:
    """Noiseless region means of every method relative to the truth, and the totals."""
    rows, totals, info = {}, {}, {}
    for m in ("gtm", "rbv", "iy"):
        t0 = time.perf_counter()
        s = prepare(ph.labels, ph.label_grid, ph.names, ph.spect_grid, m, fwhm_mm=ph.fwhm_mm,
                    body_mask=ph.body_mask)
        res = correct(ph.image_bq_ml, s)
        info[m] = (res.condition_number, time.perf_counter() - t0)
        for r in res.rows:
            tr = ph.truth_bq_ml[r.name]
            rows.setdefault(r.name, {"obs": r.observed_mean_bq_ml / tr - 1 if tr else None})
            rows[r.name][m] = (r.output_mean_bq_ml / tr - 1) if tr else \
                r.output_mean_bq_ml / ph.truth_bq_ml["background"]
        totals[m] = res.totals_bq
    out = ["| region | mL | observed | GTM | RBV (label grid) | IY (label grid) |",
           "|---|---|---|---|---|---|"]
    for name, v in rows.items():
        vol = ph.volumes_ml.get(name)
        obs = "" if v["obs"] is None else _pct(v["obs"])
        cells = [_pct(v[m]) if ph.truth_bq_ml[name] else f"{v[m]:.1e} of bg"
                 for m in ("gtm", "rbv", "iy")]
        out.append(f"| {name} | {'' if vol is None else f'{vol:.2f}'} | {obs} | "
                   + " | ".join(cells) + " |")
    true_total = ph.true_total_bq
    img = totals["gtm"]["image_total_bq"]
    out += ["", f"Activity: true {true_total:.5g} Bq, image {img:.5g} Bq "
            f"({_pct(img / true_total - 1)}; true spill beyond the field "
            f"{true_total - img:.4g} Bq, modelled {totals['gtm']['spill_beyond_field_bq']:.4g} "
            "Bq); corrected totals: " + ", ".join(
                f"{m.upper()} {_pct(totals[m]['corrected_total_bq'] / true_total - 1)}"
                for m in ("gtm", "rbv", "iy")) + ".",
            "GTM condition number " + f"{info['gtm'][0]:.3g}; prepare + one frame: "
            + ", ".join(f"{m.upper()} {info[m][1]:.2f} s" for m in info) + "."]
    return out


def misstated_psf_table(ph) -> list[str]:
    """GTM bias with the FWHM declared 10 % below and above the truth."""
    names = list(ph.volumes_ml)
    out = ["| sphere | FWHM 9 mm (-10 %) | FWHM 10 mm (true) | FWHM 11 mm (+10 %) |",
           "|---|---|---|---|"]
    cols = []
    for f in (0.9, 1.0, 1.1):
        s = prepare(ph.labels, ph.label_grid, ph.names, ph.spect_grid, "gtm",
                    fwhm_mm=f * ph.fwhm_mm, body_mask=ph.body_mask)
        c = s.gtm.solve(ph.image_bq_ml).means_bq_ml
        cols.append({n: c[s.regions.number(n) - 1] / ph.truth_bq_ml[n] - 1 for n in names
                     + ["background"]})
    for n in names + ["background"]:
        out.append(f"| {n} | " + " | ".join(_pct(c[n]) for c in cols) + " |")
    return out


def noise_table(ph, counts_per_bg_voxel: float, n_real: int = 20) -> list[str]:
    """GTM means with Poisson noise: predicted vs observed standard deviation, bias."""
    k = counts_per_bg_voxel / ph.truth_bq_ml["background"]
    s = prepare(ph.labels, ph.label_grid, ph.names, ph.spect_grid, "gtm", fwhm_mm=ph.fwhm_mm,
                body_mask=ph.body_mask)
    truth = np.array([ph.truth_bq_ml[n] for n in s.regions.names])
    sd = np.sqrt(np.diag(s.gtm.covariance(np.maximum(ph.image_bq_ml, 0) / k)))
    est = np.array([s.gtm.solve(poisson_noise(ph.image_bq_ml, k, i)).means_bq_ml
                    for i in range(n_real)])
    clean = s.gtm.solve(ph.image_bq_ml).means_bq_ml
    out = [f"{counts_per_bg_voxel:g} counts per background voxel, {n_real} realisations:",
           "", "| region | predicted SD | observed SD | noiseless bias | mean bias | "
           "max abs error / SD |", "|---|---|---|---|---|---|"]
    for j, n in enumerate(s.regions.names[:-1]):
        err = np.abs(est[:, j] - truth[j]).max() / sd[j]
        out.append(f"| {n} | {100 * sd[j] / truth[j]:.2f} % | "
                   f"{100 * est[:, j].std(ddof=1) / truth[j]:.2f} % | "
                   f"{_pct(clean[j] / truth[j] - 1)} | "
                   f"{_pct(est[:, j].mean() / truth[j] - 1)} | {err:.1f} |")
    return out


def recovery_table(label_mm: float, spect_mm: float, n_phase: int = 4) -> list[str]:
    """RC of single cold-background spheres (random grid phases) vs the closed form."""
    rng = np.random.default_rng(7)
    s_eff = effective_sigma_mm(10.0 * FWHM_TO_SIGMA, spect_mm)
    out = [f"| sphere | analytic RC (sigma_eff {s_eff:.2f} mm) | measured on the simulation "
           "| GTM recovery factor | analytic RC, no voxel term |", "|---|---|---|---|---|"]
    for v in DEFAULT_VOLUMES_ML:
        meas, gtm = [], []
        for _ in range(n_phase):
            ph = sphere_phantom((v,), label_spacing_mm=label_mm, spect_spacing_mm=spect_mm,
                                spect_offset_mm=rng.uniform(0, spect_mm, 3),
                                background_bq_ml=0.0, sphere_bq_ml=1.0, wall_mm=6.0,
                                edge_mm=4.0)
            g = build_gtm(build_regions(ph.labels, ph.label_grid, ph.names), ph.spect_grid,
                          GaussianPsf((10.0,) * 3))
            meas.append(float(g.observed_means(ph.image_bq_ml)[0]))
            gtm.append(float(g.recovery[0]))
        r = next(iter(ph.radius_eff_mm.values()))
        an = float(sphere_recovery(r, s_eff))
        out.append(f"| {v:g} mL | {an:.4f} | {np.mean(meas):.4f} ({_pct(np.mean(meas) / an - 1)}"
                   f") | {np.mean(gtm):.4f} ({_pct(np.mean(gtm) / an - 1)}) | "
                   f"{float(sphere_recovery(r, 10.0 * FWHM_TO_SIGMA)):.4f} |")
    return out


def report(full: bool = False) -> str:
    label_mm, spect_mm = (1.0, 4.8) if full else (2.0, 4.0)
    ph = sphere_phantom(label_spacing_mm=label_mm, spect_spacing_mm=spect_mm,
                        spect_offset_mm=OFFSET_MM)
    head = (f"Labels {label_mm:g} mm ({'x'.join(map(str, ph.label_grid.shape[::-1]))}), SPECT "
            f"{spect_mm:g} mm ({'x'.join(map(str, ph.spect_grid.shape[::-1]))}, offset "
            f"{OFFSET_MM} mm), FWHM 10 mm, spheres 4:1 in a warm box.")
    parts = [head, "", *methods_table(ph), "", *misstated_psf_table(ph), "",
             *noise_table(ph, 200.0), "", *noise_table(ph, 20.0), "",
             *recovery_table(label_mm, spect_mm)]
    return "\n".join(parts) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="1 mm labels, 4.8 mm SPECT")
    print(report(p.parse_args(argv).full), end="")


if __name__ == "__main__":
    main()
