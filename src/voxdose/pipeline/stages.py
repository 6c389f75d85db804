"""The pipeline's stages: each ``stage_x(ctx)`` reads what earlier stages put in the
:class:`~voxdose.pipeline.context.PipelineContext`, sets its own products, and reports
progress only through ``ctx.advance``. Timing and the reporter's stages are the runner's
(:func:`run_stages`), in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..analysis.compare import SWAPPED_DECAY, compare_nuclides
from ..analysis.decisions import decide
from ..analysis.dvh import compute_dvhs, dvh_csv, dvh_json
from ..analysis.dvh_uncertainty import dvh_uncertainty
from ..analysis.mird import organ_check_csv, read_s_table
from ..core.backend import get_backend, to_numpy
from ..core.errors import StudyError
from ..core.grid import Image
from ..core.nuclide import canonical_name, load_nuclide
from ..dose.density import check_density_mode, density_from_ct
from ..dose.engine import make_engine
from ..dose.uncertainty import bounded_tia_sigma, dose_sigma_image
from ..imaging.assemble import assemble_series
from ..imaging.checks import check_ct_in_hu
from ..io.dicom_write import structure_set_ref
from ..imaging.registration import identity_registration, resample, resample_planes
from ..kernels.cache import voxel_kernel_cached
from ..kernels.extent import kernel_extent
from ..kernels.point import check_kernel_emissions, load_point_kernel, read_dpk_csv
from ..kinetics.fit import fit_tia, single_time_point_fit
from ..kinetics.models import MODEL_NAMES, STATUS, check_points_for_model
from ..kinetics.organ import fit_organs, organ_table_csv, single_time_point_organs
from ..kinetics.swap import swap_nuclide_tia
from ..report.compare_plots import plot_dpks, plot_dvh_overlay
from ..report.tac_plots import plot_tacs, tac_curves
from ..report.plots import plot_dose_slices, plot_dvhs, plot_registration_rows
from ..study.images import read_timepoint_ct
from ..study.load import Study, load_study
from ..study.sections import require_single_time_point
from .context import PipelineContext
from .provenance import build_provenance
from .pvc_stage import comparison_inputs, comparison_note, correct_tia, write_pvc


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline. ``title`` and ``steps`` may depend on the context (then
    they are callables of it); ``when`` skips the stage when it returns False; ``finish``
    runs inside the reporter's stage after the stage's time was recorded (provenance, which
    holds that time)."""

    key: str                                    # its timing key in provenance
    title: str | Callable[[PipelineContext], str]
    run: Callable[[PipelineContext], None]
    steps: int | Callable[[PipelineContext], int] = 1
    when: Callable[[PipelineContext], bool] | None = None
    finish: Callable[[PipelineContext], None] | None = None


def run_stages(ctx: PipelineContext, stages, reporter) -> None:
    """Run ``stages`` in order: open the reporter's stage, time it into ``ctx.timings``
    (``total``: from ``ctx.t_start`` to the end of the last stage, always the last key)."""
    for st in stages:
        if st.when is not None and not st.when(ctx):
            continue
        title = st.title(ctx) if callable(st.title) else st.title
        steps = st.steps(ctx) if callable(st.steps) else st.steps
        with reporter.stage(title, steps) as adv:
            ctx.advance = adv
            t0 = time.perf_counter()
            st.run(ctx)
            now = time.perf_counter()
            ctx.timings[st.key] = now - t0
            ctx.timings.pop("total", None)
            ctx.timings["total"] = now - ctx.t_start
            if st.finish is not None:
                st.finish(ctx)


# -- validate ---------------------------------------------------------------------------

