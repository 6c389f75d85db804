"""Uncertainty of the absorbed dose from the uncertainty of the TIA map.

Every dose engine is linear in the TIA. Written as a sum of terms,

    D(u) = sum_b m_b(u) sum_v K_b(u - v) A(v)                                    (1)

(A: TIA, Bq s per voxel; K_b: voxel S-values, Gy per Bq s; m_b(u) >= 0 a per-target-voxel
multiplier) every engine of :mod:`voxdose.dose.engine` is one instance, *exactly*
(:func:`linear_terms`):

* kernel convolution in water: one term, m = 1;
* density mode ``scale``: one term, m(u) = rho_water / rho(u);
* density mode ``mvs``: one term per density bin b, K_b the bin's kernel and
  m_b(u) = 1 where the target voxel u falls in bin b, else 0;
* local deposition: one 1x1x1 kernel K = E_local / (rho V_voxel) (the "local factor"),
  times rho_water / rho(u) in mode ``scale``: sigma_D = sigma_A x the local factor.

With voxel TIA errors of standard deviation ``sigma_A(v)``:

* **independent voxel errors** (the assumption of the per-voxel fit's delta-method sigma;
  no covariance between voxels is known to the fit):

      Var D(u) = sum_b m_b(u)^2 sum_v K_b(u - v)^2 sigma_A(v)^2
               ->  sigma_D = sqrt(sum_b m_b^2 (K_b^2 (*) sigma_A^2))             (2)

  one FFT convolution of the variance map with each squared kernel (the bins' m_b do not
  overlap, so no cross terms);

* the **mean over a structure** with voxel weights ``w_u`` (fractional occupancy),
  ``Dbar = sum_u w_u D(u) / W`` with ``W = sum_u w_u``, is again linear in A:

      Dbar = sum_v g(v) A(v) / W,   g = sum_b K~_b (*) (w m_b)   (K~(x) = K(-x))  (3)

  so ``sigma_Dbar = sqrt(sum_v g(v)^2 sigma_A(v)^2) / W`` for independent errors, and
  ``sum_v |g(v)| sigma_A(v) / W`` when the errors are fully correlated (correlation
  coefficient 1 between every pair of voxels: the Cauchy-Schwarz upper bound for any
  correlation, |Cov(v, v')| <= sigma_v sigma_v'). Real SPECT noise is correlated over
  about the system resolution (reconstruction with a PSF model, post-filters), and a
  partial-volume correction adds correlation (GTM: a region's voxels share one corrected
  mean, fully correlated; RBV: the per-voxel ratio multiplies correlated noise): the truth
  lies between the two numbers, both are reported.

The squared kernel falls off twice as fast as the kernel, so the kernel's extent is enough.
The engine's clipping of FFT round-off negatives (max(D, 0)) is not linear and is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..core.backend import backend_of
from ..core.errors import InputError
from ..core.units import MEV_PER_G_TO_GY
from .convolution import SpectrumCache, box_convolution_is_cheaper, convolve_in_box, \
    crop_kernel, default_budget_bytes, fft_convolve_same, plan_blocks, support_box
from .density import RHO_WATER_G_CM3, bin_index

#: The assumption behind every sigma_D map (written into the sidecars).
INDEPENDENT_ASSUMPTION = ("independent voxel TIA errors (no covariance between voxels): "
                          "Var D = sum_b m_b^2 (K_b^2 (*) sigma_A^2)")
#: What the two structure-mean numbers mean (written into dvh.json).
CORRELATION_NOTE = (
    "sigma_mean_independent_gy: independent voxel TIA errors; "
    "sigma_mean_fully_correlated_gy: every pair of voxel TIA errors correlated with "
    "coefficient 1, the Cauchy-Schwarz upper bound for any correlation. SPECT noise is "
    "correlated over about the system resolution and a partial-volume correction adds "
    "correlation (GTM: one corrected mean per region), so the true standard uncertainty "
    "lies between the two. TIA fit noise only: calibration, registration, segmentation "
    "and kernel errors are not included.")


@dataclass(frozen=True, eq=False)
class LinearTerm:
    """One term of (1): kernel K_b (Gy per Bq s, odd-shaped, centred) and the target
    multiplier m_b (array on the grid, or None for 1)."""

    kernel: np.ndarray
    multiplier: object = None

    @cached_property
    def nonnegative(self) -> bool:
        """Kernel and multiplier >= 0 (voxel S-values, density ratios and bin indicators
        are): then g >= 0 exactly and its float32 rounding must not be rectified."""
        k_ok = bool(np.min(self.kernel) >= 0)
        m = self.multiplier
        return k_ok and (m is None or bool((m >= 0).all()))

    @cached_property
    def flipped_kernel(self) -> np.ndarray:
        """K~(x) = K(-x), float64, contiguous: made once, shared by every structure; the
        kernel itself when it is point symmetric (every voxel S-value kernel: no copy of
        a 260 MB kernel)."""
        k = np.asarray(self.kernel, dtype=np.float64)
        flipped = k[::-1, ::-1, ::-1]
        if k.flags.c_contiguous and np.array_equal(k, flipped):
            return k
        return np.ascontiguousarray(flipped)


def _convolve(data, kernel, backend, cache: SpectrumCache | None = None,
              precision: str = "float64", squared: bool = False):
    """Linear 'same' convolution (float64 unless told) under the backend's default memory
    budget (the engines' rule); a 1x1x1 kernel is a product; ``squared``: with K^2."""
    xp = backend.xp
    k = np.asarray(kernel, dtype=np.float64)
    if k.size == 1:
        return xp.asarray(data, dtype=xp.float64) * float(k.ravel()[0]) ** (2 if squared else 1)
    h, _ = crop_kernel(k.shape, data.shape)
    plan = plan_blocks(data.shape, h, backend, precision, default_budget_bytes(backend))
    return fft_convolve_same(data, k, backend, cache, precision=precision, plan=plan,
                             squared_kernel=squared)


def linear_terms(engine, backend, density=None) -> tuple[list[LinearTerm], str]:
    """The engine as the terms of (1), and a line that says how.

    ``density``: the density image (g/cm^3) on the TIA grid the engine was given (modes
    ``scale`` and ``mvs``); ``engine``: a :class:`~voxdose.dose.engine.KernelConvolution`,
    :class:`~voxdose.dose.engine.DensityBinnedConvolution` or
    :class:`~voxdose.dose.engine.LocalDeposition`.
    """
    from .engine import DensityBinnedConvolution, KernelConvolution, LocalDeposition

    xp = backend.xp
    rho = None if density is None else xp.asarray(getattr(density, "data", density),
                                                  dtype=xp.float64)
    mode = engine.density_mode
    if mode in ("scale", "mvs") and rho is None:
        raise InputError(f"density mode '{mode}' needs the density image for the dose sigma")
    scale = RHO_WATER_G_CM3 / rho if mode == "scale" else None
    if isinstance(engine, DensityBinnedConvolution):
        idx = bin_index(rho, list(engine.bins), xp)
        terms = [LinearTerm(k.data_gy_per_decay, (idx == i).astype(xp.float64))
                 for i, k in enumerate(engine.kernels) if bool((idx == i).any())]
        return terms, (f"exact for the mvs engine: {len(terms)} density-bin kernels, each "
                       "for the target voxels of its bin")
    if isinstance(engine, KernelConvolution):
        how = "the engine's kernel" + (", times rho_water/rho(u)" if scale is not None else "")
        return [LinearTerm(engine.kernel.data_gy_per_decay, scale)], f"exact: {how}"
    if isinstance(engine, LocalDeposition):
        raise InputError("local deposition needs the voxel volume: use ldm_terms")
    raise InputError(f"no dose sigma for the engine {type(engine).__name__}")


def ldm_terms(engine, voxel_volume_ml: float, backend, density=None
              ) -> tuple[list[LinearTerm], str]:
    """Local deposition as (1): a 1x1x1 kernel, the local factor E_local / (rho V_voxel)
    in Gy per decay (times rho_water / rho(u) in mode ``scale``)."""
    xp = backend.xp
    factor = engine.local_energy_mev * MEV_PER_G_TO_GY / (engine.density_g_cm3 *
                                                          float(voxel_volume_ml))
    scale = None
    if engine.density_mode == "scale":
        if density is None:
            raise InputError("density mode 'scale' needs the density image for the dose sigma")
        scale = RHO_WATER_G_CM3 / xp.asarray(getattr(density, "data", density),
                                             dtype=xp.float64)
    return ([LinearTerm(np.full((1, 1, 1), factor), scale)],
            "exact: sigma_D = sigma_A x the local factor E_local / (rho V_voxel)")


def sigma_from_terms(tia_sigma, terms: list[LinearTerm], backend):
    """sigma_D (Gy) by (2) from sigma_A (Bq s per voxel); an array on the backend."""
    xp = backend.xp
    var_a = xp.asarray(tia_sigma, dtype=xp.float64) ** 2
    var = xp.zeros(var_a.shape, dtype=xp.float64)
    for t in terms:
        # K^2 squared after cropping, of the octant only for a symmetric kernel (no 145 MB
        # copy of the demo's label-grid kernel)
        v = _convolve(var_a, t.kernel, backend, squared=True)
        var += v if t.multiplier is None else v * t.multiplier ** 2
        del v
    return xp.sqrt(xp.clip(var, 0, None))


@dataclass(frozen=True)
class MeanDoseSigma:
    """Standard deviation of a structure's mean dose, Gy."""

    independent_gy: float
    fully_correlated_gy: float

    def to_dict(self) -> dict:
        return {"sigma_mean_independent_gy": self.independent_gy,
                "sigma_mean_fully_correlated_gy": self.fully_correlated_gy}


def fit_voxel_parents(grid, fit_grid):
    """For every voxel of ``grid``: the flat index of the ``fit_grid`` voxel whose box holds
    its centre (nearest centre), -1 outside ``fit_grid`` (int64 array of ``grid.shape``).

    After a partial-volume correction the TIA and its sigma live on the label grid but
    were fitted on the SPECT grid and interpolated: label voxels that share a SPECT voxel
    share its error. Grouping them by parent (nearest-neighbour approximation of the
    trilinear interpolation) keeps the 'independent' bound honest.

    The map from ``grid``'s indices to ``fit_grid``'s is one affine transform; when it is
    diagonal (the grids' axes parallel, the usual case) it is applied per axis (three
    short vectors, no per-voxel coordinates: 0.35 s -> ~0.01 s on the demo's label
    grid)."""
    a = np.linalg.inv(fit_grid.affine) @ grid.affine       # grid index -> fit_grid index
    m, c = a[:3, :3], a[:3, 3]
    n = np.asarray(fit_grid.shape, dtype=np.int64)
    if not np.any(m - np.diag(np.diag(m))):
        q = [np.rint(m[k, k] * np.arange(grid.shape[k], dtype=np.float64) + c[k])
             .astype(np.int64) for k in range(3)]
        ok = [(q[k] >= 0) & (q[k] < n[k]) for k in range(3)]
        flat = (q[0][:, None, None] * n[1] + q[1][None, :, None]) * n[2] + q[2][None, None, :]
        inside = ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]
        return np.where(inside, flat, -1)
    iz, iy, ix = np.meshgrid(*(np.arange(k, dtype=np.float64) for k in grid.shape),
                             indexing="ij")
    idx = np.stack([iz, iy, ix], axis=-1)
    q = np.rint(idx @ m.T + c).astype(np.int64)
    inside = np.all((q >= 0) & (q < n), axis=-1)
    flat = (q[..., 0] * n[1] + q[..., 1]) * n[2] + q[..., 2]
    return np.where(inside, flat, -1)


