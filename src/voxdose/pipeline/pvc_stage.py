"""The partial-volume correction inside ``voxdose run`` (``[pvc] method``; docs/pvc.md).

Where it acts: on the **TIA map, once, after the per-voxel fit**, not on every frame before
the fits. Measured on the demo study (2.4 mm CT, 4.8 mm SPECT; docs/validation.md) with RBV:
both orders give the same structure means within 0.5 % for every organ and the L2-L4 marrow
(kidneys -1.6 % vs -1.4 % against the true TIA on the CT grid), and the same voxel noise
within the organs (1.5 % vs 1.4 %); lesions differ by up to 3 % either way. Correcting the
TIA costs one correction (0.4 s CPU) instead of five plus a voxel fit on the label grid,
which has 8x the voxels (18 s CPU). ``tests/test_pvc_pipeline.py`` repeats the comparison
on the small study, against the truth.

What :func:`correct_tia` does, after the fit (SPECT grid):

1. the **uncorrected results**, kept beside the corrected ones: the kernel and dose stages
   and the kernel DVHs and decisions on a copy of the context, on the SPECT grid (no
   nuclide comparison, sigma maps or DVH uncertainty; ``ctx.nopvc``, written as ``*_nopvc*``
   files);
2. the correction's regions from the structures on their own grid (the reference CT's, where
   the labels or the RTSTRUCT live) with the body from that CT (> -500 HU, holes filled per
   axial slice: lungs and bowel gas inside the body) as the background region;
3. the TIA concentration map (Bq s/mL) corrected: gtm, rbv and iy give it on the label grid;
   rc rescales it on the SPECT grid, which is then interpolated (trilinear) onto the label
   grid, so every structure statistic is evaluated on the **label grid**;
4. the context's products replaced by their label-grid versions: ``tia`` (Bq s per label
   voxel), ``tia_sigma`` (the fit's sigma interpolated and scaled by the correction's voxel
   factor corrected / interpolated TIA; the correction's own uncertainty, from the FWHM
   and the registration, is not in it), ``fit`` (the per-voxel fit maps as nearest-neighbour
   copies, ``tia``/``sigma`` the corrected concentrations), ``labels`` (the label map as
   given: whole voxels), ``ct_ref`` (the reference CT) and ``organ_fits`` (each structure's
   fitted curve scaled by its correction factor, corrected / uncorrected TIA; its kinetics
   are those fitted to the uncorrected curve).

The kernel, dose and analysis stages then run on the label grid: their results (dose maps,
RT Dose, DVHs, MIRD check, marrow, plan) are the primary, corrected ones. The nuclide
comparison uses the corrected TIA too, averaged back onto the SPECT grid
(:func:`comparison_inputs`: it is a relative comparison, and 28 convolutions on the label
grid would cost the demo 28 s CPU instead of 3.5 s); compare.json says so.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import numpy as np

from ..core.backend import to_numpy
from ..core.grid import Image, LabelMap
from .context import PipelineContext

#: CT numbers above this are the body (the correction's background region), HU.
BODY_HU = -500.0


def _no_progress(done=None, total=None) -> None:
    return None


def uncorrected_results(ctx: PipelineContext, stages) -> PipelineContext:
    """The kernel, dose and analysis ``stages`` on a shallow copy of ``ctx`` (the SPECT-grid
    TIA; no nuclide comparison, no sigma maps: none of them is written for the uncorrected
    results): the uncorrected results, ``ctx`` itself unchanged."""
    ref = copy.copy(ctx)
    ref.other_nuclide, ref.comparison, ref.advance = None, [], _no_progress
    ref.tia_sigma = None
    for st in stages:
        st(ref)
    return ref


def body_mask(ct: Image | None, grid) -> np.ndarray | None:
    """The body on ``grid`` from the reference CT (> :data:`BODY_HU`, holes filled slice by
    slice), or None without a CT on that grid."""
    from scipy import ndimage

    if ct is None or not ct.grid.same_as(grid, tol_mm=1e-3):
        return None
    body = np.asarray(ct.data) > BODY_HU
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def nearest_on(data: np.ndarray, source, target) -> np.ndarray:
    """``data`` (on ``source``) copied onto ``target`` by nearest neighbour, dtype kept."""
    from ..imaging.registration import identity_registration, resample

    import SimpleITK as sitk

    host = to_numpy(data)  # a map on the device comes back (SimpleITK resamples on the host)
    img = Image(host.astype(np.float64), source, "fit map", "")
    out = resample(img, target, identity_registration(), sitk.sitkNearestNeighbor)
    return np.asarray(out.data).astype(host.dtype)


def _label_grid_fit(fit, tia_c, sigma_c, source, target):
    """The per-voxel fit's maps on the label grid (nearest neighbour), with the corrected
    TIA and sigma concentrations (Bq s/mL)."""
    near = {k: nearest_on(to_numpy(getattr(fit, k)), source, target)
            for k in ("lambda_eff_per_s", "model", "status", "aicc", "rss", "r2")}
    return replace(fit, tia=tia_c, sigma=sigma_c, params=None, **near,
                   settings={**fit.settings, "maps": "fitted on the SPECT grid; "
                             "nearest-neighbour copies on the label grid (partial-volume "
                             "correction)"})


def _corrected_maps(ctx: PipelineContext, setup, res, label_grid):
    """(TIA, sigma) concentrations (Bq s/mL) on the label grid (module docstring, 3-4)."""
    from ..pvc.correct import LABEL_GRID, rc_voxel_scale
    from ..pvc.rbv import upsample_linear

    spect = ctx.grid
    tia, sigma = to_numpy(ctx.fit.tia), to_numpy(ctx.fit.sigma)  # host: the fit's device
    if res.grid_name == LABEL_GRID:
        tia_c = np.asarray(res.image, dtype=np.float32)
        y_up = upsample_linear(tia, spect, label_grid)
        floor = 1e-9 * float(y_up.max(initial=0.0))
        factor = np.where(y_up > floor, tia_c / np.where(y_up > floor, y_up, 1), 0)
        return tia_c, upsample_linear(sigma, spect, label_grid) * factor
    scale = rc_voxel_scale(setup) if setup.method == "rc" else 1.0
    return (upsample_linear(res.image, spect, label_grid),
            upsample_linear(sigma * scale, spect, label_grid))


def _scaled_organ_fit(of, r: float):
    """An organ fit with its activity, TIA, sigma and amplitudes multiplied by ``r``."""
    fits = {}
    for m, f in of.fits.items():
        params = {k: (v * r if k.startswith("A") else v) for k, v in f["params"].items()}
        fits[m] = {**f, "tia_bq_s": f["tia_bq_s"] * r, "sigma_bq_s": f["sigma_bq_s"] * r,
                   "params": params}
    return replace(of, activity_bq=np.asarray(of.activity_bq) * r, fits=fits)


def _organ_factors(res, labels: LabelMap, tia_c) -> dict[str, float]:
    """Per structure: mean corrected TIA over its label voxels / its observed mean (the
    occupancy-weighted mean of the uncorrected TIA map); 1 where either is unknown."""
    observed = {r.name: r.observed_mean_bq_ml for r in res.rows}
    lab = np.asarray(labels.data).ravel()
    n = int(lab.max(initial=0)) + 1
    sums = np.bincount(lab, weights=np.asarray(tia_c, dtype=np.float64).ravel(), minlength=n)
    counts = np.bincount(lab, minlength=n)
    out = {}
    for value, name in labels.names.items():
        obs = observed.get(name, float("nan"))
        ok = value < n and counts[value] > 0 and np.isfinite(obs) and obs > 0
        out[name] = float(sums[value] / counts[value] / obs) if ok else 1.0
    return out


def _setup(ctx: PipelineContext):
    """(PvcSetup, label map on its grid, reference CT or None)."""
    from ..pvc.correct import prepare
    from ..pvc.rc import read_rc_table
    from ..study.images import read_study_labels, read_timepoint_ct

    study = ctx.study
    lab = read_study_labels(study)
    ct = read_timepoint_ct(study.timepoints[study.reference_index]) if study.has_ct else None
    table = read_rc_table(study.pvc_rc_table) if study.pvc_method == "rc" else None
    setup = prepare(lab.data, lab.grid, lab.names, ctx.grid, study.pvc_method,
                    fwhm_mm=study.resolution_fwhm_mm, rc_table=table,
                    body_mask=body_mask(ct, lab.grid), backend=ctx.backend,
                    fwhm_where="[spect] resolution_fwhm_mm")
    return setup, lab, ct


def correct_tia(ctx: PipelineContext, uncorrected_stages) -> None:
    """The pipeline's partial-volume correction stage (module docstring)."""
    from ..imaging.registration import identity_registration, resample
    from ..pvc.correct import correct

    t0 = time.perf_counter()
    ctx.nopvc = uncorrected_results(ctx, uncorrected_stages)
    t1 = time.perf_counter()
    ctx.advance(1, 3)
    setup, lab, ct = _setup(ctx)
    ctx.advance(2, 3)
    study = ctx.study
    res = correct(ctx.fit.tia, setup, frame="the TIA map",
                  labels=str(study.labels or getattr(study.rtstruct, "path", "the structures")))
    grid = lab.grid
    tia_c, sigma_c = _corrected_maps(ctx, setup, res, grid)
    labels = LabelMap(np.asarray(lab.data), grid, dict(lab.names))
    factors = _organ_factors(res, labels, tia_c)
    vml = grid.voxel_volume_ml
    spect_grid = ctx.grid
    meta = {**ctx.tia.meta, "pvc": f"{study.pvc_method} partial-volume corrected on the label "
            "grid (docs/pvc.md)"}
    ctx.fit = _label_grid_fit(ctx.fit, tia_c, sigma_c, spect_grid, grid)
    ctx.tia = Image(tia_c * vml, grid, ctx.tia.quantity, ctx.tia.unit, meta)
    ctx.tia_sigma = ctx.tia.with_data(sigma_c * vml, quantity=ctx.tia_sigma.quantity)
    ctx.labels = labels
    ctx.organ_fits = [_scaled_organ_fit(of, factors.get(of.name, 1.0))
                      for of in ctx.organ_fits]
    if ct is not None:
        ctx.ct_ref = ct if ct.grid.same_as(grid, tol_mm=1e-3) else resample(
            ct, grid, identity_registration(), default=-1000.0)
    ctx.series.info.setdefault("warnings", []).extend(
        f"partial-volume correction: {w}" for w in res.warnings)
    ctx.pvc = _report(ctx, res, setup, factors, {
        "uncorrected_results": t1 - t0, "prepare": setup.build_s,
        "correct": time.perf_counter() - t1 - setup.build_s})
    ctx.advance(3, 3)


