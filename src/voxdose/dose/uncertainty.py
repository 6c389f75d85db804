"""Uncertainty of the absorbed dose from the uncertainty of the TIA map.

The dose is linear in the TIA: ``D(u) = sum_v K(u - v) A(v)`` (K: voxel S-values, Gy per
Bq s; A: TIA, Bq s per voxel). With voxel TIA errors of standard deviation ``sigma_A(v)``:

* **independent voxel errors** (the assumption of the per-voxel fit's delta-method sigma):

      Var D(u) = sum_v K(u - v)^2 sigma_A(v)^2      ->  sigma_D = sqrt(K^2 (*) sigma_A^2)

  one FFT convolution of the variance map with the squared kernel;

* the **mean over a structure** with voxel weights ``w_u`` (fractional occupancy),
  ``Dbar = sum_u w_u D(u) / W`` with ``W = sum_u w_u``, is again linear in A:

      Dbar = sum_v g(v) A(v) / W,   g = K~ (*) w   (K~(x) = K(-x); K is symmetric here)

  so ``sigma_Dbar = sqrt(sum_v g(v)^2 sigma_A(v)^2) / W`` for independent errors, and
  ``sum_v |g(v)| sigma_A(v) / W`` when the errors are fully correlated (correlation
  coefficient 1 between every pair of voxels: the Cauchy-Schwarz upper bound for any
  correlation). Real SPECT noise is correlated over about the system resolution, and a
  partial-volume correction adds correlation: the truth lies between the two numbers,
  both are reported.

The squared kernel falls off twice as fast as the kernel, so the kernel's extent is
enough. Only the linear kernel convolution has a kernel; for the density-corrected
engines the water kernel is used (an approximation, recorded by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .convolution import fft_convolve_same


def dose_sigma_map(tia_sigma, kernel, backend, *, precision: str = "float64"):
    """sigma_D (Gy) from sigma_A (Bq s per voxel) for independent voxel errors.

    ``kernel``: voxel S-values (Gy per Bq s), odd-shaped and centred. Returns an array on the
    backend of the input.
    """
    xp = backend.xp
    var = xp.asarray(tia_sigma, dtype=xp.float64) ** 2
    k2 = np.asarray(kernel, dtype=np.float64) ** 2
    out = fft_convolve_same(var, k2, backend, precision=precision)
    return xp.sqrt(xp.clip(out, 0, None))


@dataclass(frozen=True)
class MeanDoseSigma:
    """Standard deviation of a structure's mean dose, Gy."""

    independent_gy: float
    fully_correlated_gy: float

    def to_dict(self) -> dict:
        return {"sigma_mean_independent_gy": self.independent_gy,
                "sigma_mean_fully_correlated_gy": self.fully_correlated_gy}


def mean_dose_sigma(tia_sigma, kernel, weights, backend, *,
                    precision: str = "float64") -> MeanDoseSigma:
    """sigma of the weighted mean dose of one structure (see the module docstring).

    ``weights``: fractional occupancy (0..1) of each voxel by the structure, on the TIA grid.
    """
    xp = backend.xp
    w = xp.asarray(weights, dtype=xp.float64)
    total = float(w.sum())
    if total <= 0:
        return MeanDoseSigma(0.0, 0.0)
    flipped = np.ascontiguousarray(np.asarray(kernel, dtype=np.float64)[::-1, ::-1, ::-1])
    g = fft_convolve_same(w, flipped, backend, precision=precision)
    s = xp.asarray(tia_sigma, dtype=xp.float64)
    indep = float(xp.sqrt(xp.sum((g * s) ** 2))) / total
    corr = float(xp.sum(xp.abs(g) * s)) / total
    return MeanDoseSigma(indep, corr)
