"""Voxel S-value kernels from a point kernel (the Monte Carlo tables of kernels/, or the
analytic model): the mean dose in each voxel per decay in the source voxel.

What
    For a source uniformly distributed in one voxel (the centre of the kernel) and a target
    voxel at integer offset ``o = (o_z, o_y, o_x)``, the voxel S-value is the mean absorbed
    dose in the target per decay in the source, Gy per decay::

        S(o) = E_x,y[ D(|x - y|) ] = E_u[ D(|o*s + u|) ],

    x uniform in the target, y uniform in the source, ``s`` the voxel spacing (mm) and
    ``u = x - y - o*s`` whose components are independent with the triangular ("tent") density
    ``t_a(u) = max(0, 1 - |u|/s_a)/s_a`` on [-s_a, s_a].  D(r) is the point dose kernel
    (:mod:`voxdose.kernels.point`).  Voxel centres are never point-sampled.

Near offsets (|o_a| <= n_near on every axis, n_near = max(2, ceil(R_e,max/min s) + 1))
    In spherical coordinates around the source point, with j = dE_abs/dr (MeV/mm)::

        S(o) = (1/rho) int_0^inf j(r) g_o(r) dr,   g_o(r) = <f_o(r Omega)>_Omega   (1/mm^3)
        f_o(v) = prod_a max(0, 1 - |v_a - o_a s_a|/s_a) / s_a,

    g_o is the spherical average of the tent-product density.  The integral is evaluated as
    ``sum_i [E_abs(r_i+1) - E_abs(r_i)] g_o(r_mid,i)`` over a radial grid spanning the support
    of g_o (distance from the origin to the nearest and farthest point of the box
    ``o*s +- s``; ~400 bins, geometric near r = 0 when the box contains the origin), so the
    1/r^2 singularity of D is integrated analytically through E_abs.  Directions come from a
    Fibonacci lattice (~2000 points) on the whole sphere, or - when the box does not
    surround the origin - on the spherical cap around o*s that contains the box (the
    integrand vanishes elsewhere), weighted by the cap's solid-angle fraction.  The local
    energy E_loc of the analytic kernel (emissions below its 10 keV cut,
    :data:`voxdose.kernels.point.LOCAL_CUTOFF_MEV`) is added to the central voxel as
    E_loc/(rho V) (= E_loc f_0(0)/rho); a Monte Carlo table has no separate local term (its
    first shell holds what the transport deposited there, photons below 1 keV included).
    rho in g/mm^3 (= density/1000), so S is MeV/g, converted with ``MEV_PER_G_TO_GY``.
    Because the tents form a partition of unity (sum_o f_o = 1/V), the near values conserve
    energy up to the direction / radial quadrature error (~1e-5; Y-90: 2e-6).

Far offsets (some |o_a| > n_near: the target box lies beyond the electron range)
    Default (``far_field="tent3"``, :mod:`voxdose.kernels.far_field`): the Gauss rule of the
    tent weight itself, nodes {0, +-sqrt(2/5) s_a}, weights {7/12, 5/24, 5/24} (exact to
    degree 5 per axis, 27 nodes per offset), compiled with Numba and evaluated once per
    symmetry class.  Its samples of j(r) are the table's mean over a radial window of half
    the smallest voxel side, (E_abs(r + w/2) - E_abs(r - w/2)) / w, w = s_min / 2: 27 point
    samples would average the Monte Carlo table's bin noise less than 216 do (Lu-177, 4 mm,
    against the accurate near-field method: largest far-voxel deviation 1.3 % with point
    samples, 0.17 % with the window; the 216-node rule 0.5 %).  The window's own bias,
    about w^2 j''/(24 j), is below 1e-4 for the smooth photon tail beyond the electrons.
    ``far_field="gauss6"`` is the former rule: 3 Gauss-Legendre nodes on each half
    [-s_a, 0] and [0, s_a] with (1 - |u|/s_a)/s_a folded into the weights (6 nodes per axis,
    216 per offset; NumPy), kept as the reference of the tests and benchmarks.
    Both evaluate D(r) from a dense table of j(r) (spacing <= 0.02 mm, linear
    interpolation; relative error < 1e-5).  Electrons never reach the far region.  Measured
    difference tent3 - gauss6: below 1e-4 of the source-voxel value everywhere, energy sums
    equal within 1e-6 (``tests/test_kernel_far_field.py``, docs/validation.md).

Symmetry
    S is even in each axis (mirror), so only the octant o >= 0 is computed and mirrored;
    axes of equal spacing are also interchangeable, so near values are computed once per
    permutation class.

The kernel array covers the box |o_a| <= h_a = ceil(radius_mm / s_a) (values in its corners
are kept, not cut to a sphere).  The default radius is the one rule of every entry point,
:func:`voxdose.kernels.extent.kernel_extent` (0.1 % of the energy left out; docs/defaults.md).
The value at an offset does not depend on the radius (a larger box only adds offsets).
``neglected_energy_fraction = 1 - sum(S rho V)/E_total`` counts the energy deposited outside
the box (mostly the long photon build-up tail) and the small quadrature error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.units import MEV_PER_G_TO_GY, MGY_PER_MBQ_S_IN_GY_PER_DECAY
from .point import PointKernel
from .symmetry import mirror_octant

N_DIRECTIONS = 2000
N_RADIAL = 400
#: Offsets per chunk in the far-field quadrature (x 216 nodes x 8 bytes x few temporaries).
_FAR_CHUNK = 20_000
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

#: How the far offsets are integrated (see the module docstring); the default first.
FAR_FIELD_RULES = {
    "tent3": "3x3x3 tent-weight Gauss quadrature (Numba, once per symmetry class)",
    "gauss6": "6x6x6 tent-weighted Gauss-Legendre quadrature (NumPy)",
}
_METHOD_NEAR = ("voxel S-values from the point kernel: near offsets by radial integration "
                "of the cumulative absorbed energy against the spherically averaged "
                "tent-product density (Fibonacci directions); far offsets by ")


def method_description(far_field: str = "tent3") -> str:
    """The ``method`` string of a kernel built with ``far_field`` (part of the cache key)."""
    return _METHOD_NEAR + FAR_FIELD_RULES[far_field] + " of the point dose kernel; mirror symmetric"


METHOD = method_description()


@dataclass(frozen=True, eq=False)
class VoxelKernel:
    """Voxel S-value kernel, Gy per decay.

    Attributes
    ----------
    data_gy_per_decay : float64 array (2 h_z + 1, 2 h_y + 1, 2 h_x + 1), indexed [z, y, x];
        the source voxel is at the centre ``(h_z, h_y, h_x)``
    spacing_mm : voxel spacing (z, y, x), mm
    nuclide : canonical nuclide name
    density_g_cm3 : medium density, g/cm^3
    neglected_energy_fraction : 1 - sum(S m_voxel) / E_total, m_voxel = rho V
    method : how the values were computed
    radius_mm, total_energy_mev, n_near, build_seconds, point_kernel_provenance : bookkeeping
    """

    data_gy_per_decay: np.ndarray
    spacing_mm: tuple[float, float, float]
    nuclide: str
    density_g_cm3: float
    neglected_energy_fraction: float
    method: str
    radius_mm: float
    total_energy_mev: float
    n_near: int
    build_seconds: float
    point_kernel_provenance: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data_gy_per_decay.shape)

    @property
    def half_width(self) -> tuple[int, int, int]:
        """(h_z, h_y, h_x): the centre index of the kernel array."""
        return tuple(n // 2 for n in self.data_gy_per_decay.shape)

    @property
    def voxel_mass_g(self) -> float:
        """m = rho V, g (V in mm^3, rho in g/cm^3 -> g/mm^3 = rho/1000)."""
        return self.density_g_cm3 / 1000.0 * float(np.prod(self.spacing_mm))

    def as_mgy_per_mbq_s(self) -> np.ndarray:
        """The kernel in the literature's unit mGy/(MBq s) (= 1e-9 Gy per decay)."""
        return self.data_gy_per_decay / MGY_PER_MBQ_S_IN_GY_PER_DECAY

    def provenance(self) -> dict:
        """JSON-serialisable description of the kernel and how it was made."""
        return {
            "kind": "voxel S-value kernel",
            "nuclide": self.nuclide,
            "density_g_cm3": self.density_g_cm3,
            "spacing_mm_zyx": list(self.spacing_mm),
            "shape_zyx": list(self.shape),
            "radius_mm": self.radius_mm,
            "unit": "Gy per decay",
            "neglected_energy_fraction": self.neglected_energy_fraction,
            "total_energy_mev": self.total_energy_mev,
            "n_near": self.n_near,
            "method": self.method,
            "build_seconds": self.build_seconds,
            "point_kernel": self.point_kernel_provenance,
        }


