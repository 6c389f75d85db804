"""``voxdose tia``: activity-concentration frames (Bq/mL) -> TIA map (decays per voxel)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import typer

from .app import app, console
from ..core.errors import InputError

MODELS = ("auto", "trapz", "mono", "biexp", "biexp_sum", "triexp")


def _parse_times(values: list[str]) -> list[float]:
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(float(part))
            except ValueError:
                raise InputError(f"--times-h: '{part}' is not a number (hours)") from None
    return out


def _check_output(path: Path, option: str) -> None:
    if not any(str(path).endswith(e) for e in (".nii.gz", ".nii", ".mhd", ".nrrd")):
        raise InputError(f"{option} {path}: use a .nii.gz, .nii, .mhd or .nrrd file name")


@app.command()
def tia(
    frames: list[Path] = typer.Argument(..., help="activity-concentration images (Bq/mL), "
                                        "one per time point, all on one grid"),
    times_h: list[str] = typer.Option(..., "--times-h", help="acquisition times after "
                                      "administration in hours, one per frame "
                                      "(comma-separated or repeated)"),
    nuclide: str = typer.Option(..., "--nuclide", help="e.g. Lu-177, 177Lu, Y-90"),
    out: Path = typer.Option(..., "--out", help="TIA map, decays per voxel (Bq*s)"),
    model: str = typer.Option("auto", "--model", help="auto (best AICc per voxel), trapz, "
                              "mono, biexp (uptake-washout), biexp_sum, triexp"),
    weighting: str = typer.Option("poisson", help="poisson (variance ∝ activity) or uniform"),
    background_fraction: float = typer.Option(
        1e-3, help="voxels whose maximum is below this fraction of the series maximum are not "
                   "fitted (trapezoid + physical tail)"),
    tail: str = typer.Option("physical", help="trapezoid tail after the last frame: physical "
                             "decay or fitted (exponential through the last two frames)"),
    lift_bound: bool = typer.Option(False, "--lift-bound", help="allow effective decay "
                                    "slower than physical decay (off: lambda >= lambda_phys)"),
    frame_noise: float = typer.Option(0.05, help="relative standard uncertainty of a frame "
                                      "(trapezoid uncertainty only)"),
    device: str = typer.Option("auto", help="auto, cpu or gpu (numba.cuda)"),
    sigma_out: Path = typer.Option(None, "--sigma-out", help="standard uncertainty of the TIA, "
                                   "decays per voxel"),
    model_out: Path = typer.Option(None, "--model-out", help="model index per voxel (0 trapz, "
                                   "1 mono, 2 biexp, 3 biexp_sum, 4 triexp)"),
    status_out: Path = typer.Option(None, "--status-out", help="fit status per voxel"),
    after_h: float = typer.Option(
        None, "--after-h", help="integrate from this time (h after administration) to "
        "infinity instead of from 0: the TIA behind the dose delivered after t0 (e.g. from a "
        "stem-cell transplant on)"),
    stp_half_life_h: float = typer.Option(
        None, "--stp-half-life-h", help="single time point (one frame): assumed effective "
        "half-life in hours; TIA = a(t1) exp(l t1)/l, l = ln2/T_eff (Hänscheid 2018)"),
):
    """Fit every voxel's time-activity curve and integrate it to infinity: TIA in decays per
    voxel (Bq*s), with its uncertainty (delta method)."""
    from ..io.sitk_adapter import read_image, write_image
    from ..kinetics.fit import fit_tia
    from ..kinetics.models import MODEL_NAMES, STATUS
    from ..core.nuclide import load_nuclide
    from ..core.units import hours_to_seconds

    nuc = load_nuclide(nuclide)
    t_h = _parse_times(times_h)
    if len(t_h) != len(frames):
        raise InputError(f"{len(frames)} frames but {len(t_h)} times in --times-h; give one "
                         "time (h) per frame")
    if any(b <= a for a, b in itertools.pairwise(t_h)):
        raise InputError(f"--times-h must be strictly increasing, got {t_h}")
    if any(t <= 0 for t in t_h):
        raise InputError(f"--times-h must be after administration (> 0 h), got {t_h}")
    if model not in MODELS:
        raise InputError(f"--model {model}: choose one of {', '.join(MODELS)}")
    for p, opt in ((out, "--out"), (sigma_out, "--sigma-out"), (model_out, "--model-out"),
                   (status_out, "--status-out")):
        if p is not None:
            _check_output(p, opt)
    images = [read_image(f, "activity concentration", "Bq/mL") for f in frames]
    ref = images[0]
    for f, img in zip(frames, images):
        if not img.grid.same_as(ref.grid, tol_mm=1e-3):
            raise InputError(f"{f}: grid ({img.grid.describe()}) differs from {frames[0]}'s "
                             f"({ref.grid.describe()}); resample the frames onto one grid")
        if np.any(img.data < 0):
            raise InputError(f"{f}: {int((img.data < 0).sum())} voxels hold negative activity; "
                             "clip or fix them first")
    if len(frames) == 1 or stp_half_life_h is not None:
        _single_time_point(frames, images[0], t_h, stp_half_life_h, nuc, out, sigma_out,
                           frame_noise)
        return
    stack = np.stack([img.data for img in images])
    if after_h is not None and after_h < 0:
        raise InputError(f"--after-h must be >= 0 h, got {after_h}")
    times_s = np.array([hours_to_seconds(t) for t in t_h])
    fit = fit_tia(times_s, stack, nuc.decay_constant_per_s, model=model, weighting=weighting,
                  background_fraction=background_fraction, device=device, tail=tail,
                  lift_bound=lift_bound, frame_noise_rel=frame_noise,
                  keep_params=after_h is not None)
    vml = ref.grid.voxel_volume_ml
    meta = {"nuclide": nuc.name, "times_h": t_h, "frames": [str(f) for f in frames],
            **fit.settings}
    tia_c = fit.tia
    if after_h is not None:
        from ..kinetics.after import tia_after

        tia_c = tia_after(fit, times_s, stack, hours_to_seconds(after_h))
        meta["integrated_from_h"] = after_h
    tia_img = ref.with_data(tia_c * vml, quantity="time-integrated activity" + (
        "" if after_h is None else f" from {after_h:g} h on"),
        unit="Bq*s per voxel (decays)", meta=meta)
    outputs = [(out, tia_img, np.float32)]
    if sigma_out is not None:
        outputs.append((sigma_out, tia_img.with_data(
            fit.sigma * vml, quantity="standard uncertainty of the TIA"), np.float32))
    if model_out is not None:
        outputs.append((model_out, tia_img.with_data(
            fit.model, quantity="time-activity model", unit="code",
            meta={**meta, "codes": {str(k): v for k, v in MODEL_NAMES.items()}}), np.uint8))
    if status_out is not None:
        outputs.append((status_out, tia_img.with_data(
            fit.status, quantity="fit status", unit="code",
            meta={**meta, "codes": {str(k): v for k, v in STATUS.items()}}), np.uint8))
    # everything is computed before the first write; each file is written atomically
    for path, img, dtype in outputs:
        write_image(path, img, dtype=dtype)
    counts = np.bincount(fit.model.ravel(), minlength=5)
    console.print(f"TIA written to {out}: total {float(np.sum(tia_img.data)):.4g} decays "
                  f"({float(np.sum(tia_img.data)) / 3.6e9:.4g} MBq·h); models per voxel: " +
                  ", ".join(f"{MODEL_NAMES[i]} {c}" for i, c in enumerate(counts) if c))


def _single_time_point(frames, img, t_h, t_eff_h, nuc, out, sigma_out, frame_noise) -> None:
    """One frame: Hänscheid's single-time-point TIA with an assumed effective half-life."""
    from ..io.sitk_adapter import write_image
    from ..kinetics.fit import fit_single_time_point
    from ..core.units import hours_to_seconds

    if len(frames) != 1:
        raise InputError("--stp-half-life-h is the single-time-point method: give exactly one "
                         "frame, or drop the option to fit several frames")
    if t_eff_h is None or not t_eff_h > 0:
        raise InputError("one frame given: the single-time-point method needs "
                         "--stp-half-life-h (assumed effective half-life, h, > 0)")
    if t_eff_h > nuc.half_life_h * (1 + 1e-9):
        raise InputError(f"--stp-half-life-h {t_eff_h} h exceeds {nuc.name}'s physical "
                         f"half-life ({nuc.half_life_h:.4g} h); an effective half-life cannot")
    vml = img.grid.voxel_volume_ml
    tia = fit_single_time_point(hours_to_seconds(t_h[0]), img.data, t_eff_h) * vml
    meta = {"nuclide": nuc.name, "times_h": t_h, "frames": [str(f) for f in frames],
            "model": "stp", "assumed_effective_half_life_h": t_eff_h}
    tia_img = img.with_data(tia, quantity="time-integrated activity",
                            unit="Bq*s per voxel (decays)", meta=meta)
    write_image(out, tia_img, dtype=np.float32)
    if sigma_out is not None:  # frame noise only; the assumed half-life's error is not known
        write_image(sigma_out, tia_img.with_data(tia * frame_noise,
                    quantity="standard uncertainty of the TIA (frame noise only)"),
                    dtype=np.float32)
    console.print(f"TIA (single time point, T_eff {t_eff_h:g} h) written to {out}: total "
                  f"{float(tia.sum()):.4g} decays")
