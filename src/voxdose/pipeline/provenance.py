"""provenance.json's content (without ``outputs``, which the results writer adds)."""

from __future__ import annotations

import platform
import time

import numpy as np

from .. import __version__
from ..analysis.dvh import empty_structure_warnings
from ..kernels.cache import planned_voxel_warning
from ..io.atomic import sha256_file
from ..kinetics.models import MODEL_NAMES, STATUS
from ..study.load import study_inputs


def versions() -> dict:
    import numba
    import scipy
    import SimpleITK

    return {"voxdose": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
            "SimpleITK": SimpleITK.Version_VersionString()}


def _counts(codes: np.ndarray, names: dict) -> dict:
    return {names[int(k)]: int(c) for k, c in zip(*np.unique(codes, return_counts=True))}


def _study_record(study) -> dict:
    nuc = study.nuclide
    return {"path": str(study.path), "name": study.name, "nuclide": nuc.name,
            "half_life_s": nuc.half_life_s,
            "administered_activity_mbq": study.administered_activity_mbq,
            "times_h": study.times_h, "reference_timepoint": study.reference_index,
            "spect_to_bq_ml": study.spect_to_bq_ml,
            "decay_corrected_input": study.decay_corrected, "sex": study.sex,
            "plan_limits_gy": study.plan_limits_gy,
            "plan_after_h": study.plan_after_h}


def _names_file(study):
    """The structure-names JSON the study file names ([structures] names), or None."""
    from ..io.toml_file import read_toml
    from pathlib import Path

    try:
        value = read_toml(study.path).get("structures", {}).get("names")
    except (OSError, TypeError, ValueError):  # no study file (a Study built in memory)
        return None
    p = (Path(study.path).parent / value).resolve() if isinstance(value, str) else None
    return p if p is not None and p.is_file() else None


def all_inputs(study) -> list:
    """Every file the run read: the study's images (:func:`study_inputs`), its DPK table,
    S-value table and structure-names JSON."""
    extra = [getattr(study, "dpk", None), getattr(study, "s_table", None), _names_file(study)]
    files = list(study_inputs(study))
    return files + [p for p in extra if p is not None and p not in files]


def build_provenance(ctx) -> dict:
    """Everything needed to reproduce and audit a run (a PipelineContext after its stages)."""
    study, tia, fit = ctx.study, ctx.tia, ctx.fit
    return {
        "voxdose": versions(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": ctx.backend.name,
        "study": _study_record(study),
        "inputs_sha256": {str(p): sha256_file(p) for p in all_inputs(study)},
        "grid": ctx.grid.to_dict(),
        "assembly": ctx.series.info,
        "tia": {"model": tia.meta["model"], "settings": fit.settings,
                "status_counts": _counts(fit.status, STATUS),
                "model_counts": _counts(fit.model, MODEL_NAMES),
                "total_tia_bq_s": float(np.sum(tia.data))},
        "organ_fits": {of.name: {"chosen": of.best, "volume_ml": of.volume_ml,
                                 "activity_bq": of.activity_bq.tolist(), "fits": of.fits}
                       for of in ctx.organ_fits},
        "dose": {"kernel": ctx.dose_kernel.meta, "ldm": ctx.dose_ldm.meta,
                 "density_mode": ctx.options.density_mode,
                 "kernel_extent": ctx.kernel_extent,
                 "neglected_energy_fraction": {
                     "kernel": ctx.dose_kernel.meta.get("neglected_energy_fraction"),
                     "ldm": ctx.dose_ldm.meta.get("neglected_energy_fraction")},
                 "point_kernel": _point_kernel_record(study, ctx.point_kernel),
                 "sigma": None if ctx.dose_kernel_sigma is None else
                 {"kernel": ctx.dose_kernel_sigma.meta,
                  "ldm": getattr(ctx.dose_ldm_sigma, "meta", None)}},
        # partial-volume correction: method, FWHM, grid, completeness, region table (pvc.json)
        "pvc": getattr(ctx, "pvc", None) or {"method": "none"},
        "decisions_notes": [] if ctx.decisions is None else ctx.decisions.notes,
        "skipped": skipped(study, ctx.labels, ctx.decisions, ctx.comparison),
        "warnings": [*ctx.series.info.get("warnings", []),
                     *empty_structure_warnings(ctx.dvhs.get("kernel", [])),
                     # a built kernel table that missed its uncertainty target, or one
                     # used below the voxel size it was planned for
                     *(getattr(ctx.point_kernel, "provenance", dict)().get("warnings", [])),
                     *filter(None, [planned_voxel_warning(ctx.point_kernel,
                                                          ctx.grid.spacing_mm)])],
        "timings_s": ctx.timings,
    }


def _point_kernel_record(study, pk) -> dict:
    """Which point kernel the run used, and what the analysis takes from it."""
    return {"source": "the study's DPK table" if study.dpk is not None else
            "voxdose's shipped table", "path": None if study.dpk is None else str(study.dpk),
            "electron_range_mm": getattr(pk, "max_electron_range_mm", None),
            "analysis": "kernel dose, comparison and r90 from this kernel; the MIRD check "
                        "and the marrow self-dose split electrons/photons with the analytic "
                        "model of the nuclide (docs/defaults.md)"}


def skipped(study, labels, decisions, comparison) -> dict:
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