def stage_validate(ctx: PipelineContext) -> None:
    opt = ctx.options
    sp = ctx.study_path
    ctx.study = sp if isinstance(sp, Study) else load_study(sp)
    ctx.backend = get_backend(opt.device)
    check_density_mode(opt.density_mode)
    if opt.density_mode != "none" and not ctx.study.has_ct:
        raise StudyError(f"{ctx.study.path}: density mode '{opt.density_mode}' needs a CT per "
                         "time point")
    if opt.density_mode != "none":  # the reference CT becomes densities: HU, before work
        tp = ctx.study.timepoints[ctx.study.reference_index]
        check_ct_in_hu(read_timepoint_ct(tp).data, tp.ct_dicom or tp.ct)
    require_single_time_point(ctx.study)  # one time point: the study file's method
    if ctx.study.single_time_point is not None and opt.tia_model != "auto":
        raise StudyError(f"{ctx.study.path}: --model {opt.tia_model}: the study's one time point "
                         "is integrated as [kinetics] single_time_point says; drop --model")
    if ctx.study.single_time_point is None:  # too few time points for the model: before work
        few = check_points_for_model(opt.tia_model, len(ctx.study.timepoints),
                                     str(ctx.study.path))
        ctx.fit_warnings = [few] if few else []
    ctx.other_nuclide = comparison_nuclide(ctx.nuclide.name, opt.compare_nuclide)
    # alphas / positrons the kernels do not transport: refused here, not after the fit
    if getattr(ctx.study, "dpk", None) is None:
        check_kernel_emissions(ctx.nuclide)
    if ctx.other_nuclide is not None:
        check_kernel_emissions(load_nuclide(ctx.other_nuclide))
    if ctx.figures is not None:   # a CPU run draws its figures in a helper process
        ctx.figures.start(parallel=opt.figure_helper and ctx.backend.name == "cpu")
    ctx.advance(1, 1)


def comparison_nuclide(study_nuclide: str, compare: str | None) -> str | None:
    """The second nuclide of the comparison ('auto': Y-90 for Lu-177, else Lu-177)."""
    if compare is None:
        return None
    other = canonical_name(compare if compare != "auto" else
                           ("Y-90" if study_nuclide == "Lu-177" else "Lu-177"))
    return None if other == study_nuclide else other


# -- register + resample ----------------------------------------------------------------

def stage_register_resample(ctx: PipelineContext) -> None:
    study = ctx.study
    series, ctx.registrations, ctx.labels = assemble_series(study, progress=ctx.advance)
    ctx.series = series.on(ctx.backend)  # onto the device once; results come back at write
    if study.has_ct:  # the reference CT on the dose grid: display, density
        ref_ct = read_timepoint_ct(study.timepoints[study.reference_index])
        ctx.ct_ref = resample(ref_ct, ctx.grid, identity_registration(), default=-1000.0)


# -- TIA fit ------------------------------------------------------------------------------

def _model_description(tia_model: str, study=None) -> str:
    if study is not None and study.single_time_point is not None:
        what = ("physical decay only" if study.single_time_point == "physical" else
                "the assumed effective half-life (Hänscheid et al. 2018)")
        return (f"single time point ([kinetics] single_time_point = "
                f"\"{study.single_time_point}\"): a(t1) exp(-ln2 (t - t1) / T) from 0 to "
                f"infinity, T = {study.stp_half_life_h:.4g} h, {what}; sigma: frame noise "
                "only")
    if tia_model != "auto":
        return f"{tia_model} for every voxel"
    return ("per voxel, best AICc of mono-, bi- (uptake-washout), bi-sum and "
            "tri-exponential models with enough points (Levenberg-Marquardt, "
            "Poisson-like weights, lambda >= lambda_physical); fallback trapezoid "
            "(0 at t=0) + physical-decay tail")


def stage_fit(ctx: PipelineContext) -> None:
    series, nuc, model, study = ctx.series, ctx.nuclide, ctx.options.tia_model, ctx.study
    stp = study.single_time_point
    if stp is not None:  # one time point, integrated as the study file says
        ctx.fit = fit = single_time_point_fit(series.times_s[0], series.frames_bq_ml[0],
                                              study.stp_half_life_h, method=stp)
    else:
        ctx.fit = fit = fit_tia(series.times_s, series.frames_bq_ml, nuc.decay_constant_per_s,
                                model=model, backend=ctx.backend)
    vml = ctx.grid.voxel_volume_ml
    if ctx.fit_warnings:  # kept with the run's warnings (provenance)
        ctx.series.info.setdefault("warnings", []).extend(ctx.fit_warnings)
    ctx.tia = Image(fit.tia * vml, ctx.grid, "time-integrated activity",
                    "Bq*s per voxel (decays)", {"model": _model_description(model, study)})
    ctx.tia_sigma = ctx.tia.with_data(fit.sigma * vml,
                                      quantity="standard uncertainty of the TIA")
    if ctx.labels is None:
        ctx.organ_fits = []
    elif stp is not None:
        ctx.organ_fits = single_time_point_organs(series.times_s, series.frames_bq_ml,
                                                  ctx.labels, study.stp_half_life_h)
    else:
        ctx.organ_fits = fit_organs(series.times_s, series.frames_bq_ml, ctx.labels,
                                    nuc.decay_constant_per_s)
    ctx.advance(1, 1)


