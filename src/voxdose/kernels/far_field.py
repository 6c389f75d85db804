"""Far-field voxel S-values: a 3-point tent-Gauss rule per axis, compiled with Numba.

Where the point dose kernel D(r) is smooth over a target voxel's support (every offset
beyond the electron range, see :mod:`voxdose.kernels.voxel`), the voxel S-value

    S(o) = E_u[ D(|o s + u|) ],   u_a ~ tent t_a(u) = max(0, 1 - |u|/s_a) / s_a on [-s_a, s_a]

is integrated with the Gauss rule of the tent weight itself.  Its moments on [-1, 1] are
m_0 = 1, m_2 = 1/6, m_4 = 1/15, so the symmetric 3-point rule with nodes {0, +-x} and
weights {w_0, w_1, w_1} that matches them has

    x^2 = m_4 / m_2 = 2/5,   w_1 = m_2 / (2 x^2) = 5/24,   w_0 = 1 - 2 w_1 = 7/12,

exact for polynomials of degree <= 5 on each axis (the odd moments vanish); the product
rule has 27 nodes per offset.  Its error is O((s/r)^6) relative to D, measured against the
former 6x6x6 rule (216 nodes) in ``tests/test_kernel_far_field.py`` and docs/validation.md.

D(r) = j(r) / (4 pi rho r^2) is evaluated from j = dE_abs/dr tabulated on a uniform radial
grid (linear interpolation, O(1) per lookup).  Offsets are visited once per symmetry class:
the kernel is even in every axis (only the octant o >= 0 is stored) and invariant under
exchanging axes of equal spacing, so for cubic voxels only 1/48 of the kernel is
integrated and the rest is copied.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: The tent-weight Gauss rule on [-1, 1] (multiply the nodes by the spacing).
TENT3_NODES = np.array([-math.sqrt(0.4), 0.0, math.sqrt(0.4)])
TENT3_WEIGHTS = np.array([5.0 / 24.0, 7.0 / 12.0, 5.0 / 24.0])


def equal_axes(spacing_zyx, rel_tol: float = 1e-9) -> tuple[bool, bool, bool]:
    """(s_z == s_y, s_z == s_x, s_y == s_x) within ``rel_tol``: which axes may be swapped."""
    s = [float(v) for v in spacing_zyx]
    eq = [math.isclose(s[a], s[b], rel_tol=rel_tol) for a, b in ((0, 1), (0, 2), (1, 2))]
    return eq[0], eq[1], eq[2]


@numba.njit(cache=True, inline="always")
def _canonical(i, j, k, eq01, eq02, eq12):
    """The representative of (i, j, k) under swaps of equal-spacing axes: components sorted
    in decreasing order within each group of equal axes."""
    if eq01 and eq02:          # all three equal: sort all
        a, b, c = i, j, k
        if a < b:
            a, b = b, a
        if b < c:
            b, c = c, b
        if a < b:
            a, b = b, a
        return a, b, c
    if eq01 and j > i:
        return j, i, k
    if eq02 and k > i:
        return k, j, i
    if eq12 and k > j:
        return i, k, j
    return i, j, k


@numba.njit(cache=True, inline="always")
def _dose(r, r0, inv_dr, j_tab, scale):
    """D(r) from the uniform j table: linear interpolation, clamped at the table's ends."""
    x = (r - r0) * inv_dr
    n = j_tab.shape[0]
    if x <= 0.0:
        jv = j_tab[0]
    elif x >= n - 1:
        jv = j_tab[n - 1]
    else:
        m = int(x)
        f = x - m
        jv = j_tab[m] + f * (j_tab[m + 1] - j_tab[m])
    return jv * scale / (r * r)


@numba.njit(cache=True, parallel=True)
def fill_far_field(octant, near_h, spacing, nodes, weights, r0, dr, j_tab, scale,
                   eq01, eq02, eq12):
    """Fill the far offsets of ``octant`` (shape h + 1; offsets with some |o_a| > near_h_a)
    with the 27-node tent-Gauss value, computing each symmetry class once."""
    nz, ny, nx = octant.shape
    inv_dr = 1.0 / dr
    sz, sy, sx = spacing[0], spacing[1], spacing[2]
    for i_ in numba.prange(nz):
        i = np.int64(i_)  # prange's index may be unsigned: keep one integer type
        for j in range(ny):
            for k in range(nx):
                if i <= near_h[0] and j <= near_h[1] and k <= near_h[2]:
                    continue
                ci, cj, ck = _canonical(i, j, k, eq01, eq02, eq12)
                if ci != i or cj != j or ck != k:
                    continue
                acc = 0.0
                for a in range(3):
                    z = i * sz + nodes[a] * sz
                    for b in range(3):
                        y = j * sy + nodes[b] * sy
                        wab = weights[a] * weights[b]
                        for c in range(3):
                            x = k * sx + nodes[c] * sx
                            r = math.sqrt(z * z + y * y + x * x)
                            acc += wab * weights[c] * _dose(r, r0, inv_dr, j_tab, scale)
                octant[i, j, k] = acc
    for i_ in numba.prange(nz):
        i = np.int64(i_)  # prange's index may be unsigned: keep one integer type
        for j in range(ny):
            for k in range(nx):
                if i <= near_h[0] and j <= near_h[1] and k <= near_h[2]:
                    continue
                ci, cj, ck = _canonical(i, j, k, eq01, eq02, eq12)
                if ci != i or cj != j or ck != k:
                    octant[i, j, k] = octant[ci, cj, ck]


def far_field_tent3(octant: np.ndarray, near_h, spacing_zyx, table) -> None:
    """Fill the far part of ``octant`` in place (see the module docstring).

    ``table``: a :class:`voxdose.kernels.voxel._TabulatedDose` (uniform radii ``r``, j in
    MeV/mm, ``scale`` = 1000 / (4 pi rho) x MeV/g -> Gy).
    """
    s = np.ascontiguousarray(spacing_zyx, dtype=np.float64)
    r = np.asarray(table.r, dtype=np.float64)
    dr = float(r[1] - r[0])
    fill_far_field(octant, np.asarray(near_h, dtype=np.int64), s, TENT3_NODES,
                   TENT3_WEIGHTS, float(r[0]), dr,
                   np.ascontiguousarray(table.j, dtype=np.float64), float(table.scale),
                   *equal_axes(s))
