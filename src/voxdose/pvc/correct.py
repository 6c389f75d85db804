"""One entry for every method: :func:`prepare` once per study, :func:`correct` per frame.

Methods (``[pvc] method``; equations in the modules named and in docs/pvc.md)

* ``none``: the frame unchanged (the region table still reports the observed means);
* ``rc``: recovery by structure volume from a sphere-phantom table (:mod:`voxdose.pvc.rc`),
  a VOI-level rescaling on the **SPECT grid**;
* ``gtm``: region means from the geometric transfer matrix (:mod:`voxdose.pvc.gtm`); the
  image is the piecewise-constant ``sum_j c_j 1_j`` on the **label grid**;
* ``rbv``: GTM means, then the voxel-wise RBV ratio on the **label grid**
  (:mod:`voxdose.pvc.rbv`);
* ``iy``: iterative-Yang means, then the same ratio on the **label grid**.

On the label grid, voxels beyond the SPECT field of view are 0 (nothing was measured
there). Every result says which grid it is on, reports the region table (volume, observed
mean, corrected mean, the mean of the output image over the region evaluated on the output
grid, recovery), the GTM condition number, the activity totals and whether the correction
is complete (every named structure present in the label map).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.backend import cpu_backend, to_numpy
from ..core.errors import InputError
from ..core.grid import Grid
from .gtm import GtmModel, build_gtm, check_coverage
from .psf import GaussianPsf
from .rbv import IY_ITERATIONS, iterative_yang_means, rbv_correct, upsample_linear
from .rc import RcTable, voxel_scale
from .regions import STRUCTURE, RegionSet, build_regions, region_weights

METHODS = ("none", "rc", "gtm", "rbv", "iy")
NEEDS_PSF = ("gtm", "rbv", "iy")
LABEL_GRID, SPECT_GRID = "label (CT) grid", "SPECT grid"
#: A GTM condition number above this is reported (noise amplified more than ~this much).
COND_WARN = 100.0
#: Iterative Yang: a last relative change above this is reported as not converged.
IY_CONVERGED = 1e-3
#: A fraction of the frame's activity outside the label grid above this is reported (below
#: it: rounding of the voxel overlaps, ~1e-8).
UNCOVERED_WARN = 1e-4


@dataclass(frozen=True, eq=False)
class PvcSetup:
    """What every frame of a study shares: regions, occupancies, the GTM (PSF methods)."""

    method: str
    regions: RegionSet
    spect_grid: Grid
    weights: np.ndarray
    covered: np.ndarray
    psf: GaussianPsf | None = None
    gtm: GtmModel | None = None
    rc_table: RcTable | None = None
    n_iter: int = IY_ITERATIONS
    backend: object = None
    fov_mask: object = None           # label-grid voxels inside the SPECT field (PSF methods)
    build_s: float = 0.0


def check_method(method: str, fwhm_mm, rc_table, where: str = "--method") -> str:
    """The method name, checked against what it needs (FWHM, RC table). Raises InputError."""
    m = str(method).strip().lower()
    if m not in METHODS:
        raise InputError(f"{where} {method!r}: choose one of {', '.join(METHODS)}")
    if m in NEEDS_PSF and fwhm_mm is None:
        raise InputError(f"{where} {m} needs the SPECT resolution: give the FWHM in mm "
                         "(--fwhm-mm, or [spect] resolution_fwhm_mm); see docs/pvc.md")
    if m == "rc" and rc_table is None:
        raise InputError(f"{where} rc needs a recovery table (--rc-table, or [pvc] rc_table: "
                         "CSV volume_ml,recovery from a sphere phantom)")
    return m


def prepare(labels, label_grid: Grid, names: dict[int, str], spect_grid: Grid,
            method: str, *, fwhm_mm=None, rc_table: RcTable | None = None,
            body_mask=None, n_iter: int = IY_ITERATIONS, backend=None,
            precision: str | None = None, fwhm_where: str = "--fwhm-mm") -> PvcSetup:
    """Check the settings and build what every frame needs (the GTM for gtm/rbv/iy).

    ``labels`` (integer, on ``label_grid``, e.g. the CT grid) with ``names`` (value ->
    structure name); ``spect_grid``: the frames' grid; ``fwhm_mm``: one number or (x, y, z)
    mm; ``body_mask``: optional body on ``label_grid`` (background region); ``backend``:
    where the label-grid arrays live (default CPU); ``fwhm_where``: the option or study key
    named in a FWHM error (e.g. "[spect] resolution_fwhm_mm").
    """
    t0 = time.perf_counter()
    m = check_method(method, fwhm_mm, rc_table)
    if int(n_iter) < 1:
        raise InputError(f"iterations must be >= 1, got {n_iter}")
    psf = (GaussianPsf.from_value(fwhm_mm, spect_grid, fwhm_where) if fwhm_mm is not None
           else None)
    regions = build_regions(labels, label_grid, names, body_mask)
    be = backend or cpu_backend()
    gtm = fov = None
    if m in NEEDS_PSF:
        gtm = build_gtm(regions, spect_grid, psf, be, precision)
        weights, covered = gtm.weights, gtm.covered
        fov = upsample_linear(np.ones(spect_grid.shape, np.float32), spect_grid, label_grid,
                              be) > 0.5
    else:
        weights, covered = region_weights(regions, spect_grid)
    return PvcSetup(m, regions, spect_grid, weights, covered, psf, gtm, rc_table,
                    int(n_iter), be, fov, time.perf_counter() - t0)


@dataclass(frozen=True)
class RegionRow:
    """One region of the report. Concentrations Bq/mL, activities Bq, volumes mL."""

    name: str
    kind: str
    label: int | None
    volume_ml: float
    fraction_in_fov: float
    observed_mean_bq_ml: float
    corrected_mean_bq_ml: float
    output_mean_bq_ml: float       # the output image's mean over the region, on its grid
    recovery: float                # GTM_ii (gtm/rbv/iy) or RC(V) (rc); NaN otherwise
    observed_activity_bq: float
    corrected_activity_bq: float

    def to_dict(self) -> dict:
        return _finite_or_none(dict(self.__dict__))


@dataclass(frozen=True, eq=False)
class PvcResult:
    """A corrected frame: ``image`` (Bq/mL) on ``grid`` (``grid_name``) and its report."""

    method: str
    image: np.ndarray
    grid: Grid
    grid_name: str
    rows: tuple[RegionRow, ...]
    complete: bool
    missing: tuple[str, ...]
    totals_bq: dict
    condition_number: float | None = None
    fwhm_mm_xyz: tuple[float, float, float] | None = None
    iterations: int | None = None
    last_change: float | None = None
    warnings: tuple[str, ...] = ()
    timings_s: dict = field(default_factory=dict)

    def row(self, name: str) -> RegionRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def means(self) -> dict[str, float]:
        return {r.name: r.corrected_mean_bq_ml for r in self.rows}

    def to_dict(self) -> dict:
        """The report as JSON-ready values (non-finite numbers as None)."""
        return _finite_or_none({"method": self.method, "grid": self.grid_name,
                "grid_shape_zyx": list(self.grid.shape), "complete": self.complete,
                "missing_structures": list(self.missing),
                "fwhm_mm_xyz": None if self.fwhm_mm_xyz is None else list(self.fwhm_mm_xyz),
                "condition_number": self.condition_number, "iterations": self.iterations,
                "last_relative_change": self.last_change, "totals_bq": dict(self.totals_bq),
                "regions": [r.to_dict() for r in self.rows], "warnings": list(self.warnings),
                "timings_s": dict(self.timings_s)})


def _finite_or_none(v):
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _means_on_label_grid(setup: PvcSetup, image) -> np.ndarray:
    """Mean of ``image`` (label grid) over every region's voxels inside the SPECT field."""
    xp = setup.backend.xp
    idx = xp.asarray(setup.regions.index).ravel()
    inside = setup.fov_mask.ravel()
    n = setup.regions.n + 1
    s = to_numpy(xp.bincount(idx, weights=(image.ravel() * inside).astype(xp.float64),
                             minlength=n))[1:]
    c = to_numpy(xp.bincount(idx, weights=inside.astype(xp.float64), minlength=n))[1:]
    return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def _means_on_spect_grid(setup: PvcSetup, image) -> np.ndarray:
    from .gtm import _gram

    ws = setup.weights.reshape(setup.regions.n, -1).sum(axis=1, dtype=np.float64)
    s = _gram(setup.weights, np.asarray(image, dtype=np.float64)[None])[:, 0]
    return np.where(ws > 1e-3, s / np.maximum(ws, 1e-300), np.nan)