# -- kernel -------------------------------------------------------------------------------

def stage_kernel(ctx: PipelineContext) -> None:
    study, nuc = ctx.study, ctx.nuclide
    # the user's DPK table when the study names one, else voxdose's Monte Carlo table
    pk = (read_dpk_csv(study.dpk, nuclide=nuc.name) if study.dpk is not None
          else load_point_kernel(nuc))
    # the one radius rule of every entry point (docs/defaults.md) unless the user gave one;
    # cached on disk by nuclide, spacing, medium, radius, kernel source and version
    ctx.point_kernel = pk
    if ctx.options.density_mode != "mvs":  # mvs builds its own kernel per density bin
        ext = kernel_extent(pk, ctx.grid.spacing_mm, ctx.grid.shape,
                            ctx.options.kernel_radius_mm)
        ctx.kernel_extent = ext.to_dict()
        ctx.voxel_kernel = voxel_kernel_cached(pk, ctx.grid.spacing_mm, radius_mm=ext.radius_mm,
                                               exact_spacing=True, grid_shape=ctx.grid.shape)
    ctx.advance(1, 1)


# -- dose ---------------------------------------------------------------------------------

def stage_dose(ctx: PipelineContext) -> None:
    nuc, grid, mode, backend = ctx.nuclide, ctx.grid, ctx.options.density_mode, ctx.backend
    rho = ctx.density = None if mode == "none" else density_from_ct(ctx.ct_ref, grid)
    if mode == "mvs":  # one kernel per density bin: the study's DPK range-scaled, else the
        # tissue tables; each bin's radius by the one rule (or the user's)
        ctx.engine = make_engine(
            nuc, grid.spacing_mm, method="kernel", density_mode=mode, density=rho,
            point_kernel=ctx.point_kernel if ctx.study.dpk is not None else None,
            radius_mm=ctx.options.kernel_radius_mm, kernel_cache=True)
    else:
        ctx.engine = make_engine(nuc, grid.spacing_mm, method="kernel", density_mode=mode,
                                 density=rho, kernel=ctx.voxel_kernel,
                                 extent=ctx.kernel_extent)
    ctx.dose_kernel = ctx.engine.dose(ctx.tia, backend, rho)  # on the device until written
    ctx.advance(1, 2)
    ldm = make_engine(nuc, grid.spacing_mm, method="ldm", density_mode=mode, density=rho)
    ctx.dose_ldm = ldm.dose(ctx.tia, backend, rho)
    _dose_sigmas(ctx, ldm, rho)
    ctx.advance(2, 2)


def _dose_sigmas(ctx: PipelineContext, ldm, rho) -> None:
    """The dose sigma maps of both engines (independent voxel TIA errors, each engine's own
    kernels: :func:`voxdose.dose.uncertainty.dose_sigma_image`) on the host, from the TIA
    sigma capped by :func:`~voxdose.dose.uncertainty.bounded_tia_sigma`; none without a TIA
    sigma."""
    sigma = getattr(ctx, "tia_sigma", None)
    if sigma is None:
        ctx.tia_sigma_dose = ctx.dose_kernel_sigma = ctx.dose_ldm_sigma = None
        return
    ctx.tia_sigma_dose, _ = bounded_tia_sigma(ctx.tia, sigma)
    for name, engine in (("dose_kernel_sigma", ctx.engine), ("dose_ldm_sigma", ldm)):
        s = dose_sigma_image(engine, ctx.tia_sigma_dose, ctx.backend, rho)
        setattr(ctx, name, s.with_data(to_numpy(s.data)))


