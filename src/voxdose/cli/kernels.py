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
from ..kernels.extent import default_radius_mm, dpk_rows, point_kernel_for_cli

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
    nuclide: str = typer.Argument(..., help="nuclide, e.g. Lu-177 or Y-90"),
    medium: str = typer.Option("water", "--medium", help="water | soft-tissue | lung | bone "
                               "(each transported in its own composition and density)"),
    out: Path = typer.Option(..., "--out", help="output CSV: r_mm,dose_Gy_per_decay"),
    histories: int = typer.Option(0, "--histories", min=0, help="run the Monte Carlo now with "
                                  "this many electron (and photon) histories instead of "
                                  "using the shipped table (0)"),
    seed: int = typer.Option(12345, "--seed", help="seed of --histories runs"),
):
    """Radial dose point kernel per decay of NUCLIDE (point source, infinite medium):
    the shipped Monte Carlo table (kernels/), or a fresh run with --histories."""
    from ..montecarlo.dpk import simulate_dpk, write_dpk_csv
    from ..kernels.point import TabulatedPointKernel, canonical_medium
    from ..io.atomic import atomic_path
    from ..core.nuclide import load_nuclide

    if not str(out).endswith(".csv"):
        raise InputError(f"output {out} must end with .csv")
    nuc = load_nuclide(nuclide)
    med = canonical_medium(medium)
    t0 = time.perf_counter()
    if histories > 0:
        res = simulate_dpk(nuc, histories, histories, seed=seed, medium=med)
        pk = TabulatedPointKernel.from_table(
            res.r_mm, res.dose_gy_per_decay, nuclide=nuc.name,
            density_g_cm3=res.density_g_cm3, total_energy_mev=res.emitted_mev,
            source=f"voxdose MC, {histories} histories in {med}", medium=med)
        src = pk.source
    else:
        nuc, pk = point_kernel_for_cli(nuclide, med, None)
        src = pk.provenance().get("source", pk.provenance().get("model"))
    r, d = dpk_rows(pk)
    with atomic_path(out) as tmp:
        write_dpk_csv(tmp, r, d)
    console.print(f"wrote [bold]{out}[/] ({nuc.name} in {med}, {r.size} rows, r up to "
                  f"{r[-1]:.4g} mm; source: {src}); {time.perf_counter() - t0:.1f} s",
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

    if not str(out).endswith(_IMAGE_SUFFIXES):
        raise InputError(f"output {out} must end with one of {', '.join(_IMAGE_SUFFIXES)}")
    spacing = parse_voxel_mm(voxel_mm)
    nuc, pk = point_kernel_for_cli(nuclide, medium, dpk_path)
    t0 = time.perf_counter()
    s = np.asarray(spacing)
    if half_width is None:
        radius, why = default_radius_mm(pk, spacing)
    else:
        radius, why = float(half_width) * float(s.max()), "--half-width"
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
    write_image(out, img, dtype=np.float32, sidecar={
        "nuclide": nuc.name, "medium": pk.provenance().get("medium", "water"),
        "voxdose_version": __version__, "source_voxel_index_zyx": [int(v) for v in h],
        "neglected_energy_fraction": neglected, "extent_rule": why,
        "seconds": time.perf_counter() - t0})
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

    if not str(out).endswith(".png"):
        raise InputError(f"output {out} must end with .png")
    names = [n.strip() for n in nuclides.split(",") if n.strip()]
    if not names:
        raise InputError("--nuclides needs at least one nuclide")
    for n in names:
        load_nuclide(n)  # clear error for an unknown nuclide before any work
    from ..report.dpk_plot import plot_dpk_figure

    info = plot_dpk_figure(out, names, medium)
    text = "; ".join(f"{k} r90 {v['r90_mm']:.3g} mm" for k, v in info.items())
    console.print(f"wrote [bold]{out}[/] ({text})", highlight=False)
