"""How far a voxel kernel reaches (one rule for every entry point), and the point kernel a
command uses.

The rule (:func:`kernel_extent`; docs/defaults.md), used by ``voxdose run``, ``dose``,
``kernel``, ``compare``, ``bench`` and the APIs (:func:`voxdose.dose.engine.make_engine`,
:func:`voxdose.analysis.compare.compare_nuclides`):

1. the smallest radius whose sphere holds all but ``NEGLECT_TARGET`` (0.1 %) of the energy
   per decay: the energy emitted, or what the table holds when that is more (a user's
   table scaled otherwise; Lu-177's Monte Carlo table: +0.04 %) (``'0.1 % target'``; the
   table's end when even that leaves more out: ``'table end'``);
2. on a known dose grid, at most the grid's largest extent ``max_a (n_a - 1) s_a``
   (``'grid extent'``): the kernel is a box (its corners are kept), so with that radius it
   already reaches every voxel of the grid from every source voxel, and a larger kernel
   would change no dose value, only cost time;
3. at most ``MAX_DEFAULT_KERNEL_VOXELS`` kernel voxels (``'size limit'``: the largest radius
   that fits; only fine grids, below ~3 mm for Lu-177).

A radius given by the user wins (``'user'``).  Whatever binds, the energy the kernel leaves
out is reported with the dose (``neglected_energy_fraction``).  Step 2 never changes a dose:
``voxdose dose`` equals the convolution of the TIA with the kernel ``voxdose kernel`` writes
for the same voxel size (tests/test_one_truth.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Target for the energy per decay a default kernel leaves out (fraction of the emitted).
NEGLECT_TARGET = 1e-3
#: Size limit of a default kernel, voxels (512 MB in float64 while it is built).
MAX_DEFAULT_KERNEL_VOXELS = 64_000_000
#: The rule in words (written into provenance).
RADIUS_RULE = ("smallest radius holding all but 0.1 % of the energy per decay (emitted, or "
               "the table's when more); on a dose grid at most its largest extent "
               "max((n-1) s) (the box kernel then reaches every voxel); at most 64 million "
               "kernel voxels")


@dataclass(frozen=True)
class KernelExtent:
    """The radius of a voxel kernel and why (see the module docstring).

    ``radius_mm``: the radius used; ``limited_by``: '0.1 % target' | 'table end' |
    'grid extent' | 'size limit' | 'user'; ``energy_radius_mm``: the 0.1 % radius of step 1;
    ``beyond_radius_energy_fraction``: 1 - E_abs(radius) / E_emitted (infinite medium, a
    sphere: the box kernel holds a little more).
    """

    radius_mm: float
    limited_by: str
    energy_radius_mm: float
    beyond_radius_energy_fraction: float

    def to_dict(self) -> dict:
        return {**asdict(self), "rule": RADIUS_RULE}


def _energy_radius_mm(pk) -> tuple[float, str]:
    """Step 1: the smallest radius holding all but NEGLECT_TARGET of the energy per decay
    (emitted, or the table's when larger), or the table's end."""
    r_end = float(getattr(pk, "edges_mm", np.array([2000.0]))[-1])
    r = np.geomspace(1e-3, r_end, 8000)
    e = pk.cumulative_energy_mev(r)
    reference = max(pk.total_energy_mev, float(e[-1]))
    ok = np.nonzero(e >= (1.0 - NEGLECT_TARGET) * reference)[0]
    return (float(r[ok[0]]), "0.1 % target") if ok.size else (r_end, "table end")


def _size_cap_mm(s: np.ndarray) -> float:
    """The largest radius whose box (2 ceil(R/s_a) + 1 per axis) has at most
    MAX_DEFAULT_KERNEL_VOXELS voxels."""
    r_cap = 0.5 * (MAX_DEFAULT_KERNEL_VOXELS * float(np.prod(s))) ** (1.0 / 3.0)
    while r_cap > 0 and np.prod(2 * np.ceil(r_cap / s) + 1) > MAX_DEFAULT_KERNEL_VOXELS:
        r_cap *= 0.99
    return float(r_cap)


def grid_extent_mm(spacing_mm_zyx, grid_shape) -> float:
    """max_a (n_a - 1) s_a (at least the smallest voxel side): the radius from which a box
    kernel reaches every voxel of the grid."""
    s = np.asarray(spacing_mm_zyx, dtype=np.float64)
    n = np.asarray(grid_shape, dtype=np.float64)
    return float(max(np.max((n - 1) * s), s.min()))


def kernel_extent(pk, spacing_mm_zyx=(1.0, 1.0, 1.0), grid_shape=None,
                  radius_mm: float | None = None) -> KernelExtent:
    """The voxel-kernel radius of point kernel ``pk`` on voxels of ``spacing_mm_zyx``
    (z, y, x), on a dose grid of ``grid_shape`` when known (see the module docstring)."""
    s = np.asarray(spacing_mm_zyx, dtype=np.float64)
    r_e, why = _energy_radius_mm(pk)

    def result(r: float, reason: str) -> KernelExtent:
        beyond = 1.0 - float(pk.cumulative_energy_mev(r)) / pk.total_energy_mev
        return KernelExtent(float(r), reason, r_e, beyond)

    if radius_mm is not None:
        return result(float(radius_mm), "user")
    r, reason = r_e, why
    if grid_shape is not None:
        r_grid = grid_extent_mm(s, grid_shape)
        if r_grid < r:
            r, reason = r_grid, "grid extent"
    r_cap = _size_cap_mm(s)
    if r > r_cap:
        r, reason = r_cap, "size limit"
    return result(r, reason)


def default_radius_mm(pk, spacing_mm_zyx=(1.0, 1.0, 1.0), grid_shape=None
                      ) -> tuple[float, str]:
    """(radius mm, why) of :func:`kernel_extent` (the one rule)."""
    ext = kernel_extent(pk, spacing_mm_zyx, grid_shape)
    return ext.radius_mm, ext.limited_by


def kernel_radius_for(point_kernel, grid) -> float:
    """The rule's radius (mm) on a dose grid (:func:`kernel_extent` with its shape)."""
    return kernel_extent(point_kernel, grid.spacing_mm, grid.shape).radius_mm


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


# ------------------------------------------------------------------------------------------
# What building a kernel may cost (checked by the commands before any work; docs/io.md,
# "Command-line checks")
# ------------------------------------------------------------------------------------------
#: Smallest voxel side a kernel is built for, mm (10 um): the Monte Carlo tables' first
#: shells are 5 um (Lu-177) to 50 um (Y-90) wide, so a finer voxel resolves nothing the
#: table holds (and cell-level dosimetry is beyond a voxel method).
MIN_VOXEL_MM = 0.01
#: Most near-field offsets (permutation classes) one build may integrate cube-to-cube:
#: ~25 ms each on two cores, so 20 000 take ~8 min (Lu-177 reaches it below ~0.04 mm
#: voxels, Y-90 below ~0.25 mm; a smaller radius lowers the count).
MAX_NEAR_FIELD_CLASSES = 20_000
#: Peak bytes per kernel voxel while a kernel is built and written (the float64 array, a
#: float64 copy, float32 for the file and SimpleITK's copy of it).
KERNEL_BYTES_PER_VOXEL = 24


def kernel_build_cost(pk, spacing_mm_zyx, radius_mm: float) -> dict:
    """What :func:`voxdose.kernels.voxel.voxel_kernel` would build: the kernel's shape
    (2 h_a + 1, h_a = ceil(R / s_a)), its voxels, the peak bytes and the near-field
    permutation classes it integrates (offsets within the electron range, n_near =
    max(2, ceil(R_e / min s) + 1), up to permutations of axes of equal spacing)."""
    s = np.asarray(spacing_mm_zyx, dtype=np.float64)
    h = [max(1, math.ceil(float(radius_mm) / float(sa) - 1e-9)) for sa in s]
    n_near = max(2, math.ceil(pk.max_electron_range_mm / float(s.min())) + 1)
    near_h = [min(ha, n_near) for ha in h]
    groups: list[list[int]] = []  # axes of equal spacing: offsets permuted among them
    for a in range(3):
        for g in groups:
            if math.isclose(s[a], s[g[0]], rel_tol=1e-9):
                g.append(a)
                break
        else:
            groups.append([a])
    classes = math.prod(math.comb(near_h[g[0]] + len(g), len(g)) for g in groups)
    voxels = math.prod(2 * ha + 1 for ha in h)
    octant = math.prod(ha + 1 for ha in h)
    return {"shape_zyx": tuple(2 * ha + 1 for ha in h), "voxels": voxels,
            "bytes": voxels * KERNEL_BYTES_PER_VOXEL + 9 * octant,
            "near_field_classes": classes, "n_near": n_near}


def _gb(n: float) -> str:
    return f"{n / 1e12:.3g} TB" if n >= 1e12 else f"{n / 1e9:.3g} GB"


def check_voxel_size(spacing_mm_zyx, where: str = "") -> np.ndarray:
    """The spacing (z, y, x) as an array when every side is at least :data:`MIN_VOXEL_MM`,
    else :class:`InputError` (``where`` names the source of the voxel size)."""
    from ..core.errors import InputError

    s = np.asarray(spacing_mm_zyx, dtype=np.float64)
    if not np.all(np.isfinite(s)) or float(s.min()) < MIN_VOXEL_MM:
        at = f" ({where})" if where else ""
        xyz = "x".join(f"{v:g}" for v in s[::-1])
        raise InputError(f"voxel size {xyz} mm{at} is below the smallest voxel side a dose "
                         f"kernel is built for, {MIN_VOXEL_MM:g} mm (10 um); use voxels of "
                         f"at least {MIN_VOXEL_MM:g} mm")
    return s


def check_kernel_build(pk, spacing_mm_zyx, radius_mm: float, *, where: str = "",
                       available_bytes: int | None = None) -> dict:
    """Refuse, before any work, a kernel that cannot be built in reasonable time or memory:
    a voxel side below :data:`MIN_VOXEL_MM`, more than :data:`MAX_NEAR_FIELD_CLASSES`
    near-field integrations, or more memory than is available (``available_bytes``;
    default: the host's MemAvailable). ``where`` names the source of the voxel size in the
    message. Returns :func:`kernel_build_cost`. Raises :class:`InputError`."""
    from ..core.errors import InputError

    s = check_voxel_size(spacing_mm_zyx, where)
    at = f" ({where})" if where else ""
    xyz = "x".join(f"{v:g}" for v in s[::-1])
    cost = kernel_build_cost(pk, s, radius_mm)
    if cost["near_field_classes"] > MAX_NEAR_FIELD_CLASSES:
        m = 1  # largest near-block half-width within the limit (isotropic count)
        while math.comb(m + 4, 3) <= MAX_NEAR_FIELD_CLASSES:
            m += 1
        s_ok = pk.max_electron_range_mm / max(m - 1, 1)
        raise InputError(
            f"a {pk.nuclide} kernel on {xyz} mm voxels{at} needs "
            f"{cost['near_field_classes']:,} near-field integrations (its electrons reach "
            f"{cost['n_near']} voxels), more than the {MAX_NEAR_FIELD_CLASSES:,} voxdose "
            f"builds (~8 min); use voxels of at least {s_ok:.3g} mm or a kernel radius of at "
            f"most {m * float(s.min()):.3g} mm")
    from ..core.backend import host_available_memory_bytes

    avail = (host_available_memory_bytes() if available_bytes is None
             else int(available_bytes))
    if cost["bytes"] > avail:
        shape = " x ".join(str(n) for n in cost["shape_zyx"][::-1])
        raise InputError(
            f"a kernel of {shape} voxels of {xyz} mm{at} with radius {float(radius_mm):.4g} "
            f"mm needs about {_gb(cost['bytes'])} of memory while built "
            f"({KERNEL_BYTES_PER_VOXEL} bytes per voxel), {_gb(avail)} available; use a "
            "smaller kernel radius (or --half-width) or larger voxels")
    return cost
