"""One TIA job: activity-concentration frames (Bq/mL) -> TIA map (decays per voxel) and its
companion maps, as ``voxdose tia`` runs it.

:class:`TiaJob` holds every option (units in the field names); :func:`validate_job` checks
all of them before any image is read; :func:`run_tia_job` reads the frames, computes every
map in memory, then writes the whole set at once (:func:`write_outputs`).

Two methods:

* several frames: per-voxel fit (:func:`voxdose.kinetics.fit.fit_tia`), optionally
  integrated from ``after_h`` on (:func:`voxdose.kinetics.after.tia_after`);
* one frame (single time point, Hänscheid et al. 2018): a mono-exponential with the assumed
  effective half-life T_eff through the one sample a(t1), l = ln 2 / T_eff; integrated from
  t0 (``after_h``, default 0) to infinity: TIA = a(t1) e^(l t1) e^(-l t0) / l
  (:func:`voxdose.kinetics.fit.fit_single_time_point` times e^(-l t0)). Its model map
  holds model id 5 (``stp``) and its status map :data:`STP_STATUS` in every voxel.

Error messages name the command's options (``--times-h``, ...), since that is what a user
typed; they are :class:`~voxdose.core.errors.InputError` (one line: what, where, what to do).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .models import MODEL_IDS, MODEL_NAMES, STATUS

TIA_MODELS = ("auto", "trapz", "mono", "biexp", "biexp_sum", "triexp")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd")
#: status of every voxel of a single-time-point TIA (models.STATUS[5])
STP_STATUS = 5
STP_STATUS_TEXT = STATUS[STP_STATUS]


@dataclass(frozen=True)
class TiaJob:
    """Everything one TIA computation needs. Times in h after administration."""

    frame_paths: tuple[Path, ...]
    times_h: tuple[float, ...]
    nuclide: str
    out_path: Path
    model: str = "auto"
    weighting: str = "poisson"
    background_fraction: float = 1e-3
    tail: str = "physical"
    lift_bound: bool = False
    frame_noise_rel: float = 0.05
    device: str = "auto"
    sigma_out_path: Path | None = None
    model_out_path: Path | None = None
    status_out_path: Path | None = None
    after_h: float | None = None
    stp_half_life_h: float | None = None

    @property
    def single_time_point(self) -> bool:
        return len(self.frame_paths) == 1 or self.stp_half_life_h is not None

    def output_paths(self) -> dict[str, Path]:
        """Option name -> path of every requested output."""
        named = {"--out": self.out_path, "--sigma-out": self.sigma_out_path,
                 "--model-out": self.model_out_path, "--status-out": self.status_out_path}
        return {k: Path(v) for k, v in named.items() if v is not None}


@dataclass(frozen=True)
class TiaOutputs:
    """What :func:`run_tia_job` wrote and a summary for the user."""

    method: str                                  # 'fit' | 'stp'
    paths: tuple[Path, ...]                      # every image written (sidecars beside)
    total_decays: float                          # sum of the TIA map, Bq*s
    model_counts: dict[str, int] = field(default_factory=dict)  # voxels per model
    effective_half_life_h: float | None = None   # single time point only
    integrated_from_h: float | None = None
    warnings: tuple[str, ...] = ()               # unusual input, recorded in the sidecars


# --------------------------------------------------------------------------- validation
def _finite(name: str, value: float, *, minimum: float, strict: bool, unit: str = "") -> None:
    ok = value is not None and math.isfinite(value) and (
        value > minimum if strict else value >= minimum)
    if not ok:
        rel = ">" if strict else ">="
        raise InputError(f"{name} must be a finite number {rel} {minimum:g}{unit}, got {value}")


def _check_times(job: TiaJob) -> None:
    t_h, n = list(job.times_h), len(job.frame_paths)
    if n == 0:
        raise InputError("no frames given; give one activity-concentration image per time point")
    if len(t_h) != n:
        raise InputError(f"{n} frames but {len(t_h)} times in --times-h; give one "
                         "time (h) per frame")
    if not all(math.isfinite(t) for t in t_h):
        raise InputError(f"--times-h must be finite numbers (h), got {t_h}")
    if any(b <= a for a, b in itertools.pairwise(t_h)):
        raise InputError(f"--times-h must be strictly increasing, got {t_h}")
    if any(t <= 0 for t in t_h):
        raise InputError(f"--times-h must be after administration (> 0 h), got {t_h}")
    from .lm_core import MAX_T

    if n > MAX_T:
        raise InputError(f"{n} frames: at most {MAX_T} time points are supported; "
                         "drop some frames")


def _check_choices(job: TiaJob) -> None:
    from ..core.backend import DEVICES
    from .fit import TAILS, WEIGHTINGS

    for opt, value, choices in (("--model", job.model, TIA_MODELS),
                                ("--weighting", job.weighting, WEIGHTINGS),
                                ("--tail", job.tail, TAILS), ("--device", job.device, DEVICES)):
        if value not in choices:
            raise InputError(f"{opt} {value}: choose one of {', '.join(choices)}")
    _finite("--background-fraction", job.background_fraction, minimum=0.0, strict=False)
    if job.background_fraction >= 1:
        raise InputError(f"--background-fraction must be < 1 (a fraction of the series "
                         f"maximum), got {job.background_fraction}")
    _finite("--frame-noise", job.frame_noise_rel, minimum=0.0, strict=False)
    if job.after_h is not None:
        _finite("--after-h", job.after_h, minimum=0.0, strict=False, unit=" h")
    if not job.single_time_point:
        from .models import check_points_for_model

        check_points_for_model(job.model, len(job.times_h), "--times-h")


def _check_single_time_point(job: TiaJob, half_life_h: float, nuclide: str) -> None:
    t_eff = job.stp_half_life_h
    if len(job.frame_paths) != 1:
        raise InputError("--stp-half-life-h is the single-time-point method: give exactly one "
                         "frame, or drop the option to fit several frames")
    if t_eff is None or not (math.isfinite(t_eff) and t_eff > 0):
        raise InputError("one frame given: the single-time-point method needs "
                         "--stp-half-life-h (assumed effective half-life, h, > 0)")
    if t_eff > half_life_h * (1 + 1e-9):
        raise InputError(f"--stp-half-life-h {t_eff} h exceeds {nuclide}'s physical "
                         f"half-life ({half_life_h:.4g} h); an effective half-life cannot")
    if job.model != "auto":
        raise InputError(f"--model {job.model}: one frame is integrated with the "
                         "single-time-point method (--stp-half-life-h); drop --model or give "
                         "more frames")


def _check_distinct_frames(job: TiaJob) -> None:
    """One file per time point: the same frame given twice would stand for two
    acquisitions (a curve flat between them)."""
    seen: dict = {}
    for i, f in enumerate(job.frame_paths):
        key = os.path.realpath(f)
        if key in seen:
            raise InputError(f"{f}: given as frame {seen[key] + 1} and frame {i + 1}; each "
                             "time point needs its own frame")
        seen[key] = i


def _check_outputs(job: TiaJob) -> None:
    from ..io.sitk_adapter import sidecar_path

    seen: dict[Path, str] = {}
    inputs = {Path(os.path.abspath(q)) for p in job.frame_paths for q in (p, sidecar_path(p))}
    for opt, p in job.output_paths().items():
        if not str(p).endswith(IMAGE_SUFFIXES):
            raise InputError(f"{opt} {p}: use a .nii.gz, .nii, .mhd or .nrrd file name")
        keys = (Path(os.path.abspath(p)), Path(os.path.abspath(sidecar_path(p))))
        if any(k in inputs for k in keys):
            raise InputError(f"{opt} {p} would overwrite an input frame or its JSON sidecar; "
                             "write to another file")
        for key in keys:
            if key in seen:
                raise InputError(f"{opt} {p} and {seen[key]} would write the same file "
                                 f"({key.name}); give them different names")
            seen[key] = f"{opt} {p}"


def validate_job(job: TiaJob):
    """Check every option of ``job`` (nothing read, nothing written). Returns the nuclide."""
    from ..core.nuclide import load_nuclide

    nuc = load_nuclide(job.nuclide)
    _check_times(job)
    _check_choices(job)
    if job.single_time_point:
        _check_single_time_point(job, nuc.half_life_h, nuc.name)
    _check_distinct_frames(job)
    _check_outputs(job)
    return nuc


def check_frame_sidecars(job: TiaJob, nuc) -> tuple[list[float], list[str]]:
    """Each frame's JSON sidecar (when it has one) against the options, as ``voxdose run``
    sets a study file against its frames' sidecars (voxdose.study.sidecars): an acquisition
    time (``time_h``, BIDS ``ScanStart``) that differs from the frame's ``--times-h`` by
    more than 60 s, or a nuclide other than ``--nuclide``, is an error. A frame the sidecar
    says is decay-corrected is brought back to its activity at acquisition (the fit's
    input), as ``run`` does. Returns the factor per frame and a note per corrected frame;
    nothing but the sidecars is read."""
    from ..study.sidecars import SAME_TIME_S, decay_undo_factor, read_sidecar

    factors, notes = [], []
    for i, (f, t_h) in enumerate(zip(job.frame_paths, job.times_h)):
        car = read_sidecar(Path(f), f"frame {i + 1}", Path(f))
        if car is None:
            factors.append(1.0)
            continue
        if car.time_h is not None and abs(car.time_h - t_h) * 3600.0 > SAME_TIME_S:
            raise InputError(f"{f}: --times-h gives it {t_h:g} h, but {car.path} says it was "
                             f"acquired at {car.time_h:g} h after the administration; give "
                             "the frames' own times in their order (or fix the sidecar)")
        if car.nuclide is not None and car.nuclide != nuc.name:
            raise InputError(f"{f}: --nuclide {nuc.name}, but {car.path} says the frame is "
                             f"of {car.nuclide}; give the frames' nuclide (or fix the "
                             "sidecar)")
        k = 1.0 if car.decay is None else decay_undo_factor(car.decay, t_h,
                                                            nuc.decay_constant_per_s)
        factors.append(k)
        if k != 1.0:
            notes.append(f"{f}: {car.decay.describe()} ({car.path}); multiplied by {k:.6g} "
                         f"to its activity at acquisition ({t_h:g} h)")
    return factors, notes


# --------------------------------------------------------------------------- computing
def _read_frames(job: TiaJob, nuc):
    from ..io.sitk_adapter import BQ_ML_UNITS, check_sidecar_unit, read_image

    images = [read_image(f, "activity concentration", "Bq/mL") for f in job.frame_paths]
    for f, img in zip(job.frame_paths, images):  # a kBq/mL frame would read 1000x low
        check_sidecar_unit(img, f, BQ_ML_UNITS, "voxdose tia reads activity concentration "
                           "in Bq/mL: give the activity frames (kBq/mL or MBq/mL converted "
                           "to Bq/mL)")
    # then what else the sidecars say (time, nuclide, decay correction), before any work
    factors, decay_notes = check_frame_sidecars(job, nuc)
    for k, factor in enumerate(factors):
        if factor != 1.0:  # a decay-corrected frame, back to its activity at acquisition
            images[k] = images[k].with_data(np.asarray(images[k].data, np.float64) * factor)
    ref, first = images[0], job.frame_paths[0]
    for f, img in zip(job.frame_paths, images):
        if not img.grid.same_as(ref.grid, tol_mm=1e-3):
            raise InputError(f"{f}: grid ({img.grid.describe()}) differs from {first}'s "
                             f"({ref.grid.describe()}); resample the frames onto one grid")
    # one policy with `voxdose run` (voxdose.imaging.checks): NaN refused, small negative
    # reconstruction noise clipped and recorded, substantial negative activity refused
    from ..imaging.checks import check_finite, check_not_blank, clip_negative

    warnings = list(decay_notes)
    for k, (f, img) in enumerate(zip(job.frame_paths, images)):
        check_finite(img.data, f)
        clipped, neg = clip_negative(img.data, f)  # a negated frame: said as negative
        check_not_blank(clipped, f)
        if neg is not None:
            images[k] = img.with_data(clipped)
            warnings.append(f"{f}: {neg['negative_voxels_clipped']} negative voxels "
                            f"({100 * neg['negative_fraction_of_positive']:.2g} % of the "
                            "positive activity) clipped to 0")
    return images, warnings


def _base_meta(job: TiaJob, nuc) -> dict:
    meta = {"nuclide": nuc.name, "times_h": list(job.times_h),
            "frames": [str(f) for f in job.frame_paths]}
    if job.after_h is not None:
        meta["integrated_from_h"] = job.after_h
    return meta


def _tia_image(ref, tia_per_voxel, job: TiaJob, meta: dict):
    quantity = "time-integrated activity" + (
        "" if job.after_h is None else f" from {job.after_h:g} h on")
    return ref.with_data(tia_per_voxel, quantity=quantity, unit="Bq*s per voxel (decays)",
                         meta=meta)


def _code_maps(job: TiaJob, tia_img, model, status, meta: dict, status_codes: dict) -> list:
    out = []
    if job.model_out_path is not None:
        out.append((Path(job.model_out_path), tia_img.with_data(
            model, quantity="time-activity model", unit="code",
            meta={**meta, "codes": {str(k): v for k, v in MODEL_NAMES.items()}}), np.uint8))
    if job.status_out_path is not None:
        out.append((Path(job.status_out_path), tia_img.with_data(
            status, quantity="fit status", unit="code",
            meta={**meta, "codes": {str(k): v for k, v in status_codes.items()}}), np.uint8))
    return out


def _single_time_point(job: TiaJob, nuc, img) -> tuple[list, TiaOutputs]:
    from ..core.units import hours_to_seconds
    from .fit import fit_single_time_point

    t_eff = float(job.stp_half_life_h)
    lam_s = math.log(2.0) / hours_to_seconds(t_eff)
    from_t0 = math.exp(-lam_s * hours_to_seconds(job.after_h or 0.0))  # e^(-l t0)
    tia = fit_single_time_point(hours_to_seconds(job.times_h[0]), img.data, t_eff) \
        * from_t0 * img.grid.voxel_volume_ml
    meta = {**_base_meta(job, nuc), "model": "stp", "assumed_effective_half_life_h": t_eff}
    tia_img = _tia_image(img, tia, job, meta)
    outputs = [(Path(job.out_path), tia_img, np.float32)]
    if job.sigma_out_path is not None:  # frame noise only; the half-life's error is unknown
        outputs.append((Path(job.sigma_out_path), tia_img.with_data(
            tia * job.frame_noise_rel,
            quantity="standard uncertainty of the TIA (frame noise only)"), np.float32))
    model = np.full(tia.shape, MODEL_IDS["stp"], dtype=np.uint8)
    status = np.full(tia.shape, STP_STATUS, dtype=np.uint8)
    outputs += _code_maps(job, tia_img, model, status, meta, {STP_STATUS: STP_STATUS_TEXT})
    summary = TiaOutputs("stp", tuple(p for p, _, _ in outputs), float(tia.sum()),
                         {"stp": int(tia.size)}, t_eff, job.after_h)
    return outputs, summary


def _fitted(job: TiaJob, nuc, images) -> tuple[list, TiaOutputs]:
    from ..core.units import hours_to_seconds
    from .fit import fit_tia

    stack = np.stack([img.data for img in images])
    times_s = np.array([hours_to_seconds(t) for t in job.times_h])
    fit = fit_tia(times_s, stack, nuc.decay_constant_per_s, model=job.model,
                  weighting=job.weighting, background_fraction=job.background_fraction,
                  device=job.device, tail=job.tail, lift_bound=job.lift_bound,
                  frame_noise_rel=job.frame_noise_rel, keep_params=job.after_h is not None)
    tia_c = fit.tia
    if job.after_h is not None:
        from .after import tia_after

        tia_c = tia_after(fit, times_s, stack, hours_to_seconds(job.after_h))
    ref, vml = images[0], images[0].grid.voxel_volume_ml
    meta = {**_base_meta(job, nuc), **fit.settings}
    tia_img = _tia_image(ref, tia_c * vml, job, meta)
    outputs = [(Path(job.out_path), tia_img, np.float32)]
    if job.sigma_out_path is not None:
        outputs.append((Path(job.sigma_out_path), tia_img.with_data(
            fit.sigma * vml, quantity="standard uncertainty of the TIA"), np.float32))
    outputs += _code_maps(job, tia_img, fit.model, fit.status, meta, STATUS)
    counts = np.bincount(fit.model.ravel(), minlength=5)
    summary = TiaOutputs("fit", tuple(p for p, _, _ in outputs), float(np.sum(tia_img.data)),
                         {MODEL_NAMES[i]: int(c) for i, c in enumerate(counts) if c},
                         None, job.after_h)
    return outputs, summary


# --------------------------------------------------------------------------- writing
def write_outputs(outputs) -> None:
    """Write every ``(path, image, dtype)`` or none: each image with its JSON sidecar (and an
    ``.mhd``'s ``.raw``) is written (:func:`voxdose.io.sitk_adapter.write_image`) into a
    staging folder beside its target; only when all are written are they renamed into place
    (:func:`voxdose.io.atomic.staged_files`). On failure the staged files and any folder made
    here are removed, and files of an earlier run stay as they were."""
    from ..io.atomic import staged_files
    from ..io.sitk_adapter import check_finite_output, write_image

    for path, img, dtype in outputs:  # an overflowing float32 map is never written
        check_finite_output(path, img, dtype)
    with staged_files([path for path, _, _ in outputs]) as stage:
        for path, img, dtype in outputs:
            write_image(stage(path), img, dtype=dtype)


def run_tia_job(job: TiaJob) -> TiaOutputs:
    """Validate ``job``, compute every requested map, then write them all (or none)."""
    nuc = validate_job(job)
    from ..imaging.checks import check_acquisition_span

    # the same span rule as `voxdose run`: an error when < 1e-6 is left, else a warning
    span = check_acquisition_span(job.times_h, nuc.half_life_h, nuc.name, "--times-h")
    if not job.single_time_point:
        from .models import check_points_for_model

        few = check_points_for_model(job.model, len(job.times_h), "--times-h")
    else:
        few = None
    images, warnings = _read_frames(job, nuc)
    warnings = [w for w in (span, few) if w] + warnings
    if job.single_time_point:
        outputs, summary = _single_time_point(job, nuc, images[0])
    else:
        outputs, summary = _fitted(job, nuc, images)
    if warnings:  # recorded in every sidecar, shown by the command
        outputs = [(path, img.with_data(img.data, meta={**img.meta, "warnings": warnings}), dt)
                   for path, img, dt in outputs]
        summary = replace(summary, warnings=tuple(warnings))
    write_outputs(outputs)
    return summary