# -- analysis (needs structures) ----------------------------------------------------------

def stage_analysis(ctx: PipelineContext) -> None:
    """The nuclide comparison first (its 13-panel figure is the slowest the helper draws:
    submitted now, it is drawn while the DVHs and their uncertainty are computed), then the
    DVHs with their bands, then the decisions (MIRD check, marrow, plan)."""
    study, nuc, labels, rho = ctx.study, ctx.nuclide, ctx.labels, ctx.density
    _submit(ctx, _early_figures(ctx))   # those not submitted yet (a stage list of its own)
    done = 0
    other = ctx.other_nuclide
    if other:
        r = ctx.options.kernel_radius_mm
        tia, lam, spect_labels = comparison_inputs(ctx)  # the SPECT grid's, corrected
        tia_other = swap_nuclide_tia(tia, lam, nuc, other)
        own = {nuc.name: ctx.point_kernel} if study.dpk is not None else None
        ctx.comparison = (
            compare_nuclides(tia, [nuc.name], spect_labels, kernel_radius_mm=r,
                             point_kernels=own, tia_basis=SWAPPED_DECAY, backend=ctx.backend)
            + compare_nuclides(tia_other, [other], spect_labels, kernel_radius_mm=r,
                               tia_basis=SWAPPED_DECAY, backend=ctx.backend))
        _submit(ctx, _late_figures(ctx))    # the overlay, drawn while the rest runs
        done += 1
        ctx.advance(done)
    ctx.dvhs = {"kernel": compute_dvhs(ctx.dose_kernel, labels, rho),
                "ldm": compute_dvhs(ctx.dose_ldm, labels, rho)}
    ctx.dvh_uncertainty = None if ctx.dose_kernel_sigma is None else dvh_uncertainty(
        ctx.dvhs["kernel"], ctx.dose_kernel, ctx.dose_kernel_sigma, ctx.tia_sigma_dose,
        ctx.engine, labels, ctx.backend, rho, getattr(study, "pvc_method", "none"),
        None if ctx.nopvc is None else ctx.nopvc.grid)
    _submit(ctx, _late_figures(ctx))    # the DVH figure
    done += 1
    ctx.advance(done)
    ctx.decisions = _decide(ctx)
    ctx.advance(done + 1)


def _decide(ctx: PipelineContext):
    """MIRD check, marrow and plan from the kernel dose and its DVHs."""
    study = ctx.study
    return decide(ctx.tia, ctx.dose_kernel, ctx.labels, ctx.dvhs["kernel"], ctx.engine,
                  ctx.point_kernel, ctx.organ_fits, study.administered_activity_mbq,
                  ctx.nuclide.half_life_h, study.sex, study.plan_limits_gy,
                  study.plan_after_h, ctx.density,
                  read_s_table(study.s_table) if study.s_table else None,
                  backend=ctx.backend)


def _uncorrected_analysis(ctx: PipelineContext) -> None:
    """The kernel DVHs and the decisions only: the uncorrected results a partial-volume
    corrected run keeps beside its own (no LDM DVHs, DVH uncertainty or comparison)."""
    ctx.dvhs = {"kernel": compute_dvhs(ctx.dose_kernel, ctx.labels, ctx.density)}
    ctx.decisions = _decide(ctx)


# -- write (into ctx.writer, the staged results folder) -----------------------------------

