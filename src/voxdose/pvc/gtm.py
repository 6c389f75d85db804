"""Geometric transfer matrix (GTM; Rousset, Ma & Evans 1998, J Nucl Med 39:904).

Model
    The activity concentration is piecewise constant over the regions of
    :mod:`voxdose.pvc.regions`, ``f(x) = sum_j c_j 1_j(x)`` on the label grid.  The SPECT
    voxel ``v`` sees the PSF-blurred activity averaged over its box ``T_v``:

        y(v) = sum_j c_j RSF_j(v),      RSF_j = B (G * 1_j),

    ``G *``: convolution with the Gaussian PSF on the label grid (:mod:`voxdose.pvc.psf`,
    zero outside the grid), ``B``: the exact box average onto the SPECT grid
    (:func:`voxdose.imaging.occupancy.box_average`).  ``RSF_j`` is region j's *regional
    spread function*.

Equations solved
    With ``w_i(v)`` the fractional occupancy of SPECT voxel v by region i
    (:func:`~voxdose.pvc.regions.region_weights`), the observed region means and the GTM are

        t_i = sum_v w_i(v) y(v) / sum_v w_i(v),
        GTM_ij = sum_v w_i(v) RSF_j(v) / sum_v w_i(v),

    and the corrected means ``c`` solve ``GTM c = t`` by non-negative least squares
    (``scipy.optimize.nnls``: ``min ||GTM c - t||_2, c >= 0``; equal to ``GTM^-1 t`` when
    that is non-negative).  ``GTM_ii`` is region i's recovery factor (the fraction of its own
    activity seen in it), ``cond_2(GTM)`` the noise amplification bound.

Computing the RSFs
    For grids sharing their axis directions (a SPECT and its CT: any spacings, any offsets)
    ``B G`` is separable and evaluated exactly, without an FFT:
    ``RSF_j = (M_z ⊗ M_y ⊗ M_x) 1_j`` with ``M_a[v, i]`` the mean over SPECT voxel v of the
    Gaussian-blurred label voxel i along axis a, a closed form
    (:func:`voxdose.pvc.psf.psf_box_matrix_1d`); three dense tensor contractions on the
    backend (NumPy or CuPy), each structure restricted to its bounding box.
    Otherwise (oblique grids) the indicator is blurred on the label grid by voxdose's
    zero-padded FFT convolution with the cell-averaged Gaussian kernel
    (:func:`voxdose.pvc.psf.blur`; the crop grown by the kernel half-width, which is exact
    for the truncated kernel) and box-averaged (sampled path of
    :func:`~voxdose.imaging.occupancy.box_average`).  Measured on the sphere phantom: with
    aligned grids both paths agree to 1e-7; with the SPECT grid offset by 1.3 mm from 2 mm
    label voxels the FFT path's piecewise-constant box average broadens a 1 mL sphere's RSF
    (its recovery 3 % below the exact path's), the separable path is exact.
    The large regions use ``sum_j 1_j = 1`` on the label grid:
    ``RSF_background = B G 1_body - sum_structures RSF_j`` and
    ``RSF_outside = B G 1_grid - B G 1_body`` (``B G 1_grid`` is a product of 1-D sums), so
    at most one full-grid operation is made (none without a body mask).

Noise
    For independent voxel noise of variance ``s2(v)``: ``Cov(t) = A diag(s2) A^T`` with
    ``A_iv = w_i(v) / sum_v w_i(v)``, and ``Cov(c) = GTM^-1 Cov(t) GTM^-T``
    (:meth:`GtmModel.covariance`, unconstrained solution).

Regions with no SPECT voxel (outside the SPECT field of view) have no equation: their
mean is not estimated (NaN) and their spill into the field is taken as zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..core.backend import to_numpy
from ..core.errors import InputError
from ..core.grid import Grid
from .psf import GaussianPsf, blur, psf_box_matrices
from .regions import BACKGROUND, OUTSIDE, STRUCTURE, RegionSet, region_weights

#: Regions whose occupancy sums to fewer SPECT voxels than this have no equation.
MIN_WEIGHT_VOXELS = 1e-3
#: Voxels per block of the blocked float64 products over the SPECT grid.
_BLOCK = 1 << 18
#: The largest fraction of the image's activity allowed outside the label grid.
MAX_UNCOVERED_ACTIVITY = 0.01


def _crop_affine(grid: Grid, lo) -> np.ndarray:
    a = np.array(grid.affine)
    a[:3, 3] = grid.index_to_world(np.asarray(lo, dtype=np.float64))
    return a


def _grown_slices(sl, h, shape):
    return tuple(slice(max(0, s.start - hh), min(n, s.stop + hh)) for s, hh, n in
                 zip(sl, h, shape))


def _apply_axes(xp, field, mats):
    """``(M_z ⊗ M_y ⊗ M_x) field`` by three tensor contractions (float64)."""
    out = xp.asarray(field, dtype=xp.float64)
    for a in (2, 1, 0):
        out = xp.moveaxis(xp.tensordot(xp.asarray(mats[a]), out, axes=([1], [a])), 0, a)
    return out


class _SeparableRsf:
    """``B G`` as three dense 1-D matrices (exact; grids sharing their axes)."""

    def __init__(self, regions: RegionSet, spect_grid: Grid, psf: GaussianPsf, be):
        self.mats = psf_box_matrices(regions.grid, spect_grid, psf)
        self.be = be

    def crop(self, mask, sl) -> np.ndarray:
        sub = [m[:, s.start:s.stop] for m, s in zip(self.mats, sl)]
        return to_numpy(_apply_axes(self.be.xp, self.be.asarray(mask), sub))

    def ones(self) -> np.ndarray:
        bz, by, bx = (m.sum(axis=1) for m in self.mats)
        return bz[:, None, None] * by[None, :, None] * bx[None, None, :]

    def full(self, field) -> np.ndarray:
        return to_numpy(_apply_axes(self.be.xp, self.be.asarray(field), self.mats))


class _FftRsf:
    """``B G`` as the FFT blur on the label grid, then the box average (oblique grids)."""

    def __init__(self, regions: RegionSet, spect_grid: Grid, psf: GaussianPsf, be, precision):
        self.grid, self.spect, self.psf, self.be = regions.grid, spect_grid, psf, be
        self.precision = precision
        self.h = psf.half_width_vox(regions.grid)

    def grow(self, sl):
        return _grown_slices(sl, self.h, self.grid.shape)

    def crop(self, mask, sl) -> np.ndarray:
        from ..imaging.occupancy import box_average

        crop = Grid(mask.shape, _crop_affine(self.grid, [s.start for s in sl]))
        field = to_numpy(blur(self.be.asarray(mask), crop, self.psf, self.be, self.precision))
        return box_average(field, crop, self.spect)

    def ones(self) -> np.ndarray:
        from ..imaging.occupancy import box_average

        g = []
        for n, k in zip(self.grid.shape, self.psf.kernels_1d(self.grid)):
            h = len(k) // 2
            g.append(np.convolve(np.ones(n), k)[h:h + n])
        field = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        return box_average(field, self.grid, self.spect)

    def full(self, field) -> np.ndarray:
        from ..imaging.occupancy import box_average

        return box_average(to_numpy(blur(self.be.asarray(field), self.grid, self.psf, self.be,
                                         self.precision)), self.grid, self.spect)


def same_axes(a: Grid, b: Grid) -> bool:
    """Grids whose array axes point the same way (the exact separable path)."""
    return bool(np.allclose(a.direction, b.direction, atol=1e-6, rtol=0))


def regional_spread_functions(regions: RegionSet, spect_grid: Grid, psf: GaussianPsf,
                              backend=None, precision: str | None = None,
                              path: str = "auto") -> np.ndarray:
    """``RSF_j = B(G * 1_j)`` of every region on the SPECT grid, (n, nz, ny, nx) float32.

    ``path``: 'separable' (exact, grids sharing their axes), 'fft' (FFT blur on the label
    grid + box average; any grids) or 'auto' (separable where possible).
    """
    from scipy import ndimage

    from ..core.backend import cpu_backend

    be = backend or cpu_backend()
    if path == "auto":
        path = "separable" if same_axes(regions.grid, spect_grid) else "fft"
    if path == "separable":
        op, grow = _SeparableRsf(regions, spect_grid, psf, be), (lambda sl: sl)
    elif path == "fft":
        op = _FftRsf(regions, spect_grid, psf, be, precision)
        grow = op.grow
    else:
        raise ValueError(f"path must be auto, separable or fft, got {path!r}")
    boxes = ndimage.find_objects(regions.index, max_label=regions.n)
    rsf = np.zeros((regions.n,) + spect_grid.shape, dtype=np.float32)
    structs = np.zeros(spect_grid.shape, dtype=np.float64)
    for k in regions.structures():
        sl = grow(boxes[k])
        r = op.crop((regions.index[sl] == k + 1).astype(np.float32), sl)
        rsf[k] = r
        structs += r
    kinds = regions.kinds
    if BACKGROUND not in kinds and OUTSIDE not in kinds:
        return rsf
    ones = op.ones()
    if BACKGROUND in kinds and OUTSIDE in kinds:
        b_body = op.full((regions.index != kinds.index(OUTSIDE) + 1).astype(np.float32))
        rsf[kinds.index(BACKGROUND)] = b_body - structs
        rsf[kinds.index(OUTSIDE)] = ones - b_body
    else:
        rsf[kinds.index(BACKGROUND if BACKGROUND in kinds else OUTSIDE)] = ones - structs
    return rsf


def _gram(a: np.ndarray, b: np.ndarray, weight=None) -> np.ndarray:
    """``sum_v a_i(v) [weight(v)] b_j(v)`` in float64, blockwise over the voxels."""
    a2 = a.reshape(a.shape[0], -1)
    b2 = b.reshape(b.shape[0], -1)
    w = None if weight is None else np.asarray(weight).reshape(-1)
    out = np.zeros((a2.shape[0], b2.shape[0]))
    for s in range(0, a2.shape[1], _BLOCK):
        ab = a2[:, s:s + _BLOCK].astype(np.float64)
        if w is not None:
            ab = ab * w[s:s + _BLOCK]
        out += ab @ b2[:, s:s + _BLOCK].astype(np.float64).T
    return out


@dataclass(frozen=True)
class GtmSolution:
    """Region means of one SPECT frame: corrected ``c`` (NaN: no equation) and observed ``t``."""

    means_bq_ml: np.ndarray
    observed_bq_ml: np.ndarray
    residual_bq_ml: float          # ||GTM c - t||_2 over the regions with an equation
    constrained: bool              # the unconstrained solution had a negative mean


@dataclass(frozen=True, eq=False)
class GtmModel:
    """Everything of the GTM that does not depend on the frame: build once per study."""

    regions: RegionSet
    spect_grid: Grid
    psf: GaussianPsf
    weights: np.ndarray        # (n, nz, ny, nx) float32: w_j(v)
    rsf: np.ndarray            # (n, nz, ny, nx) float32: RSF_j(v)
    covered: np.ndarray        # (nz, ny, nx): fraction of each SPECT voxel in the label grid
    weight_sums: np.ndarray    # (n,): sum_v w_j(v), SPECT voxels
    rsf_sums: np.ndarray       # (n,): sum_v RSF_j(v), SPECT voxels
    matrix: np.ndarray         # (n, n): GTM_ij
    build_s: float

    @property
    def active(self) -> np.ndarray:
        """Regions with an equation (some occupancy of the SPECT field)."""
        return self.weight_sums > MIN_WEIGHT_VOXELS

    @property
    def condition_number(self) -> float:
        a = self.active
        return float(np.linalg.cond(self.matrix[np.ix_(a, a)])) if a.any() else float("nan")

    @property
    def recovery(self) -> np.ndarray:
        """``GTM_ii``: the fraction of a region's own activity seen in it (NaN: no equation)."""
        return np.where(self.active, np.diag(self.matrix), np.nan)

    @property
    def fraction_in_fov(self) -> np.ndarray:
        """Fraction of each region's volume inside the SPECT field of view."""
        v_spect = self.weight_sums * self.spect_grid.voxel_volume_ml
        return v_spect / np.maximum(self.regions.volumes_ml, 1e-300)

    def observed_means(self, y) -> np.ndarray:
        """``t_i`` (Bq/mL) of a SPECT frame ``y``; NaN for regions without an equation."""
        y = np.asarray(to_numpy(y), dtype=np.float64)
        if y.shape != self.spect_grid.shape:
            raise InputError(f"frame shape {y.shape} is not the SPECT grid of the model "
                             f"{self.spect_grid.shape}")
        s = _gram(self.weights, y[None])[:, 0]
        return np.where(self.active, s / np.maximum(self.weight_sums, 1e-300), np.nan)

    def solve(self, y) -> GtmSolution:
        """Corrected region means of frame ``y`` (module docstring: NNLS on ``GTM c = t``)."""
        from scipy.optimize import nnls

        t = self.observed_means(y)
        a = self.active
        m = self.matrix[np.ix_(a, a)]
        c_a, resid = nnls(m, t[a])
        unconstrained = np.linalg.solve(m, t[a])
        c = np.full(self.regions.n, np.nan)
        c[a] = c_a
        return GtmSolution(c, t, float(resid), bool(np.any(unconstrained < 0)))

    def synthesize(self, means_bq_ml) -> np.ndarray:
        """``sum_j c_j RSF_j`` on the SPECT grid (float64); NaN means count as 0."""
        c = np.nan_to_num(np.asarray(means_bq_ml, dtype=np.float64))
        out = np.zeros(self.spect_grid.shape)
        for j in np.flatnonzero(c):
            out += c[j] * self.rsf[j]
        return out

    def covariance(self, voxel_variance) -> np.ndarray:
        """Covariance of the (unconstrained) corrected means for independent voxel noise of
        variance ``voxel_variance`` ((Bq/mL)^2, array on the SPECT grid), active regions
        only (module docstring)."""
        a = self.active
        w = self.weights[a]
        cov_t = _gram(w, w, voxel_variance) / np.outer(self.weight_sums[a], self.weight_sums[a])
        inv = np.linalg.inv(self.matrix[np.ix_(a, a)])
        return inv @ cov_t @ inv.T

    def totals_bq(self, means_bq_ml) -> dict:
        """Activity of the model ``sum_j c_j V_j``, of its image in the SPECT field, and what
        the PSF carries beyond the field (their difference), Bq."""
        c = np.nan_to_num(np.asarray(means_bq_ml, dtype=np.float64))
        model = float(c @ self.regions.volumes_ml)
        seen = float(c @ self.rsf_sums) * self.spect_grid.voxel_volume_ml
        return {"model_total_bq": model, "model_in_field_bq": seen,
                "spill_beyond_field_bq": model - seen}


