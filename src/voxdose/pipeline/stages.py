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
from ..analysis.compare import compare_nuclides
from ..analysis.decisions import decide
from ..analysis.dvh import compute_dvhs, dvh_csv, dvh_json
from ..analysis.mird import organ_check_csv, read_s_table
from ..core.backend import get_backend, to_numpy
from ..core.errors import StudyError
from ..core.grid import Image
from ..core.nuclide import canonical_name
from ..dose.density import check_density_mode, density_from_ct
from ..dose.engine import make_engine
from ..imaging.assemble import assemble_series
from ..imaging.registration import identity_registration, resample
from ..kernels.cache import voxel_kernel_cached
from ..kernels.extent import kernel_radius_for
from ..kernels.point import load_point_kernel, read_dpk_csv
from ..kinetics.fit import fit_tia
from ..kinetics.models import MODEL_NAMES, STATUS
from ..kinetics.organ import fit_organs, organ_table_csv
from ..kinetics.swap import swap_nuclide_tia
from ..report.compare_plots import plot_dpks, plot_dvh_overlay
from ..report.tac_plots import plot_tacs
from ..report.plots import plot_dose_slices, plot_dvhs, plot_registration_check
from ..study.images import read_timepoint_ct
from ..study.load import Study, load_study
from .context import PipelineContext
from .provenance import build_provenance


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
    ctx.other_nuclide = comparison_nuclide(ctx.nuclide.name, opt.compare_nuclide)
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
    ctx.series, ctx.registrations, ctx.labels = assemble_series(study, progress=ctx.advance)
    if study.has_ct:  # CTs on the dose grid: display, registration check, density
        grid, regs = ctx.grid, ctx.registrations
        ref_ct = read_timepoint_ct(study.timepoints[study.reference_index])
        ctx.ct_ref = resample(ref_ct, grid, identity_registration(), default=-1000.0)
        last = len(study.timepoints) - 1 if study.reference_index == 0 else 0
        ctx.ct_last = resample(read_timepoint_ct(study.timepoints[last]), grid,
                               regs[last], default=-1000.0)


# -- TIA fit ------------------------------------------------------------------------------

def _model_description(tia_model: str) -> str:
    if tia_model != "auto":
        return f"{tia_model} for every voxel"
    return ("per voxel, best AICc of mono-, bi- (uptake-washout), bi-sum and "
            "tri-exponential models with enough points (Levenberg-Marquardt, "
            "Poisson-like weights, lambda >= lambda_physical); fallback trapezoid "
            "(0 at t=0) + physical-decay tail")


def stage_fit(ctx: PipelineContext) -> None:
    series, nuc, model = ctx.series, ctx.nuclide, ctx.options.tia_model
    ctx.fit = fit = fit_tia(series.times_s, series.frames_bq_ml, nuc.decay_constant_per_s,
                            model=model, device="gpu" if ctx.backend.name == "gpu" else "cpu")
    vml = ctx.grid.voxel_volume_ml
    ctx.tia = Image(fit.tia * vml, ctx.grid, "time-integrated activity",
                    "Bq*s per voxel (decays)", {"model": _model_description(model)})
    ctx.tia_sigma = ctx.tia.with_data(fit.sigma * vml,
                                      quantity="standard uncertainty of the TIA")
    ctx.organ_fits = [] if ctx.labels is None else fit_organs(
        series.times_s, series.frames_bq_ml, ctx.labels, nuc.decay_constant_per_s)
    ctx.advance(1, 1)


# -- kernel -------------------------------------------------------------------------------

def stage_kernel(ctx: PipelineContext) -> None:
    study, nuc = ctx.study, ctx.nuclide
    # the user's DPK table when the study names one, else voxdose's Monte Carlo table
    pk = (read_dpk_csv(study.dpk, nuclide=nuc.name) if study.dpk is not None
          else load_point_kernel(nuc))
    # cached on disk by nuclide, spacing, medium, radius, kernel source and version
    r = ctx.options.kernel_radius_mm
    radius = kernel_radius_for(pk, ctx.grid) if r is None else r
    ctx.point_kernel = pk
    ctx.voxel_kernel = voxel_kernel_cached(pk, ctx.grid.spacing_mm, radius_mm=radius)
    ctx.advance(1, 1)


# -- dose ---------------------------------------------------------------------------------

def stage_dose(ctx: PipelineContext) -> None:
    nuc, grid, mode, backend = ctx.nuclide, ctx.grid, ctx.options.density_mode, ctx.backend
    rho = ctx.density = None if mode == "none" else density_from_ct(ctx.ct_ref, grid)
    ctx.engine = make_engine(nuc, grid.spacing_mm, method="kernel", density_mode=mode,
                             density=rho, kernel=ctx.voxel_kernel, precision="float64")
    dose = ctx.engine.dose(ctx.tia, backend, rho)
    ctx.dose_kernel = dose.with_data(to_numpy(dose.data))
    ctx.advance(1, 2)
    dose = make_engine(nuc, grid.spacing_mm, method="ldm", density_mode=mode,
                       density=rho).dose(ctx.tia, backend, rho)
    ctx.dose_ldm = dose.with_data(to_numpy(dose.data))
    ctx.advance(2, 2)


# -- analysis (needs structures) ----------------------------------------------------------

