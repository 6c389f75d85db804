"""A sphere phantom for validating partial-volume corrections, simulated without the FFT.

Geometry
    Spheres of the given volumes (hot, ``sphere_to_background`` times the background) packed
    in rows inside a box "body" (warm background), the box inside the label grid with
    ``edge_mm`` of air around it.  Each sphere is labelled on the label grid (voxel centre
    inside the nominal radius); the body box's faces lie on label-voxel boundaries and are
    given as ``body_mask`` (so the GTM has a background and an outside region).

Simulated SPECT (independent of voxdose's PSF, convolution and box-average code)
    The continuous activity is the box at ``c_bg`` plus every sphere at ``c_j - c_bg``, each
    sphere a ball of radius ``R_eff`` = the radius with its *labelled* volume
    (``4/3 pi R_eff^3 = n_j d^3``: the label map and the continuous object hold the same
    activity).  Its Gaussian blur is analytic (:mod:`voxdose.pvc.analytic`: erf products for
    the box, the blurred-ball profile for the spheres), and each SPECT voxel's value is the
    average of that blurred field over the voxel by a 4-point Gauss-Legendre rule per axis
    (error far below 1e-6 for a PSF wider than a quarter voxel).  :func:`poisson_noise` adds
    counting noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.grid import Grid
from .analytic import blurred_box_profile, blurred_sphere_profile, sphere_radius_mm
from .psf import FWHM_TO_SIGMA

DEFAULT_VOLUMES_ML = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
_GL_POINTS = 4


@dataclass(frozen=True, eq=False)
class SpherePhantom:
    """Label map + body mask (label grid), noiseless SPECT (Bq/mL) and the truth."""

    label_grid: Grid
    spect_grid: Grid
    labels: np.ndarray
    names: dict[int, str]
    body_mask: np.ndarray
    image_bq_ml: np.ndarray
    fwhm_mm: float
    truth_bq_ml: dict[str, float]          # region name -> true concentration
    volumes_ml: dict[str, float]           # sphere name -> labelled volume
    radius_eff_mm: dict[str, float]
    centres_mm_xyz: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def true_total_bq(self) -> float:
        vox = self.label_grid.voxel_volume_ml
        body = float(self.body_mask.sum()) * vox
        spheres = sum(self.volumes_ml.values())
        bg = self.truth_bq_ml["background"]
        return bg * (body - spheres) + sum(self.truth_bq_ml[n] * v
                                           for n, v in self.volumes_ml.items())


def _layout(radii, gap_mm, wall_mm):
    """Shelf packing: rows of spheres (largest first); centres relative to the body corner."""
    order = np.argsort(radii)[::-1]
    d_max = 2 * float(np.max(radii))
    limit = 2 * d_max + gap_mm
    rows, row, width = [], [], 0.0
    for i in order:
        d = 2 * float(radii[i])
        if row and width + gap_mm + d > limit:
            rows.append(row)
            row, width = [], 0.0
        width += d + (gap_mm if row else 0.0)
        row.append(i)
    rows.append(row)
    centres = {}
    y = wall_mm
    for row in rows:
        h = 2 * max(float(radii[i]) for i in row)
        x = wall_mm
        for i in row:
            centres[int(i)] = (x + radii[i], y + h / 2, wall_mm + d_max / 2)
            x += 2 * radii[i] + gap_mm
        y += h + gap_mm
    size = (limit + 2 * wall_mm, y - gap_mm + wall_mm, d_max + 2 * wall_mm)
    return centres, size


def _gl_average_1d(centres_mm, spacing_mm, func):
    nodes, weights = np.polynomial.legendre.leggauss(_GL_POINTS)
    pts = centres_mm[:, None] + 0.5 * spacing_mm * nodes[None, :]
    return (func(pts) * (0.5 * weights)[None, :]).sum(axis=1)


def _axis_centres(grid: Grid, a: int) -> np.ndarray:
    """World coordinate (the axis' own LPS component) of the voxel centres along array axis a
    (axis-aligned grids: array axis z, y, x -> LPS z, y, x)."""
    w = 2 - a
    return grid.origin_mm[w] + np.arange(grid.shape[a]) * grid.spacing_mm[a]


def _sphere_image(spect: Grid, centre_xyz, radius_mm, sigma_mm) -> np.ndarray:
    """Voxel averages of one blurred unit ball on the SPECT grid (GL rule, local box)."""
    nodes, weights = np.polynomial.legendre.leggauss(_GL_POINTS)
    reach = radius_mm + 7.0 * sigma_mm
    out = np.zeros(spect.shape)
    sl, sub = [], []
    for a in range(3):
        c = _axis_centres(spect, a)
        keep = np.flatnonzero(np.abs(c - centre_xyz[2 - a]) <= reach + spect.spacing_mm[a])
        if keep.size == 0:
            return out
        sl.append(slice(int(keep[0]), int(keep[-1]) + 1))
        sub.append((c[keep][:, None] + 0.5 * spect.spacing_mm[a] * nodes[None, :])
                   - centre_xyz[2 - a])
    dz, dy, dx = sub
    wz = weights / 2
    acc = np.zeros(tuple(s.stop - s.start for s in sl))
    for gz in range(_GL_POINTS):
        for gy in range(_GL_POINTS):
            for gx in range(_GL_POINTS):
                r = np.sqrt(dz[:, gz, None, None] ** 2 + dy[None, :, gy, None] ** 2
                            + dx[None, None, :, gx] ** 2)
                acc += wz[gz] * wz[gy] * wz[gx] * blurred_sphere_profile(r, radius_mm,
                                                                         sigma_mm)
    out[sl[0], sl[1], sl[2]] = acc
    return out


def _label_spheres(grid: Grid, centres_xyz, radii):
    x, y, z = grid.world_coordinates()
    labels = np.zeros(grid.shape, dtype=np.int32)
    for k, ((cx, cy, cz), r) in enumerate(zip(centres_xyz, radii), start=1):
        labels[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r] = k
    return labels


def sphere_phantom(volumes_ml=DEFAULT_VOLUMES_ML, *, label_spacing_mm: float = 2.0,
                   spect_spacing_mm: float = 4.0, spect_offset_mm: float = 0.0,
                   fwhm_mm: float = 10.0, background_bq_ml: float = 1.0e4,
                   sphere_to_background: float = 4.0, sphere_bq_ml: float | None = None,
                   gap_mm: float = 10.0, wall_mm: float = 10.0,
                   edge_mm: float = 8.0) -> SpherePhantom:
    """Build the phantom of the module docstring. ``spect_offset_mm`` (one number or x, y, z)
    shifts the SPECT grid inside the label field (its voxels then straddle label voxels);
    ``sphere_bq_ml`` (default ``sphere_to_background x background_bq_ml``) the spheres'
    concentration (``background_bq_ml = 0``: spheres in a cold background)."""
    d = float(label_spacing_mm)
    radii = sphere_radius_mm(np.asarray(volumes_ml, dtype=np.float64))
    centres, body_size = _layout(radii, gap_mm, wall_mm)
    body_vox = [int(math.ceil(s / d)) for s in body_size]          # x, y, z
    edge_vox = int(math.ceil(edge_mm / d))
    n_xyz = [b + 2 * edge_vox for b in body_vox]
    label = Grid.from_spacing(n_xyz[::-1], (d, d, d), (d / 2, d / 2, d / 2))
    lo = [edge_vox * d] * 3
    hi = [lo[a] + body_vox[a] * d for a in range(3)]
    # snap sphere centres to label voxel centres
    cxyz = [tuple((math.floor((lo[a] + centres[i][a]) / d) + 0.5) * d for a in range(3))
            for i in range(len(radii))]
    labels = _label_spheres(label, cxyz, radii)
    x, y, z = label.world_coordinates()
    body = ((x > lo[0]) & (x < hi[0]) & (y > lo[1]) & (y < hi[1]) & (z > lo[2]) & (z < hi[2]))
    s = float(spect_spacing_mm)
    off = np.broadcast_to(np.asarray(spect_offset_mm, dtype=np.float64), (3,))
    n_s = [int((n * d - o) // s) for n, o in zip(n_xyz, off)]
    spect = Grid.from_spacing(n_s[::-1], (s, s, s), [o + s / 2 for o in off])

    sigma = fwhm_mm * FWHM_TO_SIGMA
    box = [_gl_average_1d(_axis_centres(spect, a), s, lambda p, a=a: blurred_box_profile(
        p, lo[2 - a], hi[2 - a], sigma)) for a in range(3)]
    image = background_bq_ml * box[0][:, None, None] * box[1][None, :, None] * \
        box[2][None, None, :]
    names, truth, vols, reff, cent = {}, {}, {}, {}, {}
    hot = background_bq_ml * sphere_to_background if sphere_bq_ml is None else sphere_bq_ml
    for k, v in enumerate(volumes_ml, start=1):
        name = f"sphere_{v:g}ml"
        n_k = int((labels == k).sum())
        r_eff = float(np.cbrt(3.0 * n_k * d ** 3 / (4.0 * math.pi)))
        image += (hot - background_bq_ml) * _sphere_image(spect, cxyz[k - 1], r_eff, sigma)
        names[k], truth[name] = name, hot
        vols[name], reff[name], cent[name] = n_k * d ** 3 / 1000.0, r_eff, cxyz[k - 1]
    truth["background"], truth["outside"] = background_bq_ml, 0.0
    return SpherePhantom(label, spect, labels, names, body, image, float(fwhm_mm), truth, vols,
                         reff, cent)


def poisson_noise(image_bq_ml, counts_per_bq_ml: float, seed: int = 0) -> np.ndarray:
    """``Poisson(k y) / k``: counting noise with ``k`` counts per Bq/mL in every voxel."""
    rng = np.random.default_rng(seed)
    lam = np.maximum(np.asarray(image_bq_ml, dtype=np.float64), 0.0) * counts_per_bq_ml
    return rng.poisson(lam).astype(np.float64) / counts_per_bq_ml
