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

    from ..io.sitk_adapter import sidecar_path
    from .checks import distinct_outputs, input_file, output_file

    input_file(tia_path, "TIA", "TIA image")
    if ct is not None:
        input_file(ct, "--ct", "CT image")
    output_file(out, "--out", _IMAGE_SUFFIXES)  # before any work: a bad location fails now
    distinct_outputs({"--out": out}, [tia_path, sidecar_path(tia_path), ct], sidecars=True)
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
    said = tia.meta.get("nuclide")  # `voxdose tia` records the nuclide it integrated with
    if said:
        from ..core.errors import NuclideError
        from ..core.nuclide import canonical_name

        try:
            said_name = canonical_name(str(said))
        except NuclideError:
            said_name = str(said)
        if said_name != nuc.name:
            raise InputError(f"TIA image {tia_path}: its sidecar says it is of {said_name} "
                             f"(integrated with {said_name}'s decay), but --nuclide is "
                             f"{nuc.name}; give --nuclide {said_name}, or `voxdose compare` "
                             "to give one TIA map several nuclides' kernels")
    density = None
    if ct is not None:
        ct_img = read_image(ct, "CT", "HU")
        from ..io.sitk_adapter import check_sidecar_unit
        from ..study.sidecars import CT_UNITS

        check_sidecar_unit(ct_img, ct, CT_UNITS, "--ct reads CT numbers in HU (a density "
                           "map or mu-map is not a CT): give the CT in HU")
        on_grid = ct_img.grid.same_as(tia.grid)
        if not on_grid and not resample_ct:
            raise InputError(f"CT {ct} is not on the TIA grid of {tia_path} "
                             f"({ct_img.grid.describe()} vs {tia.grid.describe()}); "
                             "resample it or pass --resample-ct")
        if mode != "none":  # the CT becomes densities: CT numbers in HU, as read
            from ..imaging.checks import check_ct_in_hu

            check_ct_in_hu(ct_img.data, ct)
        if not on_grid:
            from ..imaging.registration import identity_registration, resample

            ct_img = resample(ct_img, tia.grid, identity_registration(), default=-1000.0)
        density = density_from_ct(ct_img, tia.grid)
    elif mode != "none":
        raise InputError(f"--density-mode {mode} needs --ct CT.nii.gz (HU on the TIA grid)")
    return nuc, tia, density, mode


def _user_kernel(dpk, nuc):
    """The user's DPK table (--dpk), read and checked; None without one."""
    if dpk is None:
        return None
    from ..kernels.point import read_dpk_csv
    from .checks import input_file

    return read_dpk_csv(input_file(dpk, "--dpk", "DPK table"), nuclide=nuc.name)