def build_gtm(regions: RegionSet, spect_grid: Grid, psf: GaussianPsf, backend=None,
              precision: str | None = None, path: str = "auto") -> GtmModel:
    """Occupancies, RSFs and the GTM of ``regions`` for a SPECT on ``spect_grid``.

    ``backend``: where the label-grid convolutions run (default CPU); ``precision`` of
    those FFTs (default voxdose's; 'float32': error ~5e-7 of an RSF's maximum); ``path``
    of the RSFs (:func:`regional_spread_functions`).
    """
    t0 = time.perf_counter()
    weights, covered = region_weights(regions, spect_grid)
    if float(covered.max(initial=0.0)) <= 0.0:
        raise InputError(f"the label grid ({regions.grid.describe()}) does not overlap the "
                         f"SPECT field ({spect_grid.describe()}); are both in the same "
                         "patient frame (registered)?")
    rsf = regional_spread_functions(regions, spect_grid, psf, backend, precision, path)
    ws = weights.reshape(regions.n, -1).sum(axis=1, dtype=np.float64)
    matrix = _gram(weights, rsf) / np.maximum(ws, 1e-300)[:, None]
    return GtmModel(regions, spect_grid, psf, weights, rsf, covered, ws,
                    rsf.reshape(regions.n, -1).sum(axis=1, dtype=np.float64), matrix,
                    time.perf_counter() - t0)