def _report(ctx: PipelineContext, res, setup, factors: dict, timings: dict) -> dict:
    """pvc.json's content before the doses are known (:func:`add_dose_summary` adds them)."""
    study = ctx.study
    rep = res.to_dict()
    rep.pop("timings_s", None)
    return {"method": study.pvc_method, "applied_to": "the TIA map, once, after the "
            "per-voxel fit (docs/pvc.md: structure means within ~1 % of correcting every "
            "frame, at 1/50 of the cost)",
            "fwhm_mm_xyz": rep.pop("fwhm_mm_xyz"), "psf": "stationary Gaussian",
            "rc_table": None if study.pvc_rc_table is None else str(study.pvc_rc_table),
            "grid": "label grid (the structures' own, " + ctx.grid.describe() + ")",
            "correction_grid": rep.pop("grid"), "spect_grid": setup.spect_grid.describe(),
            "body_mask": "reference CT > -500 HU, holes filled per axial slice"
            if setup.regions.body_given else None,
            "complete": rep.pop("complete"), "missing_structures": rep.pop("missing_structures"),
            "units": "region columns *_bq_ml: TIA concentration, Bq*s/mL; *_activity_bq: "
                     "TIA, Bq*s",
            "organ_fit_factors": factors, **rep, "timings_s": timings}