def _rows(setup: PvcSetup, observed, corrected, output_means, recovery) -> tuple:
    reg = setup.regions
    vols = reg.volumes_ml
    ws = setup.weights.reshape(reg.n, -1).sum(axis=1, dtype=np.float64)
    in_fov = ws * setup.spect_grid.voxel_volume_ml / np.maximum(vols, 1e-300)
    rows = []
    for j in range(reg.n):
        rows.append(RegionRow(reg.names[j], reg.kinds[j], reg.values[j], float(vols[j]),
                              float(in_fov[j]), float(observed[j]), float(corrected[j]),
                              float(output_means[j]), float(recovery[j]),
                              float(observed[j] * vols[j]), float(corrected[j] * vols[j])))
    return tuple(rows)


def _common_warnings(setup: PvcSetup, uncovered: float) -> list[str]:
    w = []
    if setup.regions.missing:
        w.append("correction incomplete: structures named but absent from the label map: "
                 + ", ".join(setup.regions.missing) + " (their activity is attributed to "
                 "the regions around them)")
    if uncovered > UNCOVERED_WARN:
        w.append(f"{100 * uncovered:.2g} % of the frame's activity lies outside the label "
                 "grid (no region takes it)")
    if setup.psf is not None and setup.psf.off_diagonal(setup.regions.grid) > 1e-3:
        w.append("anisotropic PSF on an oblique label grid: blurred separably along the "
                 "grid axes (off-axis correlation dropped)")
    return w


