"""Partial-volume correction on the demo study, against the phantom's truth.

    python scripts/validate_pvc_demo.py [--small] [--method rbv] [--out DIR] [--frames]

Builds the demo's synthetic study (``voxdose demo``: 2.4 mm CT, 4.8 mm SPECT, 10 mm FWHM;
``--small``: 4.8 / 9.6 mm, the CI size), runs the pipeline once up to the TIA fit, and from
there the rest of ``voxdose run`` with the correction off (the uncorrected results the
corrected run keeps beside its own), on (``--method``, the FWHM the phantom used) and with
the FWHM misstated by -10 % and +10 %. Every structure's mean kernel dose is compared with
two truths, each the phantom's true TIA convolved with the **same** voxel kernel the
pipeline used on that grid (its dose engine, so only the activity differs):

* **CT-grid truth**: ``truth/tia_true_ct_bq_s.nii.gz`` (Bq s per CT voxel, reference pose),
  averaged over each structure of ``labels.nii.gz`` (whole CT voxels): the patient's dose at
  the structures' own resolution, which the correction is to recover;
* **SPECT-grid truth**: ``truth/tia_true_bq_s.nii.gz`` (the true TIA averaged onto the SPECT
  voxels, unblurred), averaged with each structure's fractional occupancy as the pipeline's
  SPECT-grid DVHs are: the best an uncorrected SPECT-grid pipeline could do.

``--frames`` adds the comparison of where to correct (every frame before the voxel fits, on
the label grid, or the TIA map after them), on the TIA against the CT-grid truth.
The output is the table in docs/validation.md ("Partial-volume correction on the demo");
``tests/test_pvc_pipeline.py`` runs the same functions on the small study.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

#: Structures the issue's tolerances apply to (the rest are reported).
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "lungs", "bone", "remainder")
MARROW = ("marrow_L2", "marrow_L3", "marrow_L4")
#: Lesions of at least this volume are held to the lesion tolerance, mL.
LESION_MIN_ML = 4.0


def build(folder: Path, small: bool, seed: int = 20161) -> Path:
    """The demo's study (correction off in its file; the variants set it) -> study.toml."""
    from voxdose.phantom.study import PhantomConfig, build_study

    cfg = (PhantomConfig.small if small else PhantomConfig)(seed=seed)
    return build_study(folder, cfg)


def fitted_context(study_toml: Path, device: str = "cpu"):
    """The pipeline's context after validate, register + resample and the TIA fit (no
    nuclide comparison: not part of this validation)."""
    from voxdose.pipeline.context import PipelineContext, PipelineOptions
    from voxdose.pipeline.run import NullReporter
    from voxdose.pipeline.stages import STAGES, run_stages

    ctx = PipelineContext(study_toml, Path(tempfile.gettempdir()),
                          PipelineOptions(device=device, compare_nuclide=None))
    keys = ("validate", "register_resample", "tia_fit")
    run_stages(ctx, [s for s in STAGES if s.key in keys], NullReporter())
    return ctx


def corrected_run(fitted, method: str, fwhm_mm: float):
    """The rest of ``voxdose run`` (correction, kernel, dose, analysis) on a copy of the
    fitted context with ``[pvc] method`` and ``[spect] resolution_fwhm_mm`` set; returns the
    context (``ctx.nopvc``: the uncorrected results) and its CPU seconds."""
    from voxdose.pipeline.run import NullReporter
    from voxdose.pipeline.stages import STAGES, run_stages

    ctx = copy.copy(fitted)
    ctx.series = replace(fitted.series, info=copy.deepcopy(fitted.series.info))
    ctx.timings = {}
    ctx.study = replace(fitted.study, pvc_method=method,
                        resolution_fwhm_mm=(float(fwhm_mm),) * 3)
    keys = ("pvc", "kernel", "dose", "analysis")
    t0 = time.process_time()
    run_stages(ctx, [s for s in STAGES if s.key in keys], NullReporter())
    return ctx, time.process_time() - t0


def _means(dvhs) -> dict[str, float]:
    return {h.name: h.mean_gy for h in dvhs if h.n_voxels}