#: FFT precision of the structure-mean sigmas (3): float32 transforms, float64 sums.
#: A structure's two numbers are sums over g = K~ (*) w weighted by the structure's own
#: (largest) values of g, so the transforms' rounding (~5e-7 of max g per voxel, zero-mean)
#: moves them by ~1e-7 relative (measured: at most 2.2e-7 over the demo's 13 structures).
#: The fully correlated number is summed signed (g >= 0 exactly for non-negative kernels,
#: weights and multipliers), so the far field's rounding cancels instead of adding up: in
#: a constructed worst case (a 9-voxel lesion in a 120^3 body of 100x its sigma, a kernel
#: with no far field) it moves by 1.1e-5 (3.2e-3 summed as |g| s), the independent number
#: by 2.7e-7 (tests/test_dose_uncertainty.py). About half the time of float64
#: (docs/benchmarks.md). Sigma *maps* (2) stay float64: a voxel far from all activity needs
#: the full dynamic range.
MEAN_SIGMA_PRECISION = "float32"


def mean_sigma_from_terms(tia_sigma, terms: list[LinearTerm], weights, backend,
                          caches: list | None = None, parents=None,
                          precision: str = MEAN_SIGMA_PRECISION) -> MeanDoseSigma:
    """sigma of the weighted mean dose of one structure by (3), both bounds.

    ``weights``: fractional occupancy (0..1) of each voxel by the structure, on the TIA
    grid; ``caches``: one :class:`SpectrumCache` per term, reused across structures;
    ``parents`` (optional, :func:`fit_voxel_parents`): voxels with one parent share one
    error (fully correlated), parents are independent: the independent bound becomes
    ``sqrt(sum_s (sum_{v in s} g(v) sigma_A(v))^2) / W`` (voxels with parent -1 alone);
    ``precision``: of the FFTs that give g (:data:`MEAN_SIGMA_PRECISION`); the sums are
    float64.
    """
    xp = backend.xp
    w = xp.asarray(weights, dtype=xp.float64)
    total = float(w.sum())
    if total <= 0:
        return MeanDoseSigma(0.0, 0.0)
    g = xp.zeros(w.shape, dtype=xp.float32 if precision == "float32" else xp.float64)
    box = support_box(w, xp)
    for i, t in enumerate(terms):
        flipped = t.flipped_kernel
        wm = w if t.multiplier is None else w * t.multiplier
        if flipped.size > 1 and box_convolution_is_cheaper(w.shape, box, flipped.shape,
                                                           backend):
            window, where = convolve_in_box(wm, box, flipped, backend,  # a small structure
                                            precision=precision)
            g[where] += window
        else:
            g += _convolve(wm, flipped, backend, None if caches is None else caches[i],
                           precision)
    s = xp.asarray(tia_sigma, dtype=xp.float64)
    if bool((s < 0).any()):
        raise InputError("the TIA standard uncertainty map has negative voxels; a standard "
                         "uncertainty is >= 0: give the fit's sigma map (tia_sigma_bq_s)")
    gs = g * s
    if parents is None:
        indep = float(xp.sqrt(xp.sum(gs ** 2))) / total
    else:
        p = xp.asarray(parents).ravel()
        alone = p < 0
        if bool(alone.any()):
            grouped = xp.bincount(p[~alone], weights=gs.ravel()[~alone])
            rest = xp.sum(gs.ravel()[alone] ** 2)
        else:  # every voxel has a parent (a label grid inside the SPECT grid): no copies
            grouped, rest = xp.bincount(p, weights=gs.ravel()), 0.0
        indep = float(xp.sqrt(xp.sum(grouped ** 2) + rest)) / total
    if all(t.nonnegative for t in terms) and bool((w >= 0).all()):
        # g >= 0 exactly, so sum |g| s = sum g s: summed signed, the transforms' zero-mean
        # rounding in the far field cancels; |.| would rectify it into a bias that grows with
        # the grid (+3.5e-3 relative for a 9-voxel lesion in a 120^3 body of 100x its sigma)
        corr = max(float(xp.sum(gs)), 0.0) / total
    else:
        corr = float(xp.sum(xp.abs(gs))) / total  # |g| s = |g s| for s >= 0
    return MeanDoseSigma(indep, corr)


