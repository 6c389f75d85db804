"""The whole chain: study -> activity series -> TIA -> dose -> DVHs -> results folder.

Used by ``voxdose run STUDY.toml`` and ``voxdose demo``. Every stage reports progress to an
optional ``reporter`` (the CLI passes a Rich one). All outputs are staged in a hidden
folder and moved into place only when everything succeeded (no partial results).
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..analysis.compare import compare_nuclides
from ..analysis.dvh import DVH, compute_dvhs, dvh_csv, dvh_json
from ..analysis.mird import organ_check_csv, read_s_table
from ..imaging.assemble import assemble_series
from ..core.backend import get_backend, to_numpy
from ..analysis.decisions import decide
from ..dose.density import check_density_mode, density_from_ct
from ..dose.engine import make_engine
from ..kinetics.swap import swap_nuclide_tia
from ..kernels.point import load_point_kernel, read_dpk_csv
from ..kernels.cache import voxel_kernel_cached
from ..kernels.extent import kernel_radius_for
from ..report.compare_plots import plot_dpks, plot_dvh_overlay
from ..study.images import read_timepoint_ct
from ..core.errors import StudyError
from ..core.grid import Image
from ..io.atomic import sha256_file, staged_directory, write_json, write_text
from ..io.sitk_adapter import write_image
from ..io.dicom_write import write_rt_dose
from ..study.load import Study, load_study, study_inputs
from ..kinetics.fit import fit_tia
from ..kinetics.models import MODEL_NAMES, STATUS
from ..kinetics.organ import fit_organs, organ_table_csv, plot_tacs
from ..core.nuclide import canonical_name
from ..imaging.registration import identity_registration, resample, write_transform
from ..report.html import write_report
from ..report.plots import plot_dose_slices, plot_dvhs, plot_registration_check


class NullReporter:
    """Reporter interface: ``stage(name, total)`` yields an ``advance(done, total)`` callable."""

    @contextmanager
    def stage(self, name: str, total: int = 1):
        yield lambda done=None, tot=None: None


@dataclass
class PipelineResult:
    out_dir: Path
    dvhs: dict[str, list[DVH]]
    files: list[str]
    timings_s: dict[str, float]
    provenance: dict = field(default_factory=dict)
    decisions: object = None
    comparison: list = field(default_factory=list)


def _versions() -> dict:
    import numba
    import scipy
    import SimpleITK

    return {"voxdose": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
            "SimpleITK": SimpleITK.Version_VersionString()}


def run_pipeline(study_path, out_dir, device: str = "auto", reporter=None,
                 kernel_radius_mm: float | None = None, tia_model: str = "auto",
                 density_mode: str = "none", compare_nuclide: str | None = "auto"
                 ) -> PipelineResult:
    """Run every stage on a study (path of study.toml, or a validated :class:`Study`);
    write results into ``out_dir``.

    kernel_radius_mm : voxel-kernel radius; default: the dose grid's diagonal (no voxel of
        the grid is farther from a source), capped by the kernel table's range. The energy
        beyond it (photons leaving the imaged volume) is reported in provenance.
    density_mode : 'none' (water), 'scale' or 'mvs' (density from the reference CT).
    compare_nuclide : a second nuclide for the comparison ('auto': Y-90 for a Lu-177 study
        and Lu-177 otherwise; None: no comparison), dosed from the same biological kinetics
        with its own physical decay.
    """
    rep = reporter or NullReporter()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    with rep.stage("validate study") as adv:
        t0 = time.perf_counter()
        study = study_path if isinstance(study_path, Study) else load_study(study_path)
        backend = get_backend(device)
        check_density_mode(density_mode)
        if density_mode != "none" and not study.has_ct:
            raise StudyError(f"{study.path}: density mode '{density_mode}' needs a CT per "
                             "time point")
        adv(1, 1)
        timings["validate"] = time.perf_counter() - t0

    with rep.stage("register + resample", len(study.timepoints)) as adv:
        t0 = time.perf_counter()
        series, regs, labels = assemble_series(study, progress=adv)
        grid = series.grid
        ct_ref = ct_last = None
        if study.has_ct:  # CTs on the dose grid: display, registration check, density
            ref_ct = read_timepoint_ct(study.timepoints[study.reference_index])
            ct_ref = resample(ref_ct, grid, identity_registration(), default=-1000.0)
            last = len(study.timepoints) - 1 if study.reference_index == 0 else 0
            ct_last = resample(read_timepoint_ct(study.timepoints[last]), grid,
                               regs[last], default=-1000.0)
        timings["register_resample"] = time.perf_counter() - t0

    nuc = study.nuclide
    with rep.stage("fit time-activity curves") as adv:
        t0 = time.perf_counter()
        fit = fit_tia(series.times_s, series.frames_bq_ml, nuc.decay_constant_per_s,
                      model=tia_model, device="gpu" if backend.name == "gpu" else "cpu")
        vml = grid.voxel_volume_ml
        model_desc = ("per voxel, best AICc of mono-, bi- (uptake-washout), bi-sum and "
                      "tri-exponential models with enough points (Levenberg-Marquardt, "
                      "Poisson-like weights, lambda >= lambda_physical); fallback trapezoid "
                      "(0 at t=0) + physical-decay tail" if tia_model == "auto"
                      else f"{tia_model} for every voxel")
        tia = Image(fit.tia * vml, grid, "time-integrated activity",
                    "Bq*s per voxel (decays)", {"model": model_desc})
        tia_sigma = tia.with_data(fit.sigma * vml, quantity="standard uncertainty of the TIA")
        status = fit.status
        organ_fits = [] if labels is None else fit_organs(
            series.times_s, series.frames_bq_ml, labels, nuc.decay_constant_per_s)
        adv(1, 1)
        timings["tia_fit"] = time.perf_counter() - t0

    with rep.stage(f"{nuc.name} voxel kernel") as adv:
        t0 = time.perf_counter()
        # the user's DPK table when the study names one, else voxdose's Monte Carlo table
        pk = (read_dpk_csv(study.dpk, nuclide=nuc.name) if study.dpk is not None
              else load_point_kernel(nuc))
        # cached on disk by nuclide, spacing, medium, radius, kernel source and version
        radius = kernel_radius_for(pk, grid) if kernel_radius_mm is None else kernel_radius_mm
        kern = voxel_kernel_cached(pk, grid.spacing_mm, radius_mm=radius)
        adv(1, 1)
        timings["kernel"] = time.perf_counter() - t0

    with rep.stage(f"dose ({backend.name})", 2) as adv:
        t0 = time.perf_counter()
        rho = None if density_mode == "none" else density_from_ct(ct_ref, grid)
        engine = make_engine(nuc, grid.spacing_mm, method="kernel", density_mode=density_mode,
                             density=rho, kernel=kern, precision="float64")
        dose_k = engine.dose(tia, backend, rho)
        dose_k = dose_k.with_data(to_numpy(dose_k.data))
        adv(1, 2)
        dose_l = make_engine(nuc, grid.spacing_mm, method="ldm", density_mode=density_mode,
                             density=rho).dose(tia, backend, rho)
        dose_l = dose_l.with_data(to_numpy(dose_l.data))
        adv(2, 2)
        timings["dose"] = time.perf_counter() - t0

    dvhs: dict[str, list[DVH]] = {}
    decisions = None
    comparison = []
    other = None
    if compare_nuclide is not None:
        other = canonical_name(compare_nuclide if compare_nuclide != "auto" else
                               ("Y-90" if nuc.name == "Lu-177" else "Lu-177"))
        if other == nuc.name:
            other = None
    if labels is not None:
        with rep.stage("DVH, MIRD check, marrow, plan", 3 if other else 2) as adv:
            t0 = time.perf_counter()
            dvhs = {"kernel": compute_dvhs(dose_k, labels, rho),
                    "ldm": compute_dvhs(dose_l, labels, rho)}
            adv(1)
            decisions = decide(tia, dose_k, labels, dvhs["kernel"], engine, pk, organ_fits,
                               study.administered_activity_mbq, nuc.half_life_h, study.sex,
                               study.plan_limits_gy, study.plan_after_h, rho,
                               read_s_table(study.s_table) if study.s_table else None)
            adv(2)
            if other:
                tia_other = swap_nuclide_tia(tia, fit.lambda_eff_per_s, nuc, other)
                comparison = (compare_nuclides(tia, [nuc.name], labels,
                                               kernel_radius_mm=kernel_radius_mm) +
                              compare_nuclides(tia_other, [other], labels,
                                               kernel_radius_mm=kernel_radius_mm))
                adv(3)
            timings["analysis"] = time.perf_counter() - t0

    tag = nuc.name.replace("-", "").lower()
    out_dir = Path(out_dir)
    files = []
    previous = _previous_outputs(out_dir)
    with rep.stage("write results") as adv, staged_directory(out_dir) as stage:
        t0 = time.perf_counter()
        common = {"nuclide": nuc.name, "voxdose_version": __version__}
        write_image(stage / "tia_bq_s.nii.gz", tia, dtype=np.float32, sidecar=common)
        write_image(stage / "tia_sigma_bq_s.nii.gz", tia_sigma, sidecar=common)
        write_image(stage / "fit_status.nii.gz", tia.with_data(status.astype(np.uint8),
                    quantity="fit status", unit="code",
                    meta={"codes": {str(k): v for k, v in STATUS.items()}}), dtype=np.uint8)
        write_image(stage / "fit_model.nii.gz", tia.with_data(fit.model.astype(np.uint8),
                    quantity="time-activity model per voxel", unit="code",
                    meta={"codes": {str(k): v for k, v in MODEL_NAMES.items()}}),
                    dtype=np.uint8)
        write_image(stage / f"dose_{tag}_kernel_gy.nii.gz", dose_k, sidecar=common)
        write_image(stage / f"dose_{tag}_ldm_gy.nii.gz", dose_l, sidecar=common)
        ref_tp = study.timepoints[study.reference_index]
        write_rt_dose(stage / f"dose_{tag}_kernel_rtdose.dcm", dose_k,
                      reference=ref_tp.ct if ref_tp.ct_dicom is not None else None)
        files.append(f"dose_{tag}_kernel_rtdose.dcm")
        files += ["tia_bq_s.nii.gz", "tia_sigma_bq_s.nii.gz", "fit_status.nii.gz",
                  "fit_model.nii.gz", f"dose_{tag}_kernel_gy.nii.gz",
                  f"dose_{tag}_ldm_gy.nii.gz"]
        if dvhs:
            write_text(stage / "dvh.csv", dvh_csv(dvhs["kernel"]))
            write_json(stage / "dvh.json", dvh_json(dvhs["kernel"]))
            write_text(stage / "dvh_ldm.csv", dvh_csv(dvhs["ldm"]))
            plot_dvhs(stage / "dvh.png", dvhs["kernel"],
                      f"{study.name}: {nuc.name} cumulative DVH (kernel convolution)")
            files += ["dvh.csv", "dvh.json", "dvh_ldm.csv", "dvh.png"]
        if organ_fits:
            write_text(stage / "organ_tia.csv", organ_table_csv(organ_fits))
            files += ["organ_tia.csv"] + [f"tac/{n}" for n in plot_tacs(stage / "tac",
                                                                      organ_fits)]
        if decisions is not None:
            write_text(stage / "mird_check.csv", organ_check_csv(decisions.mird))
            files.append("mird_check.csv")
            if decisions.marrow is not None:
                write_json(stage / "marrow.json", decisions.marrow.to_dict())
                files.append("marrow.json")
            if decisions.plan is not None:
                write_json(stage / "plan.json", {**decisions.plan.to_dict(),
                                                 "gy_per_gbq": decisions.gy_per_gbq})
                files.append("plan.json")
        if comparison:
            for r in comparison[1:]:
                t2 = r.nuclide.replace("-", "").lower()
                write_image(stage / f"dose_{t2}_kernel_gy.nii.gz", r.dose,
                            sidecar={"nuclide": r.nuclide, "tia": "swapped physical decay "
                                     f"from the {nuc.name} fit (biological kinetics kept)"})
                write_text(stage / f"dvh_{t2}.csv", dvh_csv(r.dvhs))
                files += [f"dose_{t2}_kernel_gy.nii.gz", f"dvh_{t2}.csv"]
            plot_dvh_overlay(stage / "dvh_compare.png", comparison)
            plot_dpks(stage / "dpk.png", [r.nuclide for r in comparison])
            write_json(stage / "compare.json", {
                "assumption": f"{other} dosed with the biological kinetics fitted for "
                              f"{nuc.name} and its own physical decay (mono-exponential swap "
                              "per voxel, same administered activity)",
                "nuclides": [r.to_dict() for r in comparison]})
            files += ["dvh_compare.png", "dpk.png", "compare.json"]
        lab = None if labels is None else labels.data
        centre = np.unravel_index(int(np.argmax(dose_k.data)), grid.shape)
        if labels is not None:
            kid = [v for v, n in labels.names.items() if "kidney" in n]
            if kid and np.any(np.isin(lab, kid)):
                centre = [int(round(c)) for c in np.argwhere(np.isin(lab, kid)).mean(axis=0)]
        plot_dose_slices(stage / "dose_slice.png", np.asarray(dose_k.data), grid.spacing_mm, lab,
                         centre, f"{study.name}: {nuc.name} absorbed dose (Gy)",
                         ct_hu=None if ct_ref is None else ct_ref.data)
        files.append("dose_slice.png")
        for i, (tp, reg) in enumerate(zip(study.timepoints, regs)):
            name = f"registration/tp{i}_{tp.time_h:g}h_{reg.kind}.tfm"
            write_transform(stage / name, reg)  # reference point -> this time point's point
            files.append(name)
        if ct_ref is not None:
            plot_registration_check(stage / "registration.png", ct_ref.data, ct_last.data,
                                    grid.spacing_mm, centre,
                                    "reference CT vs registered CT of the last time point")
            files.append("registration.png")
        timings["write"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_all
        prov = {
            "voxdose": _versions(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": backend.name,
            "study": {"path": str(study.path), "name": study.name, "nuclide": nuc.name,
                      "half_life_s": nuc.half_life_s,
                      "administered_activity_mbq": study.administered_activity_mbq,
                      "times_h": study.times_h, "reference_timepoint": study.reference_index,
                      "spect_to_bq_ml": study.spect_to_bq_ml,
                      "decay_corrected_input": study.decay_corrected, "sex": study.sex,
                      "plan_limits_gy": study.plan_limits_gy,
                      "plan_after_h": study.plan_after_h},
            "inputs_sha256": {str(p): sha256_file(p) for p in study_inputs(study)},
            "grid": grid.to_dict(),
            "assembly": series.info,
            "tia": {"model": tia.meta["model"], "settings": fit.settings,
                    "status_counts": {STATUS[int(k)]: int(c) for k, c in
                                      zip(*np.unique(status, return_counts=True))},
                    "model_counts": {MODEL_NAMES[int(k)]: int(c) for k, c in
                                     zip(*np.unique(fit.model, return_counts=True))},
                    "total_tia_bq_s": float(np.sum(tia.data))},
            "organ_fits": {of.name: {"chosen": of.best, "volume_ml": of.volume_ml,
                                     "activity_bq": of.activity_bq.tolist(), "fits": of.fits}
                           for of in organ_fits},
            "dose": {"kernel": dose_k.meta, "ldm": dose_l.meta, "density_mode": density_mode},
            "decisions_notes": [] if decisions is None else decisions.notes,
            "skipped": _skipped(study, labels, decisions, comparison),
            "timings_s": timings,
            "outputs": [*files, "provenance.json"],
        }
        write_json(stage / "provenance.json", prov)
        files.append("provenance.json")
        write_report(stage, prov)
        files.append("report.html")
        adv(1, 1)
    _remove_stale(out_dir, previous, set(files))
    return PipelineResult(out_dir, dvhs, files, timings, prov, decisions, comparison)


def _previous_outputs(out_dir: Path) -> set[str]:
    """Files an earlier voxdose run listed in out_dir/provenance.json (relative names)."""
    import json

    try:
        prov = json.loads((out_dir / "provenance.json").read_text())
        return {str(f) for f in prov.get("outputs", []) if ".." not in str(f)}
    except (OSError, ValueError, AttributeError):
        return set()


def _remove_stale(out_dir: Path, previous: set[str], current: set[str]) -> None:
    """Remove results of an earlier run that this run did not write (e.g. plan.json when
    the study no longer has limits), so the folder never mixes two runs. Only files an
    earlier voxdose run itself listed are touched."""
    for name in previous - current:
        p = out_dir / name
        for q in (p, p.with_name(p.name.split(".")[0] + ".json") if p.suffix == ".gz" else None):
            if q is not None and q.is_file() and q.name != "provenance.json":
                q.unlink()


def _skipped(study, labels, decisions, comparison) -> dict:
    """Why a report section has no result (shown in report.html)."""
    out = {}
    if not study.has_ct:
        out["registration"] = "no CT in the study: SPECT-to-SPECT registration, no CT figure"
    if labels is None:
        for k in ("tac", "dvh", "mird", "marrow", "plan", "compare"):
            out[k] = "no structures ([structures] labels and names) in the study"
        return out
    if decisions is not None and decisions.marrow is None:
        out["marrow"] = "no structures named marrow_L2, marrow_L3, marrow_L4"
    if decisions is not None and decisions.plan is None:
        out["plan"] = "no [plan] dose limits in the study file"
    if not comparison:
        out["compare"] = "no second nuclide to compare"
    return out