def stage_analysis(ctx: PipelineContext) -> None:
    study, nuc, labels, rho = ctx.study, ctx.nuclide, ctx.labels, ctx.density
    ctx.dvhs = {"kernel": compute_dvhs(ctx.dose_kernel, labels, rho),
                "ldm": compute_dvhs(ctx.dose_ldm, labels, rho)}
    ctx.advance(1)
    ctx.decisions = decide(ctx.tia, ctx.dose_kernel, labels, ctx.dvhs["kernel"], ctx.engine,
                           ctx.point_kernel, ctx.organ_fits, study.administered_activity_mbq,
                           nuc.half_life_h, study.sex, study.plan_limits_gy,
                           study.plan_after_h, rho,
                           read_s_table(study.s_table) if study.s_table else None)
    ctx.advance(2)
    other = ctx.other_nuclide
    if other:
        r = ctx.options.kernel_radius_mm
        tia_other = swap_nuclide_tia(ctx.tia, ctx.fit.lambda_eff_per_s, nuc, other)
        ctx.comparison = (compare_nuclides(ctx.tia, [nuc.name], labels, kernel_radius_mm=r) +
                          compare_nuclides(tia_other, [other], labels, kernel_radius_mm=r))
        ctx.advance(3)


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
    ref_tp = ctx.study.timepoints[ctx.study.reference_index]
    w.rtdose(f"dose_{tag}_kernel_rtdose.dcm", ctx.dose_kernel,
             reference=ref_tp.ct if ref_tp.ct_dicom is not None else None)


def _write_analysis(ctx: PipelineContext) -> None:
    w, dvhs, dec = ctx.writer, ctx.dvhs, ctx.decisions
    if dvhs:
        w.text("dvh.csv", dvh_csv(dvhs["kernel"]))
        w.json("dvh.json", dvh_json(dvhs["kernel"]))
        w.text("dvh_ldm.csv", dvh_csv(dvhs["ldm"]))
        w.figure("dvh.png", plot_dvhs, dvhs["kernel"],
                 f"{ctx.study.name}: {ctx.nuclide.name} cumulative DVH (kernel convolution)")
    if ctx.organ_fits:
        w.text("organ_tia.csv", organ_table_csv(ctx.organ_fits))
        w.figure("tac", plot_tacs, ctx.organ_fits)
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
                sidecar={"nuclide": r.nuclide, "tia": "swapped physical decay "
                         f"from the {nuc.name} fit (biological kinetics kept)"})
        w.text(f"dvh_{t2}.csv", dvh_csv(r.dvhs))
    w.figure("dvh_compare.png", plot_dvh_overlay, comparison)
    w.figure("dpk.png", plot_dpks, [r.nuclide for r in comparison])
    w.json("compare.json", {
        "assumption": f"{ctx.other_nuclide} dosed with the biological kinetics fitted for "
                      f"{nuc.name} and its own physical decay (mono-exponential swap "
                      "per voxel, same administered activity)",
        "nuclides": [r.to_dict() for r in comparison]})


def _display_centre(ctx: PipelineContext):
    """Voxel (z, y, x) the figures are cut through: the kidneys' centre, else peak dose."""
    centre = np.unravel_index(int(np.argmax(ctx.dose_kernel.data)), ctx.grid.shape)
    if ctx.labels is not None:
        lab = ctx.labels.data
        kid = [v for v, n in ctx.labels.names.items() if "kidney" in n]
        if kid and np.any(np.isin(lab, kid)):
            centre = [int(round(c)) for c in np.argwhere(np.isin(lab, kid)).mean(axis=0)]
    return centre


def _write_figures(ctx: PipelineContext) -> None:
    w, study, grid, ct_ref = ctx.writer, ctx.study, ctx.grid, ctx.ct_ref
    lab = None if ctx.labels is None else ctx.labels.data
    centre = _display_centre(ctx)
    w.figure("dose_slice.png", plot_dose_slices, np.asarray(ctx.dose_kernel.data),
             grid.spacing_mm, lab, centre,
             f"{study.name}: {ctx.nuclide.name} absorbed dose (Gy)",
             ct_hu=None if ct_ref is None else ct_ref.data, affine=grid.affine)
    for i, (tp, reg) in enumerate(zip(study.timepoints, ctx.registrations)):
        # reference point -> this time point's point
        w.transform(f"registration/tp{i}_{tp.time_h:g}h_{reg.kind}.tfm", reg)
    if ct_ref is not None:
        w.figure("registration.png", plot_registration_check, ct_ref.data, ctx.ct_last.data,
                 grid.spacing_mm, centre,
                 "reference CT vs registered CT of the last time point")


def stage_write(ctx: PipelineContext) -> None:
    """Every result file except provenance.json and report.html (see finish_write)."""
    _write_maps(ctx)
    _write_analysis(ctx)
    _write_comparison(ctx)
    _write_figures(ctx)


def finish_write(ctx: PipelineContext) -> None:
    """provenance.json (with the timings, and the writer's list of outputs) and report.html."""
    ctx.provenance = ctx.writer.finish(build_provenance(ctx))
    ctx.advance(1, 1)


STAGES = (
    Stage("validate", "validate study", stage_validate),
    Stage("register_resample", "register + resample", stage_register_resample,
          steps=lambda c: len(c.study.timepoints)),
    Stage("tia_fit", "fit time-activity curves", stage_fit),
    Stage("kernel", lambda c: f"{c.nuclide.name} voxel kernel", stage_kernel),
    Stage("dose", lambda c: f"dose ({c.backend.name})", stage_dose, steps=2),
    Stage("analysis", "DVH, MIRD check, marrow, plan", stage_analysis,
          steps=lambda c: 3 if c.other_nuclide else 2, when=lambda c: c.labels is not None),
)
"""The computing stages, in order (nothing written)."""

WRITE_STAGE = Stage("write", "write results", stage_write, finish=finish_write)
"""The last stage, run with ``ctx.writer`` on the staged results folder."""