def dose_sigma_map(tia_sigma, kernel, backend, *, precision: str = "float64"):
    """sigma_D (Gy) from sigma_A (Bq s per voxel) for independent voxel errors, one kernel
    in water (2). ``kernel``: voxel S-values (Gy per Bq s), odd-shaped and centred. Returns
    an array on the backend of the input. (``precision``: kept for callers; always float64.)
    """
    return sigma_from_terms(tia_sigma, [LinearTerm(kernel)], backend)


def mean_dose_sigma(tia_sigma, kernel, weights, backend, *,
                    precision: str = MEAN_SIGMA_PRECISION) -> MeanDoseSigma:
    """sigma of the weighted mean dose of one structure, one kernel in water (3);
    ``precision`` of the FFTs as :func:`mean_sigma_from_terms`."""
    return mean_sigma_from_terms(tia_sigma, [LinearTerm(kernel)], weights, backend,
                                 precision=precision)


#: A voxel's TIA sigma enters the dose sigma at most at this multiple of its TIA.
MAX_RELATIVE_TIA_SIGMA = 1.0


def bounded_tia_sigma(tia, tia_sigma, max_relative: float = MAX_RELATIVE_TIA_SIGMA):
    """sigma_A' = min(sigma_A, r A) (r = ``max_relative``) as an Image, and what was capped.

    The per-voxel fit's delta-method sigma diverges where the model is not identified by
    the samples (measured: voxels at the edge of the field of view with samples
    [a, 0, b, 0, 0] gave sigma ~1e21 Bq s for a TIA of 2e7, status 'converged'); one such
    voxel would put ~1e11 Gy of sigma into every voxel through the photon tail of the
    kernel. The fit now refuses such fits itself (``lm_core.MAX_RELATIVE_SIGMA``: the
    trapezoid is used), so this cap is a guard for TIA maps made elsewhere. A TIA is
    non-negative, so a relative uncertainty above 100 % says only "between 0 and about
    twice the estimate": the cap keeps that statement and drops the divergence.
    ``meta['capped']`` reports how many voxels were capped, their share of the total TIA
    and of the uncapped sum of sigma_A^2. On the TIA's device."""
    be = backend_of(tia.data)
    xp = be.xp
    a = be.asarray(tia.data, dtype=xp.float64)
    s = be.asarray(tia_sigma.data, dtype=xp.float64)
    cap = float(max_relative) * xp.maximum(a, 0.0)
    over = s > cap
    total_a, total_v = float(a.sum()), float(xp.sum(s ** 2))
    info = {"rule": f"sigma_A <= {max_relative:g} x TIA per voxel (MAX_RELATIVE_TIA_SIGMA)",
            "n_voxels": int(over.sum()),
            "tia_fraction": float(a[over].sum()) / total_a if total_a > 0 else 0.0,
            "sigma_squared_fraction": float(xp.sum(s[over] ** 2)) / total_v
            if total_v > 0 else 0.0}
    out = tia_sigma.with_data(xp.where(over, cap, s),
                              meta={**tia_sigma.meta, "capped": info})
    return out, info


