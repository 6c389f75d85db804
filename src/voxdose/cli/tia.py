"""``voxdose tia``: activity-concentration frames (Bq/mL) -> TIA map (decays per voxel).

The command only turns its options into a :class:`voxdose.kinetics.tia_job.TiaJob`, runs it
(:func:`~voxdose.kinetics.tia_job.run_tia_job`: every option validated before any work,
all outputs written or none) and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console
from ..core.errors import InputError


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
                              "mono, biexp (uptake-washout), biexp_sum, triexp; several "
                              "frames only"),
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
    device: str = typer.Option("auto", help="auto (GPU if a usable CUDA GPU is found, the "
                               "same probe as every command), cpu or gpu (numba.cuda)"),
    sigma_out: Path = typer.Option(None, "--sigma-out", help="standard uncertainty of the TIA, "
                                   "decays per voxel"),
    model_out: Path = typer.Option(None, "--model-out", help="model index per voxel (0 trapz, "
                                   "1 mono, 2 biexp, 3 biexp_sum, 4 triexp, 5 stp)"),
    status_out: Path = typer.Option(None, "--status-out", help="fit status per voxel (5 for "
                                    "every voxel of a single time point)"),
    after_h: float = typer.Option(
        None, "--after-h", help="integrate from this time (h after administration) to "
        "infinity instead of from 0: the TIA behind the dose delivered after t0 (e.g. from a "
        "stem-cell transplant on)"),
    stp_half_life_h: float = typer.Option(
        None, "--stp-half-life-h", help="single time point (one frame): assumed effective "
        "half-life in hours; TIA = a(t1) exp(l t1)/l, l = ln2/T_eff (Hänscheid 2018); with "
        "--after-h t0: a(t1) exp(l t1) exp(-l t0)/l"),
):
    """Fit every voxel's time-activity curve and integrate it to infinity: TIA in decays per
    voxel (Bq*s), with its uncertainty (delta method)."""
    from ..kinetics.tia_job import TiaJob, run_tia_job
    from .checks import input_file, output_file

    for f in frames:
        input_file(f, "", "frame image")
    for opt, p in (("--out", out), ("--sigma-out", sigma_out), ("--model-out", model_out),
                   ("--status-out", status_out)):
        if p is not None:  # the locations, before any work (names: validate_job)
            output_file(p, opt)
    if device == "auto":  # the one probe of every command (core/backend.py)
        device = _resolve_auto()
    job = TiaJob(
        frame_paths=tuple(frames), times_h=tuple(_parse_times(times_h)), nuclide=nuclide,
        out_path=out, model=model, weighting=weighting,
        background_fraction=background_fraction, tail=tail, lift_bound=lift_bound,
        frame_noise_rel=frame_noise, device=device, sigma_out_path=sigma_out,
        model_out_path=model_out, status_out_path=status_out, after_h=after_h,
        stp_half_life_h=stp_half_life_h)
    _print_summary(run_tia_job(job), out)


def _resolve_auto() -> str:
    """'cpu' or 'gpu' by :func:`voxdose.core.backend.resolve_device` (its fallback
    warning printed as one line)."""
    import warnings

    from ..core.backend import resolve_device

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        device = resolve_device("auto")
    for w in caught:
        console.print(f"voxdose: warning: {w.message}", style="yellow", markup=False,
                      highlight=False)
    return device


def _print_summary(res, out: Path) -> None:
    for w in res.warnings:
        console.print(f"voxdose: warning: {w}", style="yellow", markup=False, highlight=False)
    total = res.total_decays
    since = "" if res.integrated_from_h is None else f" from {res.integrated_from_h:g} h on"
    if res.method == "stp":
        console.print(f"TIA{since} (single time point, T_eff {res.effective_half_life_h:g} h) "
                      f"written to {out}: total {total:.4g} decays")
        return
    console.print(f"TIA{since} written to {out}: total {total:.4g} decays "
                  f"({total / 3.6e9:.4g} MBq·h); models per voxel: " +
                  ", ".join(f"{name} {c}" for name, c in res.model_counts.items()))
