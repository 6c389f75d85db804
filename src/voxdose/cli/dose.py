"""Dose commands: ``voxdose dose`` (TIA -> absorbed dose) and ``voxdose bench``.

Registered on the main app by :mod:`voxdose.cli.app` (each command module is imported there).
Bad input raises :class:`~voxdose.core.errors.InputError` before any work (one line on stderr,
exit 2, nothing written); the dose image and its JSON sidecar are written atomically.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import app, console
from ..core.errors import InputError

# NumPy, SciPy, SimpleITK and the physics modules are imported inside the commands, so
# `voxdose dose --help` (and every other command's start-up) does not pay for them.

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd")
DEVICE_HELP = "compute device: auto (GPU if a usable CUDA GPU is found, else CPU), cpu, gpu"


def _load_inputs(tia_path: Path, nuclide: str, method: str, ct: Path | None,
                 density_mode: str, device: str, out: Path, resample_ct: bool,
                 compression: str | None = None):
    """Validate everything and read the inputs (no output is touched)."""
    import numpy as np

    from ..core.backend import DEVICES
    from ..dose.density import check_density_mode, density_from_ct
    from ..io.sitk_adapter import compression_level, read_image
    from ..core.nuclide import load_nuclide

    if not str(out).endswith(_IMAGE_SUFFIXES):
        raise InputError(f"output {out} must end with one of {', '.join(_IMAGE_SUFFIXES)}")
    compression_level(compression)  # a bad --compression-level fails before any work
    if str(method).lower() not in ("kernel", "ldm"):
        raise InputError(f"unknown dose method '{method}'; choose kernel or ldm")
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    mode = check_density_mode(density_mode)
    nuc = load_nuclide(nuclide)
    # the file's own type: the engine converts once (float32 stays float32 for a float32 FFT)
    tia = read_image(tia_path, "time-integrated activity", "Bq*s per voxel (decays)",
                     dtype=None)
    if float(np.min(tia.data)) < 0:
        raise InputError(f"TIA image {tia_path} has negative values (min "
                         f"{float(np.min(tia.data)):.3g}); a TIA map holds decays per voxel >= 0")
    unit = str(tia.meta.get("unit", ""))
    if unit and not any(w in unit.lower() for w in ("bq*s", "bq s", "bq·s", "decay")):
        raise InputError(f"TIA image {tia_path} has unit '{unit}' in its sidecar; the dose "
                         "command needs decays per voxel (Bq*s)")
    density = None
    if ct is not None:
        ct_img = read_image(ct, "CT", "HU")
        if not ct_img.grid.same_as(tia.grid):
            if not resample_ct:
                raise InputError(f"CT {ct} is not on the TIA grid of {tia_path} "
                                 f"({ct_img.grid.describe()} vs {tia.grid.describe()}); "
                                 "resample it or pass --resample-ct")
            from ..imaging.registration import identity_registration, resample

            ct_img = resample(ct_img, tia.grid, identity_registration(), default=-1000.0)
        density = density_from_ct(ct_img, tia.grid)
    elif mode != "none":
        raise InputError(f"--density-mode {mode} needs --ct CT.nii.gz (HU on the TIA grid)")
    return nuc, tia, density, mode


@app.command()
def dose(
    tia_path: Path = typer.Argument(..., metavar="TIA", help="time-integrated activity image: "
                                    "decays per voxel (Bq*s), NIfTI/MHD/NRRD"),
    nuclide: str = typer.Option(..., "--nuclide", help="Lu-177, Y-90 (also 177Lu, 90Y)"),
    out: Path = typer.Option(..., "--out", help="absorbed-dose image, Gy (float32), with a "
                             "JSON sidecar (method, density mode, kernel, provenance)"),
    method: str = typer.Option("kernel", "--method", help="kernel: convolution with the "
                               "voxel S-value kernel; ldm: local energy deposition"),
    ct: Path = typer.Option(None, "--ct", help="CT in HU on the TIA grid (for --density-mode "
                            "scale or mvs)"),
    density_mode: str = typer.Option("none", "--density-mode", help="none: water; scale: "
                                     "dose x 1/rho (g/cm^3); mvs: density-binned kernels"),
    resample_ct: bool = typer.Option(False, "--resample-ct", help="resample a CT that is not "
                                     "on the TIA grid onto it (linear, same world frame)"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("float32", "--precision", help="FFT precision: float32 "
                                  "(error ~5e-7 of the maximum dose) or float64"),
    memory_budget_gb: float = typer.Option(None, "--memory-budget-gb", min=0.01, help="memory "
                                           "for the convolution, GB (default: 60 % of free "
                                           "RAM, 80 % of free GPU memory); blockwise beyond"),
    kernel_radius_mm: float = typer.Option(200.0, "--kernel-radius-mm", min=1.0,
                                           help="extent of the dose kernel, mm"),
    dpk: Path = typer.Option(None, "--dpk", help="your own radial dose point kernel for this "
                             "nuclide in water: CSV with columns r_mm,dose_Gy_per_decay (e.g. "
                             "from GATE or a published table); default: voxdose's Monte Carlo"),
    compression_level: str = typer.Option(None, "--compression-level", help="gzip of a .nii.gz "
                                          "output: fast (default; run-length deflate on every "
                                          "core, about SimpleITK's size) or a zlib level 0-9 "
                                          "(0 stored, 9 smallest); default from "
                                          "$VOXDOSE_COMPRESSION_LEVEL. Name the output .nii "
                                          "for no compression"),
):
    """Absorbed dose (Gy) from a TIA map (decays per voxel): D = TIA (*) S, or local
    deposition; optional density handling from a CT."""
    import numpy as np

    from .. import __version__
    from ..core.backend import get_backend, to_numpy
    from ..dose.engine import make_engine
    from ..io.atomic import sha256_file
    from ..io.sitk_adapter import write_image

    t_start = time.perf_counter()
    nuc, tia, density, mode = _load_inputs(tia_path, nuclide, method, ct, density_mode,
                                           device, out, resample_ct, compression_level)
    user_pk = None
    if dpk is not None:  # validated before any work, like every other input
        from ..kernels.point import read_dpk_csv

        user_pk = read_dpk_csv(dpk, nuclide=nuc.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        backend = get_backend(device)
    for w in caught:
        console.print(str(w.message), style="yellow", markup=False)
    settings = {} if method == "ldm" else {"precision": precision,
                                           "memory_budget_gb": memory_budget_gb}
    timings = {}
    with Progress(TextColumn("{task.description:<28}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console) as prog:
        task = prog.add_task(f"{nuc.name} engine ({method}, {mode})", total=1)
        t0 = time.perf_counter()
        engine = make_engine(nuc, tia.grid.spacing_mm, method=method, density_mode=mode,
                             density=density, radius_mm=kernel_radius_mm,
                             point_kernel=user_pk, kernel_cache=True, **settings)
        prog.update(task, completed=1)
        timings["engine_s"] = time.perf_counter() - t0
        task = prog.add_task(f"dose ({backend.name})", total=1)
        t0 = time.perf_counter()
        result = engine.dose(tia, backend, density,
                             progress=lambda d, t: prog.update(task, completed=d, total=t))
        result = result.with_data(to_numpy(result.data))
        prog.update(task, completed=prog.tasks[task].total)
        timings["dose_s"] = time.perf_counter() - t0
    sidecar = {"nuclide": nuc.name, "voxdose_version": __version__, "device": backend.name,
               "density_mode": mode,
               "inputs": {"tia": str(tia_path), "tia_sha256": sha256_file(tia_path),
                          "ct": None if ct is None else str(ct),
                          "ct_sha256": None if ct is None else sha256_file(ct)},
               "timings_s": timings}
    if density is not None:
        sidecar["density_calibration"] = density.meta.get("calibration")
    write_image(out, result, dtype=np.float32, sidecar=sidecar, compression=compression_level)
    d = result.data
    console.print(f"wrote [bold]{out}[/] ({nuc.name}, {method}, density {mode}): "
                  f"max {float(d.max()):.4g} Gy, mean {float(d.mean()):.4g} Gy; "
                  f"{time.perf_counter() - t_start:.1f} s on {backend.name}")


@app.command()
def bench(
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " (the CPU is always "
                               "timed; the GPU too when used)"),
    sizes: str = typer.Option("64,128,256", "--sizes", help="TIA grid edge lengths n (n^3 "
                              "voxels), comma separated"),
    repeats: int = typer.Option(3, "--repeats", min=1, help="timed runs per case (minimum "
                                "reported, after one warm-up)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
    tia_size: int = typer.Option(128, "--tia-size", min=0, help="also time the bi-exponential "
                                 "TIA fit of n^3 voxels x 5 time points against a curve_fit "
                                 "loop (0: skip)"),
):
    """Time voxdose's dose convolution against scipy.signal.fftconvolve (float64, same
    Lu-177 kernel at 4.8 mm, 85^3 voxels) and its per-voxel TIA fit against a
    scipy.optimize.curve_fit loop, in the same run."""
    from ..core.backend import DEVICES
    from .bench import machine_info, run_bench

    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    try:
        ns = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--sizes must be integers separated by commas; got '{sizes}'") from None
    if not ns or min(ns) < 4 or max(ns) > 1024:
        raise InputError(f"--sizes must be between 4 and 1024; got '{sizes}'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = run_bench(ns, device, repeats)
        tia_rows = []
        if tia_size:
            from ..core.backend import gpu_available
            from .bench import run_tia_bench

            tia_rows = run_tia_bench(tia_size, device="cpu")
            if device in ("auto", "gpu") and gpu_available():
                tia_rows += run_tia_bench(tia_size, device="gpu")[1:]
    if as_json:
        print(json.dumps({"machine": machine_info(), "rows": [r.to_dict() for r in rows],
                          "tia_rows": [r.to_dict() for r in tia_rows]}, indent=2))
        return
    t = Table(title="dose convolution: voxdose vs scipy.signal.fftconvolve (same run)",
              caption=f"{machine_info()['cpu']}, {machine_info()['cores']} cores; times are "
                      "minima; GPU times exclude host<->device transfers")
    for col in ("n^3", "method", "device", "precision", "ms", "speed-up", "max rel diff",
                "transfer ms"):
        t.add_column(col, justify="right" if col not in ("method",) else "left")
    for r in rows:
        t.add_row(str(r.size), r.method, r.device, r.precision, f"{r.time_ms:.1f}",
                  "" if r.speedup_vs_scipy is None else f"{r.speedup_vs_scipy:.2f}x",
                  "" if r.max_rel_diff_vs_scipy is None else f"{r.max_rel_diff_vs_scipy:.1e}",
                  "" if r.transfer_ms is None else f"{r.transfer_ms:.1f}")
    console.print(t)
    if tia_rows:
        t2 = Table(title=f"bi-exponential TIA fit, 5 time points (voxdose: {tia_size}^3 voxels)",
                   caption="curve_fit timed on a sample of voxels; throughput = voxels / s")
        for col in ("method", "device", "voxels", "s", "voxels/s", "speed-up"):
            t2.add_column(col, justify="left" if col == "method" else "right")
        for r in tia_rows:
            t2.add_row(r.method, r.device, str(r.voxels), f"{r.time_s:.3f}",
                       f"{r.voxels_per_s:.3g}", f"{r.speedup_vs_curve_fit:.0f}x")
        console.print(t2)