def _write_maps(ctx: PipelineContext) -> None:
    w, tia, tag, fit = ctx.writer, ctx.tia, ctx.tag, ctx.fit
    common = {"nuclide": ctx.nuclide.name, "voxdose_version": __version__}
    w.image("tia_bq_s.nii.gz", tia, dtype=np.float32, sidecar=common)
    w.image("tia_sigma_bq_s.nii.gz", ctx.tia_sigma, sidecar=common)
    w.image("fit_status.nii.gz", tia.with_data(
        fit.status.astype(np.uint8), quantity="fit status", unit="code",
        meta={"codes": {str(k): v for k, v in STATUS.items()}}), dtype=np.uint8)
    w.image("fit_model.nii.gz", tia.with_data(
        fit.model.astype(np.uint8), quantity="time-activity model per voxel", unit="code",
        meta={"codes": {str(k): v for k, v in MODEL_NAMES.items()}}), dtype=np.uint8)
    w.image(f"dose_{tag}_kernel_gy.nii.gz", ctx.dose_kernel, sidecar=common)
    w.image(f"dose_{tag}_ldm_gy.nii.gz", ctx.dose_ldm, sidecar=common)
    for method, sigma in (("kernel", ctx.dose_kernel_sigma), ("ldm", ctx.dose_ldm_sigma)):
        if sigma is not None:
            w.image(f"dose_{tag}_{method}_sigma_gy.nii.gz", sigma, sidecar=common)
    ref_tp = ctx.study.timepoints[ctx.study.reference_index]
    w.rtdose(f"dose_{tag}_kernel_rtdose.dcm", ctx.dose_kernel,
             reference=ref_tp.ct if ref_tp.ct_dicom is not None else None,
             **_rtdose_structures(ctx))


def _rtdose_structures(ctx: PipelineContext) -> dict:
    """RT Dose keywords that reference the study's RTSTRUCT (RT DVH module with the kernel
    dose's DVHs), when the structures came from one; none otherwise."""
    rts, dvhs = ctx.study.rtstruct, ctx.dvhs.get("kernel") or []
    if rts is None or not any(len(d.doses_gy) for d in dvhs):
        return {}
    numbers = {rts.names[v]: rts.roi_numbers[v] for v in rts.names}
    return {"structure_set": structure_set_ref(rts.path, numbers), "dvhs": dvhs}


def _write_analysis(ctx: PipelineContext) -> None:
    w, dvhs, dec = ctx.writer, ctx.dvhs, ctx.decisions
    if dvhs:
        w.text("dvh.csv", dvh_csv(dvhs["kernel"]))
        unc = ctx.dvh_uncertainty
        doc = dvh_json(dvhs["kernel"])
        w.json("dvh.json", doc if unc is None else unc.add_to(doc))
        w.text("dvh_ldm.csv", dvh_csv(dvhs["ldm"]))
        _figure(ctx, _late_figures(ctx), "dvh.png")
    if ctx.organ_fits:
        w.text("organ_tia.csv", organ_table_csv(ctx.organ_fits))
        _figure(ctx, _early_figures(ctx), "tac")
    if dec is not None:
        w.text("mird_check.csv", organ_check_csv(dec.mird))
        if dec.marrow is not None:
            w.json("marrow.json", dec.marrow.to_dict())
        if dec.plan is not None:
            w.json("plan.json", {**dec.plan.to_dict(), "gy_per_gbq": dec.gy_per_gbq})


def _write_comparison(ctx: PipelineContext) -> None:
    w, comparison, nuc = ctx.writer, ctx.comparison, ctx.nuclide
    if not comparison:
        return
    for r in comparison[1:]:
        t2 = r.nuclide.replace("-", "").lower()
        w.image(f"dose_{t2}_kernel_gy.nii.gz", r.dose,
                sidecar={"nuclide": r.nuclide, "tia_basis": r.tia_basis,
                         "tia": "swapped physical decay from the "
                         f"{nuc.name} fit (biological kinetics kept)"})
        w.text(f"dvh_{t2}.csv", dvh_csv(r.dvhs))
    _figure(ctx, _late_figures(ctx), "dvh_compare.png")
    _figure(ctx, _early_figures(ctx), "dpk.png")
    w.json("compare.json", {
        "tia_basis": comparison[0].tia_basis,
        "assumption": f"{ctx.other_nuclide} dosed with the biological kinetics fitted for "
                      f"{nuc.name} and its own physical decay (mono-exponential swap "
                      "per voxel, same administered activity)",
        **comparison_note(ctx), "nuclides": [r.to_dict() for r in comparison]})