def correct(y, setup: PvcSetup, frame: str = "the SPECT frame",
            labels: str = "the label map") -> PvcResult:
    """Correct one frame ``y`` (Bq/mL on ``setup.spect_grid``) by ``setup.method``."""
    t0 = time.perf_counter()
    y = np.asarray(to_numpy(y), dtype=np.float64)
    if y.shape != setup.spect_grid.shape:
        raise InputError(f"{frame}: shape {y.shape} is not the SPECT grid "
                         f"{setup.spect_grid.shape} the correction was prepared for")
    uncovered = check_coverage(setup.covered, y, frame, labels)
    warnings = _common_warnings(setup, uncovered)
    image_total = float(y.sum()) * setup.spect_grid.voxel_volume_ml
    if setup.method in NEEDS_PSF:
        res = _correct_psf(y, setup, warnings)
    else:
        res = _correct_spect_grid(y, setup, warnings)
    res["totals_bq"] = {"image_total_bq": image_total, **res["totals_bq"]}
    res["timings_s"] = {"prepare": setup.build_s, "frame": time.perf_counter() - t0}
    return PvcResult(method=setup.method, complete=setup.regions.complete,
                     missing=setup.regions.missing, warnings=tuple(warnings),
                     fwhm_mm_xyz=None if setup.psf is None else setup.psf.fwhm_mm_xyz, **res)