def true_doses(study_dir: Path, ct_engine, spect_engine) -> dict[str, dict[str, float]]:
    """{'ct': {structure: Gy}, 'spect': {...}}: the true TIAs convolved with the engines the
    pipeline used on the CT (label) and SPECT grids, averaged over the true structures."""
    from voxdose.imaging.occupancy import fractional_occupancy
    from voxdose.io.names import read_names_json
    from voxdose.io.sitk_adapter import read_image, read_labels

    names = read_names_json(study_dir / "structure_names.json")
    lab = read_labels(study_dir / "labels.nii.gz", names)
    out = {}
    tia_ct = read_image(study_dir / "truth" / "tia_true_ct_bq_s.nii.gz")
    d = np.asarray(ct_engine.dose(tia_ct).data, dtype=np.float64)
    out["ct"] = {n: float(d[lab.data == v].mean()) for v, n in names.items()}
    tia_sp = read_image(study_dir / "truth" / "tia_true_bq_s.nii.gz")
    d = np.asarray(spect_engine.dose(tia_sp).data, dtype=np.float64).ravel()
    occ = fractional_occupancy(lab.data, lab.grid, tia_sp.grid, names)
    out["spect"] = {}
    for v, n in names.items():
        f = occ.fractions[v].ravel().astype(np.float64)
        out["spect"][n] = float(f @ d / f.sum())
    return out


def validate(study_toml: Path, method: str = "rbv", fwhm_factors=(1.0, 0.9, 1.1),
             device: str = "cpu", fitted=None) -> dict:
    """Every structure's mean dose without and with the correction (at the phantom's FWHM
    times each of ``fwhm_factors``) and the two truths; JSON-ready. ``fitted``: the study's
    :func:`fitted_context`, when already made."""
    fitted = fitted or fitted_context(study_toml, device)
    truth_fwhm = json.loads((study_toml.parent / "truth" / "truth.json").read_text()
                            )["config"]["psf_fwhm_mm"]
    runs, cpu = {}, {}
    first = None
    for k in fwhm_factors:
        ctx, cpu[f"{k:g}"] = corrected_run(fitted, method, truth_fwhm * k)
        runs[f"{k:g}"] = _means(ctx.dvhs["kernel"])
        first = first or ctx
    from voxdose.pipeline.pvc_stage import add_dose_summary

    add_dose_summary(first)  # pvc.json's doses with and without (as the write stage does)
    truth = true_doses(study_toml.parent, first.engine, first.nopvc.engine)
    vols = {h.name: h.volume_ml for h in first.dvhs["kernel"]}
    return {"study": str(study_toml), "method": method, "fwhm_mm": truth_fwhm,
            "grid": first.pvc["grid"], "complete": first.pvc["complete"],
            "volume_ml": vols, "truth_ct_gy": truth["ct"], "truth_spect_gy": truth["spect"],
            "nopvc_gy": _means(first.nopvc.dvhs["kernel"]), "pvc_gy": runs,
            "marrow_eanm_gy": {"nopvc": first.pvc["marrow_gy"]["nopvc"],
                               "pvc": first.pvc["marrow_gy"]["pvc"]},
            "cpu_s_after_fit": cpu, "pvc_stage_s": first.pvc["timings_s"]}


def relative_errors(res: dict) -> dict[str, dict[str, float]]:
    """Per structure: the relative errors (%) of every column against both truths."""
    out = {}
    for n, t_ct in res["truth_ct_gy"].items():
        t_sp = res["truth_spect_gy"][n]
        row = {"nopvc_vs_ct": res["nopvc_gy"][n] / t_ct - 1,
               "nopvc_vs_spect": res["nopvc_gy"][n] / t_sp - 1}
        for k, m in res["pvc_gy"].items():
            row[f"pvc{k}_vs_ct"] = m[n] / t_ct - 1
            row[f"pvc{k}_vs_spect"] = m[n] / t_sp - 1
        out[n] = {c: 100 * v for c, v in row.items()}
    return out


def held_to(name: str, volume_ml: float) -> float | None:
    """The issue's tolerance (%) for a structure: organs and marrow 5, lesions >= 4 mL 10."""
    if name in ORGANS or name in MARROW:
        return 5.0
    if name.startswith("lesion") and volume_ml >= LESION_MIN_ML:
        return 10.0
    return None