def _display_centre(ctx: PipelineContext):
    """Voxel (z, y, x) the figures are cut through: the kidneys' centre, else peak dose."""
    centre = np.unravel_index(int(ctx.dose_kernel.data.argmax()), ctx.grid.shape)
    if ctx.labels is not None:
        lab = ctx.labels.data
        kid = [v for v, n in ctx.labels.names.items() if "kidney" in n]
        if kid and np.any(np.isin(lab, kid)):
            centre = [int(round(c)) for c in np.argwhere(np.isin(lab, kid)).mean(axis=0)]
    return centre


def _write_figures(ctx: PipelineContext) -> None:
    study, early = ctx.study, _early_figures(ctx)
    _figure(ctx, early, "dose_slice.png")
    for i, (tp, reg) in enumerate(zip(study.timepoints, ctx.registrations)):
        # reference point -> this time point's point
        ctx.writer.transform(f"registration/tp{i}_{tp.time_h:g}h_{reg.kind}.tfm", reg)
    _figure(ctx, early, "registration.png")


# -- figures: what each one draws, and where (report/render.py) ----------------------------
# A figure is (plot function, arguments, keywords) by result name; with a helper process
# (a CPU run) it is submitted as soon as its data are final and written in its place.

def _early_figures(ctx: PipelineContext, upto: str = "dose") -> dict:
    """The figures final before the analysis, each added once: after the kernel stage
    (``upto="kernel"``: the partial-volume correction, which rescales the organ fits, is
    done) the TACs and the DPKs; after the dose stage the dose slice and the registration
    check (its rows resample the CTs)."""
    jobs = ctx.early_figures if ctx.early_figures is not None else {}
    study, grid, ct_ref, nuc = ctx.study, ctx.grid, ctx.ct_ref, ctx.nuclide
    if ctx.organ_fits and "tac" not in jobs:
        jobs["tac"] = (plot_tacs, (tac_curves(ctx.organ_fits),), {})
    if ctx.other_nuclide and ctx.labels is not None and "dpk.png" not in jobs:
        # the comparison's kernels (the comparison runs in the analysis: with structures)
        jobs["dpk.png"] = (plot_dpks, ([nuc.name, ctx.other_nuclide],),
                           {"point_kernels": {nuc.name: ctx.point_kernel}})
    if upto == "dose" and "dose_slice.png" not in jobs:
        lab = None if ctx.labels is None else ctx.labels.data
        centre = _display_centre(ctx)
        jobs["dose_slice.png"] = (plot_dose_slices, (
            to_numpy(ctx.dose_kernel.data), grid.spacing_mm, lab, centre,
            f"{study.name}: {nuc.name} absorbed dose (Gy)"), {
            "ct_hu": None if ct_ref is None else ct_ref.data, "affine": grid.affine})
        if ct_ref is not None and len(study.timepoints) > 1:
            jobs["registration.png"] = (plot_registration_rows, (
                _registration_rows(ctx, centre), grid.spacing_mm,
                f"reference CT (time point {study.reference_index}, fixed) vs each time "
                "point's registered CT (moving)"), {})
    ctx.early_figures = jobs
    return jobs


def stage_kernel_main(ctx: PipelineContext) -> None:
    """The run's kernel stage; then, with a figure helper, the figures final by now go to
    it (drawn while the dose is computed). Without one they are made where they are
    written (no figure work in this stage's time)."""
    stage_kernel(ctx)
    if _drawing_in_helper(ctx):
        _submit(ctx, _early_figures(ctx, "kernel"))


def stage_dose_main(ctx: PipelineContext) -> None:
    """The run's dose stage; then, with a figure helper, the dose slice and the
    registration check go to it."""
    stage_dose(ctx)
    if _drawing_in_helper(ctx):
        _submit(ctx, _early_figures(ctx))


def _drawing_in_helper(ctx: PipelineContext) -> bool:
    return ctx.figures is not None and ctx.figures.parallel


