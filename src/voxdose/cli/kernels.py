"""Kernel commands: ``voxdose dpk`` (radial dose point kernel table) and ``voxdose kernel``
(voxel S-value kernel as a NIfTI image).

Registered on the main app by :mod:`voxdose.cli.app` (each command module is imported there).
Bad input raises :class:`~voxdose.core.errors.InputError` before any work; outputs are written
atomically.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import typer

from .app import app, console
from ..core.errors import InputError
from ..kernels.extent import dpk_rows, kernel_extent, point_kernel_for_cli

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd")

def parse_voxel_mm(text: str) -> tuple[float, float, float]:
    """'S' or 'SX,SY,SZ' (mm, as users write x, y, z) -> spacing (z, y, x)."""
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--voxel-mm must be one number or three numbers SX,SY,SZ in mm; "
                         f"got '{text}'") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise InputError(f"--voxel-mm must be one positive number or three SX,SY,SZ in mm; "
                         f"got '{text}'")
    sx, sy, sz = vals
    return (sz, sy, sx)


@app.command()
def dpk(
    nuclide: str = typer.Argument(..., help="nuclide, e.g. Lu-177, Y-90 or I-131"),
    medium: str = typer.Option("water", "--medium", help="water | soft-tissue | lung | bone "
                               "(each transported in its own composition and density)"),
    out: Path = typer.Option(None, "--out", help="output CSV: r_mm,dose_Gy_per_decay "
                             "(needed unless --build)"),
    build: bool = typer.Option(False, "--build", help="build the Monte Carlo table of a "
                               "nuclide without a shipped one into the kernel cache now "
                               "(what a run would otherwise build on first use)"),
    model: str = typer.Option("monte-carlo", "--kernel", help="monte-carlo (the shipped "
                              "table, else one built by voxdose's Monte Carlo and cached) "
                              "| analytic (approximate, about +-20 %; said in a warning)"),
    histories: int = typer.Option(0, "--histories", min=0, help="run the Monte Carlo now with "
                                  "this many electron (and photon) histories instead of "
                                  "using the shipped table (0); with --build: the histories "
                                  "of the cached table"),
    seed: int = typer.Option(12345, "--seed", help="seed of --histories runs"),
):
    """Radial dose point kernel per decay of NUCLIDE (point source, infinite medium):
    the shipped Monte Carlo table (kernels/), else one built by voxdose's Monte Carlo and
    cached (--build builds it ahead of time), or a fresh run with --histories."""
    from ..core.nuclide import load_nuclide
    from ..kernels.point import canonical_kernel_model, canonical_medium

    from .checks import output_file

    if out is None and not build:
        raise InputError("--out is needed (or --build to only build and cache the table)")
    if out is not None:
        output_file(out, "--out", (".csv",))  # before any work (a Monte Carlo run may follow)
    nuc = load_nuclide(nuclide)
    med = canonical_medium(medium)
    model = canonical_kernel_model(model)
    if model == "analytic" and (build or histories > 0):
        raise InputError("--kernel analytic is the approximate model: it has no Monte Carlo "
                         "table to build or run (drop --build / --histories)")
    t0 = time.perf_counter()
    pk, src = _dpk_kernel(nuc, med, model, build, histories, seed)
    if build:
        _say_built(pk, nuc.name, med)
    if out is None:
        return
    from ..io.atomic import staged_files
    from ..montecarlo.dpk import write_dpk_csv

    r, d = dpk_rows(pk)
    with staged_files([out]) as stage:
        write_dpk_csv(stage(out), r, d)
    console.print(f"wrote [bold]{out}[/] ({nuc.name} in {med}, {r.size} rows, r up to "
                  f"{r[-1]:.4g} mm; source: {src}); {time.perf_counter() - t0:.1f} s",
                  highlight=False)


def _dpk_kernel(nuc, med: str, model: str, build: bool, histories: int, seed: int):
    """(point kernel, its source in words) for ``voxdose dpk``."""
    import warnings

    from ..kernels.point import ApproximateKernelWarning, TabulatedPointKernel, load_point_kernel

    if histories > 0 and not build:
        from ..montecarlo.dpk import simulate_dpk

        res = simulate_dpk(nuc, histories, histories, seed=seed, medium=med)
        pk = TabulatedPointKernel.from_table(
            res.r_mm, res.dose_gy_per_decay, nuclide=nuc.name,
            density_g_cm3=res.density_g_cm3, total_energy_mev=res.emitted_mev,
            source=f"voxdose MC, {histories} histories in {med}", medium=med)
        return pk, pk.source
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ApproximateKernelWarning)
        pk = load_point_kernel(nuc, med, model=model,
                               histories=(histories, histories) if histories > 0 else None)
    for w in caught:
        if issubclass(w.category, ApproximateKernelWarning):
            console.print(f"voxdose: warning: {w.message}", style="yellow", markup=False,
                          highlight=False)
    prov = pk.provenance()
    return pk, prov.get("source", prov.get("model"))


def _say_built(pk, name: str, med: str) -> None:
    """What ``voxdose dpk --build`` did: the cached table (or that one is shipped)."""
    rec = pk.provenance().get("table_record", {})
    if not rec.get("cache_file"):
        console.print(f"{name} in {med}: {pk.provenance().get('source')}; nothing to build",
                      highlight=False)
        return
    from ..kernels.cache import voxel_uncertainty_text

    console.print(f"{name} in {med}: Monte Carlo table [bold]{rec['cache_file']}[/] "
                  f"({rec.get('n_electron_histories', 0):,} electron + "
                  f"{rec.get('n_photon_histories', 0):,} photon histories, built in "
                  f"{rec.get('wall_seconds', 0.0):.0f} s at "
                  f"{rec.get('histories_per_second') or 0:,.0f} histories/s; "
                  f"{voxel_uncertainty_text(rec)})",
                  highlight=False)


@app.command()
def kernel(
    nuclide: str = typer.Argument(..., help="nuclide, e.g. Lu-177 or Y-90"),
    voxel_mm: str = typer.Option(..., "--voxel-mm", help="voxel size in mm: S or SX,SY,SZ"),
    medium: str = typer.Option("water", "--medium", help="water | soft-tissue | lung | bone "
                               "(the medium's own Monte Carlo table)"),
    half_width: int = typer.Option(None, "--half-width", min=1, help="kernel half-width N in "
                                   "voxels per axis (array 2N+1); default: the extent that "
                                   "leaves < 0.1 % of the energy per decay out, unless that "
                                   "exceeds 64 million voxels (then the largest that fits; "
                                   "the neglected fraction is printed and stored)"),
    dpk_path: Path = typer.Option(None, "--dpk", help="use this radial DPK table (CSV "
                                  "r_mm,dose_Gy_per_decay, water) instead of the shipped one"),
    out: Path = typer.Option(..., "--out", help="output image (.nii.gz, .nii, .mhd, .nrrd)"),
):
    """Voxel S-value kernel of NUCLIDE in mGy/(MBq*s): mean dose in each voxel from decays
    uniformly distributed in the central (source) voxel; NIfTI spacing = voxel size."""
    from .. import __version__
    from ..kernels.voxel import voxel_kernel
    from ..core.grid import Grid, Image
    from ..io.sitk_adapter import write_image
    from ..core.units import MEV_PER_G_TO_GY
    from ..io.atomic import staged_files
    from ..kernels.extent import check_kernel_build, check_voxel_size
    from .checks import input_file, output_file

    output_file(out, "--out", _IMAGE_SUFFIXES)  # before any work
    spacing = parse_voxel_mm(voxel_mm)
    check_voxel_size(spacing, "--voxel-mm")
    if dpk_path is not None:
        input_file(dpk_path, "--dpk", "DPK table")
    nuc, pk = point_kernel_for_cli(nuclide, medium, dpk_path)
    t0 = time.perf_counter()
    s = np.asarray(spacing)
    # the one radius rule of every command (docs/defaults.md); no grid here to cap it
    ext = kernel_extent(pk, spacing, None,
                        None if half_width is None else float(half_width) * float(s.max()))
    radius, why = ext.radius_mm, ext.limited_by if half_width is None else "--half-width"
    check_kernel_build(pk, spacing, radius, where="--voxel-mm")  # time and memory, up front
    vk = voxel_kernel(pk, spacing, radius_mm=radius)
    data = vk.data_gy_per_decay
    if half_width is not None:
        c = [n // 2 for n in data.shape]
        data = data[tuple(slice(ci - half_width, ci + half_width + 1) for ci in c)]
    mass_g = pk.density_g_cm3 / 1000.0 * float(np.prod(s))
    absorbed = float(data.sum()) / MEV_PER_G_TO_GY * mass_g
    neglected = 1.0 - absorbed / pk.total_energy_mev
    h = np.array([n // 2 for n in data.shape])
    origin_xyz = (-(h * s))[::-1]
    grid = Grid.from_spacing(data.shape, spacing, origin_mm_xyz=tuple(origin_xyz))
    prov = vk.provenance()
    prov.update({"shape_zyx": list(data.shape), "neglected_energy_fraction": neglected,
                 "extent_rule": why})
    img = Image(vk.as_mgy_per_mbq_s() if half_width is None else data / 1e-9, grid,
                "voxel S-value kernel", "mGy/(MBq*s)", {"kernel": prov})
    with staged_files([out]) as stage:  # the image and its sidecar, both or neither
        write_image(stage(out), img, dtype=np.float32, sidecar={
            "nuclide": nuc.name, "medium": pk.provenance().get("medium", "water"),
            "voxdose_version": __version__, "source_voxel_index_zyx": [int(v) for v in h],
            "neglected_energy_fraction": neglected, "extent_rule": why,
            "kernel_extent": ext.to_dict(), "seconds": time.perf_counter() - t0})
    console.print(f"wrote [bold]{out}[/] ({nuc.name}, {data.shape[2]}x{data.shape[1]}x"
                  f"{data.shape[0]} voxels of {spacing[2]:g}x{spacing[1]:g}x{spacing[0]:g} mm; "
                  f"self-voxel {data[tuple(h)] / 1e-9:.4g} mGy/(MBq*s); neglected energy "
                  f"{neglected:.2%}, extent: {why}); {time.perf_counter() - t0:.1f} s",
                  highlight=False)


@app.command("dpk-plot")
def dpk_plot(
    out: Path = typer.Option(..., "--out", help="output figure (.png)"),
    nuclides: str = typer.Option("Lu-177,Y-90", "--nuclides", help="comma-separated"),
    medium: str = typer.Option("water", "--medium", help="water | soft-tissue | lung | bone"),
):
    """Figure of the radial dose point kernels: r²·DPK vs r and the cumulative absorbed
    energy fraction vs r with r90 marked."""
    from ..core.nuclide import load_nuclide
    from ..io.atomic import staged_files
    from ..kernels.point import canonical_medium
    from .checks import output_file

    output_file(out, "--out", (".png",))
    names = [n.strip() for n in nuclides.split(",") if n.strip()]
    if not names:
        raise InputError("--nuclides needs at least one nuclide")
    for n in names:
        load_nuclide(n)  # clear error for an unknown nuclide before any work
    canonical_medium(medium)
    from ..report.dpk_plot import plot_dpk_figure

    with staged_files([out]) as stage:
        info = plot_dpk_figure(stage(out), names, medium)
    text = "; ".join(f"{k} r90 {v['r90_mm']:.3g} mm" for k, v in info.items())
    console.print(f"wrote [bold]{out}[/] ({text})", highlight=False)