# ---------------------------------------------------------------------------------------
# quadrature helpers
# ---------------------------------------------------------------------------------------
def _fibonacci_cap(n: int, cos_max: float, axis: np.ndarray) -> np.ndarray:
    """n unit vectors (n, 3) in equal-area Fibonacci order on the cap cos(theta) >= cos_max
    around ``axis`` (cos_max = -1: whole sphere)."""
    k = np.arange(n) + 0.5
    cz = 1.0 - (1.0 - cos_max) * k / n
    sz = np.sqrt(np.clip(1.0 - cz * cz, 0.0, None))
    phi = _GOLDEN_ANGLE * np.arange(n)
    local = np.stack([sz * np.cos(phi), sz * np.sin(phi), cz], axis=1)
    a = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(a, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    return local @ np.stack([e1, e2, a])


def _tent_gauss_nodes(s: float) -> tuple[np.ndarray, np.ndarray]:
    """6 nodes and weights integrating against t(u) = max(0, 1 - |u|/s)/s on [-s, s].

    3-point Gauss-Legendre on each half; weights sum to 1 and are exact for polynomials of
    degree <= 4 times the tent on each half.
    """
    x, w = np.polynomial.legendre.leggauss(3)
    t = 0.5 * (x + 1.0)                      # nodes on [0, 1]
    wt = 0.5 * w * (1.0 - t)                 # (1 - u/s)/s du with u = t s
    nodes = np.concatenate([-t[::-1], t]) * s
    weights = np.concatenate([wt[::-1], wt])
    return nodes, weights


def _near_radial_edges(dmin: float, dmax: float, n_r: int) -> np.ndarray:
    if dmin > 0:
        return np.linspace(dmin, dmax, n_r + 1)
    n_geo = max(2, n_r // 4)
    geo = np.geomspace(1e-6 * dmax, dmax, n_geo)
    lin = np.linspace(0.0, dmax, n_r - n_geo + 2)
    return np.union1d(np.concatenate([[0.0], geo]), lin)


def _near_geometry(offset_zyx, spacing_zyx, n_directions: int, n_radial: int):
    """The near-field quadrature of one offset, independent of the kernel: (radial edges
    (mm), the tent box centre |o| s (mm), spacing (mm), directions (n, 3), cap fraction)."""
    s = np.asarray(spacing_zyx, dtype=np.float64)
    c = np.abs(np.asarray(offset_zyx, dtype=np.float64)) * s
    dmin = float(np.linalg.norm(np.clip(c - s, 0.0, None)))
    dmax = float(np.linalg.norm(c + s))
    cnorm = float(np.linalg.norm(c))
    snorm = float(np.linalg.norm(s))
    if dmin > 0 and cnorm > snorm:
        cos_max = math.sqrt(1.0 - (snorm / cnorm) ** 2)
        dirs = _fibonacci_cap(n_directions, cos_max, c)
        cap_fraction = 0.5 * (1.0 - cos_max)
    else:
        dirs = _fibonacci_cap(n_directions, -1.0, np.array([0.0, 0.0, 1.0]))
        cap_fraction = 1.0
    return _near_radial_edges(dmin, dmax, n_radial), c, s, dirs, cap_fraction


def _spherical_tent_average(r_mid: np.ndarray, c, s, dirs, cap_fraction) -> list:
    """g_o(r) (1/mm^3) at the radii ``r_mid``, in chunks of at most ~2 million products
    (a list of arrays, one per chunk)."""
    volume = float(np.prod(s))
    step = max(1, 2_000_000 // max(1, dirs.shape[0]))
    out = []
    for i in range(0, r_mid.size, step):
        rr = r_mid[i:i + step, None]
        prod = np.ones((rr.shape[0], dirs.shape[0]))
        for a in range(3):
            prod *= np.clip(1.0 - np.abs(rr * dirs[None, :, a] - c[a]) / s[a], 0.0, None)
        out.append(cap_fraction * prod.mean(axis=1) / volume)
    return out


def _near_offset_value(pk: PointKernel, offset_zyx, spacing_zyx,
                       n_directions: int = N_DIRECTIONS, n_radial: int = N_RADIAL) -> float:
    """S(o) in Gy per decay by the near-field method (radial E_abs x spherical average).

    ``S(o) = (1/rho) sum_i [E_abs(r_i+1) - E_abs(r_i)] g_o(r_mid,i) (+ E_loc/(rho V) at o=0)``;
    see the module docstring.  Works for any offset (it is only costly far away).
    """
    edges, c, s, dirs, cap_fraction = _near_geometry(offset_zyx, spacing_zyx, n_directions,
                                                     n_radial)
    volume = float(np.prod(s))
    rho_g_mm3 = pk.density_g_cm3 / 1000.0
    d_e = np.diff(pk.cumulative_energy_mev(edges, include_local=False))
    r_mid = 0.5 * (edges[:-1] + edges[1:])
    keep = d_e != 0.0
    r_mid, d_e = r_mid[keep], d_e[keep]
    energy = 0.0
    i = 0
    for g in _spherical_tent_average(r_mid, c, s, dirs, cap_fraction):
        energy += float(d_e[i:i + g.size] @ g)
        i += g.size
    energy += pk.local_energy_mev * float(np.prod(np.clip(1.0 - c / s, 0.0, None))) / volume
    return energy / rho_g_mm3 * MEV_PER_G_TO_GY


def near_shell_weights(shell_edges_mm, offset_zyx, spacing_zyx, density_g_cm3: float = 1.0,
                       n_directions: int = N_DIRECTIONS, n_radial: int = N_RADIAL
                       ) -> np.ndarray:
    """dS(o)/dE_k, Gy per decay per MeV: the near-field S-value of offset ``o`` is linear in
    the energies E_k (MeV per decay) a table holds in its shells ``[e_k, e_k+1)`` (the
    :class:`voxdose.kernels.point.TabulatedPointKernel` reading: E_abs(r) interpolated in
    r^3 within a shell), so ``S(o) = w . E`` with these weights w.  It lets a Monte Carlo
    run turn its per-batch shell energies into per-batch voxel S-values (their spread is
    the voxel kernel's statistical uncertainty) without building a kernel per batch.
    No local-energy term (a Monte Carlo table has none)."""
    e = np.asarray(shell_edges_mm, dtype=np.float64)
    edges, c, s, dirs, cap_fraction = _near_geometry(offset_zyx, spacing_zyx, n_directions,
                                                     n_radial)
    g = np.concatenate(_spherical_tent_average(0.5 * (edges[:-1] + edges[1:]), c, s, dirs,
                                               cap_fraction))
    # F[k](r) = fraction of shell k's energy within radius r; the radial bins take the
    # differences F(r_i+1) - F(r_i), weighted by g
    lo3, hi3 = e[:-1] ** 3, e[1:] ** 3
    rc = np.clip(edges, 0.0, e[-1])[:, None] ** 3
    frac = np.clip((rc - lo3[None, :]) / (hi3 - lo3)[None, :], 0.0, 1.0)
    w = g @ np.diff(frac, axis=0)                      # MeV -> MeV/mm^3 per MeV
    return w / (float(density_g_cm3) / 1000.0) * MEV_PER_G_TO_GY


#: The voxel kernels a Monte Carlo table built on first use is planned for
#: (:func:`voxel_shell_scores`): cubic voxels of these sides (mm), and the first
#: ``PLAN_VOXEL_SHELLS`` shells of voxels around the source voxel (shell k: the voxels
#: with max_a |o_a| = k, i.e. the source voxel, its 26 neighbours, the 98 beyond them).
PLAN_VOXELS_MM = (1.0, 2.0, 4.0)
PLAN_VOXEL_SHELLS = 3
#: Quadrature of the planning weights (an uncertainty estimate needs no 1e-5 accuracy).
_PLAN_DIRECTIONS = 600
_PLAN_RADIAL = 200


def _cube_shell_classes(k: int) -> dict:
    """{sorted |offset| class: number of voxels} of the cube shell max_a |o_a| = k."""
    import itertools

    out: dict = {}
    for o in itertools.product(range(-k, k + 1), repeat=3):
        if max(abs(v) for v in o) == k:
            c = tuple(sorted(abs(v) for v in o))
            out[c] = out.get(c, 0) + 1
    return out


def voxel_shell_scores(shell_edges_mm, density_g_cm3: float = 1.0,
                       voxels_mm=PLAN_VOXELS_MM, n_shells: int = PLAN_VOXEL_SHELLS):
    """The voxel kernel's first shells of voxels as linear functions of a radial table's
    shell energies: ``(W, labels)`` with ``W @ E`` = sum of S(o) over the voxels of shell
    k (Gy per decay) of a cubic voxel of side v (mm), one row per (v, k), for the shell
    energies E (MeV per decay) of a table with edges ``shell_edges_mm`` in a medium of
    ``density_g_cm3`` (:func:`near_shell_weights`).  A Monte Carlo run's per-batch shell
    energies then give per-batch shell S-values, whose spread is the kernel's statistical
    uncertainty there (:func:`voxdose.montecarlo.dpk.plan_build` plans its histories by
    them).  Labels: ``"<v> mm voxels, shell <k>"``."""
    rows, labels = [], []
    for v in voxels_mm:
        for k in range(int(n_shells)):
            w = sum(m * near_shell_weights(shell_edges_mm, o, (float(v),) * 3, density_g_cm3,
                                           _PLAN_DIRECTIONS, _PLAN_RADIAL)
                    for o, m in _cube_shell_classes(k).items())
            rows.append(w)
            labels.append(f"{float(v):g} mm voxels, shell {k}")
    return np.array(rows), labels


class _TabulatedDose:
    """D(r), Gy per decay, from j(r) tabulated on a uniform grid over [r_lo, r_hi] (mm)."""

    def __init__(self, pk: PointKernel, r_lo: float, r_hi: float, dr: float = 0.02,
                 max_nodes: int = 400_000, window_mm: float = 0.0):
        r_lo = max(float(r_lo), 0.0)
        n = int(min(max_nodes, max(16, math.ceil((r_hi - r_lo) / dr) + 1)))
        self.r = np.linspace(r_lo, max(r_hi, r_lo + dr), n)
        if window_mm > 0:  # the table's mean of j over [r - w/2, r + w/2]
            lo = np.maximum(self.r - 0.5 * window_mm, 0.0)
            hi = self.r + 0.5 * window_mm
            self.j = (pk.cumulative_energy_mev(hi, include_local=False)
                      - pk.cumulative_energy_mev(lo, include_local=False)) / (hi - lo)
        else:
            self.j = pk.energy_per_mm_mev(self.r)
        self.scale = 1000.0 / (4.0 * math.pi * pk.density_g_cm3) * MEV_PER_G_TO_GY

    def __call__(self, r_mm):
        return np.interp(r_mm, self.r, self.j) * self.scale / (r_mm * r_mm)


def _far_offset_values(pk: PointKernel, offsets_zyx, spacing_zyx, dose_fn=None) -> np.ndarray:
    """S(o) in Gy per decay by tent-weighted 6x6x6 Gauss quadrature of the point dose.

    ``S(o) ~= sum_ijk w_i w_j w_k D(|o*s + (u_i, u_j, u_k)|)``.  ``offsets_zyx``: (M, 3)
    integers; ``dose_fn``: callable D(r_mm) (default: the exact ``pk.dose_gy_per_decay``).
    Only accurate where D is smooth over the tent support (not for the source voxel or its
    neighbours inside the electron range).
    """
    offs = np.atleast_2d(np.asarray(offsets_zyx, dtype=np.float64))
    s = np.asarray(spacing_zyx, dtype=np.float64)
    dose = pk.dose_gy_per_decay if dose_fn is None else dose_fn
    nodes = [_tent_gauss_nodes(float(sa)) for sa in s]
    wz, wy, wx = (nw[1] for nw in nodes)
    w3 = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]
    out = np.empty(offs.shape[0])
    for i in range(0, offs.shape[0], _FAR_CHUNK):
        c = offs[i:i + _FAR_CHUNK] * s
        pz = (c[:, 0, None] + nodes[0][0][None, :]) ** 2
        py = (c[:, 1, None] + nodes[1][0][None, :]) ** 2
        px = (c[:, 2, None] + nodes[2][0][None, :]) ** 2
        r = np.sqrt(pz[:, :, None, None] + py[:, None, :, None] + px[:, None, None, :])
        vals = np.asarray(dose(r.reshape(-1))).reshape(r.shape)
        out[i:i + _FAR_CHUNK] = np.einsum("mijk,ijk->m", vals, w3)
    return out


def _canonical(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Sort offset components within groups of axes with equal spacing (permutation class)."""
    out = offsets.copy()
    groups: list[list[int]] = []
    for a in range(3):
        for grp in groups:
            if math.isclose(spacing[a], spacing[grp[0]], rel_tol=1e-9):
                grp.append(a)
                break
        else:
            groups.append([a])
    for grp in groups:
        if len(grp) > 1:
            out[:, grp] = -np.sort(-out[:, grp], axis=1)
    return out


# ---------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------
def _checked_spacing_and_radius(point_kernel, spacing_mm_zyx, radius_mm):
    """(spacing array (z, y, x) mm, radius mm), checked (InputError); radius None: the
    radius of :func:`voxdose.kernels.extent.kernel_extent` for the spacing."""
    try:
        s = np.asarray([float(v) for v in spacing_mm_zyx], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three numbers (z, y, x) in mm; "
                         f"got {spacing_mm_zyx!r}") from None
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing must be three positive numbers (z, y, x) in mm; "
                         f"got {spacing_mm_zyx!r}")
    if radius_mm is None:
        from .extent import kernel_extent

        radius_mm = kernel_extent(point_kernel, s).radius_mm
    radius = float(radius_mm)
    if not math.isfinite(radius) or radius <= 0:
        raise InputError(f"kernel radius must be a positive number of mm; got {radius_mm!r}")
    return s, radius


def voxel_kernel(point_kernel: PointKernel, spacing_mm_zyx, radius_mm: float | None = None, *,
                 n_directions: int = N_DIRECTIONS, n_radial: int = N_RADIAL,
                 far_field: str = "tent3") -> VoxelKernel:
    """Voxel S-value kernel (Gy per decay) of ``point_kernel`` on a grid of spacing (z, y, x).

    The kernel spans offsets |o_a| <= h_a = ceil(radius_mm / s_a) (default: the radius of
    :func:`voxdose.kernels.extent.kernel_extent` for this spacing); spacing may be
    anisotropic.  ``far_field``: the far-offset rule, "tent3" (default) or "gauss6" (the
    former, 8x slower per offset; kept as the reference).  Raises :class:`InputError` for
    non-positive spacing or radius.
    """
    if far_field not in FAR_FIELD_RULES:
        raise InputError(f"far_field must be one of {', '.join(FAR_FIELD_RULES)}; "
                         f"got {far_field!r}")
    t0 = time.perf_counter()
    s, radius = _checked_spacing_and_radius(point_kernel, spacing_mm_zyx, radius_mm)
    h = np.array([max(1, math.ceil(radius / sa - 1e-9)) for sa in s], dtype=np.int64)
    n_near = max(2, math.ceil(point_kernel.max_electron_range_mm / float(s.min())) + 1)
    near_h = np.minimum(h, n_near)

    octant = np.zeros(tuple(h + 1), dtype=np.float64)
    near_mask = np.zeros(octant.shape, dtype=bool)
    near_mask[: near_h[0] + 1, : near_h[1] + 1, : near_h[2] + 1] = True

    # near field: one evaluation per permutation class of offsets
    near_offs = np.argwhere(near_mask)
    canon = _canonical(near_offs, s)
    uniq, inverse = np.unique(canon, axis=0, return_inverse=True)
    uvals = np.array([_near_offset_value(point_kernel, o, s, n_directions, n_radial)
                      for o in uniq])
    octant[tuple(near_offs.T)] = uvals[np.ravel(inverse)]

    # far field
    if not near_mask.all():
        # nearest far box point: the face just beyond the near block on one axis
        r_lo = float(min((near_h[a] + 1) * s[a] - s[a] for a in range(3) if near_h[a] < h[a]))
        r_hi = float(np.linalg.norm((h + 1) * s))
        if far_field == "tent3":
            from .far_field import far_field_tent3

            # 27 samples average a Monte Carlo table's bin noise less than 216: sample the
            # table's mean over a radial window of half the voxel instead of its point value
            far_field_tent3(octant, near_h, s, _TabulatedDose(
                point_kernel, r_lo, r_hi, dr=min(0.02, float(s.min()) / 50.0),
                window_mm=0.5 * float(s.min())))
        else:
            table = _TabulatedDose(point_kernel, r_lo, r_hi, dr=min(0.02, float(s.min()) / 50.0))
            far_offs = np.argwhere(~near_mask)
            octant[tuple(far_offs.T)] = _far_offset_values(point_kernel, far_offs, s, table)

    data = mirror_octant(octant)

    mass_g = point_kernel.density_g_cm3 / 1000.0 * float(np.prod(s))
    absorbed = float(data.sum()) / MEV_PER_G_TO_GY * mass_g
    total = point_kernel.total_energy_mev
    neglected = 1.0 - absorbed / total if total > 0 else 0.0
    return VoxelKernel(
        data_gy_per_decay=data,
        spacing_mm=tuple(float(v) for v in s),
        nuclide=point_kernel.nuclide,
        density_g_cm3=point_kernel.density_g_cm3,
        neglected_energy_fraction=float(neglected),
        method=method_description(far_field),
        radius_mm=radius,
        total_energy_mev=total,
        n_near=int(n_near),
        build_seconds=time.perf_counter() - t0,
        point_kernel_provenance=point_kernel.provenance(),
    )