def _late_figures(ctx: PipelineContext) -> dict:
    """The figures of the analysis, each added once its data are final: the DVHs (with
    their bands) once the DVH uncertainty is, the comparison's overlay once it is."""
    jobs = ctx.late_figures if ctx.late_figures is not None else {}
    dvhs, comparison, nuc = ctx.dvhs, ctx.comparison, ctx.nuclide
    if dvhs and "dvh.png" not in jobs:
        unc = ctx.dvh_uncertainty
        jobs["dvh.png"] = (plot_dvhs, (
            dvhs["kernel"], f"{ctx.study.name}: {nuc.name} cumulative DVH (kernel "
            "convolution)"), {"bands": None if unc is None else unc.plot_bands()})
    if comparison and "dvh_compare.png" not in jobs:
        jobs["dvh_compare.png"] = (plot_dvh_overlay, (comparison,), {})
    ctx.late_figures = jobs
    return jobs


def _submit(ctx: PipelineContext, jobs: dict) -> None:
    """Start drawing ``jobs`` in the helper process (nothing without one)."""
    if _drawing_in_helper(ctx):
        for name, (fn, args, kw) in jobs.items():
            ctx.figures.submit(name, fn, *args, **kw)


def _figure(ctx: PipelineContext, jobs: dict, name: str) -> None:
    """Write figure ``name`` of ``jobs`` (if it is one) through the results writer."""
    if name in jobs:
        fn, args, kw = jobs[name]
        ctx.writer.figure(name, fn, *args, **kw)


def _registration_rows(ctx: PipelineContext, centre) -> list:
    """registration.png's rows: per time point but the reference, the axial and coronal
    planes through ``centre`` of the reference CT and of its CT registered onto the grid."""
    study, grid, ref = ctx.study, ctx.grid, ctx.ct_ref.data
    cz, cy = (int(min(max(round(float(c)), 0), n - 1))
              for c, n in zip(centre[:2], grid.shape[:2]))
    rows = []
    for i, (tp, reg) in enumerate(zip(study.timepoints, ctx.registrations)):
        if i == study.reference_index:
            continue
        axial, coronal = resample_planes(read_timepoint_ct(tp), grid, reg, (cz, cy))
        rows.append((f"time point {i}: {tp.time_h:g} h", (ref[cz], axial),
                     (ref[:, cy, :], coronal)))
    return rows


def stage_write(ctx: PipelineContext) -> None:
    """Every result file except provenance.json and report.html (see finish_write)."""
    _submit(ctx, _late_figures(ctx))   # drawn while the maps are written
    _write_maps(ctx)
    _write_analysis(ctx)
    _write_comparison(ctx)
    _write_figures(ctx)
    write_pvc(ctx)  # with a partial-volume correction: the uncorrected results, pvc.json


# -- partial-volume correction (pipeline/pvc_stage.py) --------------------------------------

def stage_pvc(ctx: PipelineContext) -> None:
    """The uncorrected results (kernel, dose and analysis on the SPECT grid, kept beside),
    then the TIA map corrected onto the structures' grid, where the later stages run."""
    correct_tia(ctx, (stage_kernel, stage_dose, _uncorrected_analysis))


def finish_write(ctx: PipelineContext) -> None:
    """provenance.json (with the timings, and the writer's list of outputs) and report.html."""
    ctx.provenance = ctx.writer.finish(build_provenance(ctx))
    ctx.advance(1, 1)


STAGES = (
    Stage("validate", "validate study", stage_validate),
    Stage("register_resample", "register + resample", stage_register_resample,
          steps=lambda c: len(c.study.timepoints)),
    Stage("tia_fit", "fit time-activity curves", stage_fit),
    Stage("pvc", lambda c: f"partial-volume correction ({c.study.pvc_method})", stage_pvc,
          steps=3, when=lambda c: c.study.pvc_method != "none"),
    Stage("kernel", lambda c: f"{c.nuclide.name} voxel kernel", stage_kernel_main),
    Stage("dose", lambda c: f"dose ({c.backend.name})", stage_dose_main, steps=2),
    Stage("analysis", "DVH, MIRD check, marrow, plan", stage_analysis,
          steps=lambda c: 3 if c.other_nuclide else 2, when=lambda c: c.labels is not None),
)
"""The computing stages, in order (nothing written)."""

WRITE_STAGE = Stage("write", "write results", stage_write, finish=finish_write)
"""The last stage, run with ``ctx.writer`` on the staged results folder."""