def markdown(res: dict) -> str:
    """The before/after table against both truths (docs/validation.md)."""
    err = relative_errors(res)
    ks = list(res["pvc_gy"])
    lo, hi = (f"{res['fwhm_mm'] * float(k):g}" for k in ks[1:3]) if len(ks) >= 3 else ("", "")
    head = ["structure", "mL", "true Gy (CT)", "true Gy (SPECT)", "no PVC vs CT",
            "no PVC vs SPECT", f"{res['method']} vs CT", f"{res['method']} vs SPECT"]
    if len(ks) >= 3:
        head += [f"FWHM {lo} mm vs CT", f"FWHM {hi} mm vs CT"]
    head.append("tolerance")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, e in err.items():
        v = res["volume_ml"][n]
        tol = held_to(n, v)
        cells = [n, f"{v:.1f}", f"{res['truth_ct_gy'][n]:.3g}", f"{res['truth_spect_gy'][n]:.3g}",
                 f"{e['nopvc_vs_ct']:+.1f} %", f"{e['nopvc_vs_spect']:+.1f} %",
                 f"{e[f'pvc{ks[0]}_vs_ct']:+.1f} %", f"{e[f'pvc{ks[0]}_vs_spect']:+.1f} %"]
        if len(ks) >= 3:
            cells += [f"{e[f'pvc{ks[1]}_vs_ct']:+.1f} %", f"{e[f'pvc{ks[2]}_vs_ct']:+.1f} %"]
        cells.append("-" if tol is None else f"±{tol:g} %")
        lines.append("| " + " | ".join(cells) + " |")
    m = res["marrow_eanm_gy"]
    lines.append("")
    lines.append(f"EANM red marrow (L2-L4 VOIs): {m['nopvc']:.3g} Gy without, {m['pvc']:.3g} Gy "
                 f"with the correction; grid: {res['grid']}.")
    return "\n".join(lines)


def frames_vs_tia(fitted, method: str = "rbv") -> dict[str, dict[str, float]]:
    """Where to correct, on the TIA against the CT-grid truth (%): every frame before the
    voxel fits (on the label grid) or the fitted TIA map once. Per structure: bias of the
    mean and the voxels' standard deviation (noise and residual spill), each order."""
    from voxdose.io.sitk_adapter import read_image
    from voxdose.kinetics.fit import fit_tia
    from voxdose.pvc.correct import correct, prepare
    from voxdose.study.images import read_study_labels

    study = fitted.study
    lab = read_study_labels(study)
    truth = read_image(Path(study.path).parent / "truth" / "tia_true_ct_bq_s.nii.gz")
    fwhm = json.loads((Path(study.path).parent / "truth" / "truth.json").read_text()
                      )["config"]["psf_fwhm_mm"]
    series, lam = fitted.series, study.nuclide.decay_constant_per_s
    setup = prepare(lab.data, lab.grid, lab.names, series.grid, method, fwhm_mm=fwhm)
    t0 = time.process_time()
    tia_once = correct(fitted.fit.tia, setup).image
    t1 = time.process_time()
    frames = np.stack([correct(f, setup).image for f in series.frames_bq_ml])
    tia_frames = fit_tia(series.times_s, frames, lam).tia
    t2 = time.process_time()
    vml, out = lab.grid.voxel_volume_ml, {}
    for v, n in sorted(lab.names.items()):
        m = lab.data == v
        t = float(truth.data[m].mean()) / vml
        out[n] = {f"{k}_{s}": 100 * float(f(x[m]) / t - (1 if s == "bias" else 0))
                  for k, x in (("tia", tia_once), ("frames", tia_frames))
                  for s, f in (("bias", np.mean), ("sd", np.std))}
    out["cpu_s"] = {"tia": t1 - t0, "frames": t2 - t1}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="the CI size (4.8 mm CT, 9.6 mm SPECT)")
    ap.add_argument("--method", default="rbv", choices=("gtm", "rbv", "iy"))
    ap.add_argument("--out", type=Path, help="study folder (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=20161)
    ap.add_argument("--frames", action="store_true", help="also compare frame-wise vs TIA-map "
                    "correction")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    a = ap.parse_args(argv)
    folder = a.out or Path(tempfile.mkdtemp(prefix="voxdose-pvc-demo-")) / "study"
    toml = folder / "study.toml" if (folder / "study.toml").is_file() else \
        build(folder, a.small, a.seed)
    fitted = fitted_context(toml)
    res = validate(toml, a.method, fitted=fitted)
    print(markdown(res))
    print(f"\nCPU s after the fit per run (pvc + kernel + dose + analysis): "
          f"{res['cpu_s_after_fit']}; pvc stage: {res['pvc_stage_s']}")
    if a.frames:
        fr = frames_vs_tia(fitted, a.method)
        cpu = fr.pop("cpu_s")
        print("\n| structure | TIA-map bias | frames bias | TIA-map voxel sd | frames voxel sd |")
        print("|---|---|---|---|---|")
        for n, r in fr.items():
            print(f"| {n} | {r['tia_bias']:+.2f} % | {r['frames_bias']:+.2f} % | "
                  f"{r['tia_sd']:.2f} % | {r['frames_sd']:.2f} % |")
        print(f"\nCPU s: TIA map once {cpu['tia']:.2f}, every frame + voxel fit on the label "
              f"grid {cpu['frames']:.2f}")
        res["frames_vs_tia"] = {**fr, "cpu_s": cpu}
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