def add_dose_summary(ctx: PipelineContext) -> dict:
    """pvc.json: the report with the mean doses and decisions with and without correction."""
    def means(dvhs):
        return {h.name: h.mean_gy for h in dvhs if h.n_voxels}

    def marrow(dec):
        return None if dec is None or dec.marrow is None else dec.marrow.total_dose_gy

    def plan(dec):
        return None if dec is None or dec.plan is None else dec.plan.max_activity_gbq

    ref = ctx.nopvc
    after, before = means(ctx.dvhs.get("kernel", [])), means(ref.dvhs.get("kernel", []))
    ctx.pvc["mean_dose_gy"] = {n: {"nopvc": before.get(n), "pvc": d} for n, d in after.items()}
    ctx.pvc["marrow_gy"] = {"nopvc": marrow(ref.decisions), "pvc": marrow(ctx.decisions)}
    ctx.pvc["plan_max_activity_gbq"] = {"nopvc": plan(ref.decisions), "pvc": plan(ctx.decisions)}
    return ctx.pvc


def comparison_inputs(ctx: PipelineContext):
    """(TIA image, lambda_eff map, labels) of the nuclide comparison. With a correction: the
    corrected TIA averaged back onto the SPECT grid (activity kept), the fit's lambda_eff and
    the SPECT-grid labels with their occupancy: the comparison (cross-fire per structure,
    shells: 2 x 14 convolutions) is a relative one, and on the 8x finer label grid it would
    cost 28 s CPU of the demo's run instead of 3.5 s. Else the run's own."""
    if ctx.nopvc is None:
        return ctx.tia, ctx.fit.lambda_eff_per_s, ctx.labels
    from ..imaging.occupancy import box_average

    ref, lab = ctx.nopvc, ctx.tia.grid
    conc = box_average(np.asarray(ctx.tia.data, np.float64) / lab.voxel_volume_ml, lab,
                       ref.grid)
    tia = ref.tia.with_data(ctx.backend.asarray(conc * ref.grid.voxel_volume_ml),
                            meta={**ctx.tia.meta, "grid": "SPECT grid (box average of the "
                                  "corrected TIA)"})
    return tia, ref.fit.lambda_eff_per_s, ref.labels