def engine_terms(engine, grid, backend, density=None) -> tuple[list[LinearTerm], str]:
    """:func:`linear_terms` for the convolution engines, :func:`ldm_terms` for local
    deposition (it needs the grid's voxel volume)."""
    from .engine import LocalDeposition

    if isinstance(engine, LocalDeposition):
        return ldm_terms(engine, grid.voxel_volume_ml, backend, density)
    return linear_terms(engine, backend, density)


def dose_sigma_image(engine, tia_sigma, backend, density=None):
    """The dose's standard uncertainty (Gy) as an :class:`~voxdose.core.grid.Image` on the
    TIA sigma's grid, by (2) with the engine's own terms; ``meta`` records the assumption,
    how the engine was decomposed and the seconds it took (data on the backend)."""
    import time

    from ..core.grid import Image

    t0 = time.perf_counter()
    terms, how = engine_terms(engine, tia_sigma.grid, backend, density)
    data = sigma_from_terms(tia_sigma.data, terms, backend)
    meta = {"dose_method": engine.method, "density_mode": engine.density_mode,
            "assumption": INDEPENDENT_ASSUMPTION, "engine_terms": how,
            "from": "the TIA standard uncertainty of the per-voxel fit "
                    "(tia_sigma_bq_s.nii.gz)",
            **({"tia_sigma_capped": tia_sigma.meta["capped"]}
               if "capped" in tia_sigma.meta else {}),
            "compute_seconds": time.perf_counter() - t0}
    return Image(data, tia_sigma.grid, "standard uncertainty of the absorbed dose", "Gy", meta)