def uncovered_activity_fraction(covered: np.ndarray, y) -> float:
    """Fraction of the frame's (positive) activity in SPECT voxels outside the label grid:
    ``sum_v (1 - covered(v)) max(y, 0) / sum_v max(y, 0)``."""
    yp = np.maximum(np.asarray(to_numpy(y), dtype=np.float64), 0.0)
    total = float(yp.sum())
    if total <= 0:
        return 0.0
    return float(((1.0 - covered.astype(np.float64)) * yp).sum() / total)


def check_coverage(covered: np.ndarray, y, frame: str = "the SPECT frame",
                   labels: str = "the label map",
                   limit: float = MAX_UNCOVERED_ACTIVITY) -> float:
    """Refuse a label grid that leaves more than ``limit`` of the frame's activity uncovered
    (the GTM would have no region for it); returns the uncovered fraction."""
    frac = uncovered_activity_fraction(covered, y)
    if frac > limit:
        raise InputError(f"{labels} does not cover the SPECT field of {frame}: "
                         f"{100 * frac:.1f} % of the image's activity lies outside the label "
                         f"grid (at most {100 * limit:g} % allowed); give labels on a grid "
                         "covering the SPECT field (e.g. the CT of the same SPECT/CT)")
    return frac


__all__ = ["STRUCTURE", "GtmModel", "GtmSolution", "build_gtm", "check_coverage",
           "regional_spread_functions", "uncovered_activity_fraction"]
