"""How far a voxel kernel reaches, and the point kernel a command uses.

Two rules exist today (the one-truth issue will make them one):

* :func:`kernel_radius_for` (pipeline, comparison): the dose grid's diagonal, capped by the
  kernel table's range, so only energy leaving the imaged volume is neglected;
* :func:`default_radius_mm` (``voxdose kernel``): the smallest radius whose sphere holds all
  but ``NEGLECT_TARGET`` of the energy per decay, within ``MAX_DEFAULT_KERNEL_VOXELS``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Target for the neglected energy of the default kernel extent.
NEGLECT_TARGET = 1e-3
#: Size limit of a default kernel, voxels (512 MB in float64 while it is built).
MAX_DEFAULT_KERNEL_VOXELS = 64_000_000



def kernel_radius_for(point_kernel, grid) -> float:
    """Default voxel-kernel radius: the grid's diagonal (no voxel is farther from a source),
    capped by the kernel table's range (beyond it the table has no energy)."""
    diag = float(np.linalg.norm(np.array(grid.shape) * grid.spacing_mm))
    table_end = getattr(point_kernel, "r_table_mm", None)
    return min(diag, float(table_end[-1])) if table_end is not None else diag


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