def _correct_psf(y, setup: PvcSetup, warnings: list[str]) -> dict:
    gtm = setup.gtm
    sol = gtm.solve(y)
    observed = sol.observed_bq_ml
    iterations = change = None
    if setup.method == "iy":
        yang = iterative_yang_means(y, gtm, setup.n_iter)
        means, iterations, change = yang.means_bq_ml, yang.iterations, yang.last_change
        if change > IY_CONVERGED:
            warnings.append(f"iterative Yang: last relative change {change:.2g} after "
                            f"{iterations} iterations (not converged to {IY_CONVERGED:g})")
    else:
        means = sol.means_bq_ml
        if sol.constrained:
            warnings.append("GTM: the unconstrained solution had a negative region mean; "
                            "the non-negative least-squares solution is reported")
    be, xp = setup.backend, setup.backend.xp
    if setup.method == "gtm":
        from .rbv import piecewise_model

        img = piecewise_model(gtm, means, be) * setup.fov_mask
    else:
        img = rbv_correct(y, gtm, means, be)
        img = xp.where(setup.fov_mask, img, 0)
    out_means = _means_on_label_grid(setup, img)
    cond = gtm.condition_number
    if cond > COND_WARN:
        warnings.append(f"GTM condition number {cond:.3g}: noise is amplified strongly; "
                        "consider merging small neighbouring structures")
    none = ~gtm.active
    if none.any():
        warnings.append("no SPECT voxel in: " + ", ".join(
            n for n, o in zip(setup.regions.names, none) if o) + " (mean not estimated)")
    vox = setup.regions.grid.voxel_volume_ml
    totals = {"corrected_total_bq": float(xp.sum(img, dtype=xp.float64)) * vox,
              **gtm.totals_bq(means)}
    image = to_numpy(img)
    return {"image": image, "grid": setup.regions.grid, "grid_name": LABEL_GRID,
            "rows": _rows(setup, observed, means, out_means, gtm.recovery),
            "totals_bq": totals, "condition_number": cond, "iterations": iterations,
            "last_change": change}


def _correct_spect_grid(y, setup: PvcSetup, warnings: list[str]) -> dict:
    observed = _means_on_spect_grid(setup, y)
    reg = setup.regions
    recovery = np.full(reg.n, np.nan)
    corrected = observed.copy()
    image = y
    if setup.method == "rc":
        struct = np.array([k == STRUCTURE for k in reg.kinds])
        rc = setup.rc_table.recovery_at(reg.volumes_ml)
        recovery[struct] = rc[struct]
        corrected = np.where(struct, observed / np.where(struct, rc, 1.0), observed)
        out_of = [n for n, s, e in zip(reg.names, struct, setup.rc_table.extrapolated(
            reg.volumes_ml)) if s and e]
        if out_of:
            warnings.append("RC table range exceeded (nearest row's recovery used) for: "
                            + ", ".join(out_of))
        image = y * rc_voxel_scale(setup)
    out_means = _means_on_spect_grid(setup, image)
    totals = {"corrected_total_bq": float(image.sum()) * setup.spect_grid.voxel_volume_ml}
    return {"image": image, "grid": setup.spect_grid, "grid_name": SPECT_GRID,
            "rows": _rows(setup, observed, corrected, out_means, recovery),
            "totals_bq": totals}


def rc_voxel_scale(setup: PvcSetup) -> np.ndarray:
    """The RC method's VOI-level scale ``s(v)`` on the SPECT grid (:func:`voxdose.pvc.rc.
    voxel_scale`): multiply a SPECT-grid map (a frame, the TIA) by it."""
    if setup.rc_table is None:
        raise ValueError("rc_voxel_scale needs a setup prepared with an RC table")
    struct = np.array([k == STRUCTURE for k in setup.regions.kinds])
    rc = setup.rc_table.recovery_at(setup.regions.volumes_ml)
    return voxel_scale(setup.weights[struct], rc[struct])


def correct_frame(y, spect_grid: Grid, labels, label_grid: Grid, names: dict[int, str],
                  method: str, **kw) -> PvcResult:
    """:func:`prepare` + :func:`correct` for a single frame (keywords as :func:`prepare`)."""
    return correct(y, prepare(labels, label_grid, names, spect_grid, method, **kw))


def correct_series(frames, setup: PvcSetup) -> list[PvcResult]:
    """Every frame of a (t, z, y, x) series with one setup (the GTM built once)."""
    return [correct(f, setup, frame=f"frame {i}") for i, f in enumerate(frames)]
