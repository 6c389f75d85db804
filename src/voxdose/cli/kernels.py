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

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd")
#: Target for the neglected energy of the default kernel extent.
NEGLECT_TARGET = 1e-3
#: Size limit of a default kernel, voxels (512 MB in float64 while it is built).
MAX_DEFAULT_KERNEL_VOXELS = 64_000_000


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


def point_kernel_for_cli(nuclide: str, medium: str, dpk: Path | None):
    """The point kernel the commands use: a user's table (--dpk) or the shipped one."""
    from ..kernels.point import (
        MEDIA_DENSITY_G_CM3,
        canonical_medium,
        load_point_kernel,
        read_dpk_csv,
    )
    from ..core.nuclide import load_nuclide

    nuc = load_nuclide(nuclide)
    med = canonical_medium(medium)
    if dpk is None:
        return nuc, load_point_kernel(nuc, med)
    pk = read_dpk_csv(dpk, nuclide=nuc)
    if med != "water":
        pk = pk.range_scaled(MEDIA_DENSITY_G_CM3[med], medium=med)
    return nuc, pk


def dpk_rows(pk, r_max_mm: float = 600.0):
    """(r_mm, D) rows of a point kernel: its own table rows for a tabulated kernel, else
    shell averages D = dE_abs / m_shell on shells of 0.01 mm (electrons) growing by 2 %."""
    from ..core.units import MEV_PER_G_TO_GY

    if hasattr(pk, "r_table_mm"):
        return pk.r_table_mm, pk.dose_table_gy_per_decay
    r_e = max(pk.max_electron_range_mm, 0.05)
    dr = min(0.01, r_e / 200.0)
    edges = np.arange(0.0, r_e + dr, dr)
    if pk.photon_energies_mev.size:
        n = int(math.ceil(math.log(r_max_mm / edges[-1]) / math.log(1.02)))
        edges = np.concatenate([edges, edges[-1] * 1.02 ** np.arange(1, n + 1)])
    e_abs = pk.cumulative_energy_mev(edges)
    mass = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3) * pk.density_g_cm3 / 1000
    return 0.5 * (edges[1:] + edges[:-1]), np.diff(e_abs) / mass * MEV_PER_G_TO_GY


def default_radius_mm(pk, spacing_mm_zyx=(1.0, 1.0, 1.0)) -> tuple[float, str]:
    """The default kernel radius (mm) and why: the smallest radius whose sphere holds all
    but NEGLECT_TARGET (0.1 %) of the energy per decay (the kernel's cube then holds
    more), unless the kernel would exceed MAX_DEFAULT_KERNEL_VOXELS; then the largest
    radius within that size ('size limit'), or the table's end when even that leaves
    more than 0.1 % out ('table end')."""
    s = np.asarray(spacing_mm_zyx, dtype=np.float64)
    r_end = float(getattr(pk, "edges_mm", np.array([2000.0]))[-1])
    r = np.geomspace(1e-3, r_end, 8000)
    e = pk.cumulative_energy_mev(r)
    ok = np.nonzero(e >= (1.0 - NEGLECT_TARGET) * pk.total_energy_mev)[0]
    r_need, why = (float(r[ok[0]]), "0.1 % target") if ok.size else (r_end, "table end")
    # (2 ceil(R/s_a) + 1) product <= the voxel limit
    r_cap = 0.5 * (MAX_DEFAULT_KERNEL_VOXELS * float(np.prod(s))) ** (1.0 / 3.0)
    while r_cap > 0 and np.prod(2 * np.ceil(r_cap / s) + 1) > MAX_DEFAULT_KERNEL_VOXELS:
        r_cap *= 0.99
    if r_need > r_cap:
        return float(r_cap), "size limit"
    return r_need, why


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


def plot_dpk_figure(path, nuclides=("Lu-177", "Y-90"), medium: str = "water") -> dict:
    """Figure of the radial DPKs: r^2 D(r) vs r and the cumulative absorbed-energy fraction
    vs r with r90 marked (matplotlib Agg, written atomically).  Returns {nuclide: r90 info}.

    The fraction is E_abs(r) / E_abs(end of table) of the shipped kernel (the table holds
    the emitted energy minus bremsstrahlung and photons beyond its end); r90 is where it
    reaches 0.9; the electron-only r90 of the Monte Carlo record is marked dotted.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..kernels.point import canonical_medium, load_point_kernel
    from ..io.atomic import atomic_path

    med = canonical_medium(medium)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    info = {}
    for name in nuclides:
        pk = load_point_kernel(name, med)
        r, d = dpk_rows(pk)
        line, = ax1.plot(r, r * r * d, lw=1.2, label=pk.nuclide)
        c = line.get_color()
        edges = getattr(pk, "edges_mm", None)
        if edges is None:
            edges = np.concatenate([[0.0], np.geomspace(1e-3, 600.0, 800)])
        e = np.asarray(pk.cumulative_energy_mev(edges))
        frac = e / e[-1]
        r90 = float(np.interp(0.9, frac, edges))
        rec = getattr(pk, "record", None) or {}
        r90_e = rec.get("electron_r90_mm")
        if r90_e is not None and med != "water":
            r90_e = float(r90_e) / pk.density_g_cm3
        ax2.plot(np.maximum(edges[1:], 1e-3), frac[1:], color=c, lw=1.2,
                 label=f"{pk.nuclide}: r90 = {r90:.3g} mm")
        ax2.axvline(r90, color=c, ls="--", lw=0.9)
        ax2.plot([r90], [0.9], "o", color=c, ms=4)
        if r90_e:
            ax2.axvline(r90_e, color=c, ls=":", lw=0.9,
                        label=f"{pk.nuclide} electrons only: r90 = {r90_e:.3g} mm")
        info[pk.nuclide] = {"r90_mm": r90, "electron_r90_mm": r90_e,
                            "source": pk.provenance().get("source", "analytic")}
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("distance r (mm)")
    ax1.set_ylabel("r² · DPK(r)  (Gy mm² per decay)")
    ax1.set_title(f"radial dose point kernels, {med}", fontsize=9)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlim(1e-3, 700)
    ax2.set_ylim(0, 1.02)
    ax2.axhline(0.9, color="grey", lw=0.6)
    ax2.set_xlabel("distance r (mm)")
    ax2.set_ylabel("cumulative absorbed-energy fraction")
    ax2.set_title("energy absorbed within r (dashed: r90 of all; dotted: electrons)",
                  fontsize=9)
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return info


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
    info = plot_dpk_figure(out, names, medium)
    text = "; ".join(f"{k} r90 {v['r90_mm']:.3g} mm" for k, v in info.items())
    console.print(f"wrote [bold]{out}[/] ({text})", highlight=False)