def comparison_note(ctx: PipelineContext) -> dict:
    """compare.json's record of the grid its TIA was on (with a correction)."""
    if ctx.nopvc is None:
        return {}
    return {"grid": "SPECT grid: the partial-volume corrected TIA averaged back onto it "
                    f"({ctx.nopvc.grid.describe()}); dvh.csv is on the label grid",
            "pvc": ctx.study.pvc_method}


def write_pvc(ctx: PipelineContext) -> None:
    """The uncorrected results beside the corrected ones, and pvc.json."""
    from .. import __version__
    from ..analysis.dvh import dvh_csv

    if ctx.nopvc is None:
        return
    w, ref, tag = ctx.writer, ctx.nopvc, ctx.tag
    note = {"nuclide": ctx.nuclide.name, "voxdose_version": __version__,
            "pvc": "without partial-volume correction (SPECT grid), kept beside the corrected "
                   "results"}
    w.image("tia_nopvc_bq_s.nii.gz", ref.tia, dtype=np.float32, sidecar=note)
    w.image(f"dose_{tag}_kernel_nopvc_gy.nii.gz", ref.dose_kernel, sidecar=note)
    if ref.dvhs:
        w.text("dvh_nopvc.csv", dvh_csv(ref.dvhs["kernel"]))
    w.json("pvc.json", add_dose_summary(ctx))