def _check_kernel(nuc, user_pk, tia, radius_mm, precision, tia_path) -> list[str]:
    """The kernel ``voxdose dose`` will build, checked before any work: precision,
    radius, voxel size, near-field work and memory (voxdose.kernels.extent); returns its
    warnings (a built table used below the voxel size it was planned for)."""
    from ..dose.convolution import PRECISIONS
    from ..kernels.extent import check_kernel_build, kernel_extent
    from ..kernels.point import load_point_kernel
    from .checks import positive

    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if radius_mm is not None:
        positive(radius_mm, "--kernel-radius-mm", "mm")
    pk = user_pk if user_pk is not None else load_point_kernel(nuc)
    ext = kernel_extent(pk, tia.grid.spacing_mm, tia.grid.shape, radius_mm)
    check_kernel_build(pk, tia.grid.spacing_mm, ext.radius_mm,
                       where=f"the voxels of {tia_path}")
    from ..kernels.cache import planned_voxel_warning

    return [w for w in [planned_voxel_warning(pk, tia.grid.spacing_mm),
                        *pk.provenance().get("warnings", [])] if w]


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
    precision: str = typer.Option(None, "--precision", help="FFT precision: float64 "
                                  "(default, as everywhere: docs/defaults.md) or float32 "
                                  "(2x faster, error ~5e-7 of the maximum dose)"),
    memory_budget_gb: float = typer.Option(None, "--memory-budget-gb", min=0.01, help="memory "
                                           "for the convolution, GB (default: 60 % of free "
                                           "RAM, 80 % of free GPU memory); blockwise beyond"),
    kernel_radius_mm: float = typer.Option(None, "--kernel-radius-mm", min=1.0,
                                           help="extent of the dose kernel, mm; default: "
                                           "all but 0.1 % of the energy per decay, at most "
                                           "the grid's extent (docs/defaults.md)"),
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

    from ..core.backend import get_backend, to_numpy
    from ..dose.engine import make_engine
    from ..io.atomic import staged_files
    from ..io.sitk_adapter import check_finite_output, write_image

    t_start = time.perf_counter()
    nuc, tia, density, mode = _load_inputs(tia_path, nuclide, method, ct, density_mode,
                                           device, out, resample_ct, compression_level)
    user_pk = _user_kernel(dpk, nuc)  # validated before any work, like every other input
    kernel_warnings = []
    if method == "kernel":
        kernel_warnings = _check_kernel(nuc, user_pk, tia, kernel_radius_mm, precision,
                                        tia_path)
    for w in kernel_warnings:
        console.print(f"voxdose: warning: {w}", style="yellow", markup=False,
                      highlight=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        backend = get_backend(device)
    for w in caught:
        console.print(str(w.message), style="yellow", markup=False)
    from ..dose.convolution import DEFAULT_PRECISION

    settings = {} if method == "ldm" else {"precision": precision or DEFAULT_PRECISION,
                                           "memory_budget_gb": memory_budget_gb}
    timings = {}
    with Progress(TextColumn("{task.description:<28}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console) as prog:
        task = prog.add_task(f"{nuc.name} engine ({method}, {mode})", total=1)
        t0 = time.perf_counter()
        engine = make_engine(nuc, tia.grid.spacing_mm, method=method, density_mode=mode,
                             density=density, radius_mm=kernel_radius_mm,
                             grid_shape=tia.grid.shape,
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
    sidecar = _sidecar(nuc, backend, mode, {"tia": tia_path, "ct": ct, "dpk": dpk}, timings,
                       density)
    if kernel_warnings:
        sidecar["warnings"] = kernel_warnings
    check_finite_output(out, result, np.float32)  # an overflowing dose is never written
    with staged_files([out]) as stage:  # the image and its sidecar, both or neither
        write_image(stage(out), result, dtype=np.float32, sidecar=sidecar,
                    compression=compression_level)
    d = result.data
    console.print(f"wrote [bold]{out}[/] ({nuc.name}, {method}, density {mode}): "
                  f"max {float(d.max()):.4g} Gy, mean {float(d.mean()):.4g} Gy; "
                  f"{_left_out(result.meta)}{time.perf_counter() - t_start:.1f} s on "
                  f"{backend.name}")


def _sidecar(nuc, backend, mode: str, inputs: dict, timings: dict, density) -> dict:
    """The dose image's sidecar entries besides the engine's meta: every input hashed."""
    from .. import __version__
    from ..io.atomic import sha256_file

    files = {}
    for key, path in inputs.items():
        files[key] = None if path is None else str(path)
        files[f"{key}_sha256"] = None if path is None else sha256_file(path)
    out = {"nuclide": nuc.name, "voxdose_version": __version__, "device": backend.name,
           "density_mode": mode, "inputs": files, "timings_s": timings}
    if density is not None:
        out["density_calibration"] = density.meta.get("calibration")
    return out


def _left_out(meta: dict) -> str:
    """The energy per decay the engine leaves out, in words, for the summary line."""
    lost = meta.get("neglected_energy_fraction")
    if lost is None:
        return ""
    if (meta.get("kernel_extent") or {}).get("limited_by") == "grid extent":
        return (f"the kernel reaches every voxel ({lost:.2%} of the energy per decay lands "
                "outside the image); ")
    return f"energy per decay left out {lost:.2%}; "


def _int_list(text: str, option: str, lo: int, hi: int, allow_zero: bool = False) -> list[int]:
    """Integers separated by commas, each in [lo, hi] (or 0 alone when ``allow_zero``)."""
    try:
        ns = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise InputError(f"{option} must be integers separated by commas; got '{text}'") from None
    if allow_zero and ns == [0]:
        return []
    if not ns or min(ns) < lo or max(ns) > hi:
        raise InputError(f"{option} must be between {lo} and {hi}; got '{text}'")
    return ns


@app.command()
def bench(
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " (the CPU is always "
                               "timed; the GPU too when used)"),
    sizes: str = typer.Option("64,128,256", "--sizes", help="TIA grid edge lengths n (n^3 "
                              "voxels) of the convolution, comma separated (0: skip)"),
    repeats: int = typer.Option(3, "--repeats", min=1, help="timed runs per case (minimum "
                                "reported, after one warm-up; scipy's reference: one run)"),
    as_json: bool = typer.Option(False, "--json", help="print the results as JSON (with the "
                                 "machine, device, versions and copy bandwidth)"),
    tia_size: str = typer.Option("128", "--tia-size", help="also time the bi-exponential TIA "
                                 "fit of n^3 voxels x 5 time points against a curve_fit loop; "
                                 "comma separated sizes (0: skip)"),
    cpu_max_size: int = typer.Option(256, "--cpu-max-size", min=0, help="with a GPU, larger "
                                     "convolution sizes are timed on the GPU only"),
    mc_histories: int = typer.Option(0, "--mc-histories", min=0, help="also time the Monte "
                                     "Carlo (Lu-177 DPK in water) with this many electrons and "
                                     "as many photons, histories/s (0: skip)"),
):
    """Time voxdose's dose convolution against scipy.signal.fftconvolve (float64, the same
    Lu-177 kernel at 4.8 mm, radius by the rule of every command, cropped to the grid), its
    per-voxel TIA fit against a scipy.optimize.curve_fit loop and, on request, the Monte
    Carlo, in the same run; with a GPU the same cases on the device (CUDA-event timing,
    transfers apart, against the device's copy bandwidth)."""
    from ..core.backend import DEVICES, get_backend, resolve_device
    from .bench import copy_bandwidth, device_info, machine_info, run_bench

    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    ns = _int_list(sizes, "--sizes", 4, 1024, allow_zero=True)
    tia_ns = _int_list(tia_size, "--tia-size", 1, 512, allow_zero=True)
    gpu = resolve_device(device) == "gpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        info = device_info(device)
        bw = copy_bandwidth(get_backend("gpu")) if gpu else None
        rows = (run_bench(ns, device, repeats, cpu_max_size=cpu_max_size or None,
                          bandwidth=bw) if ns else [])
        tia_rows = _tia_rows(tia_ns, gpu)
        mc_rows, skipped = _mc_rows(mc_histories, gpu)
    if as_json:
        print(json.dumps({"machine": machine_info(), "device": info, "bandwidth": bw,
                          "rows": [r.to_dict() for r in rows],
                          "tia_rows": [r.to_dict() for r in tia_rows],
                          "mc_rows": [r.to_dict() for r in mc_rows], "skipped": skipped},
                         indent=2))
        return
    _print_bench(rows, tia_rows, mc_rows, skipped, machine_info(), info, bw)


def _tia_rows(sizes: list[int], gpu: bool) -> list:
    """The TIA-fit rows of every size: curve_fit and voxdose on the CPU, and on the GPU."""
    from .bench import run_tia_bench, tia_bench_curves

    out = []
    for n in sizes:
        curves = tia_bench_curves(n)  # once for both devices
        out += run_tia_bench(n, device="cpu", curves=curves)
        if gpu:
            out += run_tia_bench(n, device="gpu", curves=curves)
    return out


def _mc_rows(histories: int, gpu: bool) -> tuple[list, list[str]]:
    """Monte Carlo rows (CPU, and GPU when used); what could not run, and why."""
    from .bench import run_mc_bench

    rows, skipped = [], []
    if not histories:
        return rows, skipped
    for dev in ("cpu", "gpu") if gpu else ("cpu",):
        try:
            rows.append(run_mc_bench(histories, dev))
        except ImportError as exc:  # xraydb (element data of the media) not installed
            skipped.append(f"Monte Carlo on the {dev}: {exc}")
    return rows, skipped


def _print_bench(rows, tia_rows, mc_rows, skipped, machine, info, bw) -> None:
    dev = info.get("name", info["device"])
    cap = (f"{machine['cpu']}, {machine['cores']} cores; {dev}; times are minima; GPU "
           "times: CUDA events, data on the device (transfers apart)")
    if bw:
        cap += f"; device copy {bw['d2d_gb_s']:.0f} GB/s"
    t = Table(title="dose convolution: voxdose vs scipy.signal.fftconvolve (same run)",
              caption=cap)
    for col in ("n^3", "method", "device", "precision", "ms", "speed-up", "max rel diff",
                "h2d ms", "d2h ms", "copy floor ms"):
        t.add_column(col, justify="right" if col not in ("method",) else "left")

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    for r in rows:
        t.add_row(str(r.size), r.method, r.device, r.precision, f"{r.time_ms:.1f}",
                  f(r.speedup_vs_scipy, ".2f"), f(r.max_rel_diff_vs_scipy, ".1e"),
                  f(r.h2d_ms, ".1f"), f(r.d2h_ms, ".1f"), f(r.copy_floor_ms, ".2f"))
    console.print(t)
    if tia_rows:
        t2 = Table(title="bi-exponential TIA fit, 5 time points",
                   caption="curve_fit timed on a sample of voxels; throughput = voxels / s")
        for col in ("method", "device", "voxels", "s", "voxels/s", "speed-up", "h2d s",
                    "d2h s"):
            t2.add_column(col, justify="left" if col == "method" else "right")
        for r in tia_rows:
            t2.add_row(r.method, r.device, str(r.voxels), f"{r.time_s:.3f}",
                       f"{r.voxels_per_s:.3g}", f(r.speedup_vs_curve_fit, ".0f"),
                       f(r.h2d_s, ".3f"), f(r.d2h_s, ".3f"))
        console.print(t2)
    for r in mc_rows:
        console.print(f"Monte Carlo {r.nuclide} ({r.device}): {r.electrons} e- + {r.photons} "
                      f"photons in {r.seconds:.2f} s = {r.histories_per_s:,.0f} histories/s")
    for line in skipped:
        console.print(f"skipped: {line}")
